"""What the machine reports about a boot, as frozen values.

Every event carries ``time`` (seconds since power-on, host monotonic clock) so a boot timeline
can be drawn from the stream alone.  Events are cheap, immutable and comparable, so tests can
assert on them directly and the trace writer, the ``--trace`` printer and ``wait_for`` all read
the same objects.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuState:
    """A register snapshot of one vCPU, taken when something notable happened to it."""

    cpu: int
    pc: int
    msr: int
    lr: int
    ctr: int
    cr: int
    xer: int
    gpr: tuple[int, ...]

    def describe(self) -> str:
        rows = [
            " ".join(f"r{i}={self.gpr[i]:#010x}" for i in range(start, start + 8))
            for start in range(0, len(self.gpr), 8)
        ]
        head = (
            f"cpu {self.cpu}: pc={self.pc:#010x} msr={self.msr:#010x} lr={self.lr:#010x} "
            f"ctr={self.ctr:#010x} cr={self.cr:#010x} xer={self.xer:#010x}"
        )
        return "\n  ".join([head, *rows])


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every machine event."""

    time: float

    def describe(self) -> str:
        """One human-readable line (what ``--trace`` prints)."""
        fields = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "time"
        }
        body = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        return f"{type(self).__name__} {body}"


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return hex(v) if v > 9 else str(v)
    if isinstance(v, enum.Enum):
        return v.name
    return repr(v) if isinstance(v, str) else str(v)


@dataclass(frozen=True, slots=True, kw_only=True)
class FwCfgSelect(Event):
    """A CPU wrote the fw_cfg selector (or a DMA descriptor selected a key)."""

    cpu: int
    key: int
    name: str | None

    def describe(self) -> str:
        return f"cpu {self.cpu}: fw_cfg select {self.key:#06x} ({self.name or 'unknown'})"


@dataclass(frozen=True, slots=True, kw_only=True)
class FwCfgDma(Event):
    """One fw_cfg DMA descriptor was processed."""

    cpu: int
    key: int
    name: str | None
    op: str  # "read", "write", "skip" or "select"
    offset: int
    length: int
    address: int
    error: bool

    def describe(self) -> str:
        status = " ERROR" if self.error else ""
        return (
            f"cpu {self.cpu}: fw_cfg DMA {self.op} {self.length} bytes of "
            f"{self.name or hex(self.key)} at offset {self.offset} -> {self.address:#x}{status}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Hypercall(Event):
    """A CPU executed ``sc 1``; ``status`` is what came back in r3 (None while it parks)."""

    cpu: int
    token: int
    name: str
    args: tuple[int, ...]
    status: int | None

    def describe(self) -> str:
        args = ", ".join(hex(a) for a in self.args)
        st = "" if self.status is None else f" -> {self.status}"
        return f"cpu {self.cpu}: hcall {self.name}({args}){st}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuStarted(Event):
    """A CPU began executing at ``pc`` (power-on, or after a release)."""

    cpu: int
    pc: int

    def describe(self) -> str:
        return f"cpu {self.cpu}: started at {self.pc:#010x}"


class ParkReason(enum.Enum):
    POWER_ON = "power-on"  # a CPU that waits for the machine (direct boot secondaries)
    IDLE = "idle"  # EV_IDLE
    DOZE = "doze"  # MSR[WE] with HID0[DOZE|NAP|SLEEP]: until an interrupt is due
    WAIT_STORE = "wait-store"  # FW_WAIT_STORE
    SPIN_TABLE = "spin-table"  # parked by the machine on its spin-table entry


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuParked(Event):
    """A CPU stopped executing and costs nothing until something wakes it."""

    cpu: int
    reason: ParkReason
    pc: int
    address: int | None = None  # the watched word, for WAIT_STORE / SPIN_TABLE

    def describe(self) -> str:
        where = f" on {self.address:#x}" if self.address is not None else ""
        return f"cpu {self.cpu}: parked ({self.reason.value}){where} at pc {self.pc:#010x}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuWoken(Event):
    """A parked CPU resumes; ``by`` says what woke it (``store``, ``console``, ``release``,
    ``interrupt``: a timer raised one of its interrupt inputs)."""

    cpu: int
    by: str

    def describe(self) -> str:
        return f"cpu {self.cpu}: woken by {self.by}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuReleased(Event):
    """A CPU was released to an entry point: from the spin table or by FW_CPU_RELEASE."""

    cpu: int
    entry: int
    r3: int
    by: str  # "spin-table" or "FW_CPU_RELEASE"

    def describe(self) -> str:
        return f"cpu {self.cpu}: released by {self.by} to {self.entry:#010x} (r3={self.r3:#x})"


class FaultKind(enum.Enum):
    READ_UNMAPPED = "read of unmapped address"
    WRITE_UNMAPPED = "write to unmapped address"
    FETCH_UNMAPPED = "instruction fetch from unmapped address"
    ILLEGAL_INSTRUCTION = "illegal instruction"
    PROGRAM = "program exception (privileged instruction or trap)"
    SYSTEM_CALL = "sc (LEV 0) with no guest handler"
    DATA_TLB_MISS = "data TLB miss with no guest handler"
    INSTRUCTION_TLB_MISS = "instruction TLB miss with no guest handler"
    DATA_STORAGE = "data storage interrupt (access not allowed) with no guest handler"
    INSTRUCTION_STORAGE = "instruction storage interrupt with no guest handler"
    ALIGNMENT = "alignment interrupt with no guest handler"
    EXCEPTION = "unhandled CPU exception"
    ENGINE = "CPU engine error"


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestFault(Event):
    """The guest did something the machine cannot continue from; the machine stops."""

    cpu: int
    kind: FaultKind
    pc: int
    address: int | None
    state: CpuState

    def describe(self) -> str:
        at = f" at {self.address:#x}" if self.address is not None else ""
        return f"cpu {self.cpu}: guest fault: {self.kind.value}{at} (pc {self.pc:#010x})"


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerOff(Event):
    """The machine stopped: FW_POWEROFF (``code``), a fault, a timeout or a host request."""

    code: int
    reason: str

    def describe(self) -> str:
        return f"power-off: code {self.code} ({self.reason})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset(Event):
    """The machine is restarting from power-on, as ``cpu`` asked: ``by`` FW_RESET, a
    watchdog's reset action, or a write to GUTS' RSTCR."""

    cpu: int
    by: str = "FW_RESET"

    def describe(self) -> str:
        return f"cpu {self.cpu}: machine reset ({self.by})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleOutput(Event):
    """Bytes a CPU sent to the console byte channel."""

    cpu: int
    data: bytes

    def describe(self) -> str:
        return f"cpu {self.cpu}: console {self.data!r}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsLost(Event):
    """Not a machine event: a subscriber's buffer was full, so ``count`` events were dropped
    here rather than slow the machine down (see :meth:`machine.eventhub.EventHub.stream`)."""

    count: int

    def describe(self) -> str:
        return f"{self.count} events lost: the subscriber fell behind"
