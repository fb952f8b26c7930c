"""``edgefusion bench``: what the runtime costs over bare inference, and what caching saves.

Everything runs on the same inputs, in robot time rather than wall time: ticks at 30 Hz, a new
camera frame every tick, a new audio window every third tick (10 Hz), replayed from memory with
no sleeping, so the figures are compute, not waiting.

  (a) backend: submit + wait of the graphs a tick runs, data already in place
  (b) tick: the full pipeline tick (sync, copy-in, submit, wait, result), its CPU including the
      sink writer thread's encoding and writing of the result line
  (c) monolithic: the single graph recomputed every tick (no caching)
  (d) PyTorch eager of the same model, when torch and ``--checkpoint`` are given
"""

from __future__ import annotations

import gc
import resource
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np

from edgefusion.backends.base import Backend
from edgefusion.backends.onnxruntime.session import open_session, run_options
from edgefusion.bundle import Bundle
from edgefusion.loop import Runtime
from edgefusion.modalities import MODALITIES
from edgefusion.sensors.base import Sample, SensorState
from edgefusion.sinks import Sink

TICK_HZ = 30
AUDIO_EVERY = 3  # ticks per new audio window: 10 Hz


class _Replay:
    """A SampleSource replaying from memory, advanced by the benchmark's robot clock (no thread)."""

    dropped: dict[str, int] = {}  # replayed from memory: nothing to drop

    def __init__(self, modality: str, frames: np.ndarray, every: int):
        self.modality, self.every = modality, every
        self.counters: Counter[str] = Counter()  # events the sync counts (torn copies); no device
        self._samples = [Sample(f, 0.0, i + 1) for i, f in enumerate(frames)]
        self.current = self._samples[0]

    def advance(self, tick: int, t: float) -> None:
        if tick % self.every == 0:
            k = (tick // self.every) % len(self._samples)
            s = self._samples[k]
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


def _inputs(n: int, seed: int = 123):
    from edgefusion.task import generate

    b = generate(seed, n)
    return {m: getattr(b, m) for m in MODALITIES}


def _pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def run_bench(bundle: Bundle, backend: Backend, ticks: int = 3000, alloc_ticks: int = 10_000, checkpoint=None) -> dict:
    data = _inputs(12)
    sensors = {m: _Replay(m, data[m], AUDIO_EVERY if m == "audio" else 1) for m in MODALITIES}
    runtime = Runtime(backend, sensors, {m: 1.0 for m in MODALITIES}, TICK_HZ, (_NullSink(),))
    runtime.start()
    period = 1.0 / TICK_HZ
    fresh = [True] * len(MODALITIES)
    present = [True] * len(MODALITIES)

    def advance(k: int) -> None:
        """What the sensors' own threads do in a live run: not part of the tick's cost."""
        for s in sensors.values():
            s.advance(k, k * period)

    def pipeline_tick(k: int) -> None:
        runtime.tick(k * period)

    audio = MODALITIES.index("audio")

    def backend_tick(k: int) -> None:
        fresh[audio] = k % AUDIO_EVERY == 0
        backend.submit(fresh, present)
        backend.wait()

    monolithic_tick = _monolithic(bundle, backend, data)

    for k in range(200):  # warm-up: first runs allocate arenas and pick kernels
        advance(k)
        pipeline_tick(k)
        backend_tick(k)
        monolithic_tick(k)

    # (a), (b), (c) interleaved in blocks of 100 ticks, so a busy machine hurts all alike.
    runs = {"a": backend_tick, "b": pipeline_tick, "c": monolithic_tick}
    wall: dict[str, list[float]] = {key: [] for key in runs}
    cpu = dict.fromkeys(runs, 0.0)
    k = 0
    for _ in range(ticks // 100):
        for key, fn in runs.items():
            c0 = time.process_time()
            for _ in range(100):
                advance(k)
                t0 = time.perf_counter()
                fn(k)
                wall[key].append(time.perf_counter() - t0)
                k += 1
            if key == "b":  # the writer thread's lines belong to (b)'s CPU, not the next block's
                runtime.writer.wait_written()
            cpu[key] += time.process_time() - c0

    def alloc_tick() -> None:
        nonlocal k
        advance(k)
        pipeline_tick(k)
        k += 1

    growth = allocation_growth(alloc_tick, alloc_ticks, warmup=alloc_ticks, settle=lambda: _drain(runtime))
    runtime.stop()

    per_robot_s = {key: cpu[key] / len(wall[key]) * TICK_HZ for key in runs}
    report = {
        "backend": backend.name,
        "precision": backend.precision,
        "ticks": len(wall["b"]),
        "backend_p50_ms": _pct(wall["a"], 50),
        "backend_p99_ms": _pct(wall["a"], 99),
        "tick_p50_ms": _pct(wall["b"], 50),
        "tick_p99_ms": _pct(wall["b"], 99),
        "monolithic_p50_ms": _pct(wall["c"], 50),
        "monolithic_p99_ms": _pct(wall["c"], 99),
        "overhead_ratio": _pct(wall["b"], 50) / _pct(wall["a"], 50),
        "cpu_s_per_robot_s": {"backend": per_robot_s["a"], "tick": per_robot_s["b"], "monolithic": per_robot_s["c"]},
        "caching_compute_ratio": per_robot_s["c"] / per_robot_s["b"],
        "encoder_runs": dict(backend.stats.encoder_runs),
        "alloc_growth_bytes": growth["total"],
        "alloc_growth_by_file": {k: v for k, v in growth.items() if k != "total"},
        "alloc_ticks": alloc_ticks,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "robot_time": {"tick_hz": TICK_HZ, "camera_hz": TICK_HZ, "audio_windows_hz": TICK_HZ / AUDIO_EVERY},
    }
    report["torch_eager"] = _torch_eager(checkpoint, data)
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


def _monolithic(bundle: Bundle, backend: Backend, data: dict):
    """(c): a tick that runs the monolithic graph on every input, bound once like the split graphs.

    The bundle carries the monolithic graph in fp32 only, so (c) is always fp32."""
    spec = bundle.manifest["monolithic"]
    sess = open_session(
        bundle.graph_path("fp32", "monolithic"), getattr(backend, "threads", 1), getattr(backend, "providers", None)
    )
    *inputs, present = spec["inputs"]
    bufs = {name: np.zeros((1, *data[m].shape[1:]), np.float32) for name, m in zip(inputs, MODALITIES)}
    bufs[present] = np.ones((1, len(MODALITIES)), np.float32)
    out = {name: np.zeros((1, len(bundle.labels)), np.float32) for name in spec["outputs"]}
    binding = sess.io_binding()
    for name, buf in bufs.items():
        binding.bind_input(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
    for name, buf in out.items():
        binding.bind_output(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)

    opts = run_options()

    def tick(k: int) -> None:
        for name, m in zip(inputs, MODALITIES):
            np.copyto(bufs[name][0], data[m][k % len(data[m])])
        sess.run_with_iobinding(binding, opts)

    return tick


DEFAULT_CHECKPOINT = Path("runs/lmf/checkpoint.pt")


def _torch_eager(checkpoint, data: dict) -> dict:
    """(d), where torch and the LMF checkpoint are here: the bundle carries no torch weights."""
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
    lines = [
        f"backend {r['backend']} ({r['precision']}), {r['ticks']} ticks at {TICK_HZ} Hz robot time "
        f"(camera every tick, audio window every {AUDIO_EVERY})",
        f"(a) backend      p50 {r['backend_p50_ms']:.3f} ms  p99 {r['backend_p99_ms']:.3f} ms",
        f"(b) tick         p50 {r['tick_p50_ms']:.3f} ms  p99 {r['tick_p99_ms']:.3f} ms   overhead (b)/(a) "
        f"{r['overhead_ratio']:.3f}",
        f"(c) monolithic   p50 {r['monolithic_p50_ms']:.3f} ms  p99 {r['monolithic_p99_ms']:.3f} ms",
        f"CPU s per robot s: tick {r['cpu_s_per_robot_s']['tick']:.4f}, monolithic "
        f"{r['cpu_s_per_robot_s']['monolithic']:.4f}  → caching saves ×{r['caching_compute_ratio']:.2f}",
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
