"""One e500v2 vCPU: its saved context, and its registers wherever they live right now.

A machine has one unicorn engine (:mod:`machine.cpu.engine`); a vCPU is the context the
scheduler swaps into it.  While a vCPU is loaded its registers live in the engine's CPU state
(``env``); otherwise in this object's buffer, laid out like ``env`` (the parts
:attr:`Layout.context_ranges` names).  :attr:`VCpu.base` points at whichever holds them, so
every accessor here is one ctypes access, valid from any thread, and never a call into the
engine (which would give up the GIL).

Writes to the MSR go to the field and are marked: QEMU derives the CPU's hflags and MMU index
from the MSR, so the engine re-applies a written MSR through ``reg_write`` when it loads the
vCPU (:meth:`Engine.load <machine.cpu.engine.Engine.load>`).
"""

from __future__ import annotations

import ctypes
import enum
import struct
from dataclasses import dataclass
from typing import Any

from machine.cpu.layout import Layout
from machine.events import CpuState, FaultKind
from machine.platform import (
    MAS1_IPROT,
    MAS1_V,
    MAS3_ALL,
    POWER_ON_TLB1,
    SPR_PIR,
    mas1_tsize,
)

_XER_SO, _XER_OV, _XER_CA = 31, 30, 29
TLB1_ENTRIES = 16
TLB_ENTRY_SIZE = 24
_PIDS = (48, 633, 634)  # PID0, PID1, PID2
_MSR_IS, _MSR_DS = 0x20, 0x10
_MAS1_TS = 0x1000
_memcmp: Any = ctypes.PyDLL(None).memcmp  # keeps the GIL (a short call on the worker)
_memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_memcmp.restype = ctypes.c_int


class TlbEntry(ctypes.Structure):
    """QEMU's ``ppcmas_tlb_t``: one Book E TLB entry as MAS registers."""

    _fields_ = [("mas8", ctypes.c_uint32), ("mas1", ctypes.c_uint32),
                ("mas2", ctypes.c_uint64), ("mas7_3", ctypes.c_uint64)]


class ExitKind(enum.Enum):
    """Why a vCPU's slice ended, as its trio task sees it."""

    KICKED = "kicked"  # the machine stopped the CPU (pause, shutdown, debugger)
    PARK = "park"  # a hypercall asked to park the CPU through its trio task
    POWEROFF = "poweroff"
    RESET = "reset"
    FAULT = "fault"
    # --- debugger support ---
    BREAKPOINT = "breakpoint"  # a debugger breakpoint, before the instruction at ``pc`` runs
    WATCHPOINT = "watchpoint"  # a debugger watchpoint; ``request`` is the WatchHit
    STEP = "step"  # a debugger single-step executed one instruction


@dataclass(frozen=True, slots=True)
class Exit:
    """The end of one slice; ``pc`` is where execution resumes."""

    kind: ExitKind
    pc: int
    request: Any = None  # the hypercall's park request, the power-off code, or the fault


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    pc: int
    address: int | None
    #: The registers at the faulting instruction, taken inside the engine's hook.
    state: CpuState | None = None


@dataclass(frozen=True, slots=True)
class Watch:
    """A debugger watchpoint: accesses to ``[address, address + length)``."""

    address: int
    length: int
    read: bool
    write: bool


@dataclass(frozen=True, slots=True)
class WatchHit:
    watch: Watch
    address: int  # the accessed address


@dataclass
class DebugState:
    """What a debugger asked of this vCPU (applied by the engine before its next slice)."""

    breakpoints: frozenset[int] = frozenset()
    watchpoints: frozenset[Watch] = frozenset()
    step: bool = False
    start_pc: int = -1
    watch_pc: int = -1  # where the last watchpoint hit stopped the slice
    skip_watch_pc: int = -1
    undo: tuple[int, bytes] | None = None  # a watched store to take back


class VCpu:
    """A vCPU's context and register file.

    The trio side drives it through :meth:`run` (handed to the machine's scheduler) and stops
    it with :meth:`kick`; both are bound by the board when it builds the scheduler.
    """

    def __init__(self, index: int, layout: Layout, template: int) -> None:
        self.index = index
        self.layout = layout
        self._buf = ctypes.create_string_buffer(layout.env_size)
        self.saved_base = ctypes.addressof(self._buf)
        self.base = self.saved_base
        #: This CPU's own Book E TLB array (TLB0 then TLB1), which its context points to.
        self._tlb = ctypes.create_string_buffer(layout.nb_tlb * TLB_ENTRY_SIZE)
        self.msr_dirty = False
        self.closed = False
        #: Where the CPU resumes (the trio side's view; the engine's PC while it runs).
        self.pc = 0
        #: Where a hypercall returns to: the instruction after the ``sc 1`` being handled.
        self.hcall_pc = 0
        self.debug = DebugState()
        #: The hypercall being handled parked the CPU inside its slice (for tracing).
        self.parked_in_slice = False
        #: Slices run, for the benchmarks.
        self.slices = 0
        #: ctypes views of the register file, per place it can live (made once: a switch
        #: then only swaps references).
        self._views: dict[int, tuple[Any, Any, Any, Any]] = {}
        self._gprs: Any
        self._sprs: Any
        self._msr: Any
        self._nip: Any
        self.move_to(self.saved_base)
        self.power_on(template)

    def power_on(self, template: int) -> None:
        """The context of a freshly reset CPU (it must not be loaded in the engine): the
        engine's reset state, PIR = index, its own TLB array holding the power-on mapping
        (platform.POWER_ON_TLB1)."""
        ctypes.memmove(self.saved_base, template, self.layout.env_size)
        tlb = ctypes.addressof(self._tlb)
        ctypes.c_uint64.from_address(self.saved_base + self.layout.tlb).value = tlb
        ctypes.memset(tlb, 0, len(self._tlb))
        for esel, ea, size, wimge in POWER_ON_TLB1:
            entry = self.tlb1(esel)
            entry.mas1 = MAS1_V | MAS1_IPROT | mas1_tsize(size)
            entry.mas2 = ea | wimge
            entry.mas7_3 = ea | MAS3_ALL
        self.write_spr(SPR_PIR, self.index)
        self.msr_dirty = True
        #: Device interrupt inputs that are up (a bit per QEMU input number: external,
        #: critical), set by :meth:`Scheduler.set_input <machine.cpu.scheduler.Scheduler.
        #: set_input>` and given to the engine when the vCPU is loaded.
        self.input_levels = 0
        #: The inputs changed while the vCPU was loaded: the engine re-applies them.
        self.inputs_dirty = False
        #: The TLB array changed outside the guest's own tlbwe: the engine must drop what it
        #: cached from it when it next loads this CPU.
        self.tlb_changed = True

    def epapr_mapping(self, physical: int, size: int) -> None:
        """The ePAPR entry state's mapping: TLB1 holds one IPROT entry (ESEL 0) mapping EA 0
        to ``physical`` with ``size`` bytes, and nothing else (as QEMU's ppce500 hands a
        kernel its initial mapped area, and its spin code a released secondary)."""
        ctypes.memset(ctypes.addressof(self.tlb1(0)), 0, TLB1_ENTRIES * TLB_ENTRY_SIZE)
        entry = self.tlb1(0)
        entry.mas1 = MAS1_V | MAS1_IPROT | mas1_tsize(size)
        entry.mas2 = 0
        entry.mas7_3 = physical | MAS3_ALL
        self.tlb_changed = True

    def translate(self, ea: int, *, fetch: bool = False) -> int | None:
        """The physical address of ``ea`` for this CPU's data accesses (or instruction
        fetches), as its TLBs map it in its current address space; None if unmapped.  For a
        debugger: the engine translates through QEMU's own MMU code."""
        msr = self.msr
        space = bool(msr & (_MSR_IS if fetch else _MSR_DS))
        pids = {0} | {self.read_spr(n) & 0xFF for n in _PIDS}
        entries = (TlbEntry * self.layout.nb_tlb).from_address(ctypes.addressof(self._tlb))
        tlb1 = self.layout.nb_tlb - TLB1_ENTRIES
        for e in (*entries[tlb1:], *entries[:tlb1]):  # TLB1 first, as the hardware's order
            mas1 = e.mas1
            if not mas1 & MAS1_V or bool(mas1 & _MAS1_TS) != space:
                continue
            if (mas1 >> 16) & 0xFF not in pids:
                continue
            size = 1024 << ((mas1 >> 7) & 0x1F)
            if (e.mas2 ^ ea) & ~(size - 1) & 0xFFFF_FFFF == 0:
                return (e.mas7_3 & ~0xFFF & ~(size - 1) | ea & (size - 1)) & 0xFFFF_FFFF
        return None

    def translates_like(self, other: VCpu) -> bool:
        """Same TLB contents and PIDs as ``other``: addresses translate alike on both."""
        return (all(self.read_spr(n) == other.read_spr(n) for n in _PIDS)
                and _memcmp(self._tlb, other._tlb, len(self._tlb)) == 0)

    def tlb1(self, esel: int) -> TlbEntry:
        """TLB1 entry ``esel`` of this CPU (the array lives outside the engine: valid from
        any thread; the engine drops its cached translations when it next loads the CPU)."""
        tlb1 = ctypes.addressof(self._tlb) + (self.layout.nb_tlb - TLB1_ENTRIES) * TLB_ENTRY_SIZE
        return TlbEntry.from_address(tlb1 + esel * TLB_ENTRY_SIZE)

    def move_to(self, base: int) -> None:
        """The engine moved the context (loaded into ``env``, or saved back)."""
        views = self._views.get(base)
        if views is None:
            lay = self.layout
            views = self._views[base] = (
                (ctypes.c_uint32 * 32).from_address(base),
                (ctypes.c_uint32 * 1024).from_address(base + lay.spr),
                ctypes.c_uint32.from_address(base + lay.msr),
                ctypes.c_uint32.from_address(base + lay.nip),
            )
        self.base = base
        self._gprs, self._sprs, self._msr, self._nip = views

    # --- registers -------------------------------------------------------------------------

    def _check(self) -> None:
        if self.closed:
            raise RuntimeError(f"cpu {self.index} is closed: its machine was closed")

    def gpr(self, n: int) -> int:
        self._check()
        return int(self._gprs[n])

    def set_gpr(self, n: int, value: int) -> None:
        self._check()
        self._gprs[n] = value & 0xFFFF_FFFF

    def set_gprs(self, values: dict[int, int]) -> None:
        self._check()
        g = self._gprs
        for n, v in values.items():
            g[n] = v & 0xFFFF_FFFF

    def read_spr(self, n: int) -> int:
        if self.closed:  # (inline: the timers read SPRs at every boundary)
            self._check()
        return int(self._sprs[n])

    def write_spr(self, n: int, value: int) -> None:
        if self.closed:
            self._check()
        self._sprs[n] = value & 0xFFFF_FFFF

    @property
    def msr(self) -> int:
        self._check()
        return int(self._msr.value)

    def set_msr(self, value: int) -> None:
        """Takes effect in the engine (hflags, MMU index) when the vCPU is next loaded."""
        self._check()
        self._msr.value = value & 0xFFFF_FFFF
        self.msr_dirty = True

    @property
    def nip(self) -> int:
        """The PC in the context (exact inside this vCPU's own hooks)."""
        return int(self._nip.value)

    def set_nip(self, value: int) -> None:
        self._nip.value = value & 0xFFFF_FFFF

    def _word(self, offset: int, count: int = 1) -> tuple[int, ...]:
        return struct.unpack(f"={count}I", ctypes.string_at(self.base + offset, 4 * count))

    def _set_word(self, offset: int, value: int) -> None:
        ctypes.c_uint32.from_address(self.base + offset).value = value & 0xFFFF_FFFF

    @property
    def lr(self) -> int:
        return self._word(self.layout.lr)[0]

    @property
    def ctr(self) -> int:
        return self._word(self.layout.ctr)[0]

    @property
    def cr(self) -> int:
        value = 0
        for nibble in self._word(self.layout.crf, 8):
            value = (value << 4) | (nibble & 0xF)
        return value

    @property
    def xer(self) -> int:
        xer, so, ov, ca = self._word(self.layout.xer, 4)
        return xer | (so & 1) << _XER_SO | (ov & 1) << _XER_OV | (ca & 1) << _XER_CA

    def set_lr(self, value: int) -> None:
        self._set_word(self.layout.lr, value)

    def set_ctr(self, value: int) -> None:
        self._set_word(self.layout.ctr, value)

    def set_cr(self, value: int) -> None:
        for i in range(8):
            self._set_word(self.layout.crf + 4 * i, value >> (28 - 4 * i) & 0xF)

    def set_xer(self, value: int) -> None:
        mask = 1 << _XER_SO | 1 << _XER_OV | 1 << _XER_CA
        base = self.layout.xer
        self._set_word(base, value & ~mask)
        for i, bit in enumerate((_XER_SO, _XER_OV, _XER_CA)):
            self._set_word(base + 4 * (i + 1), value >> bit & 1)

    def snapshot(self, pc: int | None = None) -> CpuState:
        """GPRs, PC, MSR, LR, CTR, CR and XER."""
        self._check()
        return CpuState(cpu=self.index, pc=self.pc if pc is None else pc, msr=self.msr,
                        lr=self.lr, ctr=self.ctr, cr=self.cr, xer=self.xer,
                        gpr=tuple(int(v) for v in self._gprs))

    # --- debugger requests (applied by the engine before this vCPU's next slice) --------

    def set_breakpoints(self, addresses: frozenset[int]) -> None:
        self.debug.breakpoints = addresses

    def set_watchpoints(self, watches: frozenset[Watch]) -> None:
        self.debug.watchpoints = watches

    def set_step(self, step: bool) -> None:
        """Make the next slice execute exactly one instruction and end with ExitKind.STEP."""
        self.debug.step = step

    # --- bound by the scheduler ------------------------------------------------------------

    async def run(self, pc: int) -> Exit:  # pragma: no cover - replaced per instance
        raise RuntimeError("this vCPU belongs to no machine")

    def kick(self) -> None:  # pragma: no cover - replaced per instance
        pass

    @property
    def running(self) -> bool:
        """Inside a slice: handed to the scheduler and not yet given back."""
        return self._in_slice

    _in_slice = False


def pack_bytes_be(data: bytes, words: int = 4) -> list[int]:
    """Byte-channel packing: byte 0 is the most significant byte of the first register."""
    padded = data.ljust(words * 4, b"\0")
    return list(struct.unpack(f">{words}I", padded[: words * 4]))


def unpack_bytes_be(regs: list[int], count: int) -> bytes:
    return struct.pack(f">{len(regs)}I", *(r & 0xFFFF_FFFF for r in regs))[:count]


