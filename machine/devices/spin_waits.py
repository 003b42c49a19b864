"""Spin-waits that cost nothing: a vCPU polling a word another vCPU will write is parked until
that store, so a hand-off between two CPUs costs one switch instead of a quantum.

The 2011 qemu-devel thread on e500 spin tables that started this project suggested it; Linux's
software timebase sync (kernel/smp-tbsync.c, ~10^4 hand-offs per secondary) is why it matters:
with round-robin quanta each hand-off waits for the spinning CPU's quantum to run out, which is
how QEMU 7.2 hangs at "smp: Bringing up secondary CPUs".

How a spin is found and parked (all on the scheduler's worker thread):

Only supervisor code is looked at (firmware, kernels): a user address may hold another process's
code by the next time it runs.

1. **Found at a quantum's end.**  When a slice ends while other vCPUs wanted to run, the PC is
   looked at: :func:`machine.cpu.spinloop.find_loop` says whether it sits in a pure polling loop
   (loads, compares, branches; nothing else).  A loop found is remembered, and the engine calls
   back at its first instruction from then on (a code hook on that one address).
2. **Caught on its second lap.**  At the loop head the hook records the loop's input registers.
   If the same vCPU comes back to the same head within the same slice with the same inputs, no
   other vCPU has run in between (one engine), so the loaded words are unchanged too: the CPU
   will go round for ever.  The slice ends at the next block boundary.
3. **Parked on the words.**  After the slice, each word the loop loads is translated through the
   CPU's MMU; the page is write-watched (machine/devices/watch.py, the FW_WAIT_STORE machinery)
   and a waiter armed on the value the loop saw.  The store that changes one of them wakes the
   CPU at the head of the run queue, ending the storing CPU's quantum: the hand-off is a switch.
   An interrupt it would take (MSR[EE] and an input up) wakes it too, and so does a timeout
   (:data:`SPIN_TIMEOUT_NS`), so a loop misjudged as a spin costs a pause, never a hang.

Pages watched for spins go back to the engine's fast path once nobody has spun on them for a
while (:data:`UNWATCH_AFTER_NS`), or at once if other stores keep hitting them
(:data:`STORE_BUDGET`): a store to a watched page costs a trip through Python, and a spinner
polling a word on a page that hot is left to spin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from unicorn import UC_PROT_READ

from machine.cpu.engine import Engine
from machine.cpu.interrupts import has_work
from machine.cpu.scheduler import Scheduler, Wait
from machine.cpu.spinloop import SpinLoop, find_loop
from machine.cpu.vcpu import Exit, ExitKind, VCpu
from machine.devices.watch import StoreWatch, Waiter
from machine.memory import GuestRAM
from machine.platform import PAGE_SIZE

#: A parked spinner resumes after this long even if nothing it loads changed.
SPIN_TIMEOUT_NS: Final = 20_000_000
#: A page watched for spins is released when nobody has parked on it for this long.
UNWATCH_AFTER_NS: Final = 200_000_000
#: A page watched for spins that takes this many stores with no park on it in between is
#: released and left alone for :data:`HOT_PAGE_NS`: a hot kernel page (a runqueue, jiffies)
#: costs a trip through Python per store while watched, far more than its spinners save.
STORE_BUDGET: Final = 64
HOT_PAGE_NS: Final = 1_000_000_000
_MSR_PR = 0x4000
#: PCs found not to be in a polling loop are remembered, up to this many.
_NEGATIVE_LIMIT: Final = 4096
#: A loop head visited this many times without a park is not a wait: its hook goes.
_FRUITLESS_LIMIT: Final = 2000


@dataclass(eq=False)
class _Parked:
    wait: Wait
    deadline: int
    waiters: list[Waiter] = field(default_factory=list)


@dataclass(eq=False)
class _Loop:
    loop: SpinLoop
    hook: Any
    fruitless: int = 0


class SpinWaits:
    """The spin detector and parker of one machine (see the module docstring)."""

    def __init__(self, engine: Engine, scheduler: Scheduler, watch: StoreWatch,
                 ram: GuestRAM) -> None:
        self._engine = engine
        self._scheduler = scheduler
        self._watch = watch
        self._ram = ram
        self._loops: dict[int, _Loop] = {}  # by the loop's first instruction
        self._by_pc: dict[int, _Loop] = {}  # every instruction address of a known loop
        self._negative: set[int] = set()
        self._seen: dict[VCpu, tuple[int, int, tuple[int, ...]]] = {}
        self._flagged: dict[VCpu, SpinLoop] = {}
        self._parked: dict[VCpu, _Parked] = {}
        self._pages: dict[int, int] = {}  # page watched for spins -> last park (ns)
        self._stale: list[_Parked] = []
        self._stores: dict[int, int] = {}  # page watched for spins -> stores since a park
        self._hot: dict[int, int] = {}  # page -> until when it is left alone (ns)
        self._wakers: dict[VCpu, Callable[[int], None]] = {}
        self._slice = 0
        self._next_sweep = 0
        #: Turned off: nothing is detected or parked (the plain quantum).
        self.enabled = True
        #: Spins parked, and how they ended.
        self.parks = 0
        self.woken = {"store": 0, "interrupt": 0, "timeout": 0, "kick": 0}

    # --- the scheduler's slice-end callback ---------------------------------------------------

    def slice_ended(self, cpu: VCpu, company: bool) -> None:
        """After a slice that ended by a stop (worker, the CPU still loaded): park it if it
        was caught spinning, or look whether a quantum caught it in a polling loop."""
        self._slice += 1
        loop = self._flagged.pop(cpu, None)
        if not self.enabled or self._engine.debug_mode or cpu.msr & _MSR_PR:
            return  # (user code: the same address may hold another process's code)
        pc = cpu.nip
        if loop is None and company:
            loop = self._loop_at(pc)
        if loop is not None and loop.start <= pc <= loop.end:
            self._park(cpu, loop)

    def _loop_at(self, pc: int) -> SpinLoop | None:
        known = self._by_pc.get(pc)
        if known is not None:
            return known.loop
        if pc in self._negative:
            return None
        loop = find_loop(pc, self._engine.fetch)
        if loop is None:
            if len(self._negative) >= _NEGATIVE_LIMIT:
                self._negative.clear()
            self._negative.add(pc)
            return None
        entry = self._loops.get(loop.start)
        if entry is None:
            entry = _Loop(loop, None)
            entry.hook = self._engine.hook_code_at(loop.start, partial(self._at_head, entry=entry))
            self._loops[loop.start] = entry
        for here in range(loop.start, loop.end + 4, 4):
            self._by_pc[here] = entry
        return loop

    # --- the loop-head hook (inside a slice) --------------------------------------------------

    def _at_head(self, cpu: VCpu, *, entry: _Loop) -> None:
        if cpu.msr & _MSR_PR:
            return
        loop = entry.loop
        inputs = (cpu.cr, *(cpu.gpr(r) for r in loop.inputs))
        seen = (loop.start, self._slice, inputs)
        if self._seen.get(cpu) == seen and self.enabled and not self._engine.debug_mode:
            # Round again with nothing changed: it spins.  End the slice at the next block.
            self._flagged[cpu] = loop
            entry.fruitless = 0
            self._engine.stop()
            return
        self._seen[cpu] = seen
        entry.fruitless += 1
        if entry.fruitless > _FRUITLESS_LIMIT:  # a hot path, not a wait: stop paying for it
            self._forget(entry)

    def _forget(self, entry: _Loop) -> None:
        loop = entry.loop
        self._engine.unhook(entry.hook)
        del self._loops[loop.start]
        for here in range(loop.start, loop.end + 4, 4):
            self._by_pc.pop(here, None)
            self._negative.add(here)

    # --- parking and waking -------------------------------------------------------------------

    def _park(self, cpu: VCpu, loop: SpinLoop) -> None:
        # One lap of the loop's loads, in order, through the CPU's MMU: a pointer it follows
        # comes from the word loaded before (the loop changes nothing else).
        words: set[int] = set()
        lap: dict[int, int] = {}

        def reg(n: int) -> int:
            return lap[n] if n in lap else cpu.gpr(n)

        for load in loop.loads:
            # Not `mapped`: a quantum may have stopped the CPU at the loop's head before its
            # first lap, with the word not in its TLB yet -- a miss in the middle of its own
            # TLB-miss handler must not see DEAR or the MAS registers change.
            pa = self._engine.translate(load.address(reg), UC_PROT_READ)
            if pa is None or not self._ram.contains(pa, load.size):
                return  # not a word of RAM (a device register): let it spin
            value = int.from_bytes(self._ram.read(pa, load.size), "big")
            if load.signed and value >> (8 * load.size - 1):
                value -= 1 << (8 * load.size)
            lap[load.rt] = value & 0xFFFF_FFFF
            words.add(pa & ~3)
        now = time.monotonic_ns()
        for pa in words:
            until = self._hot.get(pa & ~(PAGE_SIZE - 1))
            if until is not None:
                if now < until:
                    return  # a hot page: let it spin
                del self._hot[pa & ~(PAGE_SIZE - 1)]
        wait = Wait(resume_pc=cpu.nip, on_kick=self._kicked)
        parked = _Parked(wait, now + SPIN_TIMEOUT_NS)
        wake = self._wakers.get(cpu)
        if wake is None:
            wake = self._wakers[cpu] = partial(self._stored, cpu=cpu)
        for pa in sorted(words):
            page = pa & ~(PAGE_SIZE - 1)
            self._stores[page] = 0
            if page in self._pages:  # watched for spins already
                self._pages[page] = now
            else:
                if not self._engine.watching(page):
                    self._pages[page] = now  # ours to release when nobody spins on it
                self._engine.watch_page(page)
            value = self._ram.read_u32(pa)
            got = self._watch.arm_unless_changed(pa, value, wake)
            if isinstance(got, int):  # (a host write landed meanwhile)
                self._disarm(parked)
                return
            parked.waiters.append(got)
        self._parked[cpu] = parked
        self.parks += 1
        entry = self._loops.get(loop.start)
        if entry is not None:
            entry.fruitless = 0  # (its head's visits led somewhere)
        self._scheduler.park(cpu, wait)

    def _stored(self, _value: int, *, cpu: VCpu) -> None:
        self._wake(cpu, "store")

    def _wake(self, cpu: VCpu, why: str = "store") -> None:
        """A store to a watched word (with the watch lock held), an interrupt, a timeout."""
        parked = self._parked.get(cpu)
        woke = parked is not None and self._scheduler.wake(cpu, parked.wait,
                                                           partial(self._resumed, why=why))
        if parked is not None and not woke and self._parked.get(cpu) is parked:
            # That wait is over already (the machine stopped the CPU): forget it; its other
            # waiters are disarmed later, off this path (it may hold the watch lock).
            del self._parked[cpu]
            self._stale.append(parked)

    def _resumed(self, cpu: VCpu, *, why: str) -> None:
        parked = self._parked.pop(cpu, None)
        if parked is not None:
            self._disarm(parked)
            self.woken[why] += 1

    def _kicked(self, cpu: VCpu) -> Exit:
        """The machine stopped a parked spinner: its trio task just runs it again."""
        parked = self._parked.pop(cpu, None)
        if parked is not None:
            self._disarm(parked)
            self.woken["kick"] += 1
            return Exit(ExitKind.KICKED, parked.wait.resume_pc)
        return Exit(ExitKind.KICKED, cpu.pc)

    def _disarm(self, parked: _Parked) -> None:
        for w in parked.waiters:
            self._watch.disarm(w)
        parked.waiters.clear()

    def stored(self, address: int) -> None:
        """A guest store into a watched page (worker, in the store hook): a page watched for
        spins that keeps taking stores nobody waits for is released (:data:`STORE_BUDGET`)."""
        page = address & ~(PAGE_SIZE - 1)
        count = self._stores.get(page)
        if count is None:
            return
        if count < STORE_BUDGET:
            self._stores[page] = count + 1
            return
        if any(w.address & ~(PAGE_SIZE - 1) == page
               for p in self._parked.values() for w in p.waiters):
            return  # someone waits on it: released once nobody does
        del self._stores[page]
        self._hot[page] = time.monotonic_ns() + HOT_PAGE_NS
        if page in self._pages:
            del self._pages[page]
            self._engine.unwatch_page(page)

    def interrupt(self, cpu: VCpu) -> None:
        """An input of ``cpu`` came up (any thread): a spinner that would take it wakes."""
        if cpu in self._parked and has_work(cpu):
            self._wake(cpu, "interrupt")

    # --- time (the worker, between slices) ----------------------------------------------------

    def next_deadline(self) -> int | None:
        """When the earliest parked spinner times out (CLOCK_MONOTONIC ns), or None."""
        if not self._parked:
            return None
        return min(p.deadline for p in self._parked.values())

    def expire(self) -> None:
        """Wake the spinners whose timeout passed; release pages nobody spins on now."""
        now = time.monotonic_ns()
        for cpu, parked in list(self._parked.items()):
            if parked.deadline <= now:
                self._wake(cpu, "timeout")
        while self._stale:
            self._disarm(self._stale.pop())
        if now >= self._next_sweep and self._pages:
            self._next_sweep = now + UNWATCH_AFTER_NS // 4
            busy = {w.address & ~(PAGE_SIZE - 1) for p in self._parked.values()
                    for w in p.waiters}
            for page, last in list(self._pages.items()):
                if page not in busy and now - last > UNWATCH_AFTER_NS:
                    del self._pages[page]
                    self._stores.pop(page, None)
                    self._engine.unwatch_page(page)

    def statistics(self) -> dict[str, Any]:
        return {"loops": len(self._loops), "parks": self.parks, **self.woken,
                "pages": len(self._pages)}

