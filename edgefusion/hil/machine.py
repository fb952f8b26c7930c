"""The machine a HIL run ran on, as the report's first table: a result is only worth filing with the
JetPack, TensorRT, CUDA and camera firmware it was measured on.

Every probe answers; none raises. A fact this machine lacks reads "not found (<why>)", so the
report of a workstation run says plainly that it was not a Jetson. The file-based probes take a
``root`` so that a test can point them at a fake Jetson tree (a Jetson's files cannot exist here).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

PROBE_TIMEOUT_S = 10  # nvidia-smi on a Jetson or a hung driver; a fact is not worth a hung report


def _not_found(why: str) -> str:
    return f"not found ({why})"


def _read(root: Path, path: str) -> str | None:
    try:
        return (root / path.lstrip("/")).read_text(errors="replace").replace("\0", "").strip()
    except OSError:
        return None


def _command(*argv: str) -> str | None:
    """The command's stdout, stripped; None where it is missing, fails or hangs."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def _dpkg_version(root: Path, package: str) -> str | None:
    return _command("dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f=${Version}", package)


def l4t(root: Path) -> str:
    """L4T from /etc/nv_tegra_release ("# R36 (release), REVISION: 3.0, ...": R36.3.0), and the
    nvidia-l4t-core package's version where dpkg knows it."""
    text = _read(root, "/etc/nv_tegra_release")
    package = _dpkg_version(root, "nvidia-l4t-core")
    if text is None and package is None:
        return _not_found("no /etc/nv_tegra_release, no nvidia-l4t-core package: not a Jetson")
    parts = []
    if text is not None:
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
        parts.append(f"R{m.group(1)}.{m.group(2)}" if m else text.splitlines()[0])
    if package is not None:
        parts.append(f"nvidia-l4t-core {package}")
    return ", ".join(parts)


def jetpack(root: Path) -> str:
    return _dpkg_version(root, "nvidia-jetpack") or _not_found("no nvidia-jetpack package")


def jetson_model(root: Path) -> str:
    return _read(root, "/proc/device-tree/model") or _not_found("no /proc/device-tree/model")


def tensorrt() -> str:
    try:
        import tensorrt as trt
    except ImportError:
        return "not installed (it comes with JetPack; on x86, pip install tensorrt)"
    except Exception as err:  # installed, but its libraries do not load
        return f"broken: {_first_line(err)}"
    return str(getattr(trt, "__version__", "installed"))


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _runtime():
    """(cuda.bindings.runtime, None) as the TensorRT backend imports it, or (None, why not)."""
    import importlib

    try:
        return importlib.import_module("cuda.bindings.runtime"), None
    except ImportError:
        return None, "cuda-bindings not installed: pip install 'edgefusion[tensorrt]'"
    except Exception as err:
        return None, f"cuda-bindings broken: {_first_line(err)}"


def _ask(runtime, call: str, *args):
    """A runtime call's value, or None where it fails (no driver, no libcuda at all)."""
    try:
        err, value = getattr(runtime, call)(*args)
    except Exception:  # cuda.pathfinder's DynamicLibNotFoundError where libcuda is missing
        return None
    return value if err == runtime.cudaError_t.cudaSuccess else None


def cuda_driver() -> str:
    """The CUDA version the driver supports, as cuda-bindings asks it (what the TensorRT backend runs on)."""
    runtime, why = _runtime()
    if runtime is None:
        return _not_found(why)
    version = _ask(runtime, "cudaDriverGetVersion")
    if not version:  # 0: no driver installed
        return _not_found("no CUDA driver answers")
    return f"driver supports CUDA {version // 1000}.{version % 1000 // 10}"


def cuda_gpus() -> str | None:
    """The CUDA devices' names (a Jetson's nvidia-smi may not name its GPU), or None."""
    runtime, _ = _runtime()
    count = _ask(runtime, "cudaGetDeviceCount") if runtime is not None else None
    props = [_ask(runtime, "cudaGetDeviceProperties", i) for i in range(count or 0)]
    names = [p.name.split(b"\0", 1)[0].decode(errors="replace") for p in props if p is not None]
    return ", ".join(names) or None


def nvidia_smi() -> tuple[str, str]:
    """(GPU name, driver version) from nvidia-smi, or why not."""
    out = _command("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader")
    rows = [line.rsplit(",", 1) for line in (out or "").splitlines() if "," in line]
    if not rows:
        why = _not_found("nvidia-smi missing or no GPU answers")
        return why, why
    return ", ".join(n.strip() for n, _ in rows), ", ".join(sorted({d.strip() for _, d in rows}))


def onnxruntime() -> str:
    try:
        from edgefusion.backends.onnxruntime.session import import_onnxruntime

        ort = import_onnxruntime()
    except Exception as err:
        return _not_found(_first_line(err))
    return f"{ort.__version__} ({', '.join(ort.get_available_providers())})"


def init_system(root: Path) -> str:
    """Whether PID 1 is systemd, as sd_booted() decides it (/run/systemd/system exists)."""
    comm = _read(root, "/proc/1/comm") or "unknown"
    if (root / "run/systemd/system").is_dir():
        return f"systemd (PID 1: {comm})"
    return f"not systemd (PID 1: {comm})"


def rig_facts(rig) -> dict[str, str]:
    if rig is None:
        return {"rig": _not_found("no test opened the rig")}
    try:
        return {"rig": rig.kind, **rig.facts()}
    except Exception as err:  # a camera that went away between the last test and this question
        return {"rig": rig.kind, "devices": _not_found(_first_line(err))}


def facts(rig=None, root: str | os.PathLike = "/") -> dict[str, str]:
    """Every fact, in the order the report shows them."""
    root = Path(root)
    gpu, driver = nvidia_smi()
    if gpu.startswith("not found"):
        gpu = cuda_gpus() or gpu
    return {
        "JetPack": jetpack(root),
        "L4T": l4t(root),
        "Jetson model": jetson_model(root),
        "TensorRT": tensorrt(),
        "CUDA": cuda_driver(),
        "GPU": gpu,
        "NVIDIA driver": driver,
        "ONNX Runtime": onnxruntime(),
        "Python": platform.python_version(),
        "kernel": f"{platform.release()} ({platform.machine()})",
        "CPUs": str(os.cpu_count()),
        "init": init_system(root),
        **rig_facts(rig),
    }
