"""FW_WAIT_STORE polls briefly, in the CPU's own engine, before it parks.

Why: a CPU parked in FW_WAIT_STORE blocks its worker thread, and the store that releases it
then pays for the host waking a sleeping thread: a futex and, on a virtual machine, an idle
core brought back by an inter-processor interrupt (40-150 us here), followed by a second such
wake-up whenever the thread then finds the GIL taken.  Measured at 150-270 us per release
(bench/bench_machine.py, item 2), against 30-60 us for a guest that spins on the word itself.
Polling in Python would hold the GIL every other microsecond and slow the storing CPU down.

So the hypercall hands the wait to a few instructions the machine maps into every CPU at
:data:`~machine.platform.POLL_CODE_BASE` (:data:`POLL_SOURCE`).  They run in the CPU's own
unicorn engine, where no GIL is held: they re-read the watched word and the CPU's wake flag,
and return to the guest the instant the word changes (r3 = EV_SUCCESS, r4 = the new value, as
the hypercall would), with no Python on the way.  After a bounded number of rounds, or when the
machine sets the wake flag (a release), they make the same hypercall again from the poll page,
and the machine parks the CPU as before.  KVM's halt-polling does this for the same reason.
It pays only because a store to a watched page becomes visible as the last act of its hook
(``StoreWatch.store``): the CPU that polled then rarely finds the GIL taken by the storing CPU.

What the guest sees is in docs/PLATFORM.md: two reserved pages (the data page is each CPU's
own), and SRR0/SRR1 set as the ``sc`` instruction sets them on e500v2.  The registers the poll
code uses are saved in the data page first and restored before it returns.

Polls are bounded in time (:data:`POLL_BUDGET_NS`; the rounds are re-fitted as they run) and
in number: one CPU per spare host core polls at a time, across the process (:class:`PollSlots`).
So parked CPUs still cost nothing: a park polls once, briefly, then blocks.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from typing import Final, Protocol

#: How long one FW_WAIT_STORE polls before it parks.  Long enough to cover a store that comes
#: within a few hypercalls of the park (CPUs handing a lock or a release back and forth),
#: short enough that a CPU parked for good wastes nothing measurable.
POLL_BUDGET_NS: Final = 400_000

#: The poll program, as assembled by powerpc-linux-gnu-as from :data:`POLL_SOURCE`
#: (tests/test_pollwait.py checks that the two agree).
POLL_SOURCE: Final = """
    /* in: r3 = word, r4 = expected, r6 = the data page (the guest's r5 and r6 are saved
       there, and the rounds to poll); SRR0/SRR1 = where the call returns, and its MSR */
    mfctr 5
    stw   5, 4(6)
    mfcr  5
    stw   5, 8(6)
    lwz   5, 24(6)
    mtctr 5
loop:
    lwz   5, 0(3)
    cmpw  5, 4
    bne   changed
    lwz   5, 0(6)            /* the wake flag */
    cmpwi 5, 0
    bne   again
    bdnz  loop
again:                       /* ran out or woken: restore, then the hypercall once more */
    lwz   5, 4(6)
    mtctr 5
    lwz   5, 8(6)
    mtcrf 0xff, 5
    lwz   5, 12(6)
    lwz   6, 16(6)
    sc    1                  /* FW_WAIT_STORE again: r3, r4, r11 are the guest's */
    rfi
changed:
    mr    4, 5
    li    3, 0               /* EV_SUCCESS */
    stw   3, 20(6)           /* no longer polling */
    lwz   5, 4(6)
    mtctr 5
    lwz   5, 8(6)
    mtcrf 0xff, 5
    lwz   5, 12(6)
    lwz   6, 16(6)
    rfi
"""
POLL_PROGRAM: Final = (
    0x7CA9_02A6, 0x90A6_0004, 0x7CA0_0026, 0x90A6_0008, 0x80A6_0018, 0x7CA9_03A6,
    0x80A3_0000, 0x7C05_2000, 0x4082_0034, 0x80A6_0000, 0x2C05_0000, 0x4082_0008,
    0x4200_FFE8, 0x80A6_0004, 0x7CA9_03A6, 0x80A6_0008, 0x7CAF_F120, 0x80A6_000C,
    0x80C6_0010, 0x4400_0022, 0x4C00_0064, 0x7CA4_2B78, 0x3860_0000, 0x9066_0014,
    0x80A6_0004, 0x7CA9_03A6, 0x80A6_0008, 0x7CAF_F120, 0x80A6_000C, 0x80C6_0010,
    0x4C00_0064,

)

class PollData(ctypes.BigEndianStructure):
    """The per-CPU data page, as the poll program reads it (big-endian, like the guest)."""

    _fields_ = [
        ("wake", ctypes.c_uint32),  # nonzero: stop polling and make the hypercall again
        ("ctr", ctypes.c_uint32),  # the guest's CTR, CR, r5 and r6, restored on the way out
        ("cr", ctypes.c_uint32),
        ("r5", ctypes.c_uint32),
        ("r6", ctypes.c_uint32),
        ("busy", ctypes.c_uint32),  # set when a poll begins, cleared when it ends
        ("rounds", ctypes.c_uint32),  # how many times to look before parking
    ]


# The displacements in POLL_SOURCE.
assert (PollData.wake.offset, PollData.ctr.offset, PollData.cr.offset, PollData.r5.offset,
        PollData.r6.offset, PollData.busy.offset, PollData.rounds.offset) \
    == (0, 4, 8, 12, 16, 20, 24)


class Poller(Protocol):
    @property
    def polling(self) -> bool: ...


class PollSlots:
    """Who may poll: at most one CPU per spare host core, across every machine.

    Polling on more threads than there are cores would take time from the CPUs that run, and
    those are the ones that will do the storing.  A slot is free again once its owner's poll
    has ended (the poll code clears ``busy`` itself when the word changes: that end involves
    no call to the host), or once the budget is over."""

    def __init__(self, count: int | None = None) -> None:
        if count is None:
            count = len(os.sched_getaffinity(0)) - 1
        count = max(0, count)
        # Weak: a slot must not keep a closed machine's CPU (and so its RAM) alive.
        self._owner: list[weakref.ref[Poller] | None] = [None] * count
        self._until = [0] * count
        self._lock = threading.Lock()
        #: Rounds of the poll loop that fill :data:`POLL_BUDGET_NS`; re-fitted by :meth:`ran_out`.
        self.rounds = 40_000

    def claim(self, owner: Poller) -> bool:
        now = time.monotonic_ns()
        with self._lock:
            for i, ref in enumerate(self._owner):
                who = ref() if ref is not None else None
                if who is None or who is owner or not who.polling or self._until[i] <= now:
                    self._owner[i] = weakref.ref(owner)
                    self._until[i] = now + POLL_BUDGET_NS
                    return True
            return False

    def ran_out(self, spent_ns: int) -> None:
        """A poll used all its rounds in ``spent_ns``: fit the rounds to the budget (by at
        most a factor of two per poll, so one descheduled poll cannot skew it)."""
        factor = POLL_BUDGET_NS / max(1, spent_ns)
        self.rounds = int(max(1_000, min(10_000_000, self.rounds * max(0.5, min(2.0, factor)))))


POLL_SLOTS = PollSlots()
