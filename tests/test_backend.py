"""The ONNX Runtime backend: bound once, per-modality caching, absent projections, no allocation."""

import shutil

import numpy as np
import onnxruntime as ort
import pytest
from cli_check import cli, env_without, refused

from edgefusion.backends import BackendError, make_backend
from edgefusion.bench import allocation_growth
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.modalities import MODALITIES, all_patterns


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


@pytest.fixture
def backend(bundle):
    with make_backend("onnxruntime", bundle, "fp32") as b:
        yield b


def _load(backend, batch, i):
    for m in MODALITIES:
        np.copyto(backend.input_buffer(m)[0], getattr(batch, m)[i])


def _monolithic(bundle, batch, i, present):
    sess = ort.InferenceSession(str(bundle.graph_path("fp32", "monolithic")), providers=["CPUExecutionProvider"])
    feed = {m: getattr(batch, m)[i : i + 1] for m in MODALITIES}
    feed["present"] = np.array([present], np.float32)
    return sess.run(["logits"], feed)[0][0]


def test_every_presence_pattern_matches_the_monolithic_graph(bundle, backend, small_batch):
    _load(backend, small_batch, 0)
    for present in all_patterns(len(MODALITIES)):
        backend.submit([True] * 3, present)
        logits, probs = backend.wait()
        ref = _monolithic(bundle, small_batch, 0, present)
        np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())
        assert abs(float(probs.sum()) - 1) < 1e-5


def test_an_encoder_runs_only_on_new_data(backend, small_batch):
    _load(backend, small_batch, 1)
    backend.submit([True, True, True], [True] * 3)
    first = backend.wait()[0].copy()
    runs = dict(backend.stats.encoder_runs)
    backend.submit([False, False, True], [True] * 3)
    np.testing.assert_array_equal(backend.wait()[0], first)  # same audio re-encoded: same answer
    assert backend.stats.encoder_runs == {**runs, "audio": runs["audio"] + 1}
    assert backend.stats.head_runs == 2


def test_cached_projection_is_used_until_new_data(backend, small_batch):
    _load(backend, small_batch, 1)
    backend.submit([True] * 3, [True] * 3)
    cached = backend.wait()[0].copy()
    _load(backend, small_batch, 2)  # new pixels in the buffers, but not announced as fresh
    backend.submit([False] * 3, [True] * 3)
    np.testing.assert_array_equal(backend.wait()[0], cached)
    backend.submit([True] * 3, [True] * 3)
    assert not np.array_equal(backend.wait()[0], cached)


def test_absent_modality_uses_its_absent_projection_and_comes_back(bundle, backend, small_batch):
    _load(backend, small_batch, 3)
    backend.submit([True] * 3, [True] * 3)
    full = backend.wait()[0].copy()
    backend.submit([False] * 3, [True, True, False])
    np.testing.assert_array_equal(backend.projection("audio")[0], bundle.absent("fp32")["audio"])
    runs = backend.stats.encoder_runs["audio"]
    # Present again with no new sample: the buffer still holds it, so it is encoded again.
    backend.submit([False] * 3, [True] * 3)
    np.testing.assert_allclose(backend.wait()[0], full, rtol=1e-6)
    assert backend.stats.encoder_runs["audio"] == runs + 1


def test_steady_state_ticks_allocate_nothing(backend, small_batch):
    _load(backend, small_batch, 0)
    patterns = [[True, True, k % 3 == 0] for k in range(3)]
    k = 0

    def tick():
        nonlocal k
        backend.submit(patterns[k % 3], [True, True, k % 7 != 0])
        backend.wait()
        k += 1

    assert allocation_growth(tick, 3000) == {"total": 0}


def test_allocation_growth_sees_a_leak():
    """The measurement itself must be able to fail, and must name the file that leaks."""
    kept = []
    growth = allocation_growth(lambda: kept.append(bytearray(100)), 100, warmup=10)
    assert growth["total"] >= 100 * 100 and growth[__file__] >= 100 * 100


def test_unknown_precision_and_backend_are_clear_errors(bundle):
    with pytest.raises(BackendError, match="no fp64 variant"):
        make_backend("onnxruntime", bundle, "fp64")
    with pytest.raises(BackendError, match="unknown backend 'tensorrtx'"):
        make_backend("tensorrtx", bundle)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_every_variant_runs_and_agrees_with_fp32_on_the_answer(bundle, small_batch, precision):
    answers = {}
    for prec in ("fp32", precision):
        with make_backend("onnxruntime", bundle, prec) as b:
            got = []
            for i in range(len(small_batch)):
                _load(b, small_batch, i)
                b.submit([True] * 3, [True] * 3)
                got.append(int(np.argmax(b.wait()[1])))
            answers[prec] = got
    assert answers[precision] == answers["fp32"]


def _home_env(home) -> dict:
    return {**env_without("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY"), "HOME": str(home)}


@pytest.mark.parametrize("command", [["info"], ["run", "--seconds", "1"]])
def test_onnxruntime_keeps_out_of_home_and_quiet(tmp_path, command):
    """onnxruntime's telemetry writes a device ID under ~/.cache at import and, where the home
    folder is not writable (a service user's), prints a coloured warning on every start: off."""
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[output]\nstdout = false\n")
    args = [*command, "--config", str(cfg)] if command[0] == "run" else command
    home = tmp_path / "home"
    home.mkdir()
    r = cli(*args, env=_home_env(home))
    assert r.returncode == 0, r.stderr
    assert list(home.iterdir()) == [], "nothing written into the home folder"
    unwritable = tmp_path / "not-a-folder"  # a home below which nothing can be created, even by root
    unwritable.write_text("")
    r = cli(*args, env=_home_env(unwritable))
    assert r.returncode == 0 and "telemetry" not in r.stderr.lower(), r.stderr


def test_the_telemetry_check_sees_onnxruntime_write_when_asked_to(tmp_path):
    """The control: a user's own ORT_DISABLE_TELEMETRY=0 is kept, and then the home folder is written."""
    home = tmp_path / "home"
    home.mkdir()
    r = cli("info", env={**_home_env(home), "ORT_DISABLE_TELEMETRY": "0"})
    assert r.returncode == 0, r.stderr
    if not (home / ".cache").is_dir():  # seen on one CI machine with onnxruntime 1.32
        pytest.skip("this onnxruntime writes no device ID even with its telemetry on: no control here")


def test_activation_ends_with_a_warm_tick_that_refuses_a_chain_that_does_not_run(tmp_path):
    pytest.importorskip("onnx")
    from test_bundle_contract import nan_on_real_projections

    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), copy)
    nan_on_real_projections(copy)
    bundle = load_bundle(copy)  # each graph alone runs
    backend = make_backend("onnxruntime", bundle, "fp32")
    with pytest.raises(BackendError, match=r"warm-up tick gave non-finite logits") as err:
        backend.activate()
    assert "\n" not in str(err.value) and str(copy) in str(err.value)
    with pytest.raises(RuntimeError, match="inactive"):
        backend.submit([True] * 3, [True] * 3)
    refused(cli("demo", "--seconds", "1", "--bundle", str(copy)), str(copy), "warm-up tick")


def test_the_warm_tick_leaves_the_absent_projections_and_no_count(bundle):
    with make_backend("onnxruntime", bundle, "fp32") as backend:
        assert backend.stats.head_runs == 0 and set(backend.stats.encoder_runs.values()) == {0}
        for m in MODALITIES:
            np.testing.assert_array_equal(backend.projection(m)[0], bundle.absent("fp32")[m])
            assert not backend.input_buffer(m).any()
