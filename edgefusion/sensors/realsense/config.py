"""The config's ``[camera]`` table: which RealSense, its mode, its depth filters and retries."""

from __future__ import annotations

from dataclasses import dataclass

from edgefusion.errors import EdgefusionError

FILTERS = ("spatial", "temporal", "hole_filling")


@dataclass(frozen=True)
class RealSenseConfig:
    """The config's ``[camera]`` table. ``serial`` "" takes the first camera found. ``filters`` run
    on depth in the order given, before ``align`` (their parameters are tuned in the depth
    camera's pixels). ``retries`` consecutive frame timeouts of the sensor's ``read_timeout_s``
    each make the camera FAILED; it is hardware-reset before the last one."""

    serial: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    align: bool = True
    filters: tuple[str, ...] = ()
    retries: int = 5

    def check(self, at: str) -> None:
        unknown = [name for name in self.filters if name not in FILTERS]
        if unknown:
            raise EdgefusionError(f"{at}: unknown RealSense filter {unknown[0]!r}; choose among {', '.join(FILTERS)}")
        if self.retries < 1:
            raise EdgefusionError(f"{at}: retries must be at least 1, not {self.retries}")
        if not (self.width > 0 and self.height > 0 and self.fps > 0):
            raise EdgefusionError(
                f"{at}: width, height and fps must be > 0 (a mode the camera has, e.g. 640x480 at 30)"
            )
