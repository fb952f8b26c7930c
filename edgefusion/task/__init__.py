"""The built-in human-robot-interaction intent task: the demo's data, made from a seed.

Sample ``i`` of seed ``s`` is drawn from its own generator ``default_rng([s, i])``, so any
slice of a dataset is reproducible on its own and can be generated in parallel. numpy only:
the simulated rig on the robot renders the same data with no torch and no system packages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefusion.task.cues import GESTURES, INTENTS, N_SYMBOLS, OBJECTS, WORDS, decode_pair, encode, style_probabilities
from edgefusion.task.scenes import HEIGHT, WIDTH, render_depth, render_rgb
from edgefusion.task.speech import SAMPLE_RATE, background_noise, synthesize_word

__all__ = [
    "AUDIO_WINDOW_S",
    "TASK_VERSION",
    "GESTURES",
    "HEIGHT",
    "INTENTS",
    "N_SYMBOLS",
    "OBJECTS",
    "SAMPLE_RATE",
    "WIDTH",
    "WORDS",
    "Sample",
    "TaskBatch",
    "decode_pair",
    "encode",
    "generate",
    "make_sample",
    "render_audio_window",
]

# Bump when the generator's output changes: dataset caches are keyed on it.
TASK_VERSION = 2
AUDIO_WINDOW_S = 1.0
INT16_FULL_SCALE = 32767.0


@dataclass(frozen=True)
class Sample:
    intent: int
    cues: tuple[int, int, int]  # the cue each modality carries, in MODALITIES order: object, gesture, word
    rgb: np.ndarray  # (3, H, W) float32, 0..255
    depth: np.ndarray  # (1, H, W) float32, metres, 0 = no data
    audio: np.ndarray  # (SAMPLE_RATE * AUDIO_WINDOW_S,) float32, int16 units


@dataclass(frozen=True)
class TaskBatch:
    intent: np.ndarray  # (N,) int64
    cues: np.ndarray  # (N, 3) int64, MODALITIES order
    rgb: np.ndarray  # (N, 3, H, W) float32
    depth: np.ndarray  # (N, 1, H, W) float32
    audio: np.ndarray  # (N, samples) float32

    def __len__(self) -> int:
        return len(self.intent)


def render_audio_window(word: str, rng: np.random.Generator) -> np.ndarray:
    """A window of microphone signal, in int16 units, with ``word`` spoken somewhere inside.

    Level spans -40 dBFS to full scale (the loudest clip), with room noise at 5-30 dB SNR and
    the word's onset anywhere it fits: the tick never lines up with the speaker.
    """
    n = int(SAMPLE_RATE * AUDIO_WINDOW_S)
    utter = synthesize_word(word, rng)[: n - 400]
    start = int(rng.integers(200, n - len(utter) - 199))
    window = np.zeros(n)
    window[start : start + len(utter)] = utter
    speech_rms = np.sqrt(np.mean(utter**2))
    snr_db = rng.uniform(5, 30)
    window += background_noise(rng, n) * speech_rms * 10 ** (-snr_db / 20)
    peak_dbfs = rng.uniform(-40, 1.0)  # above 0 dBFS the ADC clips
    window *= INT16_FULL_SCALE * 10 ** (peak_dbfs / 20) / (np.abs(window).max() + 1e-12)
    return np.clip(window, -32768, INT16_FULL_SCALE).astype(np.float32)


def make_sample(seed: int, index: int) -> Sample:
    rng = np.random.default_rng([seed, index])
    intent = int(rng.integers(N_SYMBOLS))
    word, gesture, obj = encode(intent, int(rng.choice(N_SYMBOLS, p=style_probabilities())))
    return Sample(
        intent=intent,
        cues=(obj, gesture, word),
        rgb=render_rgb(OBJECTS[obj], rng),
        depth=render_depth(GESTURES[gesture], rng),
        audio=render_audio_window(WORDS[word], rng),
    )


def generate(seed: int, n: int, start: int = 0) -> TaskBatch:
    """Samples ``start .. start+n-1`` of ``seed``, stacked."""
    samples = [make_sample(seed, i) for i in range(start, start + n)]
    return TaskBatch(
        intent=np.array([s.intent for s in samples], dtype=np.int64),
        cues=np.array([s.cues for s in samples], dtype=np.int64),
        rgb=np.stack([s.rgb for s in samples]),
        depth=np.stack([s.depth for s in samples]),
        audio=np.stack([s.audio for s in samples]),
    )
