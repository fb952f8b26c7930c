"""Scripted sensor faults: ``STREAM:KIND@START-END`` items, comma-separated, seconds from start.

A fault acts on a sensor stream (rgb, depth, audio: the hardware), whatever the bundle's
modality it feeds is named; a fault on a stream the bundle does not use is ignored (the rig
says so once, ``unused_faults``).

rgb:stop@4-9        the colour stream's device is gone; it reopens once the fault ends, when
                    the reconnect backoff next tries (up to 0.8 s later, Backoff.max_s)
depth:stall@3-5     frames stop arriving, the device stays open
rgb:frozen@2-4      the same image again and again, timestamps still advancing
audio:nan@6-7       samples are NaN
depth:noise@1-2     heavy noise on top of the signal
rgb:jump@3-5        the device clock jumps: samples stamped 3 s late, then 3 s early, by turns
                    of half a second

One fault at a time per stream: two whose times overlap on one stream are refused (which
would win, or how a stall and NaN would combine, is no device's behaviour to guess). Faults on
different streams may overlap freely; one may start where another ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefusion.errors import EdgefusionError
from edgefusion.modalities import STREAMS

FAULT_KINDS = ("stop", "stall", "frozen", "nan", "noise", "jump")
JUMP_S = 3.0  # how far a "jump" fault moves a device clock

DEFAULT_DEMO_FAULTS = "rgb:stop@6-12,depth:stop@6-12,audio:stop@10-15"


@dataclass(frozen=True)
class Fault:
    stream: str
    kind: str
    start_s: float
    end_s: float

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """Parse a fault SPEC; a malformed item is a one-line error that shows the expected form."""
    faults: list[Fault] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            target, when = item.split("@")
            stream, kind = target.split(":")
            start, end = (float(x) for x in when.split("-"))
        except ValueError:
            raise EdgefusionError(
                f"fault {item!r} is not STREAM:KIND@START-END (e.g. rgb:stop@4-9, seconds from start)"
            ) from None
        if stream not in STREAMS:
            raise EdgefusionError(f"fault {item!r}: unknown stream {stream!r}; use one of {', '.join(STREAMS)}")
        if kind not in FAULT_KINDS:
            raise EdgefusionError(f"fault {item!r}: unknown kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if not 0 <= start < end:
            raise EdgefusionError(f"fault {item!r}: needs 0 <= START < END")
        fault = Fault(stream, kind, start, end)
        _refuse_overlap(fault, item, faults)
        faults.append(fault)
    return tuple(faults)


def _refuse_overlap(fault: Fault, item: str, earlier: list[Fault]) -> None:
    for f in earlier:
        if f.stream == fault.stream and f.start_s < fault.end_s and fault.start_s < f.end_s:
            raise EdgefusionError(
                f"fault {item!r} overlaps {f.stream}:{f.kind}@{f.start_s:g}-{f.end_s:g}: one fault at a time "
                f"per stream; let one end before the next starts"
            )


def active_fault(faults: tuple[Fault, ...], stream: str, t_s: float) -> str | None:
    """The kind of the fault on ``stream`` active at ``t_s`` (at most one is), or None."""
    for f in faults:
        if f.stream == stream and f.active(t_s):
            return f.kind
    return None
