"""``edgefusion doctor``: is this machine ready to run, and if not, what to do about it.

Each check says ok, warn (runs, but not as well as it could: no GPU, no camera yet) or fail
(a run would stop: a broken config or bundle, a missing core package). Exit status 1 if any
check fails. Hardware libraries are imported here only to ask what they see.
"""

from __future__ import annotations

import glob
import grp
import importlib
import importlib.util
import os
import pwd
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from edgefusion.errors import EdgefusionError

SERVICE_USER = "edgefusion"
SERVICE_GROUPS = ("video", "render", "audio", "plugdev")
DEFAULT_CONFIG = Path("/etc/edgefusion/edgefusion.toml")
SENSORS_FIX = "pip install 'edgefusion[sensors]'"
DEVICE_NODES = ("/dev/nvhost-*", "/dev/nvmap", "/dev/nvidia*", "/dev/bus/usb/*/*", "/dev/snd/*")


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str
    fix: str = ""


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        if module == "onnxruntime":  # with its telemetry off, as the backend imports it
            from edgefusion.backends.onnxruntime.session import import_onnxruntime

            loaded = import_onnxruntime()
        else:
            loaded = importlib.import_module(module)
        return str(getattr(loaded, "__version__", "installed"))
    except Exception as err:  # installed but broken (a missing libusb behind pyrealsense2)
        return f"broken: {(str(err).strip().splitlines() or [type(err).__name__])[0]}"


def _usable(module: str) -> bool:
    v = _version(module)
    return v is not None and not v.startswith("broken")


def _packages(cfg) -> list[Check]:
    """Core packages must be there; the sensor libraries must be when the config's source is the
    robot's own sensors (a run would stop without them), and are worth a warning otherwise."""
    sensors_needed = cfg is not None and cfg.source.kind in ("realsense", "virtual")
    out = []
    for module, needed, fix in (
        ("numpy", True, "pip install edgefusion"),
        ("onnxruntime", True, "pip install edgefusion"),
        ("orjson", True, "pip install edgefusion"),
        ("pyrealsense2", False, f"{SENSORS_FIX} (on a Jetson: build librealsense with Python)"),
        ("pyaudio", False, f"apt-get install portaudio19-dev; {SENSORS_FIX}"),
        ("soxr", False, SENSORS_FIX),
        ("tensorrt", False, "JetPack's python3-libnvinfer; the service venv must see system site-packages"),
    ):
        v = _version(module)
        if v is not None and not v.startswith("broken"):
            out.append(Check(f"package {module}", "ok", v))
        else:
            needed = needed or (sensors_needed and module in ("pyrealsense2", "pyaudio"))
            status = "fail" if needed else "warn"
            out.append(Check(f"package {module}", status, v or "not installed", fix))
    return out


def _config(path: Path | None):
    from edgefusion.config import Config, load_config

    try:
        default_there = DEFAULT_CONFIG.exists()
    except OSError:  # /etc/edgefusion is 0750 root:edgefusion: not ours to read
        default_there = True
    if path is None and not default_there:
        return Config(), Check("config", "ok", f"none given, {DEFAULT_CONFIG} absent: the defaults (simulated rig)")
    path = path or DEFAULT_CONFIG
    try:
        return load_config(path), Check("config", "ok", str(path))
    except EdgefusionError as err:
        return None, Check("config", "fail", str(err), "fix the line named; the README's Configuration table")
    except OSError as err:
        return None, Check("config", "fail", f"{path}: cannot read: {err}", "run as the service user or root")


def _bundle(cfg, bundle: Path | None) -> Check:
    from edgefusion.bundle import default_bundle_path, load_bundle

    path = bundle or (Path(cfg.runtime.bundle) if cfg and cfg.runtime.bundle else default_bundle_path())
    try:
        b = load_bundle(path)
    except EdgefusionError as err:
        return Check("bundle", "fail", str(err), "copy the bundle again; `edgefusion info --bundle DIR` verifies it")
    except OSError as err:
        return Check("bundle", "fail", f"{path}: cannot read: {err}", "run as the service user or root")
    # The modalities with the stream feeding each: what sensors this robot needs for the bundle.
    fed = ", ".join(spec.name if spec.name == spec.sensor else f"{spec.name} ({spec.sensor})" for spec in b.modalities)
    return Check(
        "bundle",
        "ok",
        f"{b.root}: {len(b.manifest['files'])} files verified, {', '.join(b.precisions)}; modalities {fed}",
    )


def _gpu(cfg) -> list[Check]:
    nodes = glob.glob("/dev/nvhost-*") + glob.glob("/dev/nvidia[0-9]*")
    providers = []
    if importlib.util.find_spec("onnxruntime"):
        from edgefusion.backends.onnxruntime.session import import_onnxruntime

        providers = import_onnxruntime().get_available_providers()
    gpu = Check("GPU", "ok", f"{len(nodes)} device nodes; onnxruntime providers {', '.join(providers)}")
    if not nodes:
        gpu = Check(
            "GPU", "warn", "no NVIDIA device node: inference on the CPU", "on a Jetson: check JetPack's drivers"
        )
    return [gpu, _engine_cache(cfg)]


def _engine_cache(cfg) -> Check:
    """The folder TensorRT's engines are kept in: ``[tensorrt] cache_dir``, else the service's
    state directory. Run by hand (no ``$STATE_DIRECTORY``), doctor checks the service's folder,
    not this user's ``~/.cache``: that is where the robot's engines must survive a reboot."""
    from edgefusion.backends.fallback import cache_problem
    from edgefusion.backends.tensorrt.options import TensorRTOptions

    options = cfg.tensorrt if cfg is not None else TensorRTOptions()
    if options.cache_dir or os.environ.get("STATE_DIRECTORY"):
        folder = options.cache_path()
    else:
        folder = Path(os.environ.get("EDGEFUSION_STATE", "/var/lib/edgefusion")) / "engines"
    problem = cache_problem(folder, options.max_cache_mb << 20)
    if problem:
        return Check(
            "engine cache", "warn", problem, "run as the service user, or install.sh; or set [tensorrt] cache_dir"
        )
    if not folder.exists():
        return Check("engine cache", "ok", f"{folder} does not exist yet; it will be created")
    return Check("engine cache", "ok", f"{folder} writable")


def _backend(cfg) -> list[Check]:
    """What the config's backend needs here, short of building an engine (minutes): for TensorRT
    its library, the CUDA adapter and a GPU. A run without them goes on with ONNX Runtime,
    marked degraded: a warning, not a failure."""
    if cfg is None:  # the config check failed: nothing to say about its backend
        return []
    name, precision = cfg.runtime.backend, cfg.runtime.precision
    if name != "tensorrt":
        return [Check("backend", "ok", f"{name} {precision}")]
    from edgefusion.backends.fallback import failure, probe_tensorrt

    try:
        found = probe_tensorrt(cfg.tensorrt)
    except Exception as err:  # a bug in the probe is reported here too, not a doctor that crashes
        why, _ = failure(err)
        return [
            Check(
                "backend",
                "warn",
                f"[runtime] backend is tensorrt, but {why}: a run goes on with onnxruntime {precision}, degraded",
                "on a Jetson: JetPack's python3-libnvinfer, seen by the service venv (install.sh makes it so); "
                'or set [runtime] backend = "onnxruntime"',
            )
        ]
    return [Check("backend", "ok", f"tensorrt {precision}: {found}")]


def _writable_check(name: str, folder: Path, status: str, fix: str) -> Check:
    """A folder a run writes into: there and writable, or to be created in a writable one."""
    from edgefusion.args import unwritable

    problem = unwritable(folder)
    if problem:
        return Check(name, status, f"{folder}: {problem}", fix)
    if not folder.exists():
        return Check(name, "ok", f"{folder} does not exist yet; it will be created")
    return Check(name, "ok", f"{folder} writable")


def _results_folder(cfg) -> list[Check]:
    """The results file's folder, where the config names one: a run refuses to start without it."""
    if cfg is None or not cfg.output.file:
        return []
    folder = Path(cfg.output.file).absolute().parent
    return [_writable_check("results folder", folder, "fail", "fix [output] file, or run as the service user")]


def zenoh_checks(cfg, unit_dir: Path | None = None) -> list[Check]:
    """The Zenoh sink: its library (a run with ``[output.zenoh]`` on needs it), and, where the unit
    is installed, whether its network drop-in allows what the config needs: written for another
    config, or before the robot moved to another LAN, the sink reaches nobody."""
    from importlib.metadata import PackageNotFoundError, version

    from edgefusion.service import network

    enabled = cfg is not None and cfg.output.zenoh.enabled
    v = _version("zenoh")
    if v is not None and not v.startswith("broken"):
        try:
            v = version("eclipse-zenoh")  # the module has no __version__
        except PackageNotFoundError:
            pass
        out = [Check("package zenoh", "ok", v)]
    elif enabled:
        out = [Check("package zenoh", "fail", v or "not installed", "pip install eclipse-zenoh ([output.zenoh] is on)")]
    else:
        out = [Check("package zenoh", "ok", f"{v or 'not installed'}; [output.zenoh] is off, nothing needs it")]
    unit_dir = network.UNIT_DIR if unit_dir is None else unit_dir
    installed = unit_dir / network.DROPIN
    if cfg is None or not (installed.exists() or (enabled and (unit_dir / "edgefusion.service").exists())):
        return out  # not installed as a service here (or the config check failed)
    fix = "edgefusion service-network --config CONFIG (or install.sh again); then systemctl daemon-reload"
    try:
        needed = network.dropin(cfg.output.zenoh)
        have = installed.read_text() if installed.exists() else None
    except EdgefusionError as err:
        return [*out, Check("service network", "warn", str(err), "fix [output.zenoh]")]
    except OSError as err:
        return [*out, Check("service network", "warn", f"{installed}: cannot read: {err.strerror}", "run as root")]
    if network.directives(have) == network.directives(needed):
        return [*out, Check("service network", "ok", f"{installed} allows what [output.zenoh] needs")]
    if needed is None:
        why = f"{installed} opens the network, but [output.zenoh] is off"
    elif have is None:
        why = f"no {installed}: the unit denies every address, so the Zenoh sink reaches nobody"
    else:
        why = f"{installed} is not what [output.zenoh] needs now (another config, or another LAN)"
    return [*out, Check("service network", "warn", why, fix)]


def _cameras(cfg) -> Check:
    if not _usable("pyrealsense2"):
        return Check("cameras", "warn", "pyrealsense2 unavailable: no RealSense can be used", SENSORS_FIX)
    from edgefusion.sensors.realsense import connected_serials

    serials = connected_serials()
    wanted = cfg.camera.serial if cfg else ""
    if wanted and wanted not in serials:
        return Check(
            "cameras",
            "fail",
            f"[camera] serial {wanted} not connected (connected: {serials or 'none'})",
            "plug it in, or fix the serial (rs-enumerate-devices)",
        )
    if not serials:
        return Check("cameras", "warn", "no RealSense connected", "plug it into a USB3 port; lsusb shows 8086:0b*")
    return Check("cameras", "ok", f"RealSense {', '.join(serials)}")


def _microphones(cfg) -> Check:
    if not _usable("pyaudio"):
        return Check(
            "microphones",
            "warn",
            "pyaudio unavailable: no microphone can be used",
            f"apt-get install portaudio19-dev; {SENSORS_FIX}",
        )
    from edgefusion.sensors.microphone import check_device, import_pyaudio, input_devices, library_output

    pyaudio = import_pyaudio()
    with library_output():
        pa = pyaudio.PyAudio()
    try:
        names = [info["name"] for _, info in input_devices(pa)]
    finally:
        pa.terminate()
    if cfg and (cfg.microphone.device or cfg.microphone.rate):
        try:
            check_device(cfg.microphone)
        except EdgefusionError as err:
            return Check("microphones", "fail", str(err), "fix [microphone] device/rate, or plug the device in")
    if not names:
        return Check("microphones", "warn", "no input device", "plug in a microphone; arecord -l lists them")
    return Check("microphones", "ok", ", ".join(names))


def _device_permissions() -> Check:
    nodes = [n for pattern in DEVICE_NODES for n in glob.glob(pattern)]
    denied = [n for n in nodes if not os.access(n, os.R_OK | os.W_OK)]
    if denied:
        shown = ", ".join(denied[:5]) + (f" and {len(denied) - 5} more" if len(denied) > 5 else "")
        return Check(
            "device permissions",
            "warn",
            f"no read/write access to {shown}",
            f"add the user to {', '.join(SERVICE_GROUPS)} (install.sh does it for the service user)",
        )
    return Check("device permissions", "ok", f"{len(nodes)} GPU, USB and sound nodes accessible")


def _service_user() -> Check:
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return Check("service user", "ok", f"no {SERVICE_USER} user: not installed as a service here")
    groups = {g.gr_name for g in grp.getgrall() if SERVICE_USER in g.gr_mem} | {grp.getgrgid(user.pw_gid).gr_name}
    existing = {g.gr_name for g in grp.getgrall()}
    missing = [g for g in SERVICE_GROUPS if g in existing and g not in groups]
    if missing:
        return Check(
            "service user",
            "warn",
            f"{SERVICE_USER} is not in {', '.join(missing)}",
            f"usermod -aG {','.join(missing)} {SERVICE_USER} (or run install.sh again)",
        )
    return Check("service user", "ok", f"{SERVICE_USER} in {', '.join(sorted(groups & set(SERVICE_GROUPS)))}")


def diagnose(config: Path | None = None, bundle: Path | None = None) -> list[Check]:
    checks = [
        Check("python", "ok" if sys.version_info >= (3, 10) else "fail", sys.version.split()[0], "Python >= 3.10")
    ]
    cfg, config_check = _config(config)
    checks += _packages(cfg)
    checks += [config_check, _bundle(cfg, bundle), *_results_folder(cfg), *_gpu(cfg), *_backend(cfg)]
    checks += [*zenoh_checks(cfg), _cameras(cfg), _microphones(cfg)]
    checks += [_device_permissions(), _service_user(), *_service_status()]
    return checks


def _service_status() -> list[Check]:
    """The running service's own STATUS line (ticks/s, each sensor's state and counters, the
    intent, latency), where systemd runs it: doctor then also says how the service is doing.
    Nothing where there is no systemctl (a container, a workstation without systemd)."""
    import shutil
    import subprocess

    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return []
    try:
        r = subprocess.run(
            [systemctl, "show", "-p", "ActiveState", "-p", "StatusText", SERVICE_USER],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    props = dict(line.partition("=")[::2] for line in r.stdout.splitlines())
    if r.returncode != 0 or props.get("ActiveState") in (None, "", "inactive"):
        return []  # no systemd answering (a container), or the service is not running
    state, status = props["ActiveState"], props.get("StatusText", "")
    if state == "active" and status.startswith("DEGRADED"):  # running, on another backend than asked
        return [Check("service", "warn", status, "journalctl -u edgefusion -g degraded says why")]
    if state == "active":
        return [Check("service", "ok", status or "active (no STATUS yet)")]
    return [Check("service", "warn", f"{state}: {status or 'no STATUS'}", "journalctl -u edgefusion -e says why")]


def render(checks: list[Check]) -> str:
    mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    lines = [
        f"{mark[c.status]}  {c.name}: {c.detail}" + (f"\n      → {c.fix}" if c.fix and c.status != "ok" else "")
        for c in checks
    ]
    failed = sum(c.status == "fail" for c in checks)
    lines.append(f"{failed} problem(s) would stop a run" if failed else "nothing stops a run here")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
