"""A small OS-like guest on the e500 MMU: it boots the way Linux's head code does, runs a user
program in address space 1 under its own PID, and refuses that program a supervisor page.

The guest (assembled below) has two parts.  The boot ROM's few instructions copy the "kernel"
image to physical 0 and jump to it at EA 0, through the power-on mapping (PLATFORM.md,
Addressing: TLB1 ESEL 12, 1 GiB, EA = PA).  The kernel then does what Linux 6.1's
``fsl_booke_entry_mapping.S`` does:

1. ``tlbsx`` its own address to find the TLB1 entry it runs from;
2. invalidates every other TLB1 entry (``tlbwe`` with V and IPROT clear) and all of TLB0;
3. writes a temporary 4 KiB mapping of its page in the other address space and ``rfi``s into
   it (MSR[IS] = 1);
4. clears PID and MAS6; 5. drops the entry it started in (IPROT cleared, ``tlbivax`` all);
6. writes TLB1[0]: EA 0xC000_0000 -> PA 0, 64 MiB, IPROT, supervisor only;
7. ``rfi``s to its 0xC000_0000 alias in address space 0; 8. drops the temporary mapping.

Then it points IVPR at 0xC000_0000 and the IVORs at its own handlers, sets MAS4 (TLB0, PID0,
4 KiB) and ``rfi``s into a user program at 0x1000_0000 with MSR[PR] = MSR[IS] = MSR[DS] = 1
under PID 5.  The user pages exist only in the kernel's page table; its DTLB and ITLB miss
handlers complete the MAS registers the hardware filled from MAS4 (MAS0-2: TLB0, the victim
way, V, TID = PID, TS, the EPN) with MAS3 from the page table, ``tlbwe`` and ``rfi`` to retry.
The program reads a word from its data page, asks the kernel to add it to 22 with ``sc``
(r0 = 1), checks the answer, stores it, jumps into its second code page, then loads from and
stores to a page the kernel mapped SR|SW only: each is refused with a DSI, which the kernel
records and skips.  It exits with ``sc`` (r0 = 2); the kernel prints what happened, checks it,
and powers off with one bit per check passed.
"""

from __future__ import annotations

import struct
from functools import cache

import pytest
from elftools.elf.elffile import ELFFile

from machine.asm import assemble

from .guests import PUTS, Boot, boot

pytestmark = pytest.mark.cross

KERNELBASE = 0xC000_0000
KDATA = 0x8000  # the kernel's variables, physical (zero at power-on; the image ends below)
UBASE = 0x1000_0000  # the user program's pages: code, code, data, the supervisor-only page
UCODE0, UCODE1, UDATA, USUP = (UBASE + 0x1000 * i for i in range(4))
UPID = 5
SYS_ADD, SYS_EXIT = 1, 2
SECRET = 0x5EC2_E700

MSR_PR, MSR_IS, MSR_DS = 0x4000, 0x20, 0x10
ESR_ST = 0x0080_0000
PTE_PRESENT = 0x800  # not a MAS3 bit: the miss handlers mask it off
UX, SX, UW, SW, UR, SR = 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
MAS1_V, MAS1_TS, MAS1_TSIZE_4K = 0x8000_0000, 0x1000, 0x100

# Kernel variables (offsets in KDATA)
D_DTLB, D_ITLB = 13 * 4, 14 * 4  # miss counters, indexed by the IVOR number
D_HEAD = 0x00  # esel found by tlbsx, its MAS1, TLB1CFG, the PC after step 7
D_SYS = 0x10  # calls, last result, SRR0, SRR1 of the last call
D_EXIT = 0x40  # the user's exit status
D_NDSI = 0x44
D_UNEXPECTED = 0x48  # IVOR number, SRR0, SRR1, ESR, DEAR of an unexpected interrupt
D_NLOG = 0x5C
D_LOG = 0x100  # TLB misses: 32 bytes each {IVOR, MAS0, MAS1, MAS2, SRR0, SRR1, DEAR, ESR}
D_DSI = 0x200  # DSIs: 16 bytes each {DEAR, ESR, SRR0, SRR1}
LOG_MAX = 8
NL = "\n"

#: IVORs (SPR numbers 400..415, 528..531) pointed at "unexpected interrupt" stubs first.
IVORS = [*range(16), 32, 33, 34, 35]


def _ivor_spr(n: int) -> int:
    return 400 + n if n < 16 else 528 + n - 32


def say(text: str) -> str:
    """Assembly printing ``text`` on the console, 4 bytes at a time (clobbers r3-r5, r11)."""
    data = text.encode()
    out = []
    for i in range(0, len(data), 4):
        chunk = data[i:i + 4]
        word = int.from_bytes(chunk.ljust(4, bytes(1)), "big")
        out.append(f"    puts4 {word:#x}, {len(chunk)}")
    return "\n".join(out)


def kaddr(reg: int, label: str) -> str:
    """Load the kernel-virtual address of ``label`` (the image is linked in the ROM)."""
    return f"    li32 {reg}, {KERNELBASE:#x}+({label}-kstart)"


def hexline(label: str, offset: int) -> str:
    """Print the kernel variable at KDATA + ``offset`` as 8 hex digits."""
    return f"    lwz 22, {offset}(31)\n    bl puthex\n{say(label)}" if label else \
        f"    lwz 22, {offset}(31)\n    bl puthex"


SAVE = """
    mtspr 272, 10               /* SPRG0..3 = r10..r13, SPRG4 = CR */
    mtspr 273, 11
    mtspr 274, 12
    mtspr 275, 13
    mfcr 10
    mtspr 276, 10
"""
RESTORE = """
    mfspr 10, 276
    mtcrf 0xff, 10
    mfspr 10, 272
    mfspr 11, 273
    mfspr 12, 274
    mfspr 13, 275
    rfi
"""

UNEXPECTED_STUBS = "\n".join(
    f"    .balign 16\nunexpected_{n}:\n    li 24, {n}\n    b unexpected" for n in IVORS
)
SET_IVORS = "\n".join(
    f"    li 4, unexpected_{n}-kstart\n    mtspr {_ivor_spr(n)}, 4" for n in IVORS
)

GUEST = f"""
/* ---- boot ROM: copy the kernel image to physical 0 and enter it at EA 0 ---- */
_start:
    li32 3, kstart
    li32 4, kend
    li 5, 0
1:  lwz 6, 0(3)
    stw 6, 0(5)
    addi 3, 3, 4
    addi 5, 5, 4
    cmplw 3, 4
    blt 1b
    sync
    isync
    li 4, 0
    mtctr 4
    bctr

/* ---- the kernel: position-independent until step 7 ---- */
    .balign 4096
kstart:
    /* 1. Find the TLB1 entry we are running from (tlbsx with MAS6 = PID0 | MSR[IS]) */
    mfmsr 7
    rlwinm 4, 7, 27, 31, 31     /* r4 = MSR[IS] */
    mfspr 7, 48
    slwi 7, 7, 16
    or 7, 7, 4
    mtspr 630, 7                /* MAS6 */
    bl 1f
1:  mflr 6
    tlbsx 0, 6
    mfspr 7, 625
    andis. 7, 7, 0x8000
    beq head_lost
    mfspr 3, 624
    rlwinm 3, 3, 16, 20, 31     /* r3 = ESEL */
    mfspr 26, 625               /* kept for the report */

    /* 2. Invalidate every TLB1 entry but ours, then TLB0 */
    mfspr 27, 689               /* TLB1CFG */
    andi. 9, 27, 0xfff          /* NENTRY */
    li 6, 0
2:  lis 7, 0x1000
    rlwimi 7, 6, 16, 4, 15      /* MAS0 = TLBSEL 1 | ESEL(r6) */
    mtspr 624, 7
    tlbre
    mfspr 7, 625
    rlwinm 7, 7, 0, 2, 31       /* clear V and IPROT */
    cmpw 3, 6
    beq 3f
    mtspr 625, 7
    tlbwe
    isync
3:  addi 6, 6, 1
    cmpw 6, 9
    bne 2b
    li 6, 0x04
    tlbivax 0, 6                /* all of TLB0 */
    tlbsync
    li 6, 0x0c
    tlbivax 0, 6                /* TLB1, but IPROT entries (ours) */
    tlbsync
    sync

    /* 3. A temporary 4 KiB mapping of this page in the other address space; rfi into it */
    andi. 5, 3, 1
    addi 5, 5, 1                /* r5 = a free entry, not 0 */
    lis 7, 0x1000
    rlwimi 7, 3, 16, 4, 15
    mtspr 624, 7
    tlbre
    mfspr 6, 625
    rlwinm 6, 6, 25, 27, 31     /* TSIZE */
    li 8, -1
    addi 6, 6, 10
    slw 6, 8, 6                 /* the entry's mask */
    bl 1f
1:  mflr 7
    mfspr 8, 627
    and 8, 6, 8
    subfic 9, 6, -4096
    and 9, 9, 7
    or 25, 8, 9                 /* r25 = physical page we run in */
    ori 8, 25, {SX | SW | SR}
    lis 7, 0x1000
    rlwimi 7, 5, 16, 4, 15
    mtspr 624, 7
    xori 6, 4, 1
    slwi 6, 6, 12
    oris 6, 6, 0xC000           /* V | IPROT | TS(other) | 4 KiB */
    ori 6, 6, {MAS1_TSIZE_4K}
    mtspr 625, 6
    mfspr 6, 626
    li 7, 0                     /* temporary EPN 0 */
    rlwimi 7, 6, 0, 20, 31
    mtspr 626, 7
    mtspr 627, 8
    tlbwe
    xori 6, 4, 1
    slwi 6, 6, 5                /* MSR[IS] of the other address space */
    bl 1f
1:  mflr 9
    rlwimi 7, 9, 0, 20, 31
    addi 7, 7, 2f-1b
    mtsrr0 7
    mtsrr1 6
    rfi
2:
    /* 4. Clear PID and MAS6 */
    li 6, 0
    mtspr 630, 6
    mtspr 48, 6
    isync

    /* 5. Drop the entry we started in: clear IPROT, invalidate TLB1 */
    lis 7, 0x1000
    rlwimi 7, 3, 16, 4, 15
    mtspr 624, 7
    tlbre
    mfspr 6, 625
    rlwinm 6, 6, 0, 2, 0
    mtspr 625, 6
    tlbwe
    li 9, 0x0c
    tlbivax 0, 9
    tlbsync
    sync

    /* 6. TLB1[0]: KERNELBASE -> the physical 64 MiB we run in, IPROT, supervisor only */
    lis 6, 0x1000
    mtspr 624, 6
    lis 6, 0xC000
    ori 6, 6, 0x0800            /* V | IPROT | 64 MiB */
    mtspr 625, 6
    lis 6, {KERNELBASE >> 16:#x}
    mtspr 626, 6
    rlwinm 8, 25, 0, 0, 5
    ori 8, 8, {SX | SW | SR}
    mtspr 627, 8
    li 6, 0
    mtspr 944, 6
    tlbwe
    isync

    /* 7. Jump to the KERNELBASE alias, address space 0 */
    lis 6, {KERNELBASE >> 16:#x}
    rlwinm 7, 25, 0, 6, 31
    add 6, 7, 6
    bl 1f
1:  mflr 9
    rlwimi 6, 9, 0, 20, 31
    addi 6, 6, 2f-1b
    mtsrr0 6
    li 7, 0
    mtsrr1 7
    rfi
2:
    /* 8. Drop the temporary mapping */
    lis 7, 0x1000
    rlwimi 7, 5, 16, 4, 15
    mtspr 624, 7
    tlbre
    mfspr 8, 625
    rlwinm 8, 8, 0, 2, 0
    mtspr 625, 8
    tlbwe
    li 9, 0x0c
    tlbivax 0, 9
    tlbsync
    sync

    /* ---- running at 0xC000_xxxx ---- */
    li32 31, {KERNELBASE + KDATA:#x}
    stw 3, {D_HEAD}(31)
    stw 26, {D_HEAD + 4}(31)
    stw 27, {D_HEAD + 8}(31)
    bl kmain
kmain:
    mflr 4
    stw 4, {D_HEAD + 12}(31)

    lis 4, {KERNELBASE >> 16:#x}
    mtspr 63, 4                 /* IVPR */
{SET_IVORS}
    li 4, h_dsi-kstart
    mtspr 402, 4
    li 4, h_syscall-kstart
    mtspr 408, 4
    li 4, h_dtlb-kstart
    mtspr 413, 4
    li 4, h_itlb-kstart
    mtspr 414, 4
    li 4, {MAS1_TSIZE_4K}
    mtspr 628, 4                /* MAS4: TLB0, TID from PID0, 4 KiB, WIMGE 0 */

    /* Enter the user program: PID {UPID}, PR | IS | DS */
    li 4, {UPID}
    mtspr 48, 4
    isync
    li32 4, {UCODE0:#x}
    mtsrr0 4
    li 4, {MSR_PR | MSR_IS | MSR_DS}
    mtsrr1 4
    rfi

head_lost:
    li32 3, 0xBAD0FFFF
    hcall HC_FW_POWEROFF

/* ---- interrupt handlers ---- */
    .balign 16
h_dtlb:
{SAVE}
    li 10, 13
    b tlb_refill
    .balign 16
h_itlb:
{SAVE}
    li 10, 14
tlb_refill:                     /* r10 = the IVOR number (13 data, 14 instruction) */
    li32 11, {KERNELBASE + KDATA:#x}
    slwi 12, 10, 2
    add 12, 12, 11
    lwz 13, 0(12)
    addi 13, 13, 1
    stw 13, 0(12)               /* count it */
    lwz 12, {D_NLOG}(11)
    cmplwi 12, {LOG_MAX}
    bge 1f
    addi 13, 12, 1
    stw 13, {D_NLOG}(11)
    slwi 12, 12, 5
    add 12, 12, 11
    stw 10, {D_LOG}(12)         /* log it, with what the hardware filled in */
    mfspr 13, 624
    stw 13, {D_LOG + 4}(12)
    mfspr 13, 625
    stw 13, {D_LOG + 8}(12)
    mfspr 13, 626
    stw 13, {D_LOG + 12}(12)
    mfsrr0 13
    stw 13, {D_LOG + 16}(12)
    mfsrr1 13
    stw 13, {D_LOG + 20}(12)
    mfspr 13, 61
    stw 13, {D_LOG + 24}(12)
    mfspr 13, 62
    stw 13, {D_LOG + 28}(12)
1:  mfspr 12, 626               /* the page table entry for MAS2[EPN] */
    rlwinm 12, 12, 0, 0, 19
    lis 13, {UBASE >> 16:#x}
    subf 12, 13, 12
    srwi 12, 12, 12
    cmplwi 12, (pgtable_end-pgtable)/4
    bge segv
    slwi 12, 12, 2
{kaddr(13, "pgtable")}
    lwzx 12, 13, 12
    andi. 13, 12, {PTE_PRESENT}
    beq segv
    li32 13, 0xFFFFF03F
    and 12, 12, 13
    mtspr 627, 12               /* MAS3: RPN and permissions; MAS0-2 as the miss left them */
    li 13, 0
    mtspr 944, 13               /* MAS7 */
    tlbwe
    isync
{RESTORE}

    .balign 16
h_dsi:
{SAVE}
    li32 11, {KERNELBASE + KDATA:#x}
    lwz 12, {D_NDSI}(11)
    addi 13, 12, 1
    stw 13, {D_NDSI}(11)
    cmplwi 12, 4
    bge 1f
    slwi 12, 12, 4
    add 12, 12, 11
    mfspr 13, 61
    stw 13, {D_DSI}(12)         /* DEAR */
    mfspr 13, 62
    stw 13, {D_DSI + 4}(12)     /* ESR */
    mfsrr0 13
    stw 13, {D_DSI + 8}(12)
    mfsrr1 13
    stw 13, {D_DSI + 12}(12)
1:  mfsrr0 13                   /* refused: the access does not happen, the program goes on */
    addi 13, 13, 4
    mtsrr0 13
{RESTORE}

    .balign 16
h_syscall:
{SAVE}
    li32 11, {KERNELBASE + KDATA:#x}
    lwz 12, {D_SYS}(11)
    addi 12, 12, 1
    stw 12, {D_SYS}(11)
    mfsrr0 12
    stw 12, {D_SYS + 8}(11)
    mfsrr1 12
    stw 12, {D_SYS + 12}(11)
    cmpwi 0, {SYS_EXIT}
    beq sys_exit
    cmpwi 0, {SYS_ADD}
    beq 1f
    li 3, -38                   /* ENOSYS */
    b 2f
1:  add 3, 3, 4
2:  stw 3, {D_SYS + 4}(11)
{RESTORE}

sys_exit:
    stw 3, {D_EXIT}(11)
    b report

segv:                           /* a miss outside the page table: report and stop */
    li32 31, {KERNELBASE + KDATA:#x}
    mfspr 22, 626
    bl puthex
{say(" segv" + NL)}
    li32 3, 0xBAD10000
    hcall HC_FW_POWEROFF

{UNEXPECTED_STUBS}
unexpected:
    li32 31, {KERNELBASE + KDATA:#x}
    stw 24, {D_UNEXPECTED}(31)
    mfsrr0 22
    stw 22, {D_UNEXPECTED + 4}(31)
    mfsrr1 4
    stw 4, {D_UNEXPECTED + 8}(31)
    mfspr 4, 62
    stw 4, {D_UNEXPECTED + 12}(31)
    mfspr 4, 61
    stw 4, {D_UNEXPECTED + 16}(31)
    bl puthex
{say(" unexpected interrupt" + NL)}
    li32 3, 0xBAD20000
    or 3, 3, 24
    hcall HC_FW_POWEROFF

puthex:                         /* print r22 as 8 hex digits; clobbers r3-r6, r9, r11, ctr */
    li 9, 8
    mtctr 9
    li 5, 0
    li 6, 0
1:  rotlwi 22, 22, 4
    rlwinm 9, 22, 0, 28, 31
    cmplwi 9, 10
    blt 2f
    addi 9, 9, 39
2:  addi 9, 9, 48
    slwi 5, 5, 8
    rlwimi 5, 6, 8, 24, 31
    slwi 6, 6, 8
    or 6, 6, 9
    bdnz 1b
    li 3, 0
    li 4, 8
    hcall HC_EV_BYTE_CHANNEL_SEND
    blr

report:                         /* the user program exited: say what happened, check it */
    li32 31, {KERNELBASE + KDATA:#x}
{say("boot: tlbsx found esel ")}
{hexline(", now at ", D_HEAD)}
{hexline("", D_HEAD + 12)}
{say(NL + "misses: itlb ")}
{hexline(", dtlb ", D_ITLB)}
{hexline("", D_DTLB)}
{say(NL + "syscalls: ")}
{hexline(", add -> ", D_SYS)}
{hexline("", D_SYS + 4)}
{say(NL + "dsi: dear ")}
{hexline(" esr ", D_DSI)}
{hexline(", dear ", D_DSI + 4)}
{hexline(" esr ", D_DSI + 16)}
{hexline("", D_DSI + 20)}
{say(NL + "exit ")}
{hexline("", D_EXIT)}
{say(NL)}
    li 20, 0                    /* one bit per check */
    lwz 4, {D_HEAD}(31)         /* 1: found the power-on entry, runs at KERNELBASE */
    cmpwi 4, 12
    bne 1f
    lwz 4, {D_HEAD + 12}(31)
    srwi 4, 4, 28
    cmpwi 4, 0xC
    bne 1f
    ori 20, 20, 1
1:  lwz 4, {D_ITLB}(31)         /* 2: two misses of each kind */
    lwz 5, {D_DTLB}(31)
    cmpwi 4, 2
    bne 1f
    cmpwi 5, 2
    bne 1f
    ori 20, 20, 2
1:  lwz 4, {D_SYS + 4}(31)      /* 4: 20 + 22, the program saw it and stored it */
    cmpwi 4, 42
    bne 1f
    lwz 4, {D_EXIT}(31)
    cmpwi 4, 0
    bne 1f
{kaddr(5, "udata")}
    lwz 4, 4(5)
    cmpwi 4, 42
    bne 1f
    ori 20, 20, 4
1:  lwz 4, {D_NDSI}(31)         /* 8: two DSIs at the supervisor page, load then store */
    cmpwi 4, 2
    bne 1f
    lwz 4, {D_DSI}(31)
    lwz 5, {D_DSI + 16}(31)
    li32 6, {USUP:#x}
    cmpw 4, 6
    bne 1f
    cmpw 5, 6
    bne 1f
    lwz 4, {D_DSI + 4}(31)
    cmpwi 4, 0
    bne 1f
    lwz 4, {D_DSI + 20}(31)
    lis 6, {ESR_ST >> 16:#x}
    cmpw 4, 6
    bne 1f
    ori 20, 20, 8
1:
{kaddr(5, "usup")}
    lwz 4, 0(5)                 /* 16: the supervisor page is untouched */
    li32 6, {SECRET:#x}
    cmpw 4, 6
    bne 1f
    ori 20, 20, 16
1:  mr 3, 20
    hcall HC_FW_POWEROFF

/* ---- the user program's pages ---- */
    .balign 4096
ucode0:                         /* {UCODE0:#x} */
    lis 9, {UDATA >> 16:#x}
    ori 9, 9, {UDATA & 0xFFFF:#x}
    lwz 3, 0(9)                 /* 20, from the data page */
    li 4, 22
    li 0, {SYS_ADD}
user_sc:
    sc
    stw 3, 4(9)
    b ucode1
    .balign 4096
ucode1:                         /* {UCODE1:#x} */
    li 5, 1
    cmpwi 3, 42
    bne 1f
    li 5, 0
1:  lis 9, {USUP >> 16:#x}
    ori 9, 9, {USUP & 0xFFFF:#x}
user_load:
    lwz 6, 0(9)                 /* refused: supervisor-only page */
    li 6, 0x0BAD
user_store:
    stw 6, 0(9)                 /* refused */
    mr 3, 5
    li 0, {SYS_EXIT}
user_exit:
    sc
    b .
    .balign 4096
udata:                          /* {UDATA:#x} */
    .long 20
    .long 0
    .balign 4096
usup:                           /* {USUP:#x} */
    .long {SECRET:#x}
    .balign 4096
pgtable:                        /* {UBASE:#x} + 4 KiB * index: RPN | present | MAS3 bits */
    .long (ucode0-kstart)|{PTE_PRESENT | UX | UR}
    .long (ucode1-kstart)|{PTE_PRESENT | UX | UR}
    .long (udata-kstart)|{PTE_PRESENT | UR | UW | SR | SW}
    .long (usup-kstart)|{PTE_PRESENT | SR | SW}
pgtable_end:
    .balign 16
kend:
"""


@cache
def symbols() -> dict[str, int]:
    with assemble(PUTS + GUEST).open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: int(s["st_value"]) for s in table.iter_symbols()}  # type: ignore[union-attr]


def kernel_va(label: str) -> int:
    sym = symbols()
    return KERNELBASE + sym[label] - sym["kstart"]


def physical(label: str) -> int:
    sym = symbols()
    return sym[label] - sym["kstart"]


def user_va(label: str) -> int:
    """The user program's address of ``label`` (its pages are UCODE0.., in image order)."""
    sym = symbols()
    return UCODE0 + sym[label] - sym["ucode0"]


def words(b: Boot, offset: int, count: int) -> tuple[int, ...]:
    return struct.unpack(f">{count}I", b.machine.ram.read(KDATA + offset, 4 * count))


async def run_os() -> Boot:
    b = await boot(GUEST, timeout=10)
    assert b.result.code == 0x1F, (b.result.reason, b.console)
    return b


async def test_the_os_boots_runs_its_user_program_and_reports_every_step() -> None:
    b = await run_os()
    at = kernel_va("kmain")
    assert b.console.decode() == (
        f"boot: tlbsx found esel 0000000c, now at {at:08x}\n"
        "misses: itlb 00000002, dtlb 00000002\n"
        "syscalls: 00000002, add -> 0000002a\n"
        "dsi: dear 10003000 esr 00000000, dear 10003000 esr 00800000\n"
        "exit 00000000\n"
    )


async def test_it_maps_itself_at_0xc000_0000_and_drops_every_other_mapping() -> None:
    b = await run_os()
    esel, mas1, tlb1cfg, pc = words(b, D_HEAD, 4)
    # tlbsx found the power-on entry it was entered through: ESEL 12, 1 GiB, IPROT.
    assert (esel, mas1) == (12, 0xC000_0A00)
    assert tlb1cfg & 0xFFF == 16
    # After the rfi through the temporary AS1 mapping it runs at its KERNELBASE alias.
    assert pc == kernel_va("kmain")
    # TLB1 holds only the kernel's entry: EA 0xC000_0000 -> PA 0, 64 MiB, IPROT, SX|SW|SR.
    tlb1 = [b.machine.cpus[0].tlb1(i) for i in range(16)]
    assert [i for i, e in enumerate(tlb1) if e.mas1 & MAS1_V] == [0]
    assert (tlb1[0].mas1, tlb1[0].mas2, tlb1[0].mas7_3) == (0xC000_0800, KERNELBASE, SX | SW | SR)


async def test_its_miss_handlers_refill_tlb0_with_the_pid_and_address_space_of_the_miss() -> None:
    b = await run_os()
    assert words(b, D_DTLB, 2) == (2, 2)  # DTLB, ITLB
    assert words(b, D_NLOG, 1) == (4,)
    log = [words(b, D_LOG + 32 * i, 8) for i in range(4)]
    # MAS1 as the hardware filled it from MAS4 and PID 5: V | TID 5 | TS | 4 KiB; MAS0 picks
    # TLB0 and the next victim way round-robin.  DEAR is the missed address (QEMU sets it on
    # instruction misses too), ESR 0 (loads and fetches).
    user = MSR_PR | MSR_IS | MSR_DS
    mas1 = MAS1_V | UPID << 16 | MAS1_TS | MAS1_TSIZE_4K
    assert log == [
        # kind, MAS0, MAS1, MAS2, SRR0, SRR1, DEAR, ESR
        (14, 0x0000_0001, mas1, UCODE0, UCODE0, user, UCODE0, 0),  # rfi into the program
        (13, 0x0001_0002, mas1, UDATA, user_va("ucode0") + 8, user, UDATA, 0),  # lwz
        (14, 0x0002_0003, mas1, UCODE1, UCODE1, user, UCODE1, 0),  # b ucode1
        (13, 0x0003_0000, mas1, USUP, user_va("user_load"), user, USUP, 0),  # lwz
    ]


async def test_the_user_program_makes_a_system_call_and_checks_its_result() -> None:
    b = await run_os()
    calls, result, srr0, srr1 = words(b, D_SYS, 4)
    assert (calls, result) == (2, 42)  # SYS_ADD(20, 22), then SYS_EXIT
    # The last call (exit): SRR0 = the instruction after its sc, SRR1 = user mode in AS1.
    assert srr0 == user_va("user_exit") + 4 and srr1 == MSR_PR | MSR_IS | MSR_DS
    assert words(b, D_EXIT, 1) == (0,)  # the program found 42 ...
    assert b.machine.ram.read(physical("udata"), 8) == struct.pack(">2I", 20, 42)  # ... stored it


async def test_user_access_to_a_supervisor_page_is_refused_with_a_dsi() -> None:
    b = await run_os()
    assert words(b, D_NDSI, 1) == (2,)
    user = MSR_PR | MSR_IS | MSR_DS
    assert words(b, D_DSI, 8) == (
        USUP, 0, user_va("user_load"), user,  # the load: ESR 0
        USUP, ESR_ST, user_va("user_store"), user,  # the store: ESR[ST]
    )
    assert b.machine.ram.read(physical("usup"), 4) == SECRET.to_bytes(4, "big")
