"""Run control for a debugger: all-stop halts, per-CPU resume actions, breakpoints.

This is the machine's half of the debugger, with no protocol in it (:mod:`machine.debug.gdbstub` is
the GDB half).  The board calls two things from each CPU task:

* :meth:`DebugControl.gate` before every slice.  While the debugger has the machine halted the
  task waits there (a trio ParkingLot: zero host CPU), and it learns whether the next slice is
  a single step.  The gate also owns the CPU's resume PC, so a debugger can move it.
* :meth:`DebugControl.slice_ended` after every slice.  Breakpoint, watchpoint and step exits
  are the debugger's: they stop the whole machine and the board just loops back to the gate.

All-stop, as gdb expects without non-stop mode: the first CPU to stop (breakpoint, step,
fault, Ctrl-C) records the :class:`Stop`, every other running CPU is kicked, and
:meth:`wait_event` returns only once no CPU is inside a slice, so the debugger never reads the
registers of a CPU that is running.  A parked CPU stays parked; if something wakes it while
the machine is halted it waits at the gate instead of running.

Everything here runs on the trio thread; the vCPU side of breakpoints (range-limited code
hooks) is in :meth:`machine.cpu.vcpu.VCpu.set_breakpoints`.

Cancellation: nothing here owns a resource.  A CPU task cancelled while it waits at the gate
simply goes away (the machine is stopping); the next gate entry of a CPU resets its
bookkeeping, so a reset machine starts clean.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from machine.cpu.vcpu import Exit, ExitKind, Fault, VCpu, Watch, WatchHit
from machine.events import FaultKind


class Action(enum.Enum):
    """What a CPU does when the debugger resumes the machine."""

    STOP = "stop"
    CONTINUE = "continue"
    STEP = "step"


class Signal(enum.IntEnum):
    """GDB's own signal numbers (the remote protocol uses these, not the host's)."""

    INT = 2
    ILL = 4
    TRAP = 5
    ABRT = 6
    SEGV = 11
    SYS = 12


_FAULT_SIGNALS = {
    FaultKind.READ_UNMAPPED: Signal.SEGV,
    FaultKind.WRITE_UNMAPPED: Signal.SEGV,
    FaultKind.FETCH_UNMAPPED: Signal.SEGV,
    FaultKind.ILLEGAL_INSTRUCTION: Signal.ILL,
    FaultKind.PROGRAM: Signal.ILL,
    FaultKind.SYSTEM_CALL: Signal.SYS,
    FaultKind.DATA_TLB_MISS: Signal.SEGV,
    FaultKind.INSTRUCTION_TLB_MISS: Signal.SEGV,
    FaultKind.DATA_STORAGE: Signal.SEGV,
    FaultKind.INSTRUCTION_STORAGE: Signal.SEGV,
    FaultKind.ALIGNMENT: Signal.SEGV,
}


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the machine is halted: the CPU that stopped first and the signal gdb is told."""

    cpu: int
    signal: Signal
    watch: WatchHit | None = None
    fault: Fault | None = None


@dataclass(frozen=True, slots=True)
class Exited:
    """The machine powered off (or stopped for good) with ``code``."""

    code: int


class DebugControl:
    """All-stop run control over ``cpus``; ``halted`` makes the CPUs wait before their first
    instruction (QEMU's ``-S``)."""

    def __init__(self, cpus: Sequence[VCpu], *, halted: bool) -> None:
        n = len(cpus)
        self._cpus = list(cpus)
        self._actions = [Action.STOP if halted else Action.CONTINUE] * n
        self._pc: list[int | None] = [None] * n
        self._active = [False] * n  # passed the gate; its slice has not been seen to end
        self._gate = trio.lowlevel.ParkingLot()  # CPUs held at the gate
        self._changed = trio.lowlevel.ParkingLot()  # whoever waits for a stop
        self.stop: Stop | None = Stop(0, Signal.TRAP) if halted else None
        self.exited: Exited | None = None
        #: While a debugger is attached, guest faults stop the machine for it instead of
        #: powering it off, so the faulting state can be inspected.
        self.report_faults = False
        self._breakpoints: set[int] = set()
        #: Whether CPU i is parked (EV_IDLE, FW_WAIT_STORE); the stub binds the machine's.
        self.parked: Callable[[int], object] = lambda i: False
        self._watchpoints: set[Watch] = set()

    # --- the board's side ------------------------------------------------------------------

    async def gate(self, index: int, pc: int) -> int:
        """Before a slice: wait while the CPU must stay stopped; returns the PC to run from."""
        self._pc[index] = pc
        self._active[index] = False
        while self._actions[index] is Action.STOP:
            self._changed.unpark_all()
            await self._gate.park()
        self._active[index] = True
        self._cpus[index].set_step(self._actions[index] is Action.STEP)
        resume = self._pc[index]
        assert resume is not None
        return resume

    def slice_ended(self, index: int, exit_: Exit) -> bool:
        """After a slice: True when the exit was the debugger's (the board loops back to the
        gate); False when the board handles it as usual."""
        self._active[index] = False
        self._pc[index] = exit_.pc
        stepping = self._actions[index] is Action.STEP
        consumed = True
        if exit_.kind in (ExitKind.BREAKPOINT, ExitKind.STEP):
            self._halt(Stop(index, Signal.TRAP))
        elif exit_.kind is ExitKind.WATCHPOINT:
            self._halt(Stop(index, Signal.TRAP, watch=exit_.request))
        elif exit_.kind is ExitKind.FAULT and self.report_faults:
            fault: Fault = exit_.request
            self._halt(Stop(index, _FAULT_SIGNALS.get(fault.kind, Signal.ABRT), fault=fault))
        else:
            consumed = False
            if stepping and exit_.kind is not ExitKind.KICKED:
                # The stepped instruction parked the CPU, or powered the machine off: the step
                # is over, and the board carries out the rest.
                self._halt(Stop(index, Signal.TRAP))
        self._changed.unpark_all()
        return consumed

    def machine_ended(self, code: int) -> None:
        """The run is over; a waiting debugger is told the "process" exited."""
        self.exited = Exited(code)
        self._changed.unpark_all()

    async def wait_exited(self) -> Exited:
        """Wait until :meth:`machine_ended` has been called."""
        while self.exited is None:
            await self._changed.park()
        return self.exited

    # --- the debugger's side ---------------------------------------------------------------

    @property
    def n_cpus(self) -> int:
        return len(self._cpus)

    def halted(self) -> bool:
        """True once a stop is recorded and no CPU is inside a slice."""
        return self.stop is not None and not any(self._active)

    def in_slice(self, index: int) -> bool:
        return self._active[index]

    def halt(self, signal: Signal = Signal.INT) -> None:
        """Stop every CPU (Ctrl-C, a debugger connecting); :meth:`wait_event` reports it."""
        # A CPU idling or waiting inside its slice is not "running" for the report.
        running = [i for i, a in enumerate(self._active) if a and not self.parked(i)]
        self._halt(Stop(running[0] if running else 0, signal))

    def resume(self, actions: Sequence[Action]) -> None:
        """Start the CPUs again, each with its action; forgets the last stop."""
        assert len(actions) == len(self._cpus)
        self.stop = None
        self._actions = list(actions)
        self._gate.unpark_all()

    async def wait_event(self) -> Stop | Exited:
        """Wait until the machine is halted (everything quiet) or has ended."""
        while True:
            if self.exited is not None:
                return self.exited
            if self.stop is not None and not any(self._active):
                return self.stop
            await self._changed.park()

    def pc(self, index: int) -> int:
        """Where the CPU resumes.  A parked CPU reports where it parked; if a release moves it
        elsewhere, the release wins over a PC the debugger wrote."""
        pc = self._pc[index]
        return self._cpus[index].pc if pc is None else pc

    def set_pc(self, index: int, value: int) -> None:
        self._pc[index] = value & 0xFFFF_FFFF

    @property
    def breakpoints(self) -> frozenset[int]:
        return frozenset(self._breakpoints)

    def add_breakpoint(self, addr: int) -> None:
        self._breakpoints.add(addr)
        self._push()

    def remove_breakpoint(self, addr: int) -> None:
        self._breakpoints.discard(addr)
        self._push()

    def add_watchpoint(self, watch: Watch) -> None:
        self._watchpoints.add(watch)
        self._push()

    def remove_watchpoint(self, watch: Watch) -> None:
        self._watchpoints.discard(watch)
        self._push()

    def detach(self) -> None:
        """The debugger went away: no breakpoints, no fault reporting, everything runs."""
        self._breakpoints.clear()
        self._watchpoints.clear()
        self._push()
        self.report_faults = False
        self.resume([Action.CONTINUE] * len(self._cpus))

    # --- internals -------------------------------------------------------------------------

    def _halt(self, stop: Stop) -> None:
        if self.stop is None:
            self.stop = stop
        self._actions = [Action.STOP] * len(self._cpus)
        for i, active in enumerate(self._active):
            if active:
                self._cpus[i].kick()
        self._changed.unpark_all()

    def _push(self) -> None:
        """Hand the breakpoint and watchpoint sets to every CPU (applied before its next
        slice; a CPU inside a slice is kicked so that it picks them up now)."""
        bps = frozenset(self._breakpoints)
        wps = frozenset(self._watchpoints)
        for i, cpu in enumerate(self._cpus):
            cpu.set_breakpoints(bps)
            cpu.set_watchpoints(wps)
            if self._active[i]:
                cpu.kick()
