"""Where CPUs wait: the spin table, EV_IDLE, FW_WAIT_STORE and FW_CPU_RELEASE.

The CPU side of the hypercall device, mixed into the board (:class:`Parking` is a base of
:class:`machine.board.E500Machine`).  A CPU waits in one of two places, both zero host CPU:

* *inside its slice* (FW_WAIT_STORE): the scheduler takes it off the run queue
  (:class:`machine.cpu.scheduler.Wait`); the store that changes its word, or a release, puts it
  back, on the worker thread, with no trio round trip;
* *in its trio task* (EV_IDLE, a direct boot's spin table, and an in-slice wait the machine
  had to stop): it awaits a ``trio.Event`` set by a store, a release or console input.

No lost wake-up: a waiter is armed on the word (under the watch lock) before the word is
re-read, and stores to its page are reported from the next slice on, before any other vCPU
runs again (docs/DESIGN.md, "Parking").
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import trio

from machine.cpu.engine import Engine
from machine.cpu.interrupts import has_work
from machine.cpu.scheduler import Scheduler, Wait
from machine.cpu.vcpu import Exit, ExitKind, VCpu
from machine.devices import hypercalls
from machine.devices.hypercalls import Park
from machine.devices.watch import StoreWatch, Waiter
from machine.eventhub import EventHub
from machine.events import CpuParked, CpuReleased, CpuWoken, ParkReason
from machine.memory import GuestRAM
from machine.platform import (
    PAGE_SIZE,
    SECONDARY_IMA_SIZE,
    SPIN_ENTRY_ADDR_LO,
    SPIN_ENTRY_SIZE,
    SPIN_HOLD,
    EvStatus,
    SpinEntry,
    spin_entry_addr,
)


class CpuSlot:
    """Per-CPU bookkeeping owned by the trio side."""

    def __init__(self, cpu: VCpu) -> None:
        self.cpu = cpu
        self.parked: ParkReason | None = None
        self.wake = trio.Event()
        self.release: tuple[int, int] | None = None  # latched (entry, r3)
        self.input_pending = False  # console input arrived since the last EV_IDLE
        #: A timer raised an interrupt input since the last EV_IDLE (latched like input).
        self.interrupt_pending = False
        #: What the CPU is parked in ("EV_IDLE", "FW_WAIT_STORE on 0x3000"); cleared when it
        #: wakes normally, kept when a stop cancels the wait, so timeouts can say it.
        self.waiting_in: str | None = None
        #: FW_WAIT_STORE parked inside the slice: the scheduler's wait and the armed waiter.
        self.wait: Wait | None = None
        self.waiter: Waiter | None = None


def enter_as_secondary(cpu: VCpu, r3: int) -> None:
    """The ePAPR released-secondary registers: r3 as given, r4..r6 = 0, r7 = the 64 MiB
    initial mapped area, r8 = r9 = 0 (PLATFORM.md boot flow, step 3)."""
    cpu.set_gprs({3: r3, 4: 0, 5: 0, 6: 0, 7: SECONDARY_IMA_SIZE, 8: 0, 9: 0})


class Parking:
    """The waiting half of the board (see the module docstring)."""

    n_cpus: int
    ram_size: int
    ram: GuestRAM
    watch: StoreWatch
    events: EventHub
    engine: Engine
    scheduler: Scheduler
    _slots: list[CpuSlot]
    _lock: threading.Lock

    def now(self) -> float:
        raise NotImplementedError

    def _soon(self, fn: Callable[[], object]) -> None:
        raise NotImplementedError

    def _arm_spin_table(self) -> None:
        """Direct boot: every secondary's entry holds it (entry_addr = 1, r3 = pir = index).

        Written before any CPU task starts: CPU 0 may release a secondary within microseconds
        of starting, and an entry armed after that store would swallow the release."""
        for i in range(1, self.n_cpus):
            self.ram.write(
                spin_entry_addr(self.ram_size, i),
                SpinEntry.build(dict(entry_addr=SPIN_HOLD, r3=i, reserved=0, pir=i,
                                     pad=bytes(8))),
            )

    async def _spin_table_park(self, slot: CpuSlot) -> int:
        """Hold a CPU on its spin-table entry until a store clears bit 0 of entry_addr."""
        i = slot.cpu.index
        entry = spin_entry_addr(self.ram_size, i)
        word = entry + SPIN_ENTRY_ADDR_LO
        first = True
        while True:
            value = self.watch.read_u32(word)
            if not value & SPIN_HOLD:
                break
            woke = await self._wait_word(slot, word, value, ParkReason.SPIN_TABLE,
                                         pc=0, announce=first)
            first = False
            if woke == "release":
                pc = self._take_release(slot)
                assert pc is not None
                return pc
        fields = SpinEntry.parse(self.ram.read(entry, SPIN_ENTRY_SIZE))
        r3 = fields.r3 & 0xFFFF_FFFF
        target = fields.entry_addr & 0xFFFF_FFFF
        enter_as_secondary(slot.cpu, r3)
        # As ePAPR (and QEMU's spin code) release a secondary: MSR = 0 and one TLB1 entry of
        # 64 MiB mapping EA 0 to the 64 MiB block that holds its entry point.
        slot.cpu.set_msr(0)
        slot.cpu.epapr_mapping(target & ~(SECONDARY_IMA_SIZE - 1), SECONDARY_IMA_SIZE)
        self.events.emit(CpuReleased(time=self.now(), cpu=i, entry=target, r3=r3,
                                     by="spin-table"))
        return target

    async def _park(self, slot: CpuSlot, req: Park, pc: int) -> int:
        """Park a CPU for EV_IDLE or FW_WAIT_STORE; returns where it resumes."""
        released = self._take_release(slot)
        if released is not None:
            return released
        if req.reason is ParkReason.DOZE:
            return await self._wait_doze(slot, pc)
        if req.reason is ParkReason.IDLE:
            woke = await self._wait_event(slot, ParkReason.IDLE, pc)
            if woke == "release":
                released = self._take_release(slot)
                if released is not None:
                    return released
            return pc
        assert req.address is not None and req.expected is not None
        woke = await self._wait_word(slot, req.address, req.expected, ParkReason.WAIT_STORE,
                                     pc=pc, announce=not req.announced)
        if woke == "release":
            released = self._take_release(slot)
            if released is not None:
                return released
        slot.cpu.set_gprs({3: int(EvStatus.SUCCESS), 4: self.watch.read_u32(req.address)})
        return pc

    async def _wait_event(self, slot: CpuSlot, reason: ParkReason, pc: int) -> str:
        slot.wake = trio.Event()
        slot.parked = reason
        self.events.emit(CpuParked(time=self.now(), cpu=slot.cpu.index, reason=reason, pc=pc))
        try:
            if slot.release is not None:
                return "release"
            if slot.input_pending:
                slot.input_pending = False
                return "console"
            if slot.interrupt_pending:
                slot.interrupt_pending = False
                return "interrupt"
            slot.waiting_in = "EV_IDLE"
            await slot.wake.wait()
            slot.waiting_in = None
        finally:
            slot.parked = None
        if slot.release is not None:
            by = "release"
        elif slot.interrupt_pending:
            by = "interrupt"
        else:
            by = "console"
        slot.input_pending = slot.interrupt_pending = False
        self.events.emit(CpuWoken(time=self.now(), cpu=slot.cpu.index, by=by))
        return by

    async def _wait_doze(self, slot: CpuSlot, pc: int) -> int:
        """A dozing CPU the machine had stopped (trio side): wait until it has work."""
        while True:
            slot.wake = trio.Event()
            slot.parked = ParkReason.DOZE
            released = self._take_release(slot)
            if released is not None:
                slot.parked = None
                return released
            if has_work(slot.cpu):
                slot.parked = None
                if self.events.active:
                    self.events.emit(CpuWoken(time=self.now(), cpu=slot.cpu.index,
                                              by="interrupt"))
                return pc
            slot.waiting_in = "MSR[WE] doze"
            try:
                await slot.wake.wait()
            finally:
                slot.waiting_in = None
                slot.parked = None

    async def _wait_word(self, slot: CpuSlot, word: int, expected: int, reason: ParkReason,
                         pc: int, announce: bool) -> str:
        """Park until the word at ``word`` differs from ``expected`` (or a release comes)."""
        ev = trio.Event()
        slot.wake = ev
        waiter = self.watch.arm(word, expected, lambda _value: self._soon(ev.set))
        try:
            await self._watched(word & ~(PAGE_SIZE - 1))
            if self.watch.recheck(waiter) is not None:
                return "store"
            if slot.release is not None:
                return "release"
            slot.parked = reason
            if announce:
                self.events.emit(CpuParked(time=self.now(), cpu=slot.cpu.index, reason=reason,
                                           pc=pc, address=word))
            slot.waiting_in = (
                f"FW_WAIT_STORE on {word:#x}" if reason is ParkReason.WAIT_STORE
                else f"its spin-table entry ({word:#x})"
            )
            await ev.wait()
            slot.waiting_in = None
        finally:
            slot.parked = None
            self.watch.disarm(waiter)
        by = "store" if waiter.fired else "release"
        self.events.emit(CpuWoken(time=self.now(), cpu=slot.cpu.index, by=by))
        return by

    async def _watched(self, page: int) -> None:
        """Make stores to ``page`` reported before the caller re-reads its word: the engine
        protects it before its next slice, so a running slice is cut short and awaited."""
        while not self.engine.watch_page(page):
            self.scheduler.preempt_now()
            await trio.sleep(0.0005)

    def _take_release(self, slot: CpuSlot) -> int | None:
        with self._lock:
            rel, slot.release = slot.release, None
        if rel is None:
            return None
        entry, r3 = rel
        enter_as_secondary(slot.cpu, r3)
        self.events.emit(CpuReleased(time=self.now(), cpu=slot.cpu.index, entry=entry, r3=r3,
                                     by="FW_CPU_RELEASE"))
        return entry

    def release(self, caller: int, target: int, entry: int, r3: int) -> EvStatus:
        """FW_CPU_RELEASE (worker thread): latch a release and wake the target if parked."""
        if not 0 <= target < self.n_cpus or target == caller:
            return EvStatus.EINVAL
        slot = self._slots[target]
        with self._lock:
            if slot.release is not None:
                return EvStatus.INVALID_STATE
            slot.release = (entry & 0xFFFF_FFFF, r3 & 0xFFFF_FFFF)
        wait = slot.wait
        if wait is None or not self.scheduler.wake(slot.cpu, wait,
                                                   lambda c: self._release_woke(slot)):
            self._soon(lambda: slot.wake.set())
        return EvStatus.SUCCESS

    def _wake_idle_on_input(self) -> None:
        # Latched per CPU: a CPU that is running when input arrives idles straight through
        # its next EV_IDLE instead of sleeping past the input (no lost wake-up).
        def wake() -> None:
            for slot in self._slots:
                slot.input_pending = True
                if slot.parked is ParkReason.IDLE:
                    self.wake_idle(slot, "console")

        self._soon(wake)

    def idle_in_slice(self, cpu: VCpu) -> bool:
        """EV_IDLE inside the slice (worker, in the hypercall hook): the CPU leaves the run
        queue until console input, a timer's interrupt or a release (:meth:`wake_idle`)."""
        slot = self._slots[cpu.index]
        if slot.release is not None:
            return False  # its trio task takes the release
        if self.events.active:
            self.events.emit(CpuParked(time=self.now(), cpu=cpu.index, reason=ParkReason.IDLE,
                                       pc=cpu.hcall_pc))
        if slot.input_pending or slot.interrupt_pending:
            by = "console" if slot.input_pending else "interrupt"
            slot.input_pending = slot.interrupt_pending = False
            if self.events.active:
                self.events.emit(CpuWoken(time=self.now(), cpu=cpu.index, by=by))
            return True
        wait = Wait(resume_pc=cpu.hcall_pc, on_kick=lambda c: self._kick_idle(slot))
        slot.wait = wait
        slot.parked = ParkReason.IDLE
        slot.waiting_in = "EV_IDLE"
        cpu.parked_in_slice = True
        self.scheduler.park(cpu, wait)
        return True

    def wake_idle(self, slot: CpuSlot, by: str) -> None:
        """End an EV_IDLE, or a doze that now has work (any thread): in the scheduler, or
        in the CPU's trio task."""
        parked = slot.parked
        if parked is ParkReason.DOZE and by != "release" and not has_work(slot.cpu):
            return
        wait = slot.wait
        if wait is not None and parked in (ParkReason.IDLE, ParkReason.DOZE):
            self.scheduler.wake(slot.cpu, wait, lambda c: self._idle_woke(slot, by))
        elif parked in (ParkReason.IDLE, ParkReason.DOZE):
            self._soon(slot.wake.set)

    def doze_in_slice(self, cpu: VCpu, resume_pc: int) -> None:
        """MSR[WE] halted ``cpu`` (worker, from the engine's power-management hook): it
        leaves the run queue until it has work (an input up with MSR[EE]) or a release."""
        slot = self._slots[cpu.index]
        if self.events.active:
            self.events.emit(CpuParked(time=self.now(), cpu=cpu.index, reason=ParkReason.DOZE,
                                       pc=resume_pc))
        wait = Wait(resume_pc=resume_pc, on_kick=lambda c: self._kick_doze(slot, resume_pc))
        slot.wait = wait
        slot.parked = ParkReason.DOZE
        slot.waiting_in = "MSR[WE] doze"
        self.scheduler.park(cpu, wait)
        if slot.release is not None:
            self.scheduler.wake(cpu, wait, lambda c: self._release_woke(slot))
        elif has_work(cpu):  # an input came up between the mtmsr and here
            self.scheduler.wake(cpu, wait, lambda c: self._idle_woke(slot, "interrupt"))

    def _kick_doze(self, slot: CpuSlot, resume_pc: int) -> Exit:
        """The machine stopped a dozing CPU: its trio task waits for its work instead."""
        self._end_wait(slot)
        return Exit(ExitKind.PARK, resume_pc, Park(ParkReason.DOZE))

    def _idle_woke(self, slot: CpuSlot, by: str) -> None:
        self._end_wait(slot)
        slot.waiting_in = None
        slot.input_pending = slot.interrupt_pending = False
        if self.events.active:
            self.events.emit(CpuWoken(time=self.now(), cpu=slot.cpu.index, by=by))

    def _kick_idle(self, slot: CpuSlot) -> Exit:
        """The machine stopped a CPU idling inside its slice: its trio task idles it."""
        self._end_wait(slot)
        return Exit(ExitKind.PARK, slot.cpu.hcall_pc, Park(ParkReason.IDLE))

    def wait_store_in_slice(self, cpu: VCpu, addr: int,
                            expected: int) -> int | hypercalls.Parked | None:
        """FW_WAIT_STORE inside the slice (worker thread, in the hypercall hook).

        The page is watched from the next slice on, and no other vCPU runs before that slice,
        so no store is missed; a waiter is armed as the word is read (under the watch lock),
        and the vCPU leaves the run queue.  The store that changes the word (on the worker
        thread, or a host write on another) puts it back at the head of the queue with r3 =
        0 and r4 = the new value; a release puts it on its entry point.  Returns the value if
        the word already differs, None if a release is latched (taken through the trio task).
        """
        slot = self._slots[cpu.index]
        if slot.release is not None:
            return None
        self.engine.watch_page(addr & ~(PAGE_SIZE - 1))
        wait = Wait(resume_pc=cpu.hcall_pc,
                    on_kick=lambda c: self._kick_wait(slot, addr, expected))

        def woken(value: int) -> None:
            self.scheduler.wake(cpu, wait, lambda c: self._store_woke(slot, value))

        got = self.watch.arm_unless_changed(addr, expected, woken)
        if isinstance(got, int):
            return got
        slot.wait, slot.waiter = wait, got
        slot.parked = ParkReason.WAIT_STORE
        slot.waiting_in = f"FW_WAIT_STORE on {addr:#x}"
        cpu.parked_in_slice = True
        self.events.emit(CpuParked(time=self.now(), cpu=cpu.index, reason=ParkReason.WAIT_STORE,
                                   pc=cpu.hcall_pc, address=addr))
        self.scheduler.park(cpu, wait)
        return hypercalls.PARKED

    def _end_wait(self, slot: CpuSlot) -> None:
        if slot.waiter is not None:
            self.watch.disarm(slot.waiter)
        slot.wait = slot.waiter = None
        slot.parked = None

    def _store_woke(self, slot: CpuSlot, value: int) -> None:
        """The store that ended an in-slice FW_WAIT_STORE (worker, as the CPU resumes)."""
        self._end_wait(slot)
        slot.waiting_in = None
        cpu = slot.cpu
        cpu.set_gpr(3, EvStatus.SUCCESS)
        cpu.set_gpr(4, value)
        if self.events.active:
            self.events.emit(CpuWoken(time=self.now(), cpu=cpu.index, by="store"))

    def _release_woke(self, slot: CpuSlot) -> int | None:
        """A release that ended an in-slice FW_WAIT_STORE (worker, as the CPU resumes)."""
        self._end_wait(slot)
        slot.waiting_in = None
        self.events.emit(CpuWoken(time=self.now(), cpu=slot.cpu.index, by="release"))
        return self._take_release(slot)

    def _kick_wait(self, slot: CpuSlot, addr: int, expected: int) -> Exit:
        """The machine stopped a CPU parked inside its slice: its trio task parks it."""
        self._end_wait(slot)  # its task's slice ends now, and counts -1
        return Exit(ExitKind.PARK, slot.cpu.hcall_pc,
                    Park(ParkReason.WAIT_STORE, addr, expected, announced=True))

    def _where(self, slot: CpuSlot) -> str:
        """Where a CPU was when the machine stopped it, for timeout messages."""
        state = f" parked in {slot.waiting_in}" if slot.waiting_in else ""
        pc = self.scheduler.pc_of(slot.cpu)
        return f"cpu {slot.cpu.index}{state} at pc {pc:#010x}"

    def cpu_parked(self, index: int) -> ParkReason | None:
        """Why CPU ``index`` is parked, or None while it runs or waits to run."""
        return self._slots[index].parked
