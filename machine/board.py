"""The fwcfg-e500 board: RAM, boot ROM, fw_cfg, the hypercall device and N e500v2 CPUs.

``E500Machine`` wires the pieces at the addresses of ``machine/platform.py`` and owns their
lifetime.  Everything is checked and loaded when the machine is *built* (bad host input raises
:class:`fwcfg.ConfigError` before any guest code runs); :meth:`E500Machine.run` then powers it
on inside one trio nursery:

* one task per CPU drives its :class:`~machine.cpu.vcpu.VCpu`: run a slice, act on how it ended
  (park, power off, reset, fault), repeat.  A parked CPU costs zero host CPU: either its task
  awaits a ``trio.Event`` while its worker thread waits for work, or (FW_WAIT_STORE on a page
  every CPU already watches) its worker blocks inside the hypercall hook while the task still
  awaits the slice; docs/DESIGN.md "Parking" says why there are two.
* the run's shared ticker (:mod:`machine.cpu.timebase`) advances every running CPU's timebase at
  least every millisecond (unicorn's does not tick) and sleeps when no CPU runs.

The run ends on FW_POWEROFF (its code is the result), on a guest fault, on the timeout, or when
the caller cancels; in every case all CPUs are stopped before ``run`` returns.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from fwcfg import ConfigError, DmaOp, DmaTransfer, FwCfgOption
from machine.boot import images as boot
from machine.cpu.engine import Engine
from machine.cpu.scheduler import Scheduler, Wait
from machine.cpu.timebase import Ticker, ticker
from machine.cpu.vcpu import Exit, ExitKind, Fault, VCpu
from machine.devices import hypercalls
from machine.devices.console import Console
from machine.devices.hypercalls import Park, PowerOffRequest
from machine.eventhub import EventHub
from machine.events import (
    CpuParked,
    CpuReleased,
    CpuStarted,
    CpuWoken,
    Event,
    FwCfgDma,
    FwCfgSelect,
    GuestFault,
    Hypercall,
    ParkReason,
    PowerOff,
    Reset,
)
from machine.memory import GuestRAM
from machine.platform import (
    DEFAULT_RAM_SIZE,
    DIRECT_BOOT_STACK,
    EPAPR_MAGIC,
    FWCFG_SIZE,
    MAX_CPUS,
    MAX_RAM_SIZE,
    MIN_CPUS,
    MIN_RAM_SIZE,
    PAGE_SIZE,
    RAM_ALIGN,
    ROM_SIZE,
    SECONDARY_IMA_SIZE,
    SPIN_ENTRY_ADDR_LO,
    SPIN_ENTRY_SIZE,
    SPIN_HOLD,
    TIMEBASE_HZ,
    EvStatus,
    SpinEntry,
    ima_size,
    spin_entry_addr,
    spin_table_base,
)

if TYPE_CHECKING:
    from machine.debug.gdb_control import DebugControl  # debugger support (issue 6)
    from machine.devices.watch import Waiter


@dataclass(frozen=True)
class MachineConfig:
    """Everything that defines a machine; validated by :class:`E500Machine`."""

    ram_size: int = DEFAULT_RAM_SIZE
    smp: int = 1
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    dtb: Path | None = None
    bios: Path | None = None  # None: the bundled firmware
    fw_cfg: Sequence[FwCfgOption] = ()
    direct: bool = False
    uuid: str | None = None
    fwcfg_dma: bool = True
    # --- public API (issue 5) ---
    #: Write the boot timeline here as Chrome trace-event JSON (Perfetto, chrome://tracing).
    trace_file: Path | None = None
    #: Keep every event from power-on (``m.events.history``; streams and ``wait_for`` see
    #: events that happened before they were called).
    record_events: bool = False


class _Slot:
    """Per-CPU bookkeeping owned by the trio side."""

    def __init__(self, cpu: VCpu) -> None:
        self.cpu = cpu
        self.parked: ParkReason | None = None
        self.wake = trio.Event()
        self.release: tuple[int, int] | None = None  # latched (entry, r3)
        self.generation = 0
        self.in_slice = False  # inside VCpu.run (handed to the scheduler)
        self.input_pending = False  # console input arrived since the last EV_IDLE
        #: What the CPU is parked in ("EV_IDLE", "FW_WAIT_STORE on 0x3000"); cleared when it
        #: wakes normally, kept when a stop cancels the wait, so timeouts can say it.
        self.waiting_in: str | None = None
        self.lot = trio.lowlevel.ParkingLot()
        #: FW_WAIT_STORE parked inside the slice: the scheduler's wait and the armed waiter.
        self.wait: Wait | None = None
        self.waiter: Waiter | None = None


@dataclass
class RunResult:
    """How a run ended."""

    code: int
    reason: str
    fault: GuestFault | None = None


class E500Machine:
    """A configured machine, ready to :meth:`run`.

    Build errors (bad sizes, unreadable or foreign files, a corrupt device tree) raise
    :class:`fwcfg.ConfigError` from the constructor, before any guest code runs.
    """

    def __init__(self, config: MachineConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            config = MachineConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a MachineConfig or keyword arguments, not both")
        self.config = config
        _check_config(config)
        self.n_cpus = config.smp
        self.ram_size = config.ram_size
        self.console = Console()
        self.events = EventHub()
        self._lock = threading.Lock()
        self._t0 = time.monotonic_ns()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop_result: RunResult | None = None
        self._stop_event: trio.Event | None = None
        self._reset_requested = False
        self._running_count = 0
        self._timebase: Ticker = Ticker()  # replaced by the run's shared ticker in run()
        #: Set by machine.debug.gdbstub while a debugger may attach (debugger support, issue 6).
        self.debug: DebugControl | None = None

        self.images = boot.load_images(config)
        self._rom_map = mmap.mmap(-1, ROM_SIZE)
        self._rom_map[:] = self.images.rom
        self._rom_anchor = ctypes.c_char.from_buffer(self._rom_map)
        self.ram = GuestRAM(config.ram_size)
        from machine.devices.watch import StoreWatch

        self.watch = StoreWatch(self.ram)
        self.fwcfg, self._mmio, warnings = boot.build_fwcfg(config, self.images, self.ram)
        #: Host-side warnings about the configuration (the CLI prints them).
        self.warnings: list[str] = warnings
        #: The machine's one CPU engine, and the scheduler that runs its vCPUs in it.
        self.engine = Engine(self.ram, ctypes.addressof(self._rom_anchor), _Host(self))
        self.cpus = [self.engine.new_vcpu(i) for i in range(self.n_cpus)]
        self.scheduler = Scheduler(self.engine, self.cpus)
        self._slots = [_Slot(cpu) for cpu in self.cpus]
        self.engine.watch_page(spin_table_base(self.ram_size))
        self._init_public_api()

    # --- public ----------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since power-on."""
        return (time.monotonic_ns() - self._t0) / 1e9

    async def run(self, *, timeout: float | None = None,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> RunResult:
        """Power on and run until power-off, a guest fault, ``timeout`` or cancellation.

        Returns how it ended; the CPUs are stopped in every case.  Usable with
        ``nursery.start(machine.run)``: it reports started once every CPU task is running.
        """
        self._token = trio.lowlevel.current_trio_token()
        self.console.attach(self._token, self._wake_idle_on_input)
        self.events.attach(self._token)
        started = False
        self._timebase = ticker()
        self._timebase.add(self)
        try:
            with trio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
                while True:
                    self._stop_result = None
                    self._stop_event = trio.Event()
                    if self.config.direct:
                        boot.load_direct(self.images, self.ram)
                        self._arm_spin_table()
                    async with trio.open_nursery() as nursery:
                        for slot in self._slots:
                            await nursery.start(self._cpu_main, slot)
                        if not started:
                            started = True
                            task_status.started()
                        await self._stop_event.wait()
                        nursery.cancel_scope.cancel()
                    if self._reset_requested:
                        self._reset_requested = False
                        self._power_on_reset()
                        continue
                    break
            # The timeout wins unless the machine had already powered off by itself.
            if scope.cancelled_caught and (self._stop_result is None or self._reset_requested):
                self._reset_requested = False
                where = "; ".join(self._where(s) for s in self._slots)
                self._stop_result = RunResult(
                    code=124, reason=f"timeout after {timeout:g} s: {where}"
                )
                self.events.emit(PowerOff(time=self.now(), code=124,
                                          reason=self._stop_result.reason))
        finally:
            self._timebase.remove(self)
            self.console.flush()
            self.events.flush()
            if not started:
                task_status.started()
        assert self._stop_result is not None
        return self._stop_result

    def close(self) -> None:
        """Release host resources (worker threads, CPU engines); idempotent.  The machine
        cannot run afterwards; its RAM stays readable until the object is dropped."""
        self.scheduler.close()
        if not self.scheduler.alive:  # never free an engine a stuck thread may be inside
            self.engine.close(self.cpus)

    async def __aenter__(self) -> E500Machine:
        """Power the machine on in the background; ``async with`` exit stops it.

        The nursery is opened by hand so that the machine's lifetime is the ``async with``
        block; cancellation or an exception in the block stops every CPU before it propagates.
        """
        self._cm_nursery_mgr = trio.open_nursery()
        nursery = await self._cm_nursery_mgr.__aenter__()
        self._cm_result: RunResult | None = None

        async def runner(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            self._cm_result = await self.run(task_status=task_status)

        try:
            await nursery.start(runner)
        except BaseException as e:
            try:
                await self._cm_nursery_mgr.__aexit__(type(e), e, e.__traceback__)
            finally:
                self.close()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        if self._stop_result is None:
            self.stop(reason="the async with block ended")
        try:
            return await self._cm_nursery_mgr.__aexit__(*exc)
        except BaseExceptionGroup as group:
            # trio wraps the block's own exception in a group; hand it back unwrapped so
            # `except ConsoleTimeout` / pytest.raises around the block work as people expect.
            if exc[1] is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc[1]:
                return False
            raise
        finally:
            self.close()

    @property
    def result(self) -> RunResult | None:
        """How the run ended, once it has."""
        return self._stop_result

    def stop(self, code: int = 0, reason: str = "stopped by the host") -> None:
        """Ask a running machine to power off (trio thread).  Overrides a pending reset."""
        if self._reset_requested:
            self._reset_requested = False
            self._stop_result = None
        self._finish(RunResult(code=code, reason=reason))

    # --- public API (issue 5) ---------------------------------------------------------------

    def _init_public_api(self) -> None:
        """Observers that must exist before power-on (called at the end of ``__init__``)."""
        self.console.stop_reason = lambda: self.result.reason if self.result else None
        if self.config.record_events:
            self.events.record()
        if self.config.trace_file is not None:
            self.trace_to(self.config.trace_file)

    def trace_to(self, path: str | Path) -> None:
        """Write this machine's timeline to ``path`` as Chrome trace-event JSON.

        Call before the machine powers on to see the whole boot; the file is complete when
        the run ends.  An unwritable path raises :class:`fwcfg.ConfigError`.
        """
        from machine.tracefile import TraceWriter

        TraceWriter.attach(self, Path(path))

    async def wait_for(self, predicate: Any, *, timeout: float | None = 10.0) -> Event:
        """The next event that is an instance of ``predicate`` or satisfies it
        (see :meth:`machine.eventhub.EventHub.wait_for`)."""
        return await self.events.wait_for(predicate, timeout=timeout)

    async def wait(self, *, timeout: float | None = None) -> RunResult:
        """Wait until the run has ended (power-off, fault, timeout, :meth:`stop`); its result.

        Raises :class:`TimeoutError` if it is still running after ``timeout`` seconds."""
        with trio.move_on_after(float("inf") if timeout is None else timeout):
            await self.events.wait_ended()
            if self.result is None:
                raise RuntimeError("the run was cancelled before the machine stopped")
            return self.result
        where = "; ".join(self._where(s) for s in self._slots)
        raise TimeoutError(f"the machine was still running after {timeout:g} s: {where}")

    # --- the CPU tasks ---------------------------------------------------------------------

    async def _cpu_main(self, slot: _Slot,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cpu = slot.cpu
        pc = self._power_on_state(slot)
        task_status.started()
        try:
            if pc is None:
                pc = await self._spin_table_park(slot)
            self.events.emit(CpuStarted(time=self.now(), cpu=cpu.index, pc=pc))
            while True:
                if self.debug is not None:  # debugger support (issue 6)
                    pc = await self.debug.gate(cpu.index, pc)
                self._set_running(+1)
                slot.in_slice = True
                try:
                    cpu.set_timebase(self._ticks())
                    exit_ = await cpu.run(pc)
                finally:
                    slot.in_slice = False
                    self._set_running(-1)
                    slot.generation += 1
                    slot.lot.unpark_all()
                pc = exit_.pc
                if self.debug is not None and self.debug.slice_ended(cpu.index, exit_):
                    continue  # debugger support (issue 6): a breakpoint, watchpoint or step
                if exit_.kind is ExitKind.KICKED:
                    continue
                if exit_.kind is ExitKind.PARK:
                    pc = await self._park(slot, exit_.request, pc)
                elif exit_.kind is ExitKind.POWEROFF:
                    req: PowerOffRequest = exit_.request
                    self._finish(RunResult(code=req.code & 0xFFFF_FFFF,
                                           reason=f"FW_POWEROFF by cpu {cpu.index}"))
                    return
                elif exit_.kind is ExitKind.RESET:
                    if self._stop_result is None:  # a power-off already under way wins
                        self.events.emit(Reset(time=self.now(), cpu=cpu.index))
                        self._reset_requested = True
                        self._finish(RunResult(code=0, reason="reset"))
                    return
                else:
                    self._fault(slot, exit_)
                    return
        finally:
            slot.parked = None

    def _power_on_state(self, slot: _Slot) -> int | None:
        """Registers at power-on; returns the start PC, or None for a CPU the machine parks on
        its spin-table entry (direct boot secondaries)."""
        cpu, i = slot.cpu, slot.cpu.index
        cpu.set_msr(0)
        cpu.set_gprs(dict.fromkeys(range(32), 0))
        if not self.config.direct:
            cpu.set_gpr(3, i)
            return self.images.firmware_entry
        if i == 0:
            kernel = self.images.kernel
            assert kernel is not None
            cpu.set_gprs({1: DIRECT_BOOT_STACK, 3: self.images.dtb_addr, 6: EPAPR_MAGIC,
                          7: ima_size(self.images.dtb_addr + len(self.images.fdt))})
            return kernel.entry
        return None  # held on the entry written by _arm_spin_table

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

    async def _spin_table_park(self, slot: _Slot) -> int:
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
        _enter_as_secondary(slot.cpu, r3)
        self.events.emit(CpuReleased(time=self.now(), cpu=i, entry=target, r3=r3,
                                     by="spin-table"))
        return target

    async def _park(self, slot: _Slot, req: Park, pc: int) -> int:
        """Park a CPU for EV_IDLE or FW_WAIT_STORE; returns where it resumes."""
        released = self._take_release(slot)
        if released is not None:
            return released
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

    async def _wait_event(self, slot: _Slot, reason: ParkReason, pc: int) -> str:
        slot.wake = trio.Event()
        slot.parked = reason
        slot.lot.unpark_all()
        self.events.emit(CpuParked(time=self.now(), cpu=slot.cpu.index, reason=reason, pc=pc))
        try:
            if slot.release is not None:
                return "release"
            if slot.input_pending:
                slot.input_pending = False
                return "console"
            slot.waiting_in = "EV_IDLE"
            await slot.wake.wait()
            slot.waiting_in = None
        finally:
            slot.parked = None
        by = "release" if slot.release is not None else "console"
        slot.input_pending = False
        self.events.emit(CpuWoken(time=self.now(), cpu=slot.cpu.index, by=by))
        return by

    async def _wait_word(self, slot: _Slot, word: int, expected: int, reason: ParkReason,
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
            slot.lot.unpark_all()
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

    def _take_release(self, slot: _Slot) -> int | None:
        with self._lock:
            rel, slot.release = slot.release, None
        if rel is None:
            return None
        entry, r3 = rel
        _enter_as_secondary(slot.cpu, r3)
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
                    slot.wake.set()

        self._soon(wake)

    def _soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the trio thread, from any thread; nothing once the trio run is over."""
        if self._token is not None:
            try:
                self._token.run_sync_soon(fn)
            except trio.RunFinishedError:
                pass

    def _fault(self, slot: _Slot, exit_: Exit) -> None:
        f: Fault = exit_.request
        state = slot.cpu.snapshot()
        ev = GuestFault(time=self.now(), cpu=slot.cpu.index, kind=f.kind, pc=f.pc,
                        address=f.address, state=state)
        self.events.emit(ev)
        self._finish(RunResult(code=125, reason=ev.describe() + "\n" + state.describe(),
                               fault=ev))

    def _finish(self, result: RunResult) -> None:
        if self._stop_result is None:
            self._stop_result = result
            if result.reason != "reset":
                self.events.emit(PowerOff(time=self.now(), code=result.code,
                                          reason=result.reason))
        if self._stop_event is not None:
            self._stop_event.set()

    # --- time ------------------------------------------------------------------------------

    def _ticks(self) -> int:
        return (time.monotonic_ns() - self._t0) * (TIMEBASE_HZ // 1_000_000) // 1000

    def _set_running(self, delta: int, from_worker: bool = False) -> None:
        """Count CPUs that execute; the ticker sleeps while there are none.  Worker threads
        (CPUs parking inside a slice) call this too, hence the lock."""
        with self._lock:
            self._running_count += delta
            wake = delta > 0 and self._running_count == delta  # 0 -> running: the ticker
        if wake:  # may be asleep; otherwise it is ticking already and needs no call
            if from_worker:
                self._soon(self._timebase.poke)
            else:
                self._timebase.poke()

    # The shared timebase ticker (machine/cpu/timebase.py) calls these on the trio thread.

    def wants_ticks(self) -> bool:
        return self._running_count > 0

    def tick(self) -> None:
        """Advance the timebase of every CPU not parked in its trio task."""
        ticks = self._ticks()
        for slot in self._slots:
            if slot.parked is None:
                slot.cpu.set_timebase(ticks)

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
        self._set_running(-1, from_worker=True)
        self.events.emit(CpuParked(time=self.now(), cpu=cpu.index, reason=ParkReason.WAIT_STORE,
                                   pc=cpu.hcall_pc, address=addr))
        self.scheduler.park(cpu, wait)
        return hypercalls.PARKED

    def _end_wait(self, slot: _Slot) -> None:
        if slot.waiter is not None:
            self.watch.disarm(slot.waiter)
        slot.wait = slot.waiter = None
        slot.parked = None

    def _store_woke(self, slot: _Slot, value: int) -> None:
        """The store that ended an in-slice FW_WAIT_STORE (worker, as the CPU resumes)."""
        self._end_wait(slot)
        self._set_running(+1, from_worker=True)
        slot.waiting_in = None
        cpu = slot.cpu
        cpu.set_gprs({3: int(EvStatus.SUCCESS), 4: value})
        cpu.set_timebase(self._ticks())
        self.events.emit(CpuWoken(time=self.now(), cpu=cpu.index, by="store"))

    def _release_woke(self, slot: _Slot) -> int | None:
        """A release that ended an in-slice FW_WAIT_STORE (worker, as the CPU resumes)."""
        self._end_wait(slot)
        self._set_running(+1, from_worker=True)
        slot.waiting_in = None
        slot.cpu.set_timebase(self._ticks())
        self.events.emit(CpuWoken(time=self.now(), cpu=slot.cpu.index, by="release"))
        return self._take_release(slot)

    def _kick_wait(self, slot: _Slot, addr: int, expected: int) -> Exit:
        """The machine stopped a CPU parked inside its slice: its trio task parks it."""
        self._end_wait(slot)
        self._set_running(+1, from_worker=True)  # its task's slice ends now, and counts -1
        return Exit(ExitKind.PARK, slot.cpu.hcall_pc,
                    hypercalls.Park(ParkReason.WAIT_STORE, addr, expected, announced=True))

    def _power_on_reset(self) -> None:
        """FW_RESET: RAM back to zeros, devices to their reset state, CPUs to power-on."""
        self.ram.zero()
        self.fwcfg.reset()
        for slot in self._slots:
            slot.release = None
            slot.parked = None

    # --- debugger support (issue 6) --------------------------------------------------------

    def _where(self, slot: _Slot) -> str:
        """Where a CPU was when the machine stopped it, for timeout messages."""
        state = f" parked in {slot.waiting_in}" if slot.waiting_in else ""
        pc = self.scheduler.pc_of(slot.cpu)
        return f"cpu {slot.cpu.index}{state} at pc {pc:#010x}"

    def cpu_parked(self, index: int) -> ParkReason | None:
        """Why CPU ``index`` is parked, or None while it runs or waits to run."""
        return self._slots[index].parked

    # --- hooks from the vCPUs (worker threads) ---------------------------------------------

    def _mmio_read(self, cpu: VCpu, offset: int, size: int) -> int:
        if offset >= FWCFG_SIZE:
            return 0
        return int(self._mmio.read(offset, size))

    def _mmio_write(self, cpu: VCpu, offset: int, size: int, value: int) -> None:
        if offset >= FWCFG_SIZE:
            return
        events = self._mmio.write(offset, size, value)
        for e in events:  # a DMA READ wrote RAM behind unicorn's back: no stale code
            if isinstance(e, DmaTransfer) and e.op is DmaOp.READ and e.length \
                    and self.ram.contains(e.address, 1):
                end = min(e.address + e.length, self.ram.base + self.ram.size)
                self.engine.drop_code(e.address, end)
        if events and self.events.active:
            now = self.now()
            for e in events:
                self.events.emit(_fwcfg_event(e, cpu.index, now))


def _fwcfg_event(e: Any, cpu: int, now: float) -> Event:
    if hasattr(e, "control"):
        return FwCfgDma(time=now, cpu=cpu, key=e.key, name=e.name, op=str(e.op),
                        offset=e.offset, length=e.length, address=e.address, error=e.error)
    return FwCfgSelect(time=now, cpu=cpu, key=e.key, name=e.name)


def _enter_as_secondary(cpu: VCpu, r3: int) -> None:
    """The ePAPR released-secondary registers: r3 as given, r4..r6 = 0, r7 = the 64 MiB
    initial mapped area, r8 = r9 = 0 (PLATFORM.md boot flow, step 3)."""
    cpu.set_gprs({3: r3, 4: 0, 5: 0, 6: 0, 7: SECONDARY_IMA_SIZE, 8: 0, 9: 0})


class _Host:
    """The machine as seen by a vCPU's hooks (see :class:`machine.cpu.vcpu.Host`)."""

    def __init__(self, m: E500Machine) -> None:
        self._m = m
        self._svc = _Services(m)

    def mmio_read(self, cpu: VCpu, offset: int, size: int) -> int:
        return self._m._mmio_read(cpu, offset, size)

    def mmio_write(self, cpu: VCpu, offset: int, size: int, value: int) -> None:
        self._m._mmio_write(cpu, offset, size, value)

    def hypercall(self, cpu: VCpu) -> Exit | None:
        return hypercalls.dispatch(self._svc, cpu, self._m.events.active)

    def store(self, cpu: VCpu, addr: int, data: bytes) -> None:
        self._m.watch.store(addr, data)


class _Services:
    """What the hypercall handlers see of the machine (see :class:`hypercalls.Services`)."""

    def __init__(self, m: E500Machine) -> None:
        self._m = m

    def console_send(self, cpu: int, data: bytes) -> bool:
        return self._m.console.send(cpu, data)

    def console_receive(self, max_count: int) -> bytes:
        return self._m.console.receive(max_count)

    def console_poll(self) -> tuple[int, int]:
        return self._m.console.poll()

    def release(self, caller: int, target: int, entry: int, r3: int) -> EvStatus:
        return self._m.release(caller, target, entry, r3)

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._m._t0

    def hypercall_event(self, event: Hypercall) -> None:
        self._m.events.emit(event)

    def event_time(self) -> float:
        return self._m.now()

    def ram_contains(self, addr: int, size: int) -> bool:
        return self._m.ram.contains(addr, size)

    def wait_store_in_slice(self, cpu: VCpu, addr: int,
                            expected: int) -> int | hypercalls.Parked | None:
        return self._m.wait_store_in_slice(cpu, addr, expected)


def _check_config(c: MachineConfig) -> None:
    if not MIN_CPUS <= c.smp <= MAX_CPUS:
        raise ConfigError(f"-smp {c.smp}: the machine has {MIN_CPUS} to {MAX_CPUS} CPUs")
    if c.ram_size % RAM_ALIGN or not MIN_RAM_SIZE <= c.ram_size <= MAX_RAM_SIZE:
        raise ConfigError(
            f"-m {c.ram_size // (1 << 20)}M ({c.ram_size:#x} bytes): RAM must be a multiple of "
            f"4 KiB between {MIN_RAM_SIZE >> 20} MiB and {MAX_RAM_SIZE >> 20} MiB"
        )
    if c.direct and c.kernel is None:
        raise ConfigError("--direct needs -kernel: there is no firmware to load one")
    if c.uuid is not None:
        try:
            uuidlib.UUID(c.uuid)
        except ValueError:
            raise ConfigError(f"-uuid {c.uuid!r} is not a UUID") from None
