"""Exceptions reach the guest's own vectors, as on an e500v2: QEMU's exception entry in the
engine sets SRR0/SRR1, ESR, DEAR and the MAS registers; without a handler it is a guest fault.

One guest takes each kind in turn; every handler records (kind, SRR0, SRR1, ESR, DEAR, MAS0,
MAS1, MAS2) in a table in RAM and resumes the guest past the cause.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio
from elftools.elf.elffile import ELFFile

from machine.asm import assemble
from machine.board import E500Machine
from machine.events import FaultKind, GuestFault

from .guests import PUTS, boot

pytestmark = pytest.mark.cross

TABLE = 0x0010_0000
ALIGN_EA = 0x0010_1001  # lwarx needs a word-aligned address
AS1_EA = 0x6000_0000  # mapped only in address space 1 (TLB1 entry 1: read-only)
UNMAPPED_AS1 = 0x7000_0000  # mapped in neither address space 1 entry

ESR_PIL, ESR_PPR, ESR_PTR, ESR_ST = 0x0800_0000, 0x0400_0000, 0x0200_0000, 0x0080_0000
MSR_PR, MSR_IS, MSR_DS = 0x4000, 0x20, 0x10

GUEST = f"""
    .globl _start
_start:
    lis 3, 0xFFF0
    mtspr 63, 3                 /* IVPR = the ROM */
    li 3, h_dsi@l
    mtspr 402, 3
    li 3, h_align@l
    mtspr 405, 3
    li 3, h_program@l
    mtspr 406, 3
    li 3, h_syscall@l
    mtspr 408, 3
    li 3, h_dtlb@l
    mtspr 413, 3
    li 3, h_itlb@l
    mtspr 414, 3
    li32 30, {TABLE}
    /* TLB1 entry 1: address space 1, EA {AS1_EA:#x} -> PA 0x200000, 4 KiB, supervisor read */
    lis 3, 0x1001
    mtspr 624, 3
    li32 3, 0x80001100          /* V | TS | TSIZE 4 KiB */
    mtspr 625, 3
    li32 3, {AS1_EA}
    mtspr 626, 3
    li32 3, 0x00200001          /* SR */
    mtspr 627, 3
    li 3, 0
    mtspr 944, 3
    isync
    tlbwe
    isync
illegal:
    .long 0                     /* 1. program: illegal instruction */
trap:
    trap                        /* 2. program: trap */
    li 3, 0                     /* 3. program: privileged (mfmsr in user mode), then sc */
    li32 4, user
    mtsrr0 4
    li 4, {MSR_PR}
    mtsrr1 4
    rfi
user:
    mfmsr 5
after_user_sc:
    .long 0x44000002            /* (sc) 4. system call: back in supervisor state */
sup:
    li32 9, {ALIGN_EA}
unaligned:
    lwarx 5, 0, 9               /* 5. alignment */
    mfmsr 3                     /* 6. data TLB miss in address space 1 */
    ori 3, 3, {MSR_DS}
    mtmsr 3
    isync
    li32 9, {UNMAPPED_AS1}
dtlb:
    lwz 5, 0(9)
    mfmsr 3                     /* 7. data storage: a store to a read-only page */
    ori 3, 3, {MSR_DS}
    mtmsr 3
    isync
    li32 9, {AS1_EA}
dsi:
    stw 5, 0(9)
    li32 4, itlb_target         /* 8. instruction TLB miss: jump into address space 1 */
    mtsrr0 4
    li 4, {MSR_IS}
    mtsrr1 4
    rfi
itlb_target:
    nop
done:
    li32 3, 0x600D
    hcall HC_FW_POWEROFF

record:                         /* r24 = kind; SRR0, SRR1, ESR, DEAR, MAS0..2 -> table */
    stw 24, 0(30)
    mfsrr0 3
    stw 3, 4(30)
    mfsrr1 3
    stw 3, 8(30)
    mfspr 3, 62
    stw 3, 12(30)
    mfspr 3, 61
    stw 3, 16(30)
    mfspr 3, 624
    stw 3, 20(30)
    mfspr 3, 625
    stw 3, 24(30)
    mfspr 3, 626
    stw 3, 28(30)
    addi 30, 30, 32
    blr
skip:                           /* resume after the instruction, in the state it had */
    mfsrr0 3
    addi 3, 3, 4
    mtsrr0 3
    rfi
skip_as0:                       /* the same, back in address space 0 */
    mfsrr1 3
    rlwinm 3, 3, 0, 28, 25      /* clear IS and DS */
    mtsrr1 3
    b skip

    .balign 16
h_dsi:
    li 24, 2
    bl record
    b skip_as0
    .balign 16
h_align:
    li 24, 5
    bl record
    b skip
    .balign 16
h_program:
    li 24, 6
    bl record
    b skip
    .balign 16
h_syscall:
    li 24, 8
    bl record
    li32 3, sup                 /* continue in supervisor state */
    mtsrr0 3
    li 3, 0
    mtsrr1 3
    rfi
    .balign 16
h_dtlb:
    li 24, 13
    bl record
    b skip_as0
    .balign 16
h_itlb:
    li 24, 14
    bl record
    li32 3, done
    mtsrr0 3
    li 3, 0
    mtsrr1 3
    rfi
"""


def symbols(source: str) -> dict[str, int]:
    with assemble(source).open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: int(s["st_value"]) for s in table.iter_symbols()}  # type: ignore[union-attr]


async def test_each_exception_reaches_its_vector_with_the_right_registers() -> None:
    b = await boot(GUEST)
    assert b.result.code == 0x600D, b.result.reason
    sym = symbols(GUEST)
    rows = [struct.unpack(">8I", b.machine.ram.read(TABLE + 32 * i, 32)) for i in range(8)]
    kinds = [r[0] for r in rows]
    assert kinds == [6, 6, 6, 8, 5, 13, 2, 14]
    by = dict(zip(("illegal", "trap", "priv", "sc", "align", "dtlb", "dsi", "itlb"), rows,
                  strict=True))
    # Program interrupts: SRR0 = the instruction, ESR says which kind.
    assert by["illegal"][1] == sym["illegal"] and by["illegal"][3] & ESR_PIL
    assert by["trap"][1] == sym["trap"] and by["trap"][3] & ESR_PTR
    assert by["priv"][1] == sym["user"] and by["priv"][3] & ESR_PPR
    assert by["priv"][2] & MSR_PR  # SRR1: it was in user mode
    # sc: SRR0 = the instruction after it; SRR1 = user mode.
    assert by["sc"][1] == sym["after_user_sc"] + 4 and by["sc"][2] & MSR_PR
    # Alignment: SRR0 = the instruction, DEAR = the address.
    assert by["align"][1] == sym["unaligned"] and by["align"][4] == ALIGN_EA
    # Data TLB miss in AS1: DEAR = the address; MAS1 has TS = 1, MAS2 the page (from MAS4).
    dtlb = by["dtlb"]
    assert dtlb[1] == sym["dtlb"] and dtlb[4] == UNMAPPED_AS1 and dtlb[2] & MSR_DS
    assert dtlb[6] & 0x1000 and dtlb[7] & 0xFFFF_F000 == UNMAPPED_AS1
    # Data storage: a store to a read-only page; ESR[ST], DEAR = the address.
    assert by["dsi"][1] == sym["dsi"] and by["dsi"][3] & ESR_ST and by["dsi"][4] == AS1_EA
    # Instruction TLB miss in AS1: SRR0 = the target; MAS2 its page.
    itlb = by["itlb"]
    assert itlb[1] == sym["itlb_target"] and itlb[2] & MSR_IS
    assert itlb[7] & 0xFFFF_F000 == sym["itlb_target"] & 0xFFFF_F000


async def test_without_handlers_an_exception_is_still_a_guest_fault() -> None:
    b = await boot(f"""
_start:
    mfmsr 3
    ori 3, 3, {MSR_DS}
    mtmsr 3
    isync
    li32 9, {UNMAPPED_AS1}
miss:
    lwz 5, 0(9)
    hcall HC_FW_POWEROFF
""")
    assert b.result.code == 125
    fault = b.of(GuestFault)[0]
    assert fault.kind is FaultKind.DATA_TLB_MISS and fault.address == UNMAPPED_AS1


async def test_an_exception_at_its_own_handler_is_a_guest_fault_not_a_hang() -> None:
    src = """
_start:
    lis 3, 0xFFF0
    mtspr 63, 3
    li 3, handler@l
    mtspr 406, 3
    .long 0
    .balign 16
handler:
    .long 0                     /* the program handler is itself an illegal instruction */
"""
    b = await boot(src, timeout=5)
    assert b.result.code == 125, b.result.reason
    fault = b.of(GuestFault)[0]
    assert fault.kind is FaultKind.ILLEGAL_INSTRUCTION and fault.pc == symbols(src)["handler"]


#: Linked at 0 and booted directly: the ePAPR mapping covers 64 MiB at 0 and nothing else, so
#: 0xFFFF_FFFE (where unicorn's exit address used to be) misses in the TLB.  The guest plants
#: markers in DEAR and MAS0-2, spins while the host ends its slice again and again, and powers
#: off with 0 if the markers are intact.
MARKERS_ACROSS_SLICES = """
_start:
    li32 3, 0x5A5A1234
    mtspr 61, 3                 /* DEAR */
    li32 4, 0x10030000
    mtspr 624, 4                /* MAS0 */
    li32 5, 0x80000100
    mtspr 625, 5                /* MAS1 */
    li32 6, 0x12345000
    mtspr 626, 6                /* MAS2 */
    li32 7, 40000000
    mtctr 7
1:  bdnz 1b
    li 20, 0
    mfspr 8, 61
    cmpw 8, 3
    beq 2f
    ori 20, 20, 1
2:  mfspr 8, 624
    cmpw 8, 4
    beq 3f
    ori 20, 20, 2
3:  mfspr 8, 625
    cmpw 8, 5
    beq 4f
    ori 20, 20, 4
4:  mfspr 8, 626
    cmpw 8, 6
    beq 5f
    ori 20, 20, 8
5:  mr 3, 20
    hcall HC_FW_POWEROFF
"""


async def test_ending_a_slice_leaves_the_vcpus_exception_registers_alone(tmp_path: Path) -> None:
    elf = Path(assemble(PUTS + MARKERS_ACROSS_SLICES, base=0, workdir=tmp_path))
    m = E500Machine(kernel=elf, direct=True)
    stops = 0

    async def preempt() -> None:
        nonlocal stops
        while m.result is None:
            m.scheduler.preempt_now()
            stops += 1
            await trio.sleep(0.001)

    async with trio.open_nursery() as n:
        n.start_soon(preempt)
        result = await m.run(timeout=20)
        n.cancel_scope.cancel()
    m.close()
    assert stops > 20, "the test must end many slices"
    assert result.code == 0, f"markers clobbered (bits {result.code:#x}): {result.reason}"
