"""Frozen microphone: how long from the fault's start to the first tick where audio is absent.

    python bench/frozen_audio.py [--seeds 20] [--pulse 8] [--json]

A real MicrophoneSensor (guard, ring, windows) and the real Synchronizer, driven on one thread in
robot time: speech from the simulated rig (a seed per trial) for 1.5 s plus a random part of a
hop, then a stuck ring replaying its last CYCLE blocks (1 = one block repeated), with ticks at
30 Hz at a random phase. Every seed × capture block (5, 10, 20 ms, and 441 samples) × cycle
(1 .. FROZEN_DEPTH). Capture times equal arrival times (no driver latency). Also: the guard's
CPU cost per audio block (all its checks, and the frozen check alone), on the same speech. With
--pulse N: N trials through the real libraries too (the sensors extra and PulseAudio), where the
sink's latency and the machine's load add to the time.

The bound: the first repeated block is dropped (FROZEN_AUDIO_AFTER = 2), so no window holding
frozen audio is ever published; the last window, published at most a hop before the fault, is
absent once it is older than [sensors.audio] max_age_ms, at the first tick after that:
    detection <= max_age + 1 / tick_hz  (+ (FROZEN_AUDIO_AFTER - 2) blocks, 0 here)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import time

import numpy as np

from edgefusion.config import Config
from edgefusion.modalities import ModalitySpec
from edgefusion.sensors.base import FROZEN_AUDIO_AFTER, FROZEN_DEPTH, SampleGuard
from edgefusion.sensors.microphone import MicrophoneSensor
from edgefusion.sim.simulated import Scenario, scenario_track
from edgefusion.sync import Synchronizer
from edgefusion.task import SAMPLE_RATE

TICK_HZ = 30.0
BLOCKS = (80, 160, 320, 441)
# The one modality this bench syncs: a 1 s window of the microphone (the projection is never computed).
AUDIO = ModalitySpec("audio", "audio", (SAMPLE_RATE,), "audio", "p_audio", (1,), 10.0, SAMPLE_RATE, 1.0)


class _Fed(MicrophoneSensor):
    """The capture thread's path, called by the benchmark: no thread, no device."""

    def __init__(self, block: int):
        super().__init__("bench", SAMPLE_RATE, window_s=1.0, block=block)
        self._opened()

    def _open(self):
        pass

    def _capture(self, timeout_s):
        return None

    def _close(self):
        pass


class _Buffers:
    def __init__(self):
        self.buffers = {AUDIO.name: np.zeros((1, *AUDIO.shape), np.float32)}

    def input_buffer(self, modality):
        return self.buffers[modality]


def speech(seed: int, seconds: float) -> np.ndarray:
    track = np.concatenate([scenario_track(Scenario(seed), k) for k in range(int(np.ceil(seconds / 4)))])
    return np.rint(track[: int(seconds * SAMPLE_RATE)]).astype(np.float32)


def trial(seed: int, block: int, cycle: int, max_age_s: float) -> float:
    """Seconds from the first frozen block's first sample to the first tick with audio absent."""
    rng = np.random.default_rng([seed, block, cycle])
    audio = speech(seed, 1.5 + rng.uniform(0, 0.1))
    good = [audio[i : i + block] for i in range(0, len(audio) - block + 1, block)]
    mic = _Fed(block)
    sync = Synchronizer([AUDIO], {"audio": mic}, {"audio": max_age_s}, _Buffers())
    t0 = time.monotonic() - 100.0  # robot time, in the past: the guard refuses future stamps
    fault_s = len(good) * block / SAMPLE_RATE
    blocks = good + good[-cycle:] * int(2 * SAMPLE_RATE / block)  # 2 s of the stuck ring
    tick = rng.uniform(0, 1 / TICK_HZ)
    sent = 0
    while sent < len(blocks):
        while sent < len(blocks) and (sent + 1) * block / SAMPLE_RATE <= tick:
            mic._publish(blocks[sent], t0 + (sent + 1) * block / SAMPLE_RATE)
            sent += 1
        present = sync.update(t0 + tick).present[0]
        if tick >= fault_s and not present:
            return tick - fault_s
        tick += 1 / TICK_HZ
    raise AssertionError(f"seed {seed}, block {block}, cycle {cycle}: frozen audio never absent")


def guard_cost_us(blocks: int = 20000) -> tuple[float, float]:
    """The guard's time per 10 ms block of speech: all its checks, and the frozen check alone."""
    audio = speech(0, blocks * 160 / SAMPLE_RATE + 0.01)
    chunks = [audio[i * 160 : (i + 1) * 160] for i in range(blocks)]
    guard = SampleGuard((-32768.0, 32767.0), "audio")
    t0 = time.monotonic() - 1000.0
    start = time.perf_counter()
    for i, chunk in enumerate(chunks):
        guard.check(chunk, t0 + i * 0.01)
    whole = time.perf_counter() - start
    guard.reset()
    start = time.perf_counter()
    for chunk in chunks:
        guard._repeats(chunk)
    return whole / blocks * 1e6, (time.perf_counter() - start) / blocks * 1e6


def through_pulse(trials: int, max_age_s: float) -> list[float]:
    """The same fault played into a private PulseAudio's null sink and captured by the PortAudio
    driver (16 kHz, and 48 kHz resampled by soxr), polled at 30 Hz: seconds from when the first
    stuck block was due at the sink to the first poll with no window within max_age."""
    from edgefusion.sensors.microphone import MicrophoneConfig, PyAudioMicrophone
    from edgefusion.sim.pulse import PulseServer, Speaker

    times = []
    with PulseServer(sink="edgefusion_bench") as server:
        for k in range(trials):
            cycle, rate = 1 + k % FROZEN_DEPTH, (SAMPLE_RATE, 48000)[k % 2]
            due: list[float] = []

            def feed(seed=k, cycle=cycle, due=due):
                audio = speech(seed, 3.0 + seed % 3 * 0.033)
                blocks = [audio[i : i + 160] for i in range(0, len(audio) - 159, 160)]
                yield from blocks
                due.append(time.monotonic() + 0.03)  # the speaker writes each block 30 ms before it is due
                yield from itertools.cycle(blocks[-cycle:])

            mic = PyAudioMicrophone(MicrophoneConfig(device="pulse", rate=rate), SAMPLE_RATE, 1.0, read_timeout_s=0.2)
            with Speaker(server, feed=feed()):
                mic.connect()
                try:
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline and not (due and mic.read_latest(max_age_s) is None):
                        time.sleep(1 / TICK_HZ)
                    if not due or mic.read_latest(max_age_s) is not None:
                        raise AssertionError(f"trial {k}: frozen audio never absent")
                    times.append(time.monotonic() - due[0])
                finally:
                    mic.disconnect()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--pulse", type=int, default=0, help="also this many trials through PulseAudio + PortAudio")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    max_age_s = Config().max_age_s()["audio"]
    with contextlib.redirect_stderr(io.StringIO()):  # the sensor's own lines, one per state change
        times = {
            (block, cycle): [trial(seed, block, cycle, max_age_s) for seed in range(args.seeds)]
            for block in BLOCKS
            for cycle in range(1, FROZEN_DEPTH + 1)
        }
        pulse = through_pulse(args.pulse, max_age_s) if args.pulse else []
    guard_us, frozen_us = guard_cost_us()
    everything = [t for ts in times.values() for t in ts]
    bound = max_age_s + 1 / TICK_HZ + max(0, FROZEN_AUDIO_AFTER - 2) * max(BLOCKS) / SAMPLE_RATE
    report = {
        "trials": len(everything),
        "detection_ms": {
            "min": min(everything) * 1000,
            "p50": float(np.median(everything)) * 1000,
            "max": max(everything) * 1000,
        },
        "max_ms_by_block_and_cycle": {f"{b}x{c}": max(ts) * 1000 for (b, c), ts in times.items()},
        "bound_ms": bound * 1000,
        "guard_us_per_block": guard_us,
        "frozen_check_us_per_block": frozen_us,
    }
    if pulse:
        report["pulse_detection_ms"] = {"trials": len(pulse), "min": min(pulse) * 1000, "max": max(pulse) * 1000}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    d = report["detection_ms"]
    print(
        f"{report['trials']} trials (blocks {', '.join(map(str, BLOCKS))} samples; cycles 1..{FROZEN_DEPTH}; "
        f"ticks at {TICK_HZ:g} Hz, max_age {max_age_s * 1000:g} ms): frozen audio absent after "
        f"{d['min']:.0f} / {d['p50']:.0f} / {d['max']:.0f} ms (min / median / max); bound {bound * 1000:.0f} ms; "
        f"guard {guard_us:.1f} us per 10 ms block, {frozen_us:.1f} us of it the frozen check"
    )
    if pulse:
        print(
            f"through PulseAudio + PortAudio, {len(pulse)} trials: absent {min(pulse) * 1000:.0f} to "
            f"{max(pulse) * 1000:.0f} ms after the first stuck block was due at the sink"
        )


if __name__ == "__main__":
    main()
