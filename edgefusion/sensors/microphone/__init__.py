"""Microphones: the sensor base (a ring of PCM blocks, windows out) and the PortAudio driver.

pyaudio and soxr are imported on a driver's first open (``devices.import_pyaudio``), never here.
"""

from edgefusion.sensors.microphone.clock import BlockClock
from edgefusion.sensors.microphone.config import MicrophoneConfig
from edgefusion.sensors.microphone.devices import (
    check_device,
    import_pyaudio,
    input_devices,
    library_output,
    select_input_device,
)
from edgefusion.sensors.microphone.portaudio import QUEUE_S, PyAudioMicrophone
from edgefusion.sensors.microphone.sensor import SILENT_AFTER_S, AudioRing, MicrophoneSensor

__all__ = [
    "QUEUE_S",
    "SILENT_AFTER_S",
    "AudioRing",
    "BlockClock",
    "MicrophoneConfig",
    "MicrophoneSensor",
    "PyAudioMicrophone",
    "check_device",
    "import_pyaudio",
    "input_devices",
    "library_output",
    "select_input_device",
]
