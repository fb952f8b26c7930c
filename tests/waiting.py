"""Polling with a deadline, for tests of threads and devices (never a fixed sleep)."""

import time


def wait_for(pred, timeout: float = 3.0) -> bool:
    """True as soon as ``pred()`` is; False if it is still not after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False
