"""The MPIC's global timers: four down-counters on the machine's clock, as QEMU 7.2 runs them.

Only the counting lives here (QEMU's ``OpenPICTimer``: GTCCR, GTBCR and the deadline); each
timer's vector/priority and destination are ordinary MPIC sources, and what an expiry does to
them is :class:`machine.devices.mpic.Mpic`'s business.  Nothing here schedules anything: the
owner asks :meth:`GlobalTimers.next_deadline` and collects expiries with
:meth:`GlobalTimers.expire`, so the model stays sans I/O.

QEMU's rules, kept exactly (they are guest-visible in GTCCR):

* The count runs at 25 MHz (40 ns a tick), whatever TFRR says.
* Only a change of GTBCR[CI] starts or stops a timer.  Clearing CI loads the count from the
  written value and starts it; setting CI stops it and clears the count (the toggle bit stays).
  A write that leaves CI alone changes only the value the next reload uses.
* At zero the count reloads from GTBCR, GTCCR[TOG] flips, and the timer raises its source.
* A count of zero does not run (QEMU refuses to expire a timer on every tick).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from machine.devices import mpic_regs as r

_U32: Final = 0xFFFF_FFFF


@dataclass(slots=True)
class _Timer:
    tccr: int = 0
    tbcr: int = r.TBCR_CI
    running: bool = False
    origin: int = 0  #: ns at which the count was ``tccr``
    deadline: int = 0  #: ns at which it reaches zero


class GlobalTimers:
    """GTCCR and GTBCR of the four timers, counting on ``clock`` (ns)."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._timers = [_Timer() for _ in range(r.N_TIMERS)]

    def reset(self) -> None:
        for timer in self._timers:
            timer.tccr = 0
            timer.tbcr = r.TBCR_CI
            timer.running = False

    def tbcr(self, idx: int) -> int:
        return self._timers[idx].tbcr

    def tccr(self, idx: int) -> int:
        """GTCCR now: the toggle bit and what is left of the count."""
        timer = self._timers[idx]
        if not timer.running:
            return timer.tccr
        elapsed = ((self._clock() - timer.origin) // r.TIMER_NS_PER_TICK) & _U32
        count = ((timer.tccr & r.TCCR_COUNT) - elapsed) & _U32
        return (timer.tccr & r.TCCR_TOG) | (count & r.TCCR_COUNT)

    def write_tbcr(self, idx: int, value: int) -> None:
        timer = self._timers[idx]
        if (timer.tbcr ^ value) & r.TBCR_CI:
            counting = not value & r.TBCR_CI
            if counting:
                timer.tccr = value & r.TCCR_COUNT
            self._arm(timer, value & ~r.TBCR_CI, counting, self._clock())
        timer.tbcr = value

    def next_deadline(self) -> int | None:
        deadlines = [t.deadline for t in self._timers if t.running]
        return min(deadlines) if deadlines else None

    def expire(self) -> Iterator[int]:
        """Reload every timer that has reached zero by now, earliest deadline first, and
        yield its index for the owner to raise its source (before the next one reloads).

        A timer that expired several times since the last call (a late host) is yielded
        once, with its toggle bit and next deadline as if it had expired every time:
        repeated edges with nothing acknowledged in between change nothing else.
        """
        now = self._clock()
        while True:
            due = [(t.deadline, i) for i, t in enumerate(self._timers) if t.running]
            if not due or min(due)[0] > now:
                return
            deadline, idx = min(due)
            timer = self._timers[idx]
            period = (timer.tbcr & r.TCCR_COUNT) * r.TIMER_NS_PER_TICK
            missed = (now - deadline) // period if period else 0
            if missed % 2:
                timer.tccr ^= r.TCCR_TOG
            count = timer.tbcr & ~r.TBCR_CI
            timer.tccr = count | ((timer.tccr & r.TCCR_TOG) ^ r.TCCR_TOG)
            self._arm(timer, count, True, deadline + missed * period)
            yield idx

    @staticmethod
    def _arm(timer: _Timer, count: int, counting: bool, now: int) -> None:
        ns = (count & r.TCCR_COUNT) * r.TIMER_NS_PER_TICK
        if ns == 0 or not counting:
            timer.running = False
            timer.tccr &= r.TCCR_TOG
        else:
            timer.running = True
            timer.origin = now
            timer.deadline = now + ns


__all__ = ["GlobalTimers"]
