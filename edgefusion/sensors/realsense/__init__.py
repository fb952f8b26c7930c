"""Intel RealSense (D4xx) as the rgb and depth sensors, its recordings, and a camera made of software.

pyrealsense2 is imported lazily, inside the functions that need it (``sdk.import_realsense``): the
runtime imports this package on machines without the SDK (CI, a robot with another camera) and
only fails when it is used.
"""

from edgefusion.sensors.realsense.camera import RealSenseCamera
from edgefusion.sensors.realsense.config import FILTERS, RealSenseConfig
from edgefusion.sensors.realsense.playback import RealSensePlayback, check_recording, iter_recording
from edgefusion.sensors.realsense.sdk import connected_serials, import_realsense, recording_suffix
from edgefusion.sensors.realsense.software import SoftwareCamera

__all__ = [
    "FILTERS",
    "RealSenseCamera",
    "RealSenseConfig",
    "RealSensePlayback",
    "SoftwareCamera",
    "check_recording",
    "connected_serials",
    "import_realsense",
    "iter_recording",
    "recording_suffix",
]
