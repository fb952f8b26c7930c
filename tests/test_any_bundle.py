"""The device CLI with bundles that are not the demo's: demo on the simulated rig, record and
replay, a replay into a bundle of other sizes, ``info``. The bundles (tiny_bundle.py) declare only
depth and audio, at sizes and a rate of their own, under names apart from their streams."""

import json
import wave

import numpy as np
import pytest
from cli_check import cli

pytest.importorskip("pyrealsense2")
# tests/tiny_bundle.py (format-2 bundles of any modality set) comes with the runtime branch.
make_bundle = pytest.importorskip("tiny_bundle").make_bundle

DEPTH_AUDIO = [("range", "depth", (1, 120, 160)), ("speech", "audio", (4000,), 8000, 0.5)]
LABELS = ["left", "right", "up"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {
        "depth-audio": make_bundle(root / "depth-audio", DEPTH_AUDIO, LABELS),
        # The same streams and labels fed into other sizes, a colour stream the session lacks.
        "wide": make_bundle(
            root / "wide",
            [("colour", "rgb", (3, 224, 224)), ("d", "depth", (1, 60, 80)), ("a", "audio", (16000,), 16000, 1.0)],
            LABELS,
        ),
    }


def _lines(r) -> list[dict]:
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(x) for x in r.stdout.splitlines()]


def test_info_lists_the_modalities_and_the_stream_feeding_each(bundles):
    r = cli("info", "--bundle", str(bundles["depth-audio"]))
    assert r.returncode == 0, r.stderr
    assert "modality range: depth stream, input 1x120x160, 30 fps" in r.stdout
    assert "modality speech: audio stream, input 4000, 8000 Hz, 0.5 s window, 10 windows/s" in r.stdout
    info = json.loads(cli("info", "--bundle", str(bundles["depth-audio"]), "--json").stdout)
    assert [(m["name"], m["sensor"], m["shape"]) for m in info["modalities"]] == [
        ("range", "depth", [1, 120, 160]),
        ("speech", "audio", [4000]),
    ]


def test_the_demo_runs_a_depth_audio_bundle_through_faults_on_the_simulated_rig(bundles):
    r = cli(
        "demo", "--bundle", str(bundles["depth-audio"]), "--seconds", "4", "--json",
        "--faults", "rgb:stop@0-9,depth:stop@1.5-2.5",
    )  # fmt: skip
    lines = _lines(r)
    assert "faults on rgb ignored: the bundle uses no rgb stream" in r.stderr
    assert len(lines) >= 0.9 * 30 * 4
    assert all(set(x["present"]) == {"range", "speech"} for x in lines), "keyed by the bundle's names"
    t0 = lines[0]["t"]
    outage = [x for x in lines if 1.8 <= x["t"] - t0 < 2.5]
    assert outage and not any(x["present"]["range"] for x in outage), "the depth stop"
    later = [x for x in lines if x["t"] - t0 >= 3.6]
    assert later and all(x["present"]["range"] and x["present"]["speech"] for x in later), "both up again"
    assert all(x["label"] in LABELS for x in later)


def test_a_session_recorded_for_a_bundle_replays_to_its_results_and_into_another_bundle(bundles, tmp_path):
    out = tmp_path / "session"
    r = cli(
        "record", "--bundle", str(bundles["depth-audio"]), "--out", str(out), "--seconds", "3",
        "--label", "up", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(report["recording"]["samples"]) == {"depth", "audio"}, "only the streams the bundle uses"
    recorded = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    ticks = [e for e in recorded if e["kind"] == "tick"]
    assert ticks and set(ticks[-1]["sample_t"]) == {"depth", "audio"}, "a session is keyed by stream"

    replay = _lines(
        cli("demo", "--bundle", str(bundles["depth-audio"]), "--source", f"replay:{out}", "--max-speed", "--json")
    )
    assert len(replay) == len(ticks)
    for got, want in zip(replay, ticks):
        assert got["label"] == want["label"] and list(got["present"].values()) == list(want["present"].values())
        if want["probs"] is not None:
            assert max(abs(got["probs"][k] - v) for k, v in want["probs"].items()) <= 1e-5

    r = cli("demo", "--bundle", str(bundles["wide"]), "--source", f"replay:{out}", "--max-speed", "--json")
    wide = _lines(r)
    assert "no rgb stream was recorded; modality 'colour' replays as absent" in r.stderr
    assert len(wide) == len(ticks) and not any(x["present"]["colour"] for x in wide)
    assert any(x["present"]["d"] and x["present"]["a"] for x in wide), "depth resized, audio resampled: present"


def test_another_tools_wav_replays_into_the_bundle_at_its_rate_and_window(bundles, tmp_path):
    """A 22.05 kHz stereo WAV (no camera file): resampled to 8 kHz, cut into the bundle's 0.5 s
    windows; the depth modality is absent throughout, said once."""
    wav = tmp_path / "mic.wav"
    t = np.arange(int(22050 * 2.0)) / 22050
    tone = np.rint(8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(np.repeat(tone[:, None], 2, axis=1).tobytes())
    r = cli("demo", "--bundle", str(bundles["depth-audio"]), "--source", f"replay:{wav}", "--max-speed", "--json")
    lines = _lines(r)
    assert "no depth in this recording; modality 'range' replays as absent" in r.stderr
    assert lines and not any(x["present"]["range"] for x in lines)
    heard = [x for x in lines if x["present"]["speech"]]
    assert heard and min(x["sample_t"]["speech"] for x in heard) == pytest.approx(3999 / 8000, abs=1e-3)


def test_eval_scores_a_bundle_of_its_own_on_the_users_data_and_refuses_without_it(bundles, tmp_path):
    """A user's bundle has no held-out set of its own: ``--data`` gives one (arrays named after its
    modalities, as the runtime delivers them, and labels); without it, one line says so."""
    refused = cli("eval", "--bundle", str(bundles["depth-audio"]), "--no-noise")
    assert refused.returncode == 2 and "--data" in refused.stderr and len(refused.stderr.splitlines()) == 1
    rng = np.random.default_rng(0)
    n = 14
    data = tmp_path / "held.npz"
    np.savez(
        data,
        range=rng.uniform(0, 4, (n, 1, 120, 160)).astype(np.float32),
        speech=rng.integers(-3000, 3000, (n, 4000)).astype(np.float32),
        labels=np.array([LABELS[i % 3] for i in range(n)]),
    )
    r = cli(
        "eval", "--bundle", str(bundles["depth-audio"]), "--data", str(data), "--samples", "14", "--no-noise", "--json"
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    table = report["accuracy"]["fp32"]
    assert set(table) == {"range+speech", "range", "speech"}, "keyed by the bundle's own names"
    assert all(0.0 <= v <= 1.0 for v in table.values())
