"""The fwcfg-e500 board: RAM, boot ROM, fw_cfg, the hypercall device and N e500v2 CPUs.

``E500Machine`` wires the pieces at the addresses of ``machine/platform.py`` and owns their
lifetime.  Everything is checked and loaded when the machine is *built* (bad host input raises
:class:`fwcfg.ConfigError` before any guest code runs); :meth:`E500Machine.run` then powers it
on inside one trio nursery:

* one engine runs every CPU (:mod:`machine.cpu.engine`), switched by the scheduler on one
  worker thread (:mod:`machine.cpu.scheduler`); one trio task per CPU asks it for slices and
  acts on how they end (park, power off, reset, fault).  A parked CPU costs zero host CPU:
  it is simply not runnable (docs/DESIGN.md "Parking").
* each CPU's timebase and decrementer follow host time, exact when read
  (:mod:`machine.cpu.timers`).

The run ends on FW_POWEROFF (its code is the result), on a guest fault, on the timeout, or when
the caller cancels; in every case all CPUs are stopped before ``run`` returns.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from machine.boot import images as boot
from machine.config import MachineConfig, check_config
from machine.cpu.engine import Engine
from machine.cpu.interrupts import SPR_TSR, TSR_WRS, timer_levels
from machine.cpu.scheduler import Scheduler
from machine.cpu.timers import Clock, Timers
from machine.cpu.vcpu import Exit, ExitKind, Fault, VCpu
from machine.devices.ccsr import Ccsr
from machine.devices.console import Console
from machine.devices.parking import CpuSlot, Parking
from machine.devices.spin_waits import SpinWaits
from machine.eventhub import EventHub
from machine.events import (
    CpuStarted,
    Event,
    GuestFault,
    PowerOff,
    Reset,
)
from machine.memory import GuestRAM
from machine.platform import (
    DIRECT_BOOT_STACK,
    EPAPR_MAGIC,
    ROM_SIZE,
    SPR_PVR,
    ima_size,
    spin_table_base,
)
from machine.wiring import PlatformWires, VcpuHooks

if TYPE_CHECKING:
    from fwcfg import MmioWide
    from machine.debug.gdb_control import DebugControl  # debugger support (issue 6)






@dataclass
class RunResult:
    """How a run ended."""

    code: int
    reason: str
    fault: GuestFault | None = None


class E500Machine(Parking):
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
        check_config(config)
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
        self._reset_tsr = (0, 0)  # (cpu, TSR bits) kept across the pending reset
        self._devices_due: int | None = None  # CLOCK_MONOTONIC ns of the next device timer
        self._virtual_clock = False
        self._trio_thread: int | None = None
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
        self.engine = Engine(self.ram, ctypes.addressof(self._rom_anchor), VcpuHooks(self))
        self.cpus = [self.engine.new_vcpu(i) for i in range(self.n_cpus)]
        #: Every CPU's timebase and decrementer (machine/cpu/timers.py).
        self.clock = Clock()
        self.timers = Timers(self.clock, self.cpus)
        self.engine.timers = self.timers
        self.scheduler = Scheduler(self.engine, self.cpus)
        self._slots = [CpuSlot(cpu) for cpu in self.cpus]
        #: The platform devices (MPIC, GUTS, GPIO, UART), on their own clock: host time
        #: since power-on, or qtest's virtual clock (:meth:`use_virtual_clock`).
        self._device_clock: Callable[[], int] = lambda: time.monotonic_ns() - self._t0
        self.ccsr = Ccsr(self.n_cpus, self.cpus[0].read_spr(SPR_PVR), PlatformWires(self),
                         lambda: self._device_clock())
        self.console.on_drained = self.ccsr.console_changed
        self.ccsr.console_changed()  # the byte channel's tx line: transmit space is free
        #: Spin-waits parked until the store they wait for (machine/devices/spin_waits.py).
        self.spins = SpinWaits(self.engine, self.scheduler, self.watch, self.ram)
        self.scheduler.on_slice_end = self.spins.slice_ended
        self.scheduler.on_boundary = self._timer_boundary
        self.scheduler.next_deadline = self._next_deadline
        self.scheduler.on_input_raised = self._input_raised
        self.timers.on_watchdog_reset = self._watchdog_reset
        self.engine.watch_page(spin_table_base(self.ram_size))
        self._init_public_api()

    # --- public ----------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since power-on."""
        return (time.monotonic_ns() - self._t0) / 1e9

    @property
    def fwcfg_mmio(self) -> MmioWide:
        """fw_cfg's MMIO front end, the one every vCPU reaches at FWCFG_BASE (qtest serves it)."""
        return self._mmio

    async def run(self, *, timeout: float | None = None,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> RunResult:
        """Power on and run until power-off, a guest fault, ``timeout`` or cancellation.

        Returns how it ended; the CPUs are stopped in every case.  Usable with
        ``nursery.start(machine.run)``: it reports started once every CPU task is running.
        """
        self._token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.get_ident()
        self.console.attach(self._token, self._input_arrived)
        self.events.attach(self._token)
        started = False
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

    async def _cpu_main(self, slot: CpuSlot,
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
                exit_ = await cpu.run(pc)
                pc = exit_.pc
                if self.debug is not None and self.debug.slice_ended(cpu.index, exit_):
                    continue  # debugger support (issue 6): a breakpoint, watchpoint or step
                if exit_.kind is ExitKind.KICKED:
                    continue
                if exit_.kind is ExitKind.PARK:
                    pc = await self._park(slot, exit_.request, pc)
                elif exit_.kind in (ExitKind.POWEROFF, ExitKind.RESET):
                    self.host_request(exit_.kind, exit_.request, cpu.index)
                    return
                else:
                    self._fault(slot, exit_)
                    return
        finally:
            slot.parked = None

    def _power_on_state(self, slot: CpuSlot) -> int | None:
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
            ima = ima_size(self.images.dtb_addr + len(self.images.fdt))
            cpu.set_gprs({1: DIRECT_BOOT_STACK, 3: self.images.dtb_addr, 6: EPAPR_MAGIC,
                          7: ima})
            cpu.epapr_mapping(0, ima)  # ePAPR: the initial mapped area, and nothing else
            return kernel.entry
        return None  # held on the entry written by _arm_spin_table

    def _soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the trio thread, from any thread; nothing once the trio run is over."""
        if self._token is not None:
            try:
                self._token.run_sync_soon(fn)
            except trio.RunFinishedError:
                pass

    def _fault(self, slot: CpuSlot, exit_: Exit) -> None:
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

    def _timer_boundary(self) -> int | None:
        """Between slices (worker): timers that came due set their status bits; the loaded
        CPU gets its inputs, and a CPU idling in EV_IDLE or dozing with an interrupt now
        pending wakes.  Returns when the engine must next stop for a timer (CLOCK_MONOTONIC
        ns), or None."""
        for cpu in self.timers.service():
            if self.engine.current is cpu:
                self.engine.apply_inputs(cpu)
            if cpu.input_levels or timer_levels(cpu):
                slot = self._slots[cpu.index]
                slot.interrupt_pending = True
                if slot.parked is not None:
                    self.wake_idle(slot, "interrupt")
                self.spins.interrupt(cpu)
        self.spins.expire()
        if self._devices_due is not None and time.monotonic_ns() >= self._devices_due:
            self.ccsr.service()
        return self._next_deadline()

    def _next_deadline(self) -> int | None:
        due = self.timers.next_expiry()
        cpu_due = None if due is None else self.clock.monotonic_ns(due)
        device = self.ccsr.next_deadline_ns()
        self._devices_due = None if device is None or self._virtual_clock else device + self._t0
        times = [t for t in (cpu_due, self._devices_due, self.spins.next_deadline())
                 if t is not None]
        return min(times) if times else None

    def use_virtual_clock(self, clock: Callable[[], int]) -> None:
        """Drive the platform devices' time from ``clock`` (ns) instead of host time: qtest's
        clock_step/clock_set (no CPU runs then)."""
        self._virtual_clock = True
        self._device_clock = clock

    def host_request(self, kind: ExitKind, request: Any, cpu: int | None = None) -> None:
        """A guest asked to power off or reset (trio thread, or any thread through
        ``_soon``): FW_POWEROFF, FW_RESET, RSTCR, the GPIO power-off line."""
        if threading.get_ident() != self._trio_thread:
            self._soon(lambda: self.host_request(kind, request, cpu))
            return
        who = f" by cpu {cpu}" if cpu is not None else ""
        if kind is ExitKind.POWEROFF:
            self._finish(RunResult(code=request.code & 0xFFFF_FFFF, reason=f"{request.by}{who}"))
        elif self.config.no_reboot:
            self._finish(RunResult(code=0, reason=f"{request.by}{who} with -no-reboot"))
        else:
            self.request_reset(cpu or 0, request.by)

    def _input_arrived(self) -> None:
        """Console input (trio thread): the UART or the byte channel's rx line, and the CPUs
        idling in EV_IDLE."""
        self.ccsr.input_arrived()
        self._wake_idle_on_input()

    def _input_raised(self, cpu: VCpu) -> None:
        """A device raised one of ``cpu``'s interrupt inputs (any thread)."""
        slot = self._slots[cpu.index]
        slot.interrupt_pending = True
        self.wake_idle(slot, "interrupt")
        self.spins.interrupt(cpu)

    def _watchdog_reset(self, cpu: VCpu) -> None:
        """A watchdog's final step with TCR[WRC] set (worker): the machine resets, and that
        CPU's TSR[WRS] survives the reset so its firmware can tell why it restarted."""
        wrs = cpu.read_spr(SPR_TSR) & TSR_WRS
        if self.config.no_reboot:
            self._soon(lambda: self._finish(RunResult(
                code=0, reason=f"watchdog by cpu {cpu.index} with -no-reboot")))
        else:
            self._soon(lambda: self.request_reset(cpu.index, "watchdog", keep_tsr=wrs))

    def request_reset(self, cpu: int, by: str, keep_tsr: int = 0) -> None:
        """Reset the machine as a guest asked (trio thread): every CPU back to power-on;
        ``keep_tsr`` are TSR bits of ``cpu`` that survive it (a watchdog's WRS)."""
        if self._stop_result is None:  # a power-off already under way wins
            self._reset_tsr = (cpu, keep_tsr)
            self.events.emit(Reset(time=self.now(), cpu=cpu, by=by))
            self._reset_requested = True
            self._finish(RunResult(code=0, reason="reset"))

    def _power_on_reset(self) -> None:
        """FW_RESET: RAM back to zeros, devices to their reset state, CPUs to power-on."""
        self.ram.zero()
        self.fwcfg.reset()
        self.ccsr.reset()
        self.scheduler.reset()  # every CPU's registers and SPRs as at power-on
        for cpu in self.cpus:  # and its timebase offset and timers
            self.timers.reset(cpu)
        (who, bits), self._reset_tsr = self._reset_tsr, (0, 0)
        self.cpus[who].write_spr(SPR_TSR, bits)
        self.engine.forget_code(self.ram.base, self.ram.base + self.ram.size)
        for slot in self._slots:
            slot.release = None
            slot.parked = None
            slot.wait = slot.waiter = None
            slot.waiting_in = None
