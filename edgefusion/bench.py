"""``edgefusion bench``: what the runtime costs over bare inference, and what caching saves.

Everything runs on the same inputs, in robot time rather than wall time: ticks at 30 Hz, a new
sample of each modality at its manifest ``rate_hz`` (at most one per tick; the demo's cameras
every tick, its audio windows every third), replayed from memory with no sleeping, so the
figures are compute, not waiting. The inputs are the built-in task's data for a bundle of that
task, else random values in each stream's documented range (rgb 0..255, depth metres with holes,
audio int16 units) at the bundle's shapes.

  (a) backend: submit + wait of the graphs a tick runs, data already in place
  (b) tick: the full pipeline tick (sync, copy-in, submit, wait, result), its CPU including the
      sink writer thread's encoding and writing of the result line
  (c) monolithic: the single graph recomputed every tick (no caching)
  (d) PyTorch eager of the same model, when torch and ``--checkpoint`` are given (the built-in task's)
  ideal: each encoder and the head run bare, alone; the least a caching runtime can spend per
      robot second is the head every tick plus each encoder once per new sample of its modality
"""

from __future__ import annotations

import gc
import resource
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefusion.backends.base import Backend
from edgefusion.backends.onnxruntime.session import open_session, run_options
from edgefusion.bundle import Bundle
from edgefusion.evaluate import task_inputs
from edgefusion.loop import Runtime
from edgefusion.modalities import MODALITIES, STREAMS, ModalitySpec
from edgefusion.sensors.base import Sample, SensorState
from edgefusion.sinks import Sink

TICK_HZ = 30
BLOCK = 100  # ticks per timed block; (a), (b), (c) and the bare graphs take turns block by block


class _Replay:
    """A SampleSource replaying from memory, advanced by the benchmark's robot clock (no thread):
    a new sample at the ticks where ``rate_hz`` (at most the tick rate) makes one due."""

    dropped: dict[str, int] = {}  # replayed from memory: nothing to drop

    def __init__(self, frames: np.ndarray, rate_hz: float):
        self.rate = min(rate_hz, TICK_HZ)
        self.counters: Counter[str] = Counter()  # events the sync counts (torn copies); no device
        self._samples = [Sample(f, 0.0, i + 1) for i, f in enumerate(frames)]
        self.current = self._samples[0]

    def due(self, tick: int) -> bool:
        """Whether a new sample arrives at ``tick``: ``rate`` of them per robot second, evenly."""
        return tick == 0 or int(tick * self.rate / TICK_HZ) != int((tick - 1) * self.rate / TICK_HZ)

    def advance(self, tick: int, t: float) -> None:
        if self.due(tick):
            s = self._samples[int(tick * self.rate / TICK_HZ) % len(self._samples)]
            # A new seq every time: the same pixels replayed are still a new frame.
            self.current = Sample(s.data, t, tick + 1)

    def read_latest(self, max_age_s, now=None):
        return self.current

    def state(self, max_age_s, now=None):
        return SensorState.OK, ""

    def poll(self, max_age_s, now=None):
        return self.current, SensorState.OK, ""

    def connect(self):
        pass

    def disconnect(self):
        pass


class _NullSink(Sink):
    def write(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass


def bench_inputs(bundle: Bundle, n: int, seed: int = 123) -> tuple[dict[str, np.ndarray], str]:
    """``n`` inputs per modality name, and what they are: the built-in task's for a bundle of that
    task, else random values in each stream's range."""
    from edgefusion.task import generate

    task = task_inputs(bundle, generate(seed, n)) if _may_be_task(bundle) else None
    if task is not None:
        return task, "the built-in task's data"
    rng = np.random.default_rng(seed)
    return {spec.name: _random(spec, n, rng) for spec in bundle.modalities}, "random values in each stream's range"


def _may_be_task(bundle: Bundle) -> bool:
    """Cheap first test before rendering task data: the labels."""
    from edgefusion.task import INTENTS

    return bundle.labels == tuple(INTENTS)


def _random(spec: ModalitySpec, n: int, rng) -> np.ndarray:
    """What the stream delivers (spec.md): rgb 0..255; depth metres, 0 where there is no data; audio int16 units."""
    shape = (n, *spec.shape)
    if spec.sensor == "rgb":
        x = rng.uniform(0, 255, shape)
    elif spec.sensor == "depth":
        x = rng.uniform(0.3, 6.0, shape) * (rng.random(shape) > 0.05)
    else:
        x = np.clip(rng.normal(0, 3000, shape), -32767, 32767)
    return x.astype(np.float32)


def _pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def run_bench(bundle: Bundle, backend: Backend, ticks: int = 3000, alloc_ticks: int = 10_000, checkpoint=None) -> dict:
    data, source = bench_inputs(bundle, 12)
    specs = bundle.modalities
    streams = {spec.sensor: _Replay(data[spec.name], spec.rate_hz) for spec in specs}
    runtime = Runtime(backend, streams, dict.fromkeys(STREAMS, 1.0), TICK_HZ, (_NullSink(),))
    runtime.start()
    period = 1.0 / TICK_HZ
    replays = [streams[spec.sensor] for spec in specs]
    fresh = [True] * len(specs)
    present = [True] * len(specs)

    def advance(k: int) -> None:
        """What the sensors' own threads do in a live run: not part of the tick's cost."""
        for s in replays:
            s.advance(k, k * period)

    def pipeline_tick(k: int) -> None:
        runtime.tick(k * period)

    def backend_tick(k: int) -> None:
        for i, s in enumerate(replays):
            fresh[i] = s.due(k)
        backend.submit(fresh, present)
        backend.wait()

    monolithic_tick = _monolithic(bundle, backend, data)
    bare = _bare_graphs(bundle, backend, data)

    for k in range(200):  # warm-up: first runs allocate arenas and pick kernels
        advance(k)
        pipeline_tick(k)
        backend_tick(k)
        monolithic_tick(k)
        for run in bare.values():
            run(k)

    # (a), (b), (c) and the bare graphs interleaved in blocks, so a busy machine hurts all alike.
    runs = {"a": backend_tick, "b": pipeline_tick, "c": monolithic_tick}
    wall: dict[str, list[float]] = {key: [] for key in runs}
    cpu = dict.fromkeys(runs, 0.0)
    bare_cpu = dict.fromkeys(bare, 0.0)
    k = 0
    for _ in range(max(1, ticks // BLOCK)):
        for key, fn in runs.items():
            c0 = time.process_time()
            for _ in range(BLOCK):
                advance(k)
                t0 = time.perf_counter()
                fn(k)
                wall[key].append(time.perf_counter() - t0)
                k += 1
            if key == "b":  # the writer thread's lines belong to (b)'s CPU, not the next block's
                runtime.writer.wait_written()
            cpu[key] += time.process_time() - c0
        for graph, fn in bare.items():
            c0 = time.process_time()
            for j in range(BLOCK):
                fn(j)
            bare_cpu[graph] += time.process_time() - c0

    def alloc_tick() -> None:
        nonlocal k
        advance(k)
        pipeline_tick(k)
        k += 1

    growth = allocation_growth(alloc_tick, alloc_ticks, warmup=alloc_ticks, settle=lambda: _drain(runtime))
    runtime.stop()

    per_robot_s = {key: cpu[key] / len(wall[key]) * TICK_HZ for key in runs}
    per_run_ms = {graph: bare_cpu[graph] / len(wall["a"]) * 1000 for graph in bare}
    rates = {spec.name: min(spec.rate_hz, TICK_HZ) for spec in specs}
    ideal = (per_run_ms["head"] * TICK_HZ + sum(per_run_ms[m] * rates[m] for m in rates)) / 1000
    comparable = backend.name == "onnxruntime"
    report = {
        "backend": backend.name,
        "precision": backend.precision,
        "degraded": backend.degraded,  # not the backend asked for (--backend tensorrt where it cannot run)
        "inputs": source,
        "ticks": len(wall["b"]),
        "backend_p50_ms": _pct(wall["a"], 50),
        "backend_p99_ms": _pct(wall["a"], 99),
        "tick_p50_ms": _pct(wall["b"], 50),
        "tick_p99_ms": _pct(wall["b"], 99),
        "monolithic_p50_ms": _pct(wall["c"], 50),
        "monolithic_p99_ms": _pct(wall["c"], 99),
        "overhead_ratio": _pct(wall["b"], 50) / _pct(wall["a"], 50),
        "cpu_s_per_robot_s": {
            "backend": per_robot_s["a"],
            "tick": per_robot_s["b"],
            "monolithic": per_robot_s["c"],
            "ideal": ideal,
        },
        # The monolithic graph and the bare graphs run in ONNX Runtime sessions: against another
        # backend's ticks (TensorRT's, on the GPU) their CPU figures compare nothing, so the
        # caching ratios are given only where the backend is ONNX Runtime itself.
        "reference": "onnxruntime",
        "caching_compute_ratio": per_robot_s["c"] / per_robot_s["b"] if comparable else None,
        # What caching could save at best (monolithic over ideal), and how much of the ideal the
        # backend reaches (ideal over backend: 1.0 = it spends nothing beyond the graphs it must run).
        "caching_ideal_ratio": per_robot_s["c"] / ideal if comparable else None,
        "caching_efficiency": ideal / per_robot_s["a"] if comparable else None,
        "graph_cpu_ms": per_run_ms,
        "encoder_runs": dict(backend.stats.encoder_runs),
        "alloc_growth_bytes": growth["total"],
        "alloc_growth_by_file": {k: v for k, v in growth.items() if k != "total"},
        "alloc_ticks": alloc_ticks,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "robot_time": {"tick_hz": TICK_HZ, "rate_hz": rates},
    }
    report["torch_eager"] = _torch_eager(checkpoint, bundle, data)
    return report


def allocation_growth(step, n: int, warmup: int = 1000, settle=gc.collect) -> dict[str, int]:
    """Bytes still allocated (Python heap) after ``n`` more calls of ``step`` than before them,
    by the source file that allocated them ("total" for the sum).

    Warm-up allocations are not growth: counters passing CPython's cached small ints, and caches
    that libraries fill on first use (the bench warms up for as many steps as it measures: the
    first 10,000-tick window still shows a few dozen bytes of such effects, later ones none).
    The breakdown names the file that allocated what remains. Snapshots, not
    get_traced_memory(), so the measurement's own objects are not counted; ``settle`` runs
    before each snapshot (by default a garbage collection: cyclic garbage is not growth)."""
    tracemalloc.start()
    try:
        for _ in range(warmup):
            step()
        settle()
        before = tracemalloc.take_snapshot()
        for _ in range(n):
            step()
        settle()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(own).compare_to(before.filter_traces(own), "filename")
    by_file = {d.traceback[0].filename: d.size_diff for d in diff if d.size_diff}
    return {"total": sum(by_file.values()), **by_file}


def _drain(runtime: Runtime) -> None:
    """Wait until the sink writer has written what the ticks handed it, then collect garbage."""
    runtime.writer.wait_written()
    gc.collect()


def _bound(bundle: Bundle, backend: Backend, graph: str, inputs: dict[str, np.ndarray], outputs: dict[str, tuple]):
    """A session on ``graph`` of the backend's precision (the monolithic one: fp32, the only one
    the bundle carries) with ``inputs`` (name → buffer) and fresh output buffers bound once, and
    the call that runs it."""
    precision = "fp32" if graph == "monolithic" else backend.precision
    sess = open_session(
        bundle.graph_bytes(precision, graph), getattr(backend, "threads", 1), getattr(backend, "providers", None)
    )
    binding = sess.io_binding()
    out = {name: np.zeros(shape, np.float32) for name, shape in outputs.items()}
    for bind, buffers in ((binding.bind_input, inputs), (binding.bind_output, out)):
        for name, buf in buffers.items():
            bind(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
    opts = run_options()
    return lambda: sess.run_with_iobinding(binding, opts)


def _monolithic(bundle: Bundle, backend: Backend, data: dict):
    """(c): a tick that runs the monolithic graph on every input, bound once like the split graphs."""
    spec = bundle.manifest["monolithic"]
    *inputs, present = spec["inputs"]
    names = bundle.names
    bufs = {name: np.zeros((1, *data[m].shape[1:]), np.float32) for name, m in zip(inputs, names)}
    bufs[present] = np.ones((1, len(names)), np.float32)
    run = _bound(bundle, backend, "monolithic", bufs, {name: (1, len(bundle.labels)) for name in spec["outputs"]})

    def tick(k: int) -> None:
        for name, m in zip(inputs, names):
            np.copyto(bufs[name][0], data[m][k % len(data[m])])
        run()

    return tick


def _bare_graphs(bundle: Bundle, backend: Backend, data: dict) -> dict:
    """The ideal's parts: each encoder on its own (a new input copied in, as a tick copies one),
    and the head, each a call of ``k``."""
    runs: dict[str, Callable[[int], None]] = {}
    for spec in bundle.modalities:
        buf = np.zeros((1, *spec.shape), np.float32)
        run = _bound(bundle, backend, spec.name, {spec.input_name: buf}, {spec.output_name: (1, *spec.projection)})
        runs[spec.name] = _fed(run, buf, data[spec.name])
    head = bundle.manifest["head"]
    projections = {
        name: np.zeros((1, *spec.projection), np.float32) for name, spec in zip(head["inputs"], bundle.modalities)
    }
    run_head = _bound(bundle, backend, "head", projections, {name: (1, len(bundle.labels)) for name in head["outputs"]})
    runs["head"] = lambda k: run_head()
    return runs


def _fed(run: Callable[[], None], buf: np.ndarray, frames: np.ndarray) -> Callable[[int], None]:
    """``run`` after copying sample ``k`` of ``frames`` into ``buf``."""

    def step(k: int) -> None:
        np.copyto(buf[0], frames[k % len(frames)])
        run()

    return step


DEFAULT_CHECKPOINT = Path("runs/lmf/checkpoint.pt")


def _torch_eager(checkpoint, bundle: Bundle, data: dict) -> dict:
    """(d), where torch and the LMF checkpoint are here: the bundle carries no torch weights. The
    checkpoint is the built-in task's three-modality model, so only its bundles are compared."""
    if bundle.names != MODALITIES:
        return {"skipped": f"the checkpoint is the built-in task's model over {', '.join(MODALITIES)}"}
    checkpoint = checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.exists() else None)
    if checkpoint is None:
        return {"skipped": f"no checkpoint: pass --checkpoint (default {DEFAULT_CHECKPOINT}) from edgefusion-export"}
    try:
        import torch

        from edgefusion.export.pipeline import load_checkpoint
    except ImportError:
        return {"skipped": "torch is not installed (pip install 'edgefusion[export]')"}
    torch.set_num_threads(1)
    model, _ = load_checkpoint(checkpoint)
    # The whole model on every tick, like (c): there are no split graphs in eager PyTorch.
    x = [torch.from_numpy(data[m][:1]) for m in MODALITIES]
    present = torch.ones(1, len(MODALITIES))
    times = []
    with torch.no_grad():
        for k in range(600):
            t0 = time.perf_counter()
            model(*x, present)
            if k >= 100:
                times.append(time.perf_counter() - t0)
    return {"p50_ms": _pct(times, 50), "p99_ms": _pct(times, 99)}


def render(report: dict) -> str:
    r = report
    cpu = r["cpu_s_per_robot_s"]
    rates = ", ".join(f"{m} {hz:g} Hz" for m, hz in r["robot_time"]["rate_hz"].items())
    lines = [f"DEGRADED: {r['degraded']}"] if r["degraded"] else []
    lines += [
        f"backend {r['backend']} ({r['precision']}), {r['ticks']} ticks at {TICK_HZ} Hz robot time "
        f"(new samples: {rates}; inputs: {r['inputs']})",
        f"(a) backend      p50 {r['backend_p50_ms']:.3f} ms  p99 {r['backend_p99_ms']:.3f} ms",
        f"(b) tick         p50 {r['tick_p50_ms']:.3f} ms  p99 {r['tick_p99_ms']:.3f} ms   overhead (b)/(a) "
        f"{r['overhead_ratio']:.3f}",
        f"(c) monolithic   p50 {r['monolithic_p50_ms']:.3f} ms  p99 {r['monolithic_p99_ms']:.3f} ms",
        "graphs bare (CPU ms per run): " + ", ".join(f"{g} {ms:.3f}" for g, ms in r["graph_cpu_ms"].items()),
        f"CPU s per robot s: tick {cpu['tick']:.4f}, backend {cpu['backend']:.4f}, monolithic "
        f"{cpu['monolithic']:.4f}, ideal {cpu['ideal']:.4f}",
        (
            f"caching saves ×{r['caching_compute_ratio']:.2f} (tick vs monolithic); at best "
            f"×{r['caching_ideal_ratio']:.2f} (ideal vs monolithic); the backend reaches "
            f"{r['caching_efficiency']:.0%} of the ideal"
            if r["caching_efficiency"] is not None
            else f"caching: not compared (the monolithic and bare graphs run on {r['reference']}, the ticks on "
            f"{r['backend']})"
        ),
        f"allocation growth over {r['alloc_ticks']} ticks: {r['alloc_growth_bytes']} bytes "
        f"{r['alloc_growth_by_file'] or ''}; max RSS {r['rss_mb']:.0f} MB",
        "(d) torch eager  "
        + (
            f"p50 {r['torch_eager']['p50_ms']:.3f} ms  p99 {r['torch_eager']['p99_ms']:.3f} ms"
            if "p50_ms" in r["torch_eager"]
            else f"skipped: {r['torch_eager']['skipped']}"
        ),
    ]
    return "\n".join(lines)
