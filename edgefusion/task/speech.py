"""A small formant speech synthesiser: spoken command words with no system packages.

Voiced sounds are a harmonic series of a moving pitch whose amplitudes follow the vocal
tract's formant envelope (additive synthesis: vectorised numpy, no per-sample filter loop);
fricatives and stop bursts are band-limited noise. Speaker pitch, vocal-tract length and
speaking rate vary per utterance, so the words differ in their formant trajectories and
consonants, the way real speech does, not in one frequency bin.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000

# phoneme -> (kind, (F1, F2, F3) Hz, base duration ms). Kinds: v vowel, g glide/liquid,
# n nasal, f fricative (unvoiced), z fricative (voiced), p stop (unvoiced), b stop (voiced).
_PHONEMES: dict[str, tuple[str, tuple[float, float, float], float]] = {
    "a": ("v", (730, 1090, 2440), 150),
    "i": ("v", (270, 2290, 3010), 120),
    "u": ("v", (300, 870, 2240), 130),
    "e": ("v", (530, 1840, 2480), 130),
    "o": ("v", (570, 840, 2410), 150),
    "I": ("v", (390, 1990, 2550), 100),
    "U": ("v", (440, 1020, 2240), 110),
    "l": ("g", (360, 1300, 2700), 60),
    "w": ("g", (300, 610, 2200), 60),
    "m": ("n", (250, 1000, 2200), 70),
    "s": ("f", (5500, 7000, 0), 110),
    "v": ("z", (250, 1400, 2400), 70),
    "t": ("p", (3500, 5500, 0), 50),
    "k": ("p", (1800, 3000, 0), 55),
    "p": ("p", (700, 1800, 0), 50),
    "g": ("b", (1800, 3000, 0), 45),
}

# Each word as phonemes; diphthongs are two vowel targets in a row.
_LEXICON: dict[str, tuple[str, ...]] = {
    "go": ("g", "o", "u"),
    "stop": ("s", "t", "a", "p"),
    "take": ("t", "e", "I", "k"),
    "give": ("g", "I", "v"),
    "look": ("l", "U", "k"),
    "come": ("k", "a", "m"),
    "wait": ("w", "e", "I", "t"),
}

_BANDWIDTHS = np.array([80.0, 110.0, 170.0])


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec[(freqs < lo) | (freqs > hi)] = 0
    out = np.fft.irfft(spec, n)
    return out / (np.std(out) + 1e-9)


def synthesize_word(word: str, rng: np.random.Generator) -> np.ndarray:
    """One utterance of ``word`` by a random speaker, float64 in about [-1, 1]."""
    phones = _LEXICON[word]
    rate = rng.uniform(0.8, 1.25)
    tract = rng.uniform(0.88, 1.15)  # vocal-tract length: scales every formant
    f0_base = rng.uniform(90, 240)

    durs = [_PHONEMES[p][2] / 1000 * rate * rng.uniform(0.85, 1.15) for p in phones]
    bounds = np.concatenate([[0.0], np.cumsum(durs)])
    n = int(bounds[-1] * SAMPLE_RATE) + 1
    t = np.arange(n) / SAMPLE_RATE
    idx = np.minimum(np.searchsorted(bounds, t, side="right") - 1, len(phones) - 1)

    # Formant targets at phoneme centres, linearly interpolated: coarticulation for free.
    centres = (bounds[:-1] + bounds[1:]) / 2
    targets = np.array([_PHONEMES[p][1] for p in phones], dtype=float)
    voiced_targets = np.array(
        [tg if _PHONEMES[p][0] in "vgnzb" else (500, 1500, 2500) for p, tg in zip(phones, targets)]
    )
    formants = np.stack([np.interp(t, centres, voiced_targets[:, j]) for j in range(3)]) * tract

    kinds = np.array([_PHONEMES[p][0] for p in phones])[idx]
    voicing = np.select(
        [kinds == "v", kinds == "g", kinds == "n", kinds == "z", kinds == "b"],
        [1.0, 0.6, 0.35, 0.3, 0.15],
        0.0,
    )
    # Smooth voicing onsets/offsets over 10 ms so phoneme edges do not click.
    k = int(0.01 * SAMPLE_RATE)
    voicing = np.convolve(voicing, np.ones(k) / k, mode="same")

    f0 = f0_base * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6.3)))
    f0 *= np.linspace(1.05, 0.92, n)  # declination, as in a statement
    n_harm = int(4500 / f0.min())
    harm = np.arange(1, n_harm + 1)[:, None]
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    freqs = harm * f0[None, :]
    env = np.zeros_like(freqs)
    for j in range(3):
        env += 1 / (1 + ((freqs - formants[j]) / (_BANDWIDTHS[j] / 2)) ** 2) * (0.8**j)
    env *= (freqs < 4800) / harm**0.6
    voiced = (env * np.sin(harm * phase[None, :] + rng.uniform(0, 6.3, (n_harm, 1)))).sum(0)
    voiced *= voicing / (np.abs(voiced).max() + 1e-9)

    noise = np.zeros(n)
    for i, p in enumerate(phones):
        kind, (lo, hi, _), _dur = _PHONEMES[p]
        if kind not in "fzpb":
            continue
        a, b = int(bounds[i] * SAMPLE_RATE), int(bounds[i + 1] * SAMPLE_RATE)
        seg = _band_noise(rng, b - a, lo * tract, hi * tract) if kind in "fp" else None
        if kind == "f":
            noise[a:b] += 0.25 * seg * np.hanning(b - a)
        elif kind == "z":
            noise[a:b] += 0.06 * _band_noise(rng, b - a, 1500, 6000) * np.hanning(b - a)
        else:  # stop: closure silence, then a short burst at the release
            burst = min(int(0.015 * SAMPLE_RATE), b - a)
            src = seg if seg is not None else _band_noise(rng, b - a, lo * tract, hi * tract)
            noise[b - burst : b] += (0.35 if kind == "p" else 0.2) * src[-burst:] * np.hanning(burst)
    out = voiced + noise
    return out / (np.abs(out).max() + 1e-9)


def background_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Room noise of a random colour (white, pink-ish or with mains hum), unit RMS."""
    kind = rng.integers(3)
    white = rng.standard_normal(n)
    if kind == 0:
        out = white
    else:
        spec = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        spec /= np.sqrt(np.maximum(freqs, 20.0))
        out = np.fft.irfft(spec, n)
        if kind == 2:
            hum_f = rng.choice([50.0, 60.0])
            out = out / out.std() + 1.5 * np.sin(2 * np.pi * hum_f * np.arange(n) / SAMPLE_RATE)
    return out / (out.std() + 1e-9)
