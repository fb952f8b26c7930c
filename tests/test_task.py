"""The built-in task: deterministic, and built so fusion is needed and one sensor can be lost."""

from itertools import product

import numpy as np

from edgefusion.task import HEIGHT, N_SYMBOLS, SAMPLE_RATE, WIDTH, decode_pair, encode, generate, make_sample
from edgefusion.task.cues import PLAIN_STYLE_P
from edgefusion.task.scenes import MAX_RANGE_M


def test_same_seed_and_index_give_identical_samples():
    a, b = make_sample(7, 3), make_sample(7, 3)
    assert a.intent == b.intent and a.cues == b.cues
    for field in ("rgb", "depth", "audio"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_other_seed_or_index_gives_other_data():
    a = make_sample(7, 3)
    for other in (make_sample(8, 3), make_sample(7, 4)):
        assert not np.array_equal(a.audio, other.audio)
        assert not np.array_equal(a.rgb, other.rgb)


def test_a_slice_equals_the_same_samples_of_the_whole():
    whole = generate(5, 6)
    part = generate(5, 3, start=3)
    np.testing.assert_array_equal(whole.audio[3:], part.audio)
    np.testing.assert_array_equal(whole.intent[3:], part.intent)


def test_any_two_cues_decide_the_intent_and_no_single_cue_does():
    for intent, style in product(range(N_SYMBOLS), repeat=2):
        word, gesture, obj = encode(intent, style)
        assert decode_pair(word, gesture, None) == intent
        assert decode_pair(None, gesture, obj) == intent
        assert decode_pair(word, None, obj) == intent
    # A single cue value is compatible with every intent, equally often.
    for cue_index in range(3):
        seen: dict[int, set[int]] = {}
        for intent, style in product(range(N_SYMBOLS), repeat=2):
            seen.setdefault(encode(intent, style)[cue_index], set()).add(intent)
        assert all(len(intents) == N_SYMBOLS for intents in seen.values())


def test_a_single_cue_is_right_only_in_the_plain_style():
    """Guessing intent = cue index is right exactly when the person used the plain style."""
    batch = generate(13, 300)
    hits = (batch.cues == batch.intent[:, None]).all(axis=1)  # plain style: every cue == intent
    per_cue = (batch.cues == batch.intent[:, None]).mean(axis=0)
    assert np.allclose(per_cue, hits.mean())  # a cue is right iff all are: iff style is plain
    assert abs(hits.mean() - PLAIN_STYLE_P) < 0.08


def test_shapes_units_and_nuisances():
    batch = generate(11, 24)
    assert batch.rgb.shape == (24, 3, HEIGHT, WIDTH) and batch.rgb.dtype == np.float32
    assert batch.depth.shape == (24, 1, HEIGHT, WIDTH)
    assert batch.audio.shape == (24, SAMPLE_RATE)
    assert 0 <= batch.rgb.min() and batch.rgb.max() <= 255
    assert batch.depth.max() <= MAX_RANGE_M and (batch.depth == 0).any(), "depth needs holes marked 0"
    peaks = np.abs(batch.audio).max(axis=1)
    assert peaks.max() <= 32768 and peaks.min() < 1000 < peaks.max(), "levels must span quiet to loud"
    # cues are stored in MODALITIES order (object, gesture, word) and encode the intent
    for intent, (obj, gesture, word) in zip(batch.intent, batch.cues):
        assert decode_pair(word, gesture, obj) == intent


def test_words_differ_in_spectrum_not_only_in_level():
    """Two words spoken by the same synthetic speaker settings have different spectra."""
    from edgefusion.task.speech import synthesize_word

    def spectrum(word):
        x = synthesize_word(word, np.random.default_rng(0))
        s = np.abs(np.fft.rfft(x, 8192))
        return s / np.linalg.norm(s)

    assert float(spectrum("go") @ spectrum("stop")) < 0.9
