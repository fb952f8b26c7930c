"""The ``[tensorrt]`` config section: where engines are cached and how they are built and run.

Its numbers are checked like every other table's (config.LIMITS); the cache folder's default is
the service's state directory (systemd's ``StateDirectory=`` sets ``$STATE_DIRECTORY``), so a
plan built at install survives reboots and is found by the service user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CUDA_ADAPTERS = ("cuda-python", "pycuda")


@dataclass
class TensorRTOptions:
    cache_dir: str = ""  # empty: $STATE_DIRECTORY/engines, else ~/.cache/edgefusion/engines
    workspace_mb: int = 1024  # the builder's workspace memory pool limit
    max_cache_mb: int = 2048  # least recently used plans beyond this are removed
    cuda_graphs: bool = True  # capture each (encoders run, present) combination once and replay it
    build_at_start: bool = True  # false: a missing engine is an error (build with `edgefusion engines build`)
    cuda: str = "cuda-python"  # the CUDA adapter: cuda-python (cuda-bindings) or pycuda (no CUDA graphs)

    def check(self, at: str) -> None:
        from edgefusion.errors import ConfigError

        if self.cuda not in CUDA_ADAPTERS:
            raise ConfigError(f"{at}: cuda must be one of {', '.join(CUDA_ADAPTERS)}, got {self.cuda!r}")

    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(state) / "engines" if state else Path.home() / ".cache" / "edgefusion" / "engines"
