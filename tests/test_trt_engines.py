"""TensorRT engines: build, cache (every key input, sidecars, atomic writes, LRU), reload, refusals.

TensorRT itself cannot run here: these tests run the real build and cache code against
``fakes/fake_tensorrt.py``, which parses the bundle's real ONNX graphs and enforces the builder's
rules (precision flags, profiles, 8.6's explicit batch and Q/DQ), so a wrong build fails here too.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from fakes import fake_tensorrt
from tiny_bundle import make_bundle

from edgefusion.backends.base import BackendError
from edgefusion.backends.tensorrt.build import build_plan
from edgefusion.backends.tensorrt.cache import EngineCache, plan_key
from edgefusion.backends.tensorrt.cuda.api import GpuInfo
from edgefusion.backends.tensorrt.engines import build_all, load_engines
from edgefusion.backends.tensorrt.logger import trt_logger
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.backends.tensorrt.runtime_trt import import_tensorrt, strongly_typed_flag, trt_major
from edgefusion.bundle import default_bundle_path, load_bundle

GPU = GpuInfo("Orin (fake)", (8, 7), 16, 8 << 30)


@pytest.fixture
def trt(monkeypatch):
    fake_tensorrt.reset()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    yield fake_tensorrt
    fake_tensorrt.reset()


@pytest.fixture
def options(tmp_path):
    return TensorRTOptions(cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def tiny(tmp_path):
    return load_bundle(make_bundle(tmp_path / "tiny", precisions=("fp32", "fp16", "int8")))


@pytest.fixture(scope="module")
def demo():
    return load_bundle(default_bundle_path())


def _plan_header(plan: bytes) -> dict:
    assert plan.startswith(fake_tensorrt.MAGIC)
    return json.loads(plan[len(fake_tensorrt.MAGIC) :].partition(b"\n")[0])


def _cache_files(options) -> list[str]:
    return sorted(os.listdir(options.cache_path()))


# -- import and version facts -----------------------------------------------------------------------
def test_without_tensorrt_import_is_one_line_naming_jetpack(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    with pytest.raises(BackendError) as err:
        import_tensorrt()
    msg = str(err.value)  # "(No module named 'tensorrt')", or the stubs-only folder where tensorrt-stubs is installed
    assert msg.startswith("TensorRT is not installed here (") and "JetPack" in msg and "\n" not in msg


def test_version_facts(trt):
    assert trt_major(trt) == 10 and strongly_typed_flag(trt) == 1 << 1
    trt.set_version("8.6.2")
    assert trt_major(trt) == 8 and strongly_typed_flag(trt) is None


# -- build, then the cache ----------------------------------------------------------------------------
def test_first_load_builds_every_graph_then_the_cache_serves_them(trt, tiny, options):
    first = load_engines(trt, tiny, "fp32", options, GPU)
    assert first.built == ["rgb", "depth", "head"] and first.cached == []
    assert len(trt.builds) == 3
    again = load_engines(trt, tiny, "fp32", options, GPU)
    assert again.cached == ["rgb", "depth", "head"] and again.built == []
    assert len(trt.builds) == 3  # nothing built the second time
    for role, engine in again.engines.items():
        assert engine.onnx == tiny.graph_bytes("fp32", role)  # each role got its own graph
    assert again.runtime is not None


def test_engines_are_built_at_batch_one(trt, tiny, options):
    engines = load_engines(trt, tiny, "fp32", options, GPU)
    rgb = engines.engines["rgb"]
    assert rgb.get_tensor_shape("rgb") == (-1, 3, 48, 64)  # the engine keeps the free axis, as TensorRT does
    trt.reset()
    plan, _ = build_plan(trt, trt_logger(trt), tiny.graph_bytes("fp32", "rgb"), "rgb", "fp32", options, None)
    (profile,) = trt.last_build["profiles"]
    assert profile["rgb"] == ((1, 3, 48, 64),) * 3  # min = opt = max = batch 1
    assert trt.last_build["workspace"] == options.workspace_mb << 20


def test_the_demo_bundle_builds_in_every_precision(trt, demo, options):
    for precision in demo.precisions:
        engines = load_engines(trt, demo, precision, options, GPU)
        assert sorted(engines.built) == sorted([*demo.names, "head"])
    # int8 runs the fp32 head's file, but strongly typed and under the int8 key: a plan of its own
    assert len(trt.builds) == len(demo.precisions) * (len(demo.names) + 1)


@pytest.mark.parametrize(
    ("version", "precision", "strongly_typed", "flags"),
    [
        ("10.13.0.35", "fp32", False, []),  # TF32 (on by default) cleared: float32 means float32
        ("10.13.0.35", "fp16", True, []),
        ("10.13.0.35", "int8", True, []),
        ("8.6.2", "fp32", False, []),
        ("8.6.2", "fp16", False, ["FP16"]),
        ("8.6.2", "int8", False, ["FP16", "INT8"]),
        ("11.0.0", "fp32", True, []),
        ("11.0.0", "int8", True, []),
    ],
)
def test_precision_comes_from_the_graph_or_the_flags_each_version_has(
    trt, demo, options, version, precision, strongly_typed, flags
):
    """The int8 graphs hold Q/DQ: the fake refuses them on 8.6 without INT8 and refuses any
    precision flag on a strongly typed network, as TensorRT does."""
    trt.set_version(version)
    role = demo.names[0]
    plan, _ = build_plan(trt, trt_logger(trt), demo.graph_bytes(precision, role), role, precision, options, None)
    header = _plan_header(plan)
    assert header["strongly_typed"] is strongly_typed
    assert header["flags"] == flags
    explicit_batch = 1 << int(fake_tensorrt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert bool(trt.last_build["network_flags"] & explicit_batch) is (version == "8.6.2")


def test_the_timing_cache_is_kept_and_fed_to_the_next_build(trt, tiny, options):
    load_engines(trt, tiny, "fp32", options, GPU)
    cache = EngineCache(options.cache_path(), 1 << 30)
    saved = cache.timing_cache(trt.__version__, GPU)
    assert saved is not None and len(json.loads(saved[len(fake_tensorrt.TIMING_MAGIC) :])) == 3
    load_engines(trt, tiny, "fp16", options, GPU)
    grown = json.loads(cache.timing_cache(trt.__version__, GPU)[len(fake_tensorrt.TIMING_MAGIC) :])
    fp32_graphs = {hashlib.sha256(tiny.graph_bytes("fp32", r)).hexdigest() for r in ("rgb", "depth", "head")}
    assert fp32_graphs <= set(grown)  # the fp16 builds started from what the fp32 builds measured
    assert cache.timing_cache(trt.__version__, replace(GPU, name="Thor")) is None  # per GPU


# -- every key input makes a miss ------------------------------------------------------------------------
def _changed(what: str, trt, tmp_path, options):
    """(bundle, precision, options, gpu) of the base case, with ``what`` changed."""
    calibration = {"sha256": "a" * 64}
    if what == "calibration":
        calibration = {"sha256": "b" * 64}
    seed = 1 if what == "graph" else 0
    bundle = load_bundle(
        make_bundle(tmp_path / f"b-{what}", precisions=("fp32", "int8"), seed=seed, calibration=calibration)
    )
    precision = "fp32" if what == "precision" else "int8"
    gpu = {
        "gpu name": replace(GPU, name="Jetson AGX Thor"),
        "compute capability": replace(GPU, compute_capability=(8, 6)),
        "SM count": replace(GPU, sm_count=8),
    }.get(what, GPU)
    if what == "TensorRT version":
        trt.set_version("10.14.1")
    if what == "workspace":
        options = replace(options, workspace_mb=2048)
    return bundle, precision, options, gpu


KEY_INPUTS = [
    "graph",
    "calibration",
    "TensorRT version",
    "gpu name",
    "compute capability",
    "SM count",
    "precision",
    "workspace",
]


@pytest.mark.parametrize("what", KEY_INPUTS)
def test_each_key_input_changed_is_a_miss(trt, tmp_path, options, what):
    base = _changed("nothing", trt, tmp_path, options)
    assert load_engines(trt, *base).built == ["rgb", "depth", "head"]
    assert load_engines(trt, *base).cached == ["rgb", "depth", "head"]  # the same inputs hit
    changed = _changed(what, trt, tmp_path, options)
    loads = trt.loads
    assert load_engines(trt, *changed).built == ["rgb", "depth", "head"]
    assert trt.loads - loads == 3  # only the plans just built: a miss by key, no stale plan tried


def test_an_identical_bundle_elsewhere_hits(trt, tmp_path, options):
    """The key is the graph's content, not its path or its bundle's name."""
    a = load_bundle(make_bundle(tmp_path / "a", name="one"))
    b = load_bundle(make_bundle(tmp_path / "b", name="two"))
    load_engines(trt, a, "fp32", options, GPU)
    assert load_engines(trt, b, "fp32", options, GPU).cached == ["rgb", "depth", "head"]


# -- what is stored, and how ------------------------------------------------------------------------------
def test_sidecar_json_beside_a_plan_left_as_tensorrt_made_it(trt, tiny, options):
    load_engines(trt, tiny, "fp16", options, GPU)
    files = _cache_files(options)
    plans = [f for f in files if f.endswith(".plan")]
    assert len(plans) == 3 and not [f for f in files if f.startswith(".")]  # no temp file left
    for plan_name in plans:
        plan = (options.cache_path() / plan_name).read_bytes()
        _plan_header(plan)  # starts with the plan's own magic: nothing prepended
        meta = json.loads((options.cache_path() / plan_name.replace(".plan", ".json")).read_text())
        assert meta["plan_sha256"] == hashlib.sha256(plan).hexdigest() and meta["plan_bytes"] == len(plan)
        assert meta["bundle"] == {"name": "tiny", "root": str(tiny.root)} and meta["precision"] == "fp16"
        graph = tiny.graph_bytes("fp16", meta["role"])
        assert meta["facts"]["graph_sha256"] == hashlib.sha256(graph).hexdigest()
        assert meta["facts"]["tensorrt"] == trt.__version__ and meta["facts"]["gpu"]["sm_count"] == 16
        assert meta["key"] == plan_name[: -len(".plan")] and meta["build_seconds"] >= 0 and meta["built_utc"]


def test_a_store_that_fails_leaves_no_half_entry(trt, tiny, options, monkeypatch):
    """A full disk at the plan's fsync leaves nothing; one at the sidecar's leaves a plan with no
    sidecar, which is no entry (a miss) and is swept at the next store."""
    cache = EngineCache(options.cache_path(), 1 << 30)
    real_fsync, calls = os.fsync, []

    def fsync_fails_at(n):
        def fsync(fd):
            calls.append(fd)
            if len(calls) == n:
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        return fsync

    monkeypatch.setattr(os, "fsync", fsync_fails_at(1))
    with pytest.raises(OSError):
        cache.store("k1", b"plan-one", {"role": "rgb"})
    assert _cache_files(options) == []
    calls.clear()
    monkeypatch.setattr(os, "fsync", fsync_fails_at(2))
    with pytest.raises(OSError):
        cache.store("k2", b"plan-two", {"role": "rgb"})
    assert _cache_files(options) == ["k2.plan"] and cache.lookup("k2") is None and cache.entries() == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    cache.store("k3", b"plan-three", {"role": "rgb"})
    assert _cache_files(options) == ["k3.json", "k3.plan"]


def test_a_damaged_plan_is_a_miss_and_is_removed(trt, tiny, options):
    load_engines(trt, tiny, "fp32", options, GPU)
    plan_path = next(p for p in options.cache_path().glob("*.plan"))
    plan_path.write_bytes(plan_path.read_bytes()[:-1] + b"!")
    again = load_engines(trt, tiny, "fp32", options, GPU)
    assert len(again.built) == 1 and len(again.cached) == 2


def test_a_sidecar_whose_facts_are_not_its_key_is_a_miss(trt, tiny, options):
    """A sidecar edited by hand (or copied from another machine under a plan's name) no longer
    vouches for its plan: the facts it holds must hash to the key it is filed under."""
    load_engines(trt, tiny, "fp32", options, GPU)
    sidecar = next(p for p in options.cache_path().glob("*.json"))
    meta = json.loads(sidecar.read_text())
    meta["facts"]["tensorrt"] = "8.6.2"
    sidecar.write_text(json.dumps(meta))
    again = load_engines(trt, tiny, "fp32", options, GPU)
    assert again.built == [meta["role"]] and len(again.cached) == 2


def test_a_plan_tensorrt_will_not_load_is_rebuilt_once(trt, tiny, options, capsys):
    load_engines(trt, tiny, "fp32", options, GPU)
    trt.deserialize_returns_none = 1  # the first cached plan: TensorRT returns None
    again = load_engines(trt, tiny, "fp32", options, GPU)
    assert again.built == ["rgb"] and again.cached == ["depth", "head"]
    err = capsys.readouterr().err
    assert "Version tag does not match" in err and "does not load; building it again" in err
    assert load_engines(trt, tiny, "fp32", options, GPU).cached == ["rgb", "depth", "head"]  # the rebuilt one stored


def test_a_plan_that_still_does_not_load_after_its_rebuild_is_an_error(trt, tiny, options):
    load_engines(trt, tiny, "fp32", options, GPU)
    trt.deserialize_returns_none = 2  # the cached plan, then the one just built
    with pytest.raises(BackendError) as err:
        load_engines(trt, tiny, "fp32", options, GPU)
    msg = str(err.value)
    assert "just built for rgb (fp32) does not load" in msg and "Version tag does not match" in msg
    assert "\n" not in msg


def test_a_cache_of_another_tensorrt_is_not_loaded_but_rebuilt(trt, tiny, options):
    """After a JetPack upgrade the version is in the key: the old plans are never even tried."""
    load_engines(trt, tiny, "fp32", options, GPU)
    loads = trt.loads
    trt.set_version("10.14.1")
    assert load_engines(trt, tiny, "fp32", options, GPU).built == ["rgb", "depth", "head"]
    assert trt.loads - loads == 3  # only the new plans were deserialized


def test_without_build_a_miss_names_the_command(trt, tiny, options):
    with pytest.raises(BackendError) as err:
        load_engines(trt, tiny, "fp16", options, GPU, build=False)
    assert "edgefusion engines build" in str(err.value) and "--precision fp16" in str(err.value)
    assert trt.builds == []


def test_least_recently_used_plans_go_beyond_the_bound(tmp_path):
    cache = EngineCache(tmp_path / "c", max_bytes=2500)
    keys = {role: plan_key({"role": role}) for role in "abcd"}

    def store(role: str, size: int) -> None:
        cache.store(keys[role], bytes(size), {"facts": {"role": role}})

    for i, role in enumerate("ab"):
        store(role, 1000)
        os.utime(cache.root / f"{keys[role]}.json", (1000 + i, 1000 + i))
    assert cache.lookup(keys["a"]) is not None  # a is now the most recently used
    store("c", 1000)
    assert [e["key"] for e in cache.entries()] == [keys["a"], keys["c"]]  # b, the least recently used, went
    store("d", 3000)  # bigger than the bound: kept, every other one goes
    assert [e["key"] for e in cache.entries()] == [keys["d"]]
    assert sorted(os.listdir(cache.root)) == [f"{keys['d']}.json", f"{keys['d']}.plan"]


def test_a_cache_below_a_file_is_said_once_and_engines_are_built_in_memory(trt, tiny, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    options = TensorRTOptions(cache_dir=str(tmp_path / "file" / "engines"))
    reason = EngineCache(options.cache_path(), 1 << 30).writable()
    assert reason is not None and str(options.cache_path()) in reason and "\n" not in reason
    assert "[tensorrt] cache_dir" in reason and "StateDirectory" in reason
    capsys.readouterr()
    engines = load_engines(trt, tiny, "fp32", options, GPU)
    assert engines.built == ["rgb", "depth", "head"]
    assert load_engines(trt, tiny, "fp16", options, GPU).built == ["rgb", "depth", "head"]  # the fallback's next try
    err = capsys.readouterr().err
    assert err.count("not writable") == 1 and "building in memory" in err, "said once per process"
    with pytest.raises(BackendError, match="not writable"):
        build_all(tiny, ["fp32"], options, GPU)


def test_a_disk_full_when_keeping_a_plan_still_runs_the_engine(trt, tiny, options, monkeypatch, capsys):
    def fsync(fd):
        raise OSError(28, "No space left on device")

    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", fsync)
    engines = load_engines(trt, tiny, "fp32", options, GPU)
    assert engines.built == ["rgb", "depth", "head"] and set(engines.engines) == {"rgb", "depth", "head"}
    lines = [line for line in capsys.readouterr().err.splitlines() if "could not keep" in line]
    assert len(lines) == 3 and all("No space left on device" in line for line in lines)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert EngineCache(options.cache_path(), 1 << 30).entries() == [], "nothing half-kept"


def test_a_writable_cache_says_nothing(tmp_path):
    assert EngineCache(tmp_path / "new" / "engines", 1).writable() is None
    assert os.listdir(tmp_path / "new" / "engines") == []  # the probe is gone


def _node_index(graph: bytes, op: str) -> int:
    return next(i for i, n in enumerate(onnx.load_from_string(graph).graph.node) if n.op_type == op)


# -- refusals -------------------------------------------------------------------------------------------
def test_a_refused_operator_is_one_line_naming_node_and_operator(trt, tiny, options):
    trt.refuse_ops = {"ReduceMean"}
    with pytest.raises(BackendError) as err:
        load_engines(trt, tiny, "fp32", options, GPU)
    msg = str(err.value)
    mean = _node_index(tiny.graph_bytes("fp32", "rgb"), "ReduceMean")
    name = onnx.load_from_string(tiny.graph_bytes("fp32", "rgb")).graph.node[mean].name or "unnamed"
    assert "\n" not in msg and "rgb graph" in msg and f"node {mean} ({name}, operator ReduceMean)" in msg
    assert "tensorrt_onnx_ops.txt" in msg and "edgefusion-export" in msg


def test_a_refused_operator_on_tensorrt_8_6_names_the_node_and_the_parser_s_words(trt, tiny, options):
    trt.set_version("8.6.2")
    trt.refuse_ops = {"Softmax"}
    with pytest.raises(BackendError) as err:
        load_engines(trt, tiny, "fp32", options, GPU)
    msg = str(err.value)
    softmax = _node_index(tiny.graph_bytes("fp32", "head"), "Softmax")
    assert "head graph" in msg and f"node {softmax}:" in msg and "op: Softmax" in msg


def test_a_build_that_gives_nothing_says_the_builder_s_last_error(trt, tiny, options):
    trt.build_returns_none = True
    with pytest.raises(BackendError) as err:
        load_engines(trt, tiny, "fp32", options, GPU)
    assert "could not build the rgb engine (fp32)" in str(err.value) and "build_returns_none" in str(err.value)
    assert _cache_files(options) == []


def test_the_logger_keeps_errors_and_warnings_and_drops_the_chatter(trt, capsys):
    logger = trt_logger(trt)
    assert trt_logger(trt) is logger  # one per process
    sev = trt.ILogger.Severity
    logger.log(sev.INFO, "tactic 12 of 300")
    logger.log(sev.VERBOSE, "layer fused")
    logger.log(sev.WARNING, "weights of\nlayer 3 out of range")
    logger.log(sev.INTERNAL_ERROR, "out of memory")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["edgefusion: TensorRT: weights of layer 3 out of range", "edgefusion: TensorRT: out of memory"]
    assert logger.last_error == "out of memory"


def test_systemd_is_told_to_wait_before_each_build_and_not_for_a_hit(trt, tiny, options, tmp_path, monkeypatch):
    import socket

    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))

    def received() -> list[str]:
        out = []
        while True:
            try:
                out.append(sock.recv(4096).decode())
            except BlockingIOError:
                return out

    try:
        load_engines(trt, tiny, "fp32", options, GPU)
        sent = received()
        assert len(sent) == 3 and all(m.startswith("EXTEND_TIMEOUT_USEC=") for m in sent)
        assert int(sent[0].split("=")[1]) >= 60 * 10**6  # minutes, in microseconds
        load_engines(trt, tiny, "fp32", options, GPU)
        assert received() == []
    finally:
        sock.close()


def test_type_stubs_alone_are_not_tensorrt(tmp_path, monkeypatch):
    """tensorrt-stubs installs a ``tensorrt`` folder of .pyi files, which imports as an empty
    namespace package: that is not TensorRT."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("__version__: str\n")
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendError, match="holds type stubs only"):
        import_tensorrt()


@pytest.fixture(scope="module")
def stub_signatures(tmp_path_factory) -> dict[tuple[str, str], list[list[str]]]:
    """Each method's parameter names in TensorRT 10.13's own stubs, fetched and patched by the
    very code of ``.ci/typecheck-tensorrt`` (skipped where pip cannot get them)."""
    import ast
    from importlib.machinery import SourceFileLoader
    from types import ModuleType

    loader = SourceFileLoader("typecheck_tensorrt", str(Path(__file__).parents[1] / ".ci" / "typecheck-tensorrt"))
    script = ModuleType(loader.name)
    script.__file__ = loader.path
    loader.exec_module(script)
    try:
        stubs = script.install_stubs(tmp_path_factory.mktemp("trt-stubs"))
    except script.Missing as err:
        pytest.skip(str(err))
    found: dict[tuple[str, str], list[list[str]]] = {}
    for node in ast.parse((stubs / "tensorrt_bindings" / "tensorrt.pyi").read_text()).body:
        for item in node.body if isinstance(node, ast.ClassDef) else ():
            if isinstance(item, ast.FunctionDef):
                found.setdefault((node.name, item.name), []).append([a.arg for a in item.args.args])
    return found


def test_the_fake_s_api_is_tensorrt_s(stub_signatures):
    """Every public method of the fake is a method of TensorRT 10.13's stubs, with the same
    parameter names in the same order (the fake's constructors aside)."""
    stubs = stub_signatures
    classes = ("Builder", "IBuilderConfig", "IOptimizationProfile", "ITimingCache", "INetworkDefinition", "OnnxParser")
    classes += ("ParserError", "Runtime", "ICudaEngine", "ILogger")
    for cls in classes:
        for name, member in vars(getattr(fake_tensorrt, cls)).items():
            fn = member.fget if isinstance(member, property) else member
            if name.startswith("_") or not inspect.isfunction(fn):
                continue
            params = list(inspect.signature(fn).parameters)
            overloads = stubs.get((cls, name), [])  # the fake may leave out trailing optional parameters
            assert any(real[: len(params)] == params for real in overloads), (cls, name, params, overloads)
