"""The FAKE TensorRT and CUDA runtime (the repository's ``tests/fakes``) installed where the
TensorRT backend imports them from, for as long as a ``with installed():`` lasts.

It does what ``tests/fakes/fixtures.py``'s ``fake_gpu`` fixture does, as a context manager: the
HIL suite needs the fake for a loop fixture and for chosen backends only, not for a whole test
through ``monkeypatch``. One difference: the fake CUDA runtime's call log is off (a deque of no
length): it is for the unit tests' assertions, and its entries would count as the backend's
allocations in the suite's per-tick check (as tests/test_trt_backend.py turns it off there).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from edgefusion.hil.backends import FAKES


def fakes() -> dict[str, ModuleType]:
    """The fake modules by the name they stand in for (tests/ is put at the end of sys.path, so
    it shadows nothing)."""
    if str(FAKES.parent) not in sys.path:
        sys.path.append(str(FAKES.parent))
    from fakes import fake_cudart, fake_tensorrt

    return {"tensorrt": fake_tensorrt, "cuda.bindings.runtime": fake_cudart}


@contextmanager
def installed() -> Iterator[dict[str, ModuleType]]:
    """The fakes in ``sys.modules`` (fresh: reset) and the modules they stood in for put back after."""
    modules = fakes()
    saved = {name: sys.modules.get(name) for name in modules}
    cudart = modules["cuda.bindings.runtime"]
    log = cudart.log
    for fake in modules.values():
        fake.reset()
    cudart.log = deque(maxlen=0)
    sys.modules.update(modules)
    try:
        yield modules
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        cudart.log = log
        for fake in modules.values():
            fake.reset()
