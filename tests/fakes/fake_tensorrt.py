"""A FAKE ``tensorrt`` module: the subset of TensorRT's Python API that edgefusion calls, with the
real names and argument orders (TensorRT 10.13's stubs), for tests on machines without a GPU.

Install it with ``monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)``. It parses ONNX
with ``onnx`` and "builds" a plan that is the graph itself behind a header:

    plan = b"FAKETRT1" + json_header + b"\\n" + onnx_bytes
    header = {"version": __version__, "flags": [builder flag names], "strongly_typed": bool,
              "io": [[name, "INPUT" | "OUTPUT", [dims, -1 where free], "FLOAT"], ...]}

It holds the builder to the rules the real one enforces, so a wrong build fails here as there: a
strongly typed network takes no precision flag; a network with a free axis needs an optimization
profile; TensorRT 8.6 parses only explicit batch networks and builds Q/DQ graphs only with INT8 set.
Like the real ones, the builder and the runtime say why they failed in the log and return None.

Test hooks (module level, restored by ``reset()``): ``refuse_ops`` (operators the parser
refuses), ``build_returns_none``, ``deserialize_returns_none`` (the next N loads give None),
``set_version(v)`` ("8.6.2": no STRONGLY_TYPED and a ParserError without node_name/node_operator;
"11.0": no FP16/INT8 builder flags). Records: ``builds`` (graph sha256, builder flag names) per
build, ``last_build`` (network flags, workspace, profiles of the latest build), ``loads``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx

MAGIC = b"FAKETRT1"
TIMING_MAGIC = b"FAKETC1"
DEFAULT_VERSION = "10.13.0.35"
__version__ = DEFAULT_VERSION

refuse_ops: set[str] = set()
build_returns_none = False
deserialize_returns_none = 0
builds: list[tuple[str, tuple[str, ...]]] = []
last_build: dict = {}
loads = 0


class _Member(int):
    """An enum member as pybind11 makes them: an int with a name."""

    def __new__(cls, value: int, name: str):
        member = super().__new__(cls, value)
        member.name = name
        return member

    def __repr__(self) -> str:
        return f"<{self.name}: {int(self)}>"


def _members(cls):
    for name, value in list(vars(cls).items()):
        if isinstance(value, int) and not name.startswith("_"):
            setattr(cls, name, _Member(value, name))
    return cls


@_members
class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


@_members
class BuilderFlag:
    FP16 = 0
    INT8 = 1
    TF32 = 6


@_members
class MemoryPoolType:
    WORKSPACE = 0


@_members
class TensorIOMode:
    NONE = 0
    INPUT = 1
    OUTPUT = 2


@_members
class DataType:
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32}


def nptype(trt_type):
    return _NP[trt_type]


class Dims(tuple):
    def __new__(cls, shape=()):
        return super().__new__(cls, (int(d) for d in shape))


class ILogger:
    @_members
    class Severity:
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR, ERROR, WARNING = Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING
    INFO, VERBOSE = Severity.INFO, Severity.VERBOSE

    def __init__(self) -> None:
        pass

    def log(self, severity, msg: str) -> None:
        raise NotImplementedError("ILogger.log must be overridden")


class Logger(ILogger):
    def __init__(self, min_severity=ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity, msg: str) -> None:
        import sys

        if severity <= self.min_severity:
            print(f"[fake TensorRT] {msg}", file=sys.stderr)


# -- network and parser ---------------------------------------------------------------------------
class ITensor:
    def __init__(self, name: str, shape: Dims, dtype=DataType.FLOAT):
        self.name, self.shape, self.dtype = name, shape, dtype


class INetworkDefinition:
    def __init__(self, flags: int):
        self.flags = flags
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self.onnx: bytes | None = None
        self.has_qdq = False

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]


class _ParserError86:
    """TensorRT 8.6's ParserError: no node_name() or node_operator()."""

    def __init__(self, desc: str, node: int = -1, name: str = "", op: str = ""):
        self._desc, self._node, self._name, self._op = desc, node, name, op

    def code(self) -> int:
        return 8  # ErrorCode.UNSUPPORTED_NODE

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node


class ParserError(_ParserError86):
    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op


def _dims(value_info) -> Dims:
    return Dims(d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim)


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger):
        self.network, self.logger = network, logger
        self._errors: list[_ParserError86] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> _ParserError86:
        return self._errors[index]

    def parse(self, model, path: str | None = None) -> bool:
        error_type = _ParserError86 if _major() < 10 else ParserError
        if _major() < 10 and not self.network.flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)):
            return self._fail(error_type("the ONNX parser needs an explicit batch network (kEXPLICIT_BATCH)"))
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as err:
            return self._fail(error_type(f"failed to parse the ONNX model: {err}"))
        for i, node in enumerate(proto.graph.node):
            if node.op_type in refuse_ops:
                desc = f"No importer registered for op: {node.op_type}. Attempting to import as plugin."
                return self._fail(error_type(desc, i, node.name, node.op_type))
        initializers = {t.name for t in proto.graph.initializer}
        net = self.network
        net._inputs = [ITensor(v.name, _dims(v)) for v in proto.graph.input if v.name not in initializers]
        net._outputs = [ITensor(v.name, _dims(v)) for v in proto.graph.output]
        net.onnx = bytes(model)
        net.has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)
        return True

    def _fail(self, err: _ParserError86) -> bool:
        self._errors.append(err)
        self.logger.log(ILogger.Severity.ERROR, f"ModelImporter.cpp: {err.desc()}")
        return False


# -- builder --------------------------------------------------------------------------------------
class ITimingCache:
    def __init__(self, entries: set[str]):
        self.entries = entries

    def serialize(self) -> bytes:
        return TIMING_MAGIC + json.dumps(sorted(self.entries)).encode()


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Dims, opt: Dims, max: Dims) -> None:  # noqa: A002 (TensorRT's names)
        self.shapes[input] = (Dims(min), Dims(opt), Dims(max))


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags = {BuilderFlag.TF32}  # on by default, as in TensorRT
        self.pools: dict[int, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self._timing: ITimingCache | None = None

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag)

    def set_memory_pool_limit(self, pool, pool_size: int) -> None:
        self.pools[int(pool)] = pool_size

    def get_memory_pool_limit(self, pool) -> int:
        return self.pools.get(int(pool), 1 << 40)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache) -> ITimingCache:
        data = bytes(serialized_timing_cache)
        entries = set(json.loads(data[len(TIMING_MAGIC) :])) if data.startswith(TIMING_MAGIC) else set()
        return ITimingCache(entries)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._timing = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._timing


class Builder:
    def __init__(self, logger: ILogger):
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        why = self._refusal(network, config)
        if why:
            self.logger.log(ILogger.Severity.ERROR, why)
            return None
        strong = _strong_bit() is not None and bool(network.flags & _strong_bit())
        flags = sorted(f.name for f in config.flags)
        sha = hashlib.sha256(network.onnx).hexdigest()
        builds.append((sha, tuple(flags)))
        last_build.clear()
        last_build.update(
            network_flags=network.flags,
            workspace=config.get_memory_pool_limit(MemoryPoolType.WORKSPACE),
            profiles=[p.shapes for p in config.profiles],
        )
        if config._timing is not None:
            config._timing.entries.add(sha)
        io = [[t.name, "INPUT", list(t.shape), "FLOAT"] for t in network._inputs]
        io += [[t.name, "OUTPUT", list(t.shape), "FLOAT"] for t in network._outputs]
        header = {"version": __version__, "flags": flags, "strongly_typed": strong, "io": io}
        return MAGIC + json.dumps(header).encode() + b"\n" + network.onnx

    def _refusal(self, network: INetworkDefinition, config: IBuilderConfig) -> str | None:
        if build_returns_none:
            return "fake: the build failed (fake_tensorrt.build_returns_none)"
        if network.onnx is None:
            return "Network must have at least one output"
        known = sum(1 << int(f) for f in vars(NetworkDefinitionCreationFlag).values() if isinstance(f, _Member))
        if network.flags & ~known:
            return f"unknown network creation flags {network.flags:#x}"
        strong = _strong_bit() is not None and bool(network.flags & _strong_bit())
        precision = {f for f in config.flags if f.name in ("FP16", "INT8")}
        if strong and precision:
            return f"{sorted(f.name for f in precision)}: precision flags are not allowed in a strongly typed network"
        if network.has_qdq and not strong and BuilderFlag.INT8 not in config.flags:
            return "the network has Q/DQ layers: set BuilderFlag.INT8 or build it strongly typed"
        for t in network._inputs:
            if all(d >= 0 for d in t.shape):
                continue
            shapes = [p.shapes.get(t.name) for p in config.profiles]
            if not shapes or any(s is None for s in shapes):
                return f"Network has dynamic or shape inputs, but no optimization profile has been defined ({t.name})"
            for shape in (s for triple in shapes for s in triple):
                if not (len(shape) == len(t.shape) and all(d in (-1, a) and a > 0 for d, a in zip(t.shape, shape))):
                    return f"the profile's shape {tuple(shape)} for {t.name} does not fit {tuple(t.shape)}"
        return None


# -- runtime and engine ---------------------------------------------------------------------------
class ICudaEngine:
    def __init__(self, header: dict, onnx_bytes: bytes):
        self.header, self.onnx = header, onnx_bytes
        self._io = {name: (mode, Dims(dims), dtype) for name, mode, dims, dtype in header["io"]}
        self._names = [io[0] for io in header["io"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str):
        return getattr(TensorIOMode, self._io[name][0])

    def get_tensor_shape(self, name: str) -> Dims:
        return self._io[name][1]

    def get_tensor_dtype(self, name: str):
        return getattr(DataType, self._io[name][2])

    def create_execution_context(self):
        from fakes.fake_trt_context import FakeExecutionContext

        return FakeExecutionContext(self)


class Runtime:
    def __init__(self, logger: ILogger):
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine) -> ICudaEngine | None:
        global deserialize_returns_none, loads
        loads += 1
        data = bytes(serialized_engine)
        header_line, _, onnx_bytes = data[len(MAGIC) :].partition(b"\n")
        header = None
        if data.startswith(MAGIC) and deserialize_returns_none == 0:
            try:
                header = json.loads(header_line)
            except ValueError:
                header = None
        deserialize_returns_none = max(0, deserialize_returns_none - 1)
        if header is None or header.get("version") != __version__:
            found = header.get("version") if header else "unreadable"
            self.logger.log(
                ILogger.Severity.ERROR,
                "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon::46] Error Code 1: Serialization "
                f"(Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not match. "
                f"Current Version: {__version__}, Serialized Engine Version: {found})",
            )
            return None
        return ICudaEngine(header, onnx_bytes)


# -- versions and reset -----------------------------------------------------------------------------
def _major() -> int:
    return int(__version__.split(".")[0])


def _strong_bit() -> int | None:
    flag = getattr(NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return None if flag is None else 1 << int(flag)


_REMOVED_IN = {  # what an older or newer TensorRT lacks: (class, attribute)
    "8": [(NetworkDefinitionCreationFlag, "STRONGLY_TYPED")],
    "11": [(BuilderFlag, "FP16"), (BuilderFlag, "INT8")],
}
_ORIGINAL = {(cls, name): getattr(cls, name) for removed in _REMOVED_IN.values() for cls, name in removed}


def set_version(version: str) -> None:
    """Act as that TensorRT: its version string, and the API it lacks."""
    global __version__
    for (cls, name), value in _ORIGINAL.items():
        setattr(cls, name, value)
    for cls, name in _REMOVED_IN.get(version.split(".")[0], []):
        delattr(cls, name)
    __version__ = version


def reset() -> None:
    global build_returns_none, deserialize_returns_none, loads
    set_version(DEFAULT_VERSION)
    refuse_ops.clear()
    build_returns_none = False
    deserialize_returns_none = 0
    builds.clear()
    last_build.clear()
    loads = 0
