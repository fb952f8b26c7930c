"""TensorRT's log, as the project's log lines: errors and warnings reach the journal with their
priority, one line each; the builder's INFO and VERBOSE chatter (hundreds of lines per build) is dropped.

The last error is kept, since TensorRT says why a build or a load failed only in its log: the
``None`` it returns carries no reason.
"""

from __future__ import annotations

import functools
from typing import Any

from edgefusion import log

PREFIX = "TensorRT: "


@functools.cache
def trt_logger(trt: Any) -> Any:
    """The process's one logger for this ``tensorrt`` module (it must outlive every builder,
    runtime and engine made with it, so it is never released)."""

    class EdgefusionLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.last_error: str | None = None

        def log(self, severity: Any, msg: str) -> None:
            line = " ".join(str(msg).split())
            severities = trt.ILogger.Severity
            if severity in (severities.INTERNAL_ERROR, severities.ERROR):
                self.last_error = line
                log.error(PREFIX + line)
            elif severity == severities.WARNING:
                log.warning(PREFIX + line)

    return EdgefusionLogger()
