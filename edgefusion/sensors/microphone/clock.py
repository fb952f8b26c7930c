"""When a PortAudio block was captured, on time.monotonic()'s clock."""

from __future__ import annotations


class BlockClock:
    """When a callback block's first sample was captured, on time.monotonic()'s clock.

    PortAudio gives the ADC time of the block's first sample on the stream's clock; the offset
    from that clock to time.monotonic() is measured around the open. On Linux the stream's clock
    is the wall clock (CLOCK_REALTIME), which an NTP step moves: the callback's "current time"
    then disagrees with its arrival by more than any scheduling delay, and the offset is measured
    again from the two.

    The ADC time is used only where it is believable, else the block's arrival less its duration
    (late by the callback's latency, a few ms, never early). Not believable: 0 (some host APIs and
    PulseAudio setups leave it unset); a block that waited longer than the stream's buffer could
    hold it; or an ADC time that does not advance by the previous block's duration. Measured
    through ALSA's pulse plugin: for the first ~1.3 s of a stream it reports 0.6 s of delay that
    then shrinks twice as fast as time passes, and afterwards single blocks 10-30 ms early.
    """

    STEP_S = 0.5  # a disagreement between the stream's clock and arrival larger than jitter can be
    TOLERANCE_S = 0.003

    def __init__(self, rate: float, offset_s: float, max_wait_s: float):
        self.rate, self.offset_s, self.max_wait_s = rate, offset_s, max_wait_s
        self._next_adc: float | None = None

    def first_sample(self, frames: int, adc: float, now: float, arrival: float) -> float:
        if now > 0 and abs(now + self.offset_s - arrival) > self.STEP_S:
            self.offset_s = arrival - now
        duration = frames / self.rate
        expected, self._next_adc = self._next_adc, adc + duration
        by_arrival = arrival - duration
        t = adc + self.offset_s
        steady = expected is not None and abs(adc - expected) <= self.TOLERANCE_S
        if adc > 0 and steady and -self.TOLERANCE_S <= by_arrival - t <= self.max_wait_s:
            return t
        return by_arrival
