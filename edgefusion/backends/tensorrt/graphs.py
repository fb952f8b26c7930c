"""CUDA graphs of a tick's work, one per combination of (encoders run, modalities present).

A tick is a dozen small launches (copies, each engine's kernels); replaying them as one graph
takes the CPU's per-launch cost off every tick. A graph replays the addresses it was captured
with, so each remembers them and is captured again when the addresses it would read differ.

Capture needs each execution context to have been enqueued once outside a capture (TensorRT
defers some work to the first enqueue after a shape is set): the backend's warm tick does that
for every context before any graph is captured, and shapes are set once, at activation.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from edgefusion.backends.base import BackendError
from edgefusion.backends.tensorrt.cuda.api import Cuda


class TickGraphs:
    """Instantiated graphs on one stream, by key; ``captures`` and ``launches`` count for the facts."""

    def __init__(self, cuda: Cuda, stream: Any):
        self._cuda = cuda
        self._stream = stream
        self._graphs: dict[Hashable, tuple[Hashable, Any]] = {}  # key -> (addresses captured, graph)
        self.captures = 0
        self.launches = 0

    def run(self, key: Hashable, addresses: Hashable, enqueue: Callable[[Any], None], arg: Any) -> None:
        """Launch ``key``'s graph, capturing ``enqueue(arg)`` first where there is none for these ``addresses``."""
        entry = self._graphs.get(key)
        if entry is not None and entry[0] != addresses:
            del self._graphs[key]
            self._cuda.destroy_graph(entry[1])
            entry = None
        if entry is None:
            entry = (addresses, self._capture(enqueue, arg))
            self._graphs[key] = entry
        self._cuda.launch(entry[1], self._stream)
        self.launches += 1

    def _capture(self, enqueue: Callable[[Any], None], arg: Any) -> Any:
        self._cuda.begin_capture(self._stream)
        try:
            enqueue(arg)
        except BaseException:
            self._abandon_capture()
            raise
        graph = self._cuda.end_capture(self._stream)
        self.captures += 1
        return graph

    def _abandon_capture(self) -> None:
        """End a capture that failed half-way, so the stream can be used (and destroyed) again;
        the error that stopped it is the one to report, not this one's."""
        try:
            self._cuda.destroy_graph(self._cuda.end_capture(self._stream))
        except BackendError:
            pass

    def close(self) -> None:
        graphs = [graph for _, graph in self._graphs.values()]
        self._graphs.clear()
        for graph in graphs:
            self._cuda.destroy_graph(graph)
