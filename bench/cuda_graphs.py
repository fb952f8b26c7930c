"""What CUDA graphs save per tick: the TensorRT backend's tick shape, replayed against launched.

    python bench/cuda_graphs.py [--ticks 2000] [--layers 6]    (an x86 machine with a CUDA GPU)

Needs cuda-bindings (the backend's default CUDA adapter) and CuPy (``pip install cupy-cuda12x``,
or cupy-cuda13x to match the driver), not TensorRT: small CuPy kernels stand in for the engines.
It runs the backend's own adapter (``open_cuda("cuda-python")``): page-locked inputs, device
buffers from ``malloc``, one stream. A tick is what the backend enqueues: per modality of the
demo bundle (its input and projection sizes), the copy in and an "encoder" (an elementwise
scaling of the whole input, then ``--layers`` small matrix-vector kernels with tanh, the last
writing the projection); then an LMF "head" (product of the projections, sum over the rank, a
linear layer, softmax) and the copy out of logits and probabilities; one synchronize. Each
kernel is tiny (the first layer reads 1024 of the input's values), so the time is launch cost,
which is what graphs remove. Two tick kinds, as the backend's graphs are keyed: every encoder
and the head (all sensors fresh), the head alone (nothing new).

Eager: every copy and kernel launched per tick. Graphs: each tick kind captured once through
the adapter (``begin_capture``/``end_capture``) and launched per tick. Reported as JSON on
stdout, in µs per tick, p50 and p99: ``enqueue`` (host time to launch the tick: the overhead)
and ``tick`` (enqueue + synchronize). The replayed ticks' outputs must equal the launched ones
bit for bit, on fresh inputs every tick (exit status 1 otherwise). Without CUDA or CuPy: one line
on stderr saying which, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np

from edgefusion.backends.base import BackendError
from edgefusion.bundle import default_bundle_path, load_bundle

FIRST_LAYER_INPUTS = 1024  # of each input's values, read by an encoder's first layer
HIDDEN = 64
CHECK_TICKS = 20  # ticks on fresh inputs whose outputs are compared

KERNELS = r"""
extern "C" __global__ void dense(const float* x, int n_in, const float* w, int n_out, int act, float* y) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n_out) return;
    float s = 0.0f;
    for (int i = 0; i < n_in; ++i) s += x[i] * w[i * n_out + j];
    y[j] = act ? tanhf(s) : s;
}

extern "C" __global__ void lmf_head(const float* p0, const float* p1, const float* p2, int n_mod, int rank,
                                    int d, const float* w, const float* b, int classes, float* out) {
    extern __shared__ float fused[];
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float s = 0.0f;
        for (int r = 0; r < rank; ++r) {
            float v = p0[r * d + j];
            if (n_mod > 1) v *= p1[r * d + j];
            if (n_mod > 2) v *= p2[r * d + j];
            s += v;
        }
        fused[j] = s;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    float* logits = out;
    float* probs = out + classes;
    float top = -3.0e38f, total = 0.0f;
    for (int c = 0; c < classes; ++c) {
        float z = b[c];
        for (int j = 0; j < d; ++j) z += fused[j] * w[j * classes + c];
        logits[c] = z;
        top = fmaxf(top, z);
    }
    for (int c = 0; c < classes; ++c) total += (probs[c] = expf(logits[c] - top));
    for (int c = 0; c < classes; ++c) probs[c] /= total;
}
"""


def fail(message: str) -> int:
    print(f"bench/cuda_graphs.py: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=2000, help="ticks timed per tick kind and mode")
    parser.add_argument("--layers", type=int, default=6, help="small kernels per encoder after its scaling")
    args = parser.parse_args(argv)
    from edgefusion.backends.tensorrt.cuda import open_cuda

    try:
        cuda = open_cuda("cuda-python")
        gpu = cuda.gpu()
    except BackendError as err:
        return fail(str(err))
    try:
        import cupy
    except ImportError as err:
        return fail(f"needs CuPy ({err}): pip install cupy-cuda12x (or cupy-cuda13x, as the driver)")
    try:
        bench = Bench(cuda, cupy, max(1, args.layers))
        try:
            report = bench.run(max(1, args.ticks))
        finally:
            bench.close()
    except BackendError as err:
        return fail(str(err))
    import cuda.bindings as cuda_bindings

    report = {
        "gpu": {"name": gpu.name, "compute_capability": list(gpu.compute_capability), "sm_count": gpu.sm_count},
        "cuda_bindings": cuda_bindings.__version__,
        "cupy": cupy.__version__,
        "driver": cupy.cuda.runtime.driverGetVersion(),
        **report,
    }
    print(json.dumps(report, indent=1))
    if not report["graph_outputs_equal_eager"]:
        return fail("the graph-replayed ticks' outputs differ from the launched ones")
    return 0


class Bench:
    """The tick's buffers (allocated once, as the backend's are), its kernels, and both ways to run it."""

    def __init__(self, cuda, cupy, layers: int):
        self.cuda, self.cp = cuda, cupy
        self.bundle = load_bundle(default_bundle_path())
        self.names = self.bundle.names
        self.classes = len(self.bundle.labels)
        self.rank, self.d = self.bundle.modality(self.names[0]).projection
        self.stream = cuda.stream_create()
        self.cp_stream = cupy.cuda.ExternalStream(cuda.stream_handle(self.stream), 0)
        self._free: list[Callable[[], None]] = [lambda: cuda.stream_destroy(self.stream)]
        module = cupy.RawModule(code=KERNELS)
        self.dense, self.lmf_head = module.get_function("dense"), module.get_function("lmf_head")
        rng = np.random.default_rng(0)
        self.host_in = {m: self._pinned((1, *self.bundle.modality(m).shape)) for m in self.names}
        self.dev_in = {m: self._device(self.host_in[m].shape) for m in self.names}
        self.proj = {m: self._device((self.rank * self.d,)) for m in self.names}
        self.host_out = self._pinned((2 * self.classes,))
        self.dev_out = self._device((2 * self.classes,))
        self.scaled = {m: cupy.empty(self.dev_in[m].size, np.float32) for m in self.names}
        self.layers = {m: self._layers(rng, min(FIRST_LAYER_INPUTS, self.dev_in[m].size), layers) for m in self.names}
        self.head_w = cupy.asarray(rng.normal(0, self.d**-0.5, (self.d, self.classes)).astype(np.float32))
        self.head_b = cupy.asarray(rng.normal(0, 0.1, self.classes).astype(np.float32))

    def _pinned(self, shape: tuple[int, ...]) -> np.ndarray:
        array = self.cuda.host_alloc(shape, np.dtype(np.float32))
        self._free.append(lambda: self.cuda.free_host(array))
        array.fill(0)
        return array

    def _device(self, shape: tuple[int, ...]):
        """Device memory from the adapter (as the backend's), seen by CuPy without owning it."""
        nbytes = int(np.prod(shape)) * 4
        ptr = self.cuda.malloc(nbytes)
        self._free.append(lambda: self.cuda.free(ptr))
        memory = self.cp.cuda.UnownedMemory(ptr, nbytes, None, 0)  # device 0, as the adapter
        return self.cp.ndarray(shape, np.float32, self.cp.cuda.MemoryPointer(memory, 0))

    def _layers(self, rng, n_in: int, layers: int) -> list:
        """(weights, output) per small kernel: n_in -> HIDDEN, HIDDEN -> HIDDEN..., -> the projection."""
        sizes = [n_in, *[HIDDEN] * (layers - 1), self.rank * self.d]
        out = []
        for a, b in zip(sizes, sizes[1:]):
            w = self.cp.asarray(rng.normal(0, a**-0.5, (a, b)).astype(np.float32))
            out.append((w, self.cp.empty(b, np.float32)))
        return out

    # -- one tick ----------------------------------------------------------------------------------
    def enqueue(self, encoders: tuple[str, ...]) -> None:
        cp, i32 = self.cp, np.int32
        with self.cp_stream:
            for m in encoders:
                self.cuda.copy_htod_async(self.dev_in[m].data.ptr, self.host_in[m], self.stream)
                cp.multiply(self.dev_in[m].ravel(), np.float32(1 / 255), out=self.scaled[m])
                x, n_in = self.scaled[m], self.layers[m][0][0].shape[0]
                for k, (w, y) in enumerate(self.layers[m]):
                    last = k == len(self.layers[m]) - 1
                    out = self.proj[m] if last else y
                    n_out = out.size
                    self.dense(((n_out + 63) // 64,), (64,), (x, i32(n_in), w, i32(n_out), i32(not last), out))
                    x, n_in = out, n_out
            p = [self.proj[m] for m in self.names] + [self.proj[self.names[0]]] * (3 - len(self.names))
            args = (*p[:3], i32(len(self.names)), i32(self.rank), i32(self.d), self.head_w, self.head_b)
            self.lmf_head((1,), (32,), (*args, i32(self.classes), self.dev_out), shared_mem=4 * self.d)
        self.cuda.copy_dtoh_async(self.host_out, self.dev_out.data.ptr, self.stream)

    def capture(self, encoders: tuple[str, ...]):
        self.cuda.begin_capture(self.stream)
        try:
            self.enqueue(encoders)
        finally:
            graph = self.cuda.end_capture(self.stream)
        self._free.append(lambda: self.cuda.destroy_graph(graph))
        return graph

    # -- the measurement -----------------------------------------------------------------------------
    def run(self, ticks: int) -> dict:
        kinds = {"all_encoders": self.names, "head_only": ()}
        self.fill(np.random.default_rng(1))  # also compiles the kernels, outside any capture
        self.enqueue(self.names)
        self.cuda.synchronize(self.stream)
        graphs = {kind: self.capture(encoders) for kind, encoders in kinds.items()}
        eager = {kind: (lambda e=encoders: self.enqueue(e)) for kind, encoders in kinds.items()}
        replay = {kind: (lambda g=graph: self.cuda.launch(g, self.stream)) for kind, graph in graphs.items()}
        equal = self.outputs(eager["all_encoders"]) == self.outputs(replay["all_encoders"])
        report: dict = {"ticks": ticks, "kernels_per_encoder": len(self.layers[self.names[0]]) + 1}
        report["ops_per_tick"] = {
            "all_encoders": sum(2 + len(self.layers[m]) for m in self.names) + 2,
            "head_only": 2,
        }
        for mode, runs in (("eager", eager), ("graphs", replay)):
            report[mode] = {kind: self.time(tick, ticks) for kind, tick in runs.items()}
        report["tick_p50_eager_over_graphs"] = {
            kind: round(report["eager"][kind]["tick"]["p50"] / report["graphs"][kind]["tick"]["p50"], 2)
            for kind in kinds
        }
        report["graph_outputs_equal_eager"] = equal
        return report

    def fill(self, rng) -> None:
        for m in self.names:
            self.host_in[m][...] = rng.uniform(0, 255, self.host_in[m].shape)

    def outputs(self, tick: Callable[[], None]) -> list[bytes]:
        """The outputs of CHECK_TICKS ticks, each on new inputs (the same sequence for every caller)."""
        rng, out = np.random.default_rng(2), []
        for _ in range(CHECK_TICKS):
            self.fill(rng)
            tick()
            self.cuda.synchronize(self.stream)
            out.append(self.host_out.tobytes())
        return out

    def time(self, tick: Callable[[], None], ticks: int) -> dict:
        enqueue, total = np.empty(ticks), np.empty(ticks)
        for i in range(ticks):
            start = time.perf_counter_ns()
            tick()
            launched = time.perf_counter_ns()
            self.cuda.synchronize(self.stream)
            done = time.perf_counter_ns()
            enqueue[i], total[i] = (launched - start) / 1e3, (done - start) / 1e3
        return {"enqueue": percentiles(enqueue), "tick": percentiles(total)}

    def close(self) -> None:
        self.cuda.synchronize(self.stream)
        for free in reversed(self._free):
            free()
        self.cuda.close()


def percentiles(us: np.ndarray) -> dict:
    return {"p50": round(float(np.percentile(us, 50)), 1), "p99": round(float(np.percentile(us, 99)), 1)}


if __name__ == "__main__":
    sys.exit(main())
