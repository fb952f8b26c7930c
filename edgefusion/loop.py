"""The runtime loop: fixed-rate ticks that never wait for a sensor.

Each tick: sync (presence mask, copy fresh samples into the backend's buffers) → submit → one
wait → the result to the sink writer's thread (JSON and I/O happen there, off the tick). The
sensors run on their own threads; a tick only reads their newest samples. A tick that overruns
its slot is counted; the next runs at once, and whole missed slots are skipped rather than
burst through to catch up.

No result lies: a tick gives a label only when the backend raised nothing and its probabilities
are a distribution (finite, each in [0, 1], summing to 1 within ``PROB_SUM_TOL``). Otherwise the
line has no label, no confidence and no probabilities, and a ``reason`` (the strings below);
such ticks are counted and said on stderr (1st, 2nd, 4th… time). A backend that gives
``FAIL_AFTER_TICKS`` bad outputs in a row is reactivated once on a thread of its own (fresh
buffers and sessions) while the ticks go on; if it stays bad it is *failed*: the loop goes on,
every line says "backend failed", ``backend_failed`` is set for STATUS and the summary, and
``FAIL_AFTER_TICKS`` good outputs in a row (or a reload) bring it back. Failing the backend does
not end the run: a systemd restart cannot mend a model that overflows, and would stop the lines
(sensor health included) for the seconds a restart takes, over and over; a reload can mend it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import orjson

from edgefusion import log
from edgefusion.backends.base import Backend
from edgefusion.modalities import ModalitySpec
from edgefusion.sensors.base import SampleSource, SensorState
from edgefusion.sinks import Sink, SinkWriter
from edgefusion.sync import Synchronizer

NO_MODALITY = "no modality present"
NON_FINITE = "non-finite output"
NOT_A_DISTRIBUTION = "output not a probability distribution"
BACKEND_ERROR = "backend error"  # submit or wait raised (a driver error mid-run)
BACKEND_RESTARTING = "backend restarting"
BACKEND_FAILED = "backend failed"
PROB_SUM_TOL = 1e-2  # fp16 heads sum to 1 within ~1e-3; a real fault (zeros, logits) is far off
FAIL_AFTER_TICKS = 30  # bad outputs in a row (1 s at 30 Hz) that make a backend suspect, then failed
RESTART_JOIN_S = 10.0  # at shutdown, how long a reactivation in progress is waited for


class TickResult(NamedTuple):
    """What a tick produces, kept as a tuple on the tick's path; ``as_dict`` is the result
    line's schema, built where it is consumed (the sink writer's thread, the live view)."""

    t: float  # the tick's time, monotonic seconds
    tick: int
    label: str | None  # None when the tick has no answer: ``reason`` says why
    confidence: float | None
    probs: list[float] | None  # in label order
    present: tuple[bool, ...]  # in the bundle's modality order
    fresh: tuple[bool, ...]
    sensors: tuple[SensorState, ...]
    latency_ms: float
    sample_t: tuple[float | None, ...]  # capture time of each sample used (None: absent)
    reason: str | None = None  # why there is no label; None when there is one

    def as_dict(self, labels: tuple[str, ...], names: tuple[str, ...]) -> dict:
        """The result line: ``labels`` the bundle's, ``names`` its modalities (the keys of
        ``present``, ``fresh``, ``sensors`` and ``sample_t``)."""
        return {
            "t": self.t,
            "tick": self.tick,
            "label": self.label,
            "confidence": self.confidence,
            "probs": None if self.probs is None else dict(zip(labels, self.probs)),
            "reason": self.reason,
            "present": dict(zip(names, self.present)),
            "fresh": dict(zip(names, self.fresh)),
            "sensors": {m: state.value for m, state in zip(names, self.sensors)},
            "latency_ms": self.latency_ms,
            "sample_t": dict(zip(names, self.sample_t)),
        }


def _feeds(specs: tuple[ModalitySpec, ...]) -> tuple:
    """What the sensors and the result lines were set up for: each modality's name, stream and input."""
    return tuple((s.name, s.sensor, s.shape, s.sample_rate, s.window_s) for s in specs)


def _describe(specs: tuple[ModalitySpec, ...]) -> str:
    return ", ".join(f"{s.name} from {s.sensor} {list(s.shape)}" for s in specs)


def judge_probs(p: list[float]) -> str | None:
    """None when ``p`` is a probability distribution, else the reason it cannot give a label."""
    total = sum(p)  # NaN or inf exactly when an element is: float32 outputs cannot overflow a float sum
    if not math.isfinite(total):
        return NON_FINITE
    if not p or min(p) < 0.0 or max(p) > 1.0 or abs(total - 1.0) > PROB_SUM_TOL:
        return NOT_A_DISTRIBUTION
    return None


class Runtime:
    """The loop's state. ``sensors`` and ``max_age_s`` are keyed by stream (rgb, depth, audio);
    results by the bundle's modality names (``names``). Counters for STATUS, the summary and the
    exit (read from any thread):
    ``ticks``, ``overruns``, ``late``, ``invalid`` (ticks without a usable output), ``backend_failed``
    and ``backend_restarting`` (now), ``backend_restarts`` (reactivations), and ``writer`` (the
    ``SinkWriter``: per-sink counters, ``results_lost``)."""

    def __init__(
        self,
        backend: Backend,
        sensors: dict[str, SampleSource],
        max_age_s: dict[str, float],
        tick_hz: float = 30.0,
        sinks: tuple[Sink, ...] = (),
        on_result: Callable[[dict], None] | None = None,
        flush_s: float = 0.05,
        deadline_ms: float = 20.0,
    ):
        self.backend = backend
        self.sensors = sensors
        self.max_age_s = max_age_s
        self.tick_hz = tick_hz  # as configured; the thermal policy may tick slower for a while
        self.period = 1.0 / tick_hz
        self.labels = labels = backend.bundle.labels
        self.names = names = backend.bundle.names
        encode = lambda r: orjson.dumps(r.as_dict(labels, names)).decode()  # noqa: E731
        self.writer = SinkWriter(sinks, encode, interval_s=flush_s) if sinks else None
        self.on_result = on_result
        self.ticks = 0
        self.overruns = 0
        self.deadline_ms = deadline_ms
        self.late = 0  # ticks whose work (sync, inference, result) took longer than deadline_ms
        self.invalid = 0  # ticks whose backend output was no distribution, or raised
        self.backend_failed = False
        self.backend_restarts = 0
        self._bad_in_row = 0
        self._good_in_row = 0  # while failed: valid outputs in a row
        self._may_restart = True  # a backend is reactivated once; a reload gives the new one its own
        self._restart: threading.Thread | None = None  # reactivating the backend off the tick
        self._restart_failed = False  # the reactivation raised: the backend cannot run
        self.sync: Synchronizer | None = None
        self.next_backend: Backend | None = None  # set by a reload (another thread), swapped in by run()

    def start(self) -> None:
        self.backend.activate()
        self.sync = self._synchronizer()
        for s in self.sensors.values():
            s.connect()

    def stop(self) -> None:
        try:
            stuck = False
            if self._restart is not None:  # never deactivate a backend while it activates
                self._restart.join(RESTART_JOIN_S)
                stuck = self._restart.is_alive()
            for s in self.sensors.values():
                s.disconnect()
            if stuck:
                log.error(f"the backend's reactivation is still running after {RESTART_JOIN_S:g} s; left to the exit")
            else:
                self.backend.deactivate()
            if self.next_backend is not None:  # reloaded but never swapped in
                self.next_backend.deactivate()
        finally:
            if self.writer is not None:
                self.writer.close()

    @property
    def backend_restarting(self) -> bool:
        """A reactivation is in progress (its ticks say "backend restarting")."""
        return self._restart is not None

    @property
    def rate_hz(self) -> float:
        return 1.0 / self.period

    def set_rate(self, hz: float) -> None:
        """From any thread: the loop takes the new period at its next tick."""
        self.period = 1.0 / hz

    def _synchronizer(self) -> Synchronizer:
        """A sync onto the current backend's buffers (new after a swap or a reactivation)."""
        return Synchronizer(self.backend.bundle.modalities, self.sensors, self.max_age_s, self.backend)

    def swap_backend(self, backend: Backend) -> None:
        """Between ticks: run ``backend`` (active, same labels) from the next tick on. Its
        buffers are new, so every present modality is copied in and encoded again.

        The sensors were opened, and the result lines keyed, for the running bundle's modalities:
        a backend whose modalities are fed otherwise (names, streams, shapes, audio window) is
        refused, deactivated, and the running one goes on."""
        if _feeds(backend.bundle.modalities) != _feeds(self.backend.bundle.modalities):
            backend.deactivate()
            log.error(
                f"reload refused: its modalities ({_describe(backend.bundle.modalities)}) are not the running "
                f"bundle's ({_describe(self.backend.bundle.modalities)}); restart to change them; "
                "the loaded model keeps running"
            )
            return
        old, self.backend = self.backend, backend
        self.sync = self._synchronizer()
        old.deactivate()
        if self.backend_failed:
            log.notice("the reloaded backend replaces the failed one")
        self.backend_failed, self._restart_failed, self._may_restart = False, False, True
        self._bad_in_row = self._good_in_row = 0

    def tick(self, now: float | None = None) -> TickResult:
        t0 = time.monotonic()
        now = t0 if now is None else now
        if self._restart is not None and not self._restart.is_alive():  # reactivated: new buffers
            self._restart = None
            self.sync = self._synchronizer()
        st = self.sync.update(now)
        self.ticks += 1
        label: str | None = None
        confidence: float | None = None
        probs: list[float] | None = None
        reason: str | None
        if not any(st.present):  # nothing to go on: say so rather than report the head's bias
            reason = NO_MODALITY
        elif self._restart is not None:
            reason = BACKEND_RESTARTING
        elif self._restart_failed:
            reason = BACKEND_FAILED
        else:
            try:
                self.backend.submit(st.fresh, st.present)
                p = self.backend.wait()[1].tolist()
            except Exception as err:  # judged as a bad output: the loop goes on, the error is said
                reason = self._judge(BACKEND_ERROR, f"{type(err).__name__}: {err}")
            else:
                reason = self._judge(judge_probs(p))
                if reason is None:
                    best = p.index(max(p))
                    label, confidence, probs = self.labels[best], p[best], p
        result = TickResult(
            now,
            self.ticks,
            label,
            confidence,
            probs,
            tuple(st.present),
            tuple(st.fresh),
            tuple(st.states),
            (time.monotonic() - t0) * 1000,
            tuple(st.sample_t),
            reason,
        )
        if self.writer is not None:
            self.writer.put(result)
        if self.on_result is not None:
            self.on_result(result.as_dict(self.labels, self.names))
        return result

    def _judge(self, problem: str | None, detail: str = "") -> str | None:
        """Count a tick's output (``problem``: what is wrong with it, None if nothing; ``detail``:
        the error raised) against the backend; the tick's reason for having no label, None when
        it has one."""
        if problem is None:
            self._bad_in_row = 0
            if not self.backend_failed:
                return None
            self._good_in_row += 1
            if self._good_in_row < FAIL_AFTER_TICKS:
                return BACKEND_FAILED
            self.backend_failed = False
            log.notice(f"the backend gives valid results again ({FAIL_AFTER_TICKS} ticks in a row)")
            return None
        self.invalid += 1
        self._good_in_row = 0
        self._bad_in_row += 1
        if log.doubled(self.invalid - 1, self.invalid):
            detail = f" ({detail})" if detail else ""
            log.warning(f"a result has no label: {problem}{detail} [{self.invalid} such ticks so far]")
        if self._bad_in_row == FAIL_AFTER_TICKS and not self.backend_failed:
            if self._may_restart:
                self._start_restart(problem)
            else:
                self.backend_failed = True
                log.error(
                    f"backend failed: {FAIL_AFTER_TICKS} ticks in a row gave a {problem}, after a reactivation; "
                    "results carry no label until it gives valid ones again or a reload (SIGHUP) replaces it"
                )
        return BACKEND_FAILED if self.backend_failed else problem

    def _start_restart(self, problem: str) -> None:
        """Reactivate the backend (fresh buffers and sessions) on a thread: ticks meanwhile
        say "backend restarting", and the next tick after it picks up the new buffers."""
        log.error(f"{FAIL_AFTER_TICKS} ticks in a row gave a {problem}: reactivating the backend")
        self._may_restart = False
        self._bad_in_row = 0
        self.backend_restarts += 1
        self._restart = threading.Thread(target=self._reactivate, name="backend-restart", daemon=True)
        self._restart.start()

    def _reactivate(self) -> None:
        try:
            self.backend.deactivate()
            self.backend.activate()
        except Exception as err:  # whatever the backend raises, the loop goes on without it
            self._restart_failed = self.backend_failed = True
            log.error(f"backend failed: reactivating it raised {type(err).__name__}: {err}; reload (SIGHUP) or restart")

    def _late(self) -> None:
        """Said on stderr at the 1st, 2nd, 4th, 8th... late tick: a backend that has become slow
        (thermal throttling, a busy GPU) is visible without flooding the journal."""
        self.late += 1
        if log.doubled(self.late - 1, self.late):
            log.warning(f"a tick took longer than its {self.deadline_ms:g} ms deadline ({self.late} so far)")

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        start = time.monotonic()
        next_t = start
        while not stop.is_set():
            now = time.monotonic()
            if duration_s is not None and now - start >= duration_s:
                break
            if now < next_t:
                stop.wait(next_t - now)
                continue
            if self.next_backend is not None and self._restart is None:
                backend, self.next_backend = self.next_backend, None
                self.swap_backend(backend)
            if self.tick(now).latency_ms > self.deadline_ms:
                self._late()
            next_t += self.period
            late = time.monotonic() - next_t
            if late > 0:  # ran into the next tick's slot: counted; it runs at once, and
                self.overruns += 1  # whole slots already missed are skipped, not burst through
                next_t += math.floor(late / self.period) * self.period
