"""``edgefusion-export`` end to end on a tiny run: every step, the report, a bundle that loads."""

import json
import os
import subprocess
import sys

import pytest

from edgefusion.bundle import load_bundle

pytest.importorskip("torch")


def _run(args, tmp_path, timeout=600):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "edgefusion.export.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_all_steps_make_a_verified_bundle(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "bundle"
    r = _run(
        [
            "all",
            "--fusion",
            "lmf,late",
            "--runs",
            str(runs),
            "--train-size",
            "128",
            "--epochs",
            "1",
            "--heldout-size",
            "21",
            "--out",
            str(out),
            "--json",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["heldout"]["samples"] == 21
    assert set(report["models"]) == {"lmf", "late"}
    lmf = report["models"]["lmf"]
    assert set(lmf["precisions"]) == {"fp32", "fp16", "int8"}
    assert lmf["checks"]["split_vs_monolithic_rel_err"] < 1e-5
    assert lmf["checks"]["ort_vs_torch_rel_err"] < 1e-4
    assert lmf["checks"]["fp16_full_scale_audio_finite"] is True
    assert lmf["fusion_parameters"] > 0 and lmf["fusion_head_latency_ms"] > 0
    bundle = load_bundle(out)
    assert bundle.manifest["name"] == "bundle", "named after its folder unless --name says otherwise"
    # One epoch on 128 samples: whether it learned anything is the data's to say, and the run must agree.
    near_chance = lmf["precisions"]["fp32"]["accuracy"]["rgb+depth+audio"] < 1 / 7 + 0.05
    assert ("near chance" in r.stderr) == near_chance
    assert bool(bundle.manifest["accuracy"]["warnings"]) == near_chance
    info = subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", "info", "--bundle", str(out)], capture_output=True, text=True
    )
    assert info.returncode == 0 and ("WARNING: held-out accuracy" in info.stdout) == near_chance, info.stdout
    assert bundle.precisions == ("fp32", "fp16", "int8")
    assert bundle.graph_path("int8", "head") == bundle.graph_path("fp32", "head")
    assert bundle.manifest["calibration"]["samples"] == 448
    leftovers = [f for d in (runs, out) for f in d.rglob(".*")]
    assert not leftovers, "no temp files left behind"
    # compare again, with no flags: the kinds trained here (not all four) on the same 21 samples.
    r = _run(["compare", "--runs", str(runs), "--json"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads(r.stdout)
    assert set(again["models"]) == {"lmf", "late"} and again["heldout"]["samples"] == 21
    assert again["models"]["lmf"]["precisions"]["fp32"] == lmf["precisions"]["fp32"]
    r = _run(["bundle", "--runs", str(runs), "--out", str(tmp_path / "named"), "--name", "kitchen robot v2"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_bundle(tmp_path / "named").manifest["name"] == "kitchen robot v2"
    # A graph changed after compare: the report no longer describes it, so no bundle is made.
    head = runs / "lmf" / "onnx" / "fp32" / "head.onnx"
    head.write_bytes(head.read_bytes() + b"\0")
    r = _run(["bundle", "--runs", str(runs), "--out", str(tmp_path / "other")], tmp_path)
    assert r.returncode == 2 and "measured other graphs" in r.stderr and not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--fusion", "transformer"], "unknown fusion 'transformer'"),
        (["export", "--fusion", "lmf", "--runs", "/nonexistent-runs"], "no checkpoint there"),
        (["bundle", "--runs", "/nonexistent-runs", "--out", "/tmp/x"], "compare.json is missing"),
        (["compare", "--runs", "/nonexistent-runs"], "no trained model there"),
        (["compare", "--runs", "/nonexistent-runs", "--fusion", "late"], "no checkpoint there"),
    ],
)
def test_user_errors_are_short_and_clear(tmp_path, args, message):
    r = _run(args, tmp_path, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("complete, warned", [(1 / 7, True), (0.18, True), (0.2, False), (0.99, False)])
def test_a_bundle_near_chance_is_said_to_be(complete, warned):
    """Within 5 points of 1/7 with every sensor present: said."""
    from edgefusion.export.bundling import near_chance_warning

    warning = near_chance_warning(complete, 7)
    assert (warning is not None) == warned
    if warned:
        assert f"{complete:.3f}" in warning and "1/7" in warning and "train longer" in warning
