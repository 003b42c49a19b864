"""The hypercall device: ``sc 1`` dispatched by the token in r11.

Handlers live in one table keyed by token (like h11's READERS): adding a call is adding a row.
A handler runs on the calling CPU's worker thread, inside the unicorn interrupt hook, reads its
arguments from r3..r10 and writes its outputs to r3..r10.  Calls that complete at once (console,
time, release) never leave the hook, so they cost a few microseconds.  Calls that must wait
(EV_IDLE, FW_WAIT_STORE) or stop the machine return an :class:`~machine.cpu.vcpu.Exit`; the CPU's
trio task then parks or acts on it.

A token nobody knows gets EV_UNIMPLEMENTED in r3 and changes nothing else, as PLATFORM.md says.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from machine.cpu.vcpu import Exit, ExitKind, VCpu, pack_bytes_be, unpack_bytes_be
from machine.events import Hypercall, ParkReason
from machine.platform import (
    BYTE_CHANNEL_MAX,
    CONSOLE_HANDLE,
    EvStatus,
    Hcall,
)

_R11 = 11


@dataclass(frozen=True, slots=True)
class Park:
    """Ask the CPU's task to park it.  For WAIT_STORE, ``expected`` is the value that keeps
    it parked; the task re-checks the word after arming the watch (no lost wake-up)."""

    reason: ParkReason
    address: int | None = None
    expected: int | None = None
    #: CpuParked was already emitted (the wait began inside the slice and was then kicked).
    announced: bool = False


class Parked(enum.Enum):
    """FW_WAIT_STORE parked the CPU inside its slice."""

    PARKED = "parked"


PARKED: Final = Parked.PARKED


@dataclass(frozen=True, slots=True)
class PowerOffRequest:
    code: int
    by: str = "FW_POWEROFF"  # what powered off: FW_POWEROFF, or the GPIO power-off line


@dataclass(frozen=True, slots=True)
class ResetRequest:
    by: str = "FW_RESET"  # what asked: FW_RESET, or a write to GUTS' RSTCR


class Services(Protocol):
    """What the hypercall handlers need from the machine (all thread-safe)."""

    def console_send(self, cpu: int, data: bytes) -> bool:
        """Queue console output; False when there is no room (EV_EAGAIN)."""
        ...

    def console_receive(self, max_count: int) -> bytes: ...

    def console_poll(self) -> tuple[int, int]:
        """(bytes waiting to be read, free transmit space)."""
        ...

    def release(self, caller: int, target: int, entry: int, r3: int) -> EvStatus: ...

    def now_ns(self) -> int: ...

    def wait_store_in_slice(self, cpu: VCpu, addr: int, expected: int) -> int | Parked | None:
        """Park on the word inside the slice (the scheduler's :class:`Wait`): PARKED; the
        word's value if it already differs; None when the CPU must park through its trio
        task instead (a release is latched for it)."""
        ...

    def idle_in_slice(self, cpu: VCpu) -> bool:
        """EV_IDLE inside the slice: True when the CPU parked in the scheduler, or returns at
        once (something that wakes it was latched); False when it must idle through its trio
        task instead (a release is latched for it)."""
        ...

    def hypercall_event(self, event: Hypercall) -> None: ...

    def event_time(self) -> float: ...

    def ram_contains(self, addr: int, size: int) -> bool: ...


Handler = Callable[[Services, VCpu], "Exit | None"]


def _status(cpu: VCpu, status: EvStatus, **outs: int) -> None:
    cpu.set_gpr(3, int(status))
    for name, value in outs.items():
        cpu.set_gpr(int(name[1:]), value)


def _byte_channel_send(svc: Services, cpu: VCpu) -> Exit | None:
    handle, count = cpu.gpr(3), cpu.gpr(4)
    if handle != CONSOLE_HANDLE or count > BYTE_CHANNEL_MAX:
        _status(cpu, EvStatus.EINVAL, r4=0)
        return None
    data = unpack_bytes_be([cpu.gpr(r) for r in range(5, 9)], count)
    if count and not svc.console_send(cpu.index, data):
        _status(cpu, EvStatus.EAGAIN, r4=0)
        return None
    _status(cpu, EvStatus.SUCCESS, r4=count)
    return None


def _byte_channel_receive(svc: Services, cpu: VCpu) -> Exit | None:
    handle, max_count = cpu.gpr(3), cpu.gpr(4)
    if handle != CONSOLE_HANDLE:
        _status(cpu, EvStatus.EINVAL, r4=0)
        return None
    data = svc.console_receive(min(max_count, BYTE_CHANNEL_MAX))
    w = pack_bytes_be(data)
    _status(cpu, EvStatus.SUCCESS, r4=len(data), r5=w[0], r6=w[1], r7=w[2], r8=w[3])
    return None


def _byte_channel_poll(svc: Services, cpu: VCpu) -> Exit | None:
    if cpu.gpr(3) != CONSOLE_HANDLE:
        _status(cpu, EvStatus.EINVAL)
        return None
    rx, tx = svc.console_poll()
    _status(cpu, EvStatus.SUCCESS, r4=rx, r5=tx)
    return None


def _idle(svc: Services, cpu: VCpu) -> Exit | None:
    cpu.set_gpr(3, int(EvStatus.SUCCESS))
    if svc.idle_in_slice(cpu):
        return None  # parked in the scheduler (or a wake-up was already latched)
    return Exit(ExitKind.PARK, _resume_pc(cpu), Park(ParkReason.IDLE))


def _cpu_release(svc: Services, cpu: VCpu) -> Exit | None:
    status = svc.release(cpu.index, cpu.gpr(3), cpu.gpr(4), cpu.gpr(5))
    cpu.set_gpr(3, int(status))
    return None


def _wait_store(svc: Services, cpu: VCpu) -> Exit | None:
    addr, expected = cpu.gpr(3), cpu.gpr(4)
    if addr % 4 or not svc.ram_contains(addr, 4):
        _status(cpu, EvStatus.EFAULT if addr % 4 == 0 else EvStatus.EINVAL)
        return None
    value = svc.wait_store_in_slice(cpu, addr, expected)
    if value is PARKED:
        return None  # the scheduler resumes it with r3/r4 set once a store wakes it
    if isinstance(value, int):
        _status(cpu, EvStatus.SUCCESS, r4=value)
        return None
    return Exit(ExitKind.PARK, _resume_pc(cpu), Park(ParkReason.WAIT_STORE, addr, expected))


def _poweroff(svc: Services, cpu: VCpu) -> Exit | None:
    code = cpu.gpr(3)
    cpu.set_gpr(3, int(EvStatus.SUCCESS))
    return Exit(ExitKind.POWEROFF, _resume_pc(cpu), PowerOffRequest(code))


def _reset(svc: Services, cpu: VCpu) -> Exit | None:
    cpu.set_gpr(3, int(EvStatus.SUCCESS))
    return Exit(ExitKind.RESET, _resume_pc(cpu), ResetRequest())


def _get_time(svc: Services, cpu: VCpu) -> Exit | None:
    ns = svc.now_ns()
    _status(cpu, EvStatus.SUCCESS, r4=ns >> 32, r5=ns & 0xFFFF_FFFF)
    return None


#: token -> (handler, number of argument registers worth reporting in events)
HANDLERS: dict[int, tuple[Handler, int]] = {
    Hcall.EV_BYTE_CHANNEL_SEND: (_byte_channel_send, 2),
    Hcall.EV_BYTE_CHANNEL_RECEIVE: (_byte_channel_receive, 2),
    Hcall.EV_BYTE_CHANNEL_POLL: (_byte_channel_poll, 1),
    Hcall.EV_IDLE: (_idle, 0),
    Hcall.FW_CPU_RELEASE: (_cpu_release, 3),
    Hcall.FW_WAIT_STORE: (_wait_store, 2),
    Hcall.FW_POWEROFF: (_poweroff, 1),
    Hcall.FW_RESET: (_reset, 0),
    Hcall.FW_GET_TIME: (_get_time, 0),
}


def name_of(token: int) -> str:
    try:
        return Hcall(token).name
    except ValueError:
        return f"unknown({token:#010x})"


def _resume_pc(cpu: VCpu) -> int:
    """Where the CPU continues after the call: the instruction after ``sc 1``."""
    return cpu.hcall_pc


def dispatch(svc: Services, cpu: VCpu, trace: bool) -> Exit | None:
    """Run the hypercall whose token is in r11 on ``cpu``."""
    token = cpu.gpr(_R11)
    entry = HANDLERS.get(token)
    if entry is None:
        cpu.set_gpr(3, int(EvStatus.UNIMPLEMENTED))
        if trace:
            svc.hypercall_event(
                Hypercall(time=svc.event_time(), cpu=cpu.index, token=token,
                          name=name_of(token), args=(), status=int(EvStatus.UNIMPLEMENTED))
            )
        return None
    handler, nargs = entry
    args = tuple(cpu.gpr(3 + i) for i in range(nargs)) if trace else ()
    cpu.parked_in_slice = False
    result = handler(svc, cpu)
    if trace:
        pending = result is not None and result.kind is ExitKind.PARK
        pending = pending or cpu.parked_in_slice
        status = None if pending else cpu.gpr(3)
        svc.hypercall_event(
            Hypercall(time=svc.event_time(), cpu=cpu.index, token=token, name=name_of(token),
                      args=args, status=status)
        )
    return result
