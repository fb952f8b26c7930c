"""Jetson telemetry from sysfs, on a fake tree laid out as on an Orin, and the thermal policy."""

from pathlib import Path

import pytest

from edgefusion.backends import make_backend
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.loop import Runtime
from edgefusion.modalities import MODALITIES
from edgefusion.service.heartbeat import LastLine, status_line
from edgefusion.service.telemetry import SysfsReader, Telemetry, ThermalPolicy


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture
def sysfs(tmp_path):
    _write(tmp_path, "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    _write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "48500")
    _write(tmp_path, "sys/class/thermal/thermal_zone1/type", "gpu-thermal")
    _write(tmp_path, "sys/class/thermal/thermal_zone1/temp", "51250")
    _write(tmp_path, "sys/class/thermal/thermal_zone2/type", "tj-thermal-off")
    _write(tmp_path, "sys/class/thermal/thermal_zone2/temp", "-256000")  # a zone that is switched off
    _write(tmp_path, "sys/devices/platform/bus@0/17000000.gpu/load", "370")  # per mille
    hwmon = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for n, (label, mv, ma) in enumerate((("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 400)), start=1):
        _write(tmp_path, f"{hwmon}/in{n}_label", label)
        _write(tmp_path, f"{hwmon}/in{n}_input", str(mv))
        _write(tmp_path, f"{hwmon}/curr{n}_input", str(ma))
    return tmp_path


def test_sysfs_reader_finds_zones_gpu_load_and_rails(sysfs):
    snap = SysfsReader(str(sysfs)).read()
    assert snap.temperatures_c == {"cpu-thermal": 48.5, "gpu-thermal": 51.25}
    assert snap.gpu_load == pytest.approx(0.37)
    assert snap.power_w == pytest.approx({"VDD_IN": 6.0, "VDD_CPU_GPU_CV": 2.0})
    assert snap.line() == "51 °C, GPU 37%, 6.0 W", "VDD_IN is the module's total; the other rails are in it"


def test_a_machine_without_these_files_reads_as_no_telemetry(tmp_path):
    assert SysfsReader(str(tmp_path)).read().line() == "no telemetry"


def test_the_thermal_policy_slows_the_ticks_and_returns_with_hysteresis(sysfs, capfd):
    backend = make_backend("onnxruntime", load_bundle(default_bundle_path()))
    last = LastLine()
    runtime = Runtime(backend, {}, dict.fromkeys(MODALITIES, 0.1), tick_hz=30.0, sinks=(last,))
    runtime.start()
    runtime.tick()  # a result for the status line (no sensor: no answer)
    runtime.writer.wait_written()
    telemetry = Telemetry(SysfsReader(str(sysfs)), runtime, ThermalPolicy(85.0, 80.0, 15.0))
    gpu = sysfs / "sys/class/thermal/thermal_zone1/temp"
    rates = []
    try:
        for milli_c in (51000, 86000, 83000, 81000, 79500, 84000, 90000):
            gpu.write_text(f"{milli_c}\n")
            telemetry.step()
            rates.append(runtime.rate_hz)
    finally:
        runtime.stop()
    assert rates == pytest.approx([30, 15, 15, 15, 30, 30, 15])  # no flapping between 80 and 85 °C
    err = capfd.readouterr().err
    assert "86 °C >= 85 °C: ticking at 15 Hz" in err and "back to 30 Hz" in err
    line = status_line(runtime, last.line, 15.0, telemetry)
    assert "90 °C" in line and "(throttled)" in line
