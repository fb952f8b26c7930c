"""The shipped demo bundle: whole, and as good as its manifest says, re-measured on the runtime path."""

import pytest

from edgefusion.backends import make_backend
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.evaluate import evaluate, heldout
from edgefusion.modalities import MODALITIES, all_patterns, pattern_name

FULL = pattern_name(MODALITIES, all_patterns(len(MODALITIES))[0])
ONE_MISSING = [pattern_name(MODALITIES, p) for p in all_patterns(len(MODALITIES)) if sum(p) == len(MODALITIES) - 1]


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


def test_bundle_is_small_and_complete(bundle):
    assert bundle.precisions == ("fp32", "fp16", "int8")
    assert sum(f["bytes"] for f in bundle.manifest["files"].values()) < 8_000_000


def test_manifest_accuracy_table_meets_the_targets(bundle):
    acc = bundle.accuracy["by_precision"]
    assert acc["fp32"][FULL] >= 0.95
    assert all(acc["fp32"][p] >= 0.80 for p in ONE_MISSING)
    for pattern in acc["fp32"]:
        assert abs(acc["int8"][pattern] - acc["fp32"][pattern]) <= 0.01, pattern
        assert abs(acc["fp16"][pattern] - acc["fp32"][pattern]) <= 0.002, pattern
    assert bundle.accuracy["fusion_gain"] >= 0.3
    assert bundle.accuracy["checks"]["fp16_full_scale_audio_finite"] is True
    assert bundle.accuracy["checks"]["split_vs_monolithic_rel_err"] <= 1e-5


def test_remeasured_through_the_backend(bundle):
    """Fresh held-out samples through the runtime's own backends, not the exporter's numbers."""
    backends = {p: make_backend("onnxruntime", bundle, p) for p in ("fp32", "int8")}
    for b in backends.values():
        b.activate()
    try:
        report = evaluate(bundle, backends, heldout(bundle, 210), noise=False)
    finally:
        for b in backends.values():
            b.deactivate()
    fp32, int8 = report["accuracy"]["fp32"], report["accuracy"]["int8"]
    assert fp32[FULL] >= 0.95
    assert all(fp32[p] >= 0.80 for p in ONE_MISSING), fp32
    assert all(abs(int8[p] - fp32[p]) <= 0.03 for p in fp32), (int8, fp32)
    assert report["fusion_gain"] >= 0.3
    # A result's confidence says what is missing: it tracks the accuracy of its presence pattern.
    conf = report["confidence"]["fp32"]
    assert all(abs(conf[p] - fp32[p]) <= 0.1 for p in fp32), (conf, fp32)
    assert conf[FULL] > max(conf[p] for p in ONE_MISSING) > max(conf[m] for m in ("rgb", "depth", "audio"))
