"""The config's ``[microphone]`` table: which input device, at what rate, in what blocks."""

from __future__ import annotations

from dataclasses import dataclass

from edgefusion.errors import ConfigError


@dataclass
class MicrophoneConfig:
    device: str = ""  # "": the default input; else a name substring or an index (as PyAudio lists them)
    rate: int = 0  # 0: the device's default rate; resampled to the model's when it differs (as the device can)
    channels: int = 1  # channels to open (some devices capture stereo only): mixed down to mono
    block_ms: float = 10.0  # audio per callback
    stall_ms: float = 5000.0  # no audio for this long: the device counts as lost (PulseAudio starts in ~2 s)

    def check(self, at: str) -> None:
        def require(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"{at}: {key} must be {what}")

        require(self.rate == 0 or self.rate >= 1000, "rate", "0 (the device's default) or >= 1000")
        require(1 <= self.channels <= 32, "channels", "between 1 and 32")
        require(1 <= self.block_ms <= 100, "block_ms", "between 1 and 100")
        require(self.stall_ms >= 500, "stall_ms", ">= 500")
