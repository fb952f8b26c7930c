"""FAKE TensorRT execution context: runs the engine's ONNX graph through ONNX Runtime, on the
fake GPU's memory (``fake_cudart``), when the stream gets there.

It keeps TensorRT's habits that the backend must cope with: a wrong name answers False, not an
exception; an output's shape is known only once every input's shape is set; ``execute_async_v3``
answers False when a tensor has no address or an input no shape; and the addresses a run reads
and writes are those set when it was enqueued (a captured graph replays them).
"""

from __future__ import annotations

import importlib
from functools import partial

import numpy as np

from edgefusion.backends.onnxruntime.session import open_session, run_options


class FakeExecutionContext:
    def __init__(self, engine):
        self.engine = engine
        self._io = {name: (mode, tuple(dims)) for name, mode, dims, _dtype in engine.header["io"]}
        self._names = list(self._io)
        self._inputs = [name for name, (mode, _) in self._io.items() if mode == "INPUT"]
        self.label = ",".join(self._inputs)  # what the fake stream logs: "execute rgb", "execute p_rgb,p_depth"
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._resolved: dict = {}  # output shapes at the last input shapes (_output_shapes)
        self._session = open_session(engine.onnx, threads=1, providers=["CPUExecutionProvider"])
        self._run_options = run_options()
        self._bindings: dict[tuple[int, ...], object] = {}  # one ONNX Runtime binding per address set
        self.runs = 0

    def set_input_shape(self, name: str, shape) -> bool:
        mode, dims = self._io.get(name, (None, ()))
        shape = tuple(int(s) for s in shape)
        if mode != "INPUT" or len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
            return False
        self._shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self._io:
            return False
        self._addresses[name] = int(memory)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        mode, dims = self._io.get(name, (None, ()))
        if mode == "INPUT":
            return self._shapes.get(name, dims)
        if -1 in dims and len(self._shapes) == len(self._inputs):
            return self._output_shapes()[name]
        return dims

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every output's shape at the inputs' shapes, as TensorRT propagates them: here by one run
        of the graph on zeros (an exporter's symbolic dims, ``Castp_rgb_dim_1``, have no value)."""
        key = tuple(self._shapes[name] for name in self._inputs)
        if self._resolved.get("key") != key:
            feeds = {n: np.zeros(self._shapes[n], np.float32) for n in self._inputs}
            outputs = [o.name for o in self._session.get_outputs()]
            values = self._session.run(outputs, feeds)
            self._resolved = {"key": key, **{n: tuple(v.shape) for n, v in zip(outputs, values)}}
        return self._resolved

    def execute_async_v3(self, stream_handle: int) -> bool:
        if len(self._shapes) != len(self._inputs) or len(self._addresses) != len(self._io):
            return False
        addresses = tuple(self._addresses[name] for name in self._names)
        cudart = importlib.import_module("cuda.bindings.runtime")  # the fake, where the test installed it
        cudart.enqueue(int(stream_handle), partial(self._run, cudart, addresses), f"execute {self.label}")
        return True

    def _run(self, cudart, addresses: tuple[int, ...]) -> None:
        binding = self._bindings.get(addresses)
        if binding is None:
            binding = self._bindings[addresses] = self._bind(cudart, addresses)
        self._session.run_with_iobinding(binding, self._run_options)
        self.runs += 1

    def _bind(self, cudart, addresses: tuple[int, ...]):
        binding = self._session.io_binding()
        for name, address in zip(self._names, addresses):
            shape = self.get_tensor_shape(name)
            cudart.array_at(address, shape)  # IllegalAddress unless it is all device memory
            bind = binding.bind_input if self._io[name][0] == "INPUT" else binding.bind_output
            bind(name, "cpu", 0, np.float32, list(shape), address)
        return binding
