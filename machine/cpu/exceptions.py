"""Which guest exceptions the engine vectors, and how an unhandled one is reported.

QEMU's own ``powerpc_excp`` enters the guest's handler (SRR0/SRR1, ESR, DEAR, the MAS
registers on a TLB miss, MSR, IVPR | IVORn): the engine calls it from the INTR hook.  What is
decided here is only *whether* to: a firmware developer whose code takes an exception it has
no handler for (IVPR and the IVOR never set, or the same exception again at the handler's own
address, which would loop for ever) gets a guest fault report and exit 125 instead.

The numbers are QEMU's ``POWERPC_EXCP_*`` (target/ppc/cpu.h), which is what the hook is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from machine.cpu.vcpu import VCpu
from machine.events import FaultKind

SPR_IVPR: Final = 63
SPR_DEAR: Final = 61
ALIGNMENT: Final = 5
_IVOR0, _IVOR32 = 400, 528

SYSCALL: Final = 8
PROGRAM: Final = 6
#: QEMU raises an illegal instruction or SPR as "HV emulation assistance"; on a CPU without
#: a hypervisor mode its powerpc_excp turns it into a program interrupt (IVOR6).
HV_EMU: Final = 96
#: What an access to a trapped SPR raises (machine/cpu/timers.py).
PRIVILEGED: Final = frozenset({PROGRAM, HV_EMU})

#: exception number -> IVOR register number
IVOR: Final[dict[int, int]] = {
    **{n: _IVOR0 + n for n in range(16)},  # critical .. debug
    32: _IVOR32, 33: _IVOR32 + 1, 34: _IVOR32 + 2, 35: _IVOR32 + 3,  # SPE / embedded FP
    HV_EMU: _IVOR0 + 6,
}

#: exception number -> how it is reported when the guest has no handler
KIND: Final[dict[int, FaultKind]] = {
    2: FaultKind.DATA_STORAGE,
    3: FaultKind.INSTRUCTION_STORAGE,
    5: FaultKind.ALIGNMENT,
    6: FaultKind.PROGRAM,
    SYSCALL: FaultKind.SYSTEM_CALL,
    13: FaultKind.DATA_TLB_MISS,
    14: FaultKind.INSTRUCTION_TLB_MISS,
    HV_EMU: FaultKind.ILLEGAL_INSTRUCTION,
}

#: Exceptions whose faulting address is DEAR (the others report none, or the PC).
_DATA: Final = frozenset({2, 5, 13})
_INSTRUCTION: Final = frozenset({3, 14})


def vector(cpu: VCpu, excp: int) -> int | None:
    """Where ``cpu``'s handler for ``excp`` is, or None when the guest has none."""
    ivor = IVOR.get(excp)
    if ivor is None:
        return None
    ivpr, offset = cpu.read_spr(SPR_IVPR), cpu.read_spr(ivor)
    if ivpr == 0 and offset == 0:
        return None
    return (ivpr & 0xFFFF_0000) | (offset & 0xFFF0)


def fault_address(cpu: VCpu, excp: int, pc: int) -> int | None:
    """The address a report of an unhandled ``excp`` names."""
    if excp in _DATA:
        return cpu.read_spr(SPR_DEAR)
    if excp in _INSTRUCTION:
        return pc
    return None


def effective_address(insn: int, gpr: Callable[[int], int]) -> int | None:
    """The address a load or store instruction accesses (D-form, and X-form under primary
    opcode 31), for the DEAR of an alignment interrupt; None for anything else."""
    op, ra = insn >> 26, (insn >> 16) & 31
    base = gpr(ra) if ra else 0
    if 32 <= op <= 55:  # lwz .. stfdu: EA = (rA|0) + d
        d = insn & 0xFFFF
        return (base + (d - 0x10000 if d & 0x8000 else d)) & 0xFFFF_FFFF
    if op == 31:  # lwarx, stwcx., lwzx, stwx, ...: EA = (rA|0) + rB
        return (base + gpr((insn >> 11) & 31)) & 0xFFFF_FFFF
    return None


SPR_SRR1: Final = 27
SPR_CSRR1: Final = 59
SPR_MCSRR1: Final = 571
MSR_CE: Final = 0x0002_0000
MSR_DE: Final = 0x0000_0200
#: Critical-class exceptions (critical input, watchdog, debug) save to CSRR0/CSRR1; machine
#: check to MCSRR0/MCSRR1 (e500v2 core manual, "Interrupt classes").
_CRITICAL: Final = frozenset({0, 12, 15})
_MACHINE_CHECK: Final = 1


def entry_fixes(excp: int, interrupted: int, entered: int) -> tuple[int, int] | None:
    """Correct QEMU's entry into a synchronous exception handler to e500v2's: (the save/
    restore register that must hold the interrupted MSR, the handler's MSR), or None.

    QEMU 5 ORs classic PowerPC reason bits into SRR1 (0x80000 for an illegal instruction,
    0x40000 -- MSR[WE] on an e500 -- for a privileged one, 0x20000 -- MSR[CE] -- for a trap,
    so that returning from a trap handler with ``rfi`` turned critical interrupts on); and it
    clears MSR[CE] and MSR[DE] on every entry, where a non-critical interrupt keeps them.
    Interrupts QEMU delivers by itself (external, decrementer, FIT, watchdog) never pass here:
    their SRR1 is right, and they clear CE and DE (PLATFORM.md, "Exceptions")."""
    if excp == _MACHINE_CHECK:
        return SPR_MCSRR1, entered
    if excp in _CRITICAL:
        return SPR_CSRR1, entered
    return SPR_SRR1, entered | interrupted & (MSR_CE | MSR_DE)
