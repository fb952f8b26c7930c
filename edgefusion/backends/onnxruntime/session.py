"""One way to open an ONNX Runtime session, for the bundle's checks, the backend, the bench and the
exporter's checks; and one way to import onnxruntime (``import_onnxruntime``), quiet and out of HOME."""

from __future__ import annotations

import os
from pathlib import Path

from edgefusion.backends.base import BackendError, first_line

# Where onnxruntime would look for a graph's external data files: a path below a non-directory, so
# no such file can ever be found. A bundle's graphs carry their weights inside themselves (the
# bundle's hashes cover only its listed files), and a graph opened from bytes would otherwise
# read external data relative to the current directory.
NO_EXTERNAL_DATA = "/dev/null"


def import_onnxruntime():
    """onnxruntime, imported with its telemetry off.

    Its import otherwise writes a device ID under ~/.cache/Microsoft and, where the home folder is
    not writable (a service user's), prints a coloured "Failed to persist telemetry device ID"
    warning on every start. ORT_DISABLE_TELEMETRY is read once, at the import; a value the user
    set is kept."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def open_session(
    model: str | Path | bytes, threads: int = 1, providers: list[str] | None = None, optimize: bool = True
):
    """A session on ``model`` (a file, or a graph's bytes) with ``threads`` intra-op threads
    (0 = library default) and every graph optimisation (``optimize=False``: none, for a quick
    check); the CUDA provider first where this onnxruntime build has it (onnxruntime-gpu on a
    Jetson), which copies host buffers itself. External data is never read."""
    ort = import_onnxruntime()

    opts = ort.SessionOptions()
    # Fatal only: every error onnxruntime logs (a graph refused, a run that fails) also comes back as
    # an exception, which the caller turns into its one line; logged too, it would be a second one.
    opts.log_severity_level = 4
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path", NO_EXTERNAL_DATA)
    available = ort.get_available_providers()
    providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    what = "the graph" if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=providers)
    except Exception as err:  # ORT raises its own exception types for a refused graph
        reason = first_line(err)
        if "external data" in reason.lower():
            reason = (
                "it keeps weights in external data files, which are not allowed: save the graph with its weights inside"
            )
        raise BackendError(f"onnxruntime could not load {what}: {reason}") from err


def run_options():
    """One RunOptions to pass to every run_with_iobinding call.

    Without it (run_options=None) onnxruntime's binding leaves a few 124-byte objects behind per
    thousand runs; a bare RunOptions avoids that but makes the Python wrapper raise and catch an
    exception per call looking up "gpu_graph_id" (~30 us, measured with onnxruntime 1.32).
    Setting that entry to -1 ("no CUDA-graph capture", the default meaning) avoids both."""
    ort = import_onnxruntime()

    opts = ort.RunOptions()
    opts.add_run_config_entry("gpu_graph_id", "-1")
    return opts
