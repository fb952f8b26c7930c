"""One way to open an ONNX Runtime session, for the backend, the bench and the exporter's checks."""

from __future__ import annotations

from pathlib import Path

from edgefusion.backends.base import BackendError


def open_session(path: str | Path, threads: int = 1, providers: list[str] | None = None):
    """A session with ``threads`` intra-op threads (0 = library default) and every graph
    optimisation; the CUDA provider first where this onnxruntime build has it (onnxruntime-gpu
    on a Jetson), which copies host buffers itself."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as err:  # ORT raises its own exception types for a refused graph
        raise BackendError(f"onnxruntime could not load {path}: {str(err).splitlines()[0]}") from err


def run_options():
    """One RunOptions to pass to every run_with_iobinding call.

    Without it (run_options=None) onnxruntime's binding leaves a few 124-byte objects behind per
    thousand runs; a bare RunOptions avoids that but makes the Python wrapper raise and catch an
    exception per call looking up "gpu_graph_id" (~30 us, measured with onnxruntime 1.32).
    Setting that entry to -1 ("no CUDA-graph capture", the default meaning) avoids both."""
    import onnxruntime as ort

    opts = ort.RunOptions()
    opts.add_run_config_entry("gpu_graph_id", "-1")
    return opts
