"""The exception kinds test_exceptions.py does not reach, and exact SRR1 and handler MSR.

One guest takes each case in turn.  Every IVOR (0-15, 32-35) points at its own stub, which
records {IVOR, SRR0, SRR1, ESR, DEAR, MAS0, MAS1, MAS2, the handler's MSR, CSRR0, CSRR1,
DBSR} in a table in RAM, clears ESR and DEAR, and resumes at r25 with MSR = r26 (each case
sets both first).  The "no handler" cases boot guests that never set IVPR or the IVOR, or
whose handler takes the same exception at its own first instruction: exit status 125 and a
fault report naming the kind and the address.
"""

from __future__ import annotations

import struct
from functools import cache

import pytest
from elftools.elf.elffile import ELFFile

from machine.asm import assemble
from machine.events import FaultKind, GuestFault

from .guests import PUTS, boot

pytestmark = pytest.mark.cross

TABLE = 0x0010_0000
ROW = 64
NO_SX = 0x6000_0000  # AS1, TLB1 entry 1: SR | SW (no execute, nothing for user mode)
NO_UX = 0x6000_1000  # AS1, TLB1 entry 2: SR | SX | UR (no user execute)
UNMAPPED = 0x7000_0000  # AS1, in no entry
IVORS = [*range(16), 32, 33, 34, 35]

MSR_CE, MSR_ME, MSR_DE = 0x0002_0000, 0x1000, 0x200
MSR_PR, MSR_IS, MSR_DS = 0x4000, 0x20, 0x10
ESR_PIL, ESR_PPR, ESR_PTR, ESR_ST, ESR_SPV = 0x0800_0000, 0x0400_0000, 0x0200_0000, \
    0x0080_0000, 0x80
DBCR0_IDM, DBCR0_ICMP, DBSR_ICMP = 0x4000_0000, 0x0800_0000, 0x0800_0000
JUNK = 0x5A5A_5A5A


def _ivor_spr(n: int) -> int:
    return 400 + n if n < 16 else 528 + n - 32


def case(name: str, body: str, *, msr: int = 0) -> str:
    """``body`` in supervisor state; the handler resumes at ``after_<name>`` in ``msr``."""
    return f"""
    li32 25, after_{name}
    li32 26, {msr}
{body}
after_{name}:
"""


def entered(name: str, insn: str, *, msr: int) -> str:
    """``insn`` (at ``fault_<name>``) run with MSR = ``msr`` (through rfi)."""
    return case(name, f"""
    li32 4, fault_{name}
    mtsrr0 4
    li32 4, {msr}
    mtsrr1 4
    rfi
fault_{name}:
    {insn}""")


def jump(name: str, target: int, *, msr: int) -> str:
    """rfi to ``target`` with MSR = ``msr`` (an instruction fetch that faults)."""
    return case(name, f"""
    li32 4, {target}
    mtsrr0 4
    li32 4, {msr}
    mtsrr1 4
    rfi""")


#: (name, guest code); each takes exactly one exception, in this order.
CASES = [
    ("isi", f"    li32 4, {JUNK}\n    mtspr 62, 4" + jump("isi", NO_SX, msr=MSR_IS | MSR_DS)),
    ("isi_user", jump("isi_user", NO_UX, msr=MSR_PR | MSR_IS | MSR_DS)),
    ("dsi_load", entered("dsi_load", f"lwz 5, {NO_SX & 0xFFFF}(9)", msr=MSR_PR | MSR_DS)
     .replace("    li32 4, fault_dsi_load", f"    li32 9, {NO_SX}\n    li32 4, fault_dsi_load")),
    ("spe", case("spe", "fault_spe:\n    evaddw 5, 5, 5")),
    ("efp", case("efp", "fault_efp:\n    efsadd 5, 5, 5")),
    ("fadd", case("fadd", "fault_fadd:\n    .long 0xFC21082A     /* fadd f1, f1, f1 */")),
    ("lfd", case("lfd", "fault_lfd:\n    .long 0xC83E0000     /* lfd f1, 0(r30) */")),
    ("priv_spr", entered("priv_spr", "mtsrr0 3", msr=MSR_PR)),
    ("priv_insn", entered("priv_insn", "tlbwe", msr=MSR_PR)),
    ("sc", case("sc", "    sc\nfault_sc:", msr=0)),
    ("dtlb_store", case("dtlb_store", f"""
    li32 4, 0x1000010A          /* MAS4: TLBSELD 1, TIDSELD PID0, 4 KiB, WIMGED I|G */
    mtspr 628, 4
    li 4, 7
    mtspr 48, 4                 /* PID0 = 7 */
    li32 9, {UNMAPPED + 0x124}
    li32 4, fault_dtlb_store
    mtsrr0 4
    li 4, {MSR_DS}
    mtsrr1 4
    rfi
fault_dtlb_store:
    stw 5, 0(9)""")),
    ("itlb_pid", jump("itlb_pid", UNMAPPED + 0x5000, msr=MSR_IS)),
    ("debug", case("debug", f"""
    li 4, 0
    mtspr 48, 4                 /* PID0 = 0 */
    mtspr 628, 4                /* MAS4 = 0 */
    lis 4, {(DBCR0_IDM | DBCR0_ICMP) >> 16:#x}
    mtspr 308, 4                /* DBCR0: internal debug mode, instruction complete */
    li32 4, step_debug
    mtsrr0 4
    li32 4, {MSR_DE}
    mtsrr1 4
    rfi
step_debug:
    nop
fault_debug:
    nop""")),
    ("trap_msr", "    li 4, 0\n    mtspr 308, 4" + entered("trap_msr", "trap",
                                                          msr=MSR_CE | MSR_ME | MSR_DE)),
]

STUBS = "\n".join(
    f"    .balign 16\nstub_{n}:\n    mfmsr 23\n    li 24, {n}\n    b record" for n in IVORS
)
SET_IVORS = "\n".join(f"    li 3, stub_{n}@l\n    mtspr {_ivor_spr(n)}, 3" for n in IVORS)

GUEST = f"""
_start:
    lis 3, 0xFFF0
    mtspr 63, 3                 /* IVPR = the ROM */
{SET_IVORS}
    li32 30, {TABLE}
    lis 3, 0x1001               /* TLB1 1: AS1 {NO_SX:#x} -> 0x200000, 4 KiB, SR | SW */
    mtspr 624, 3
    li32 3, 0x80001100
    mtspr 625, 3
    li32 3, {NO_SX}
    mtspr 626, 3
    li32 3, 0x00200005
    mtspr 627, 3
    tlbwe
    lis 3, 0x1002               /* TLB1 2: AS1 {NO_UX:#x} -> 0x201000, 4 KiB, SR | SX | UR */
    mtspr 624, 3
    li32 3, 0x80001100
    mtspr 625, 3
    li32 3, {NO_UX}
    mtspr 626, 3
    li32 3, 0x00201013
    mtspr 627, 3
    tlbwe
    isync
{"".join(code for _, code in CASES)}
    li32 3, 0x600D
    hcall HC_FW_POWEROFF

record:                         /* r24 = IVOR, r23 = the handler's MSR */
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
    stw 23, 32(30)
    mfspr 3, 58                 /* CSRR0 */
    stw 3, 36(30)
    mfspr 3, 59                 /* CSRR1 */
    stw 3, 40(30)
    mfspr 3, 304                /* DBSR */
    stw 3, 44(30)
    li 3, 0
    mtspr 62, 3
    mtspr 61, 3
    addi 30, 30, {ROW}
    mtsrr0 25
    mtsrr1 26
    rfi
{STUBS}
"""


@cache
def symbols(source: str) -> dict[str, int]:
    with assemble(PUTS + source).open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: int(s["st_value"]) for s in table.iter_symbols()}  # type: ignore[union-attr]


FIELDS = ("ivor", "srr0", "srr1", "esr", "dear", "mas0", "mas1", "mas2", "msr", "csrr0",
          "csrr1", "dbsr")


async def take_each() -> dict[str, dict[str, int]]:
    b = await boot(GUEST)
    assert b.result.code == 0x600D, b.result.reason
    rows = [struct.unpack(">12I", b.machine.ram.read(TABLE + ROW * i, 48))
            for i in range(len(CASES) + 1)]
    assert rows[-1][0] == 0 and rows[-1][1] == 0, "one exception per case, no more"
    return {name: dict(zip(FIELDS, row, strict=True))
            for (name, _), row in zip(CASES, rows, strict=False)}


def at(label: str) -> int:
    return symbols(GUEST)[label]


async def test_storage_spe_fp_and_privilege_exceptions_reach_their_vectors() -> None:
    r = await take_each()
    # ISI: a fetch from a page without execute permission (supervisor, then user), SRR0 =
    # the target, ESR written (cleared: the junk put there before is gone), DEAR untouched.
    assert (r["isi"]["ivor"], r["isi"]["srr0"], r["isi"]["esr"], r["isi"]["dear"]) == \
        (3, NO_SX, 0, 0)
    assert (r["isi_user"]["ivor"], r["isi_user"]["srr0"]) == (3, NO_UX)
    assert r["isi_user"]["srr1"] & MSR_PR
    # DSI: a user load from a supervisor-only page: ESR 0 (a load), DEAR = the address.
    dsi = r["dsi_load"]
    assert (dsi["ivor"], dsi["srr0"], dsi["srr1"], dsi["esr"], dsi["dear"]) == \
        (2, at("fault_dsi_load"), MSR_PR | MSR_DS, 0, NO_SX)
    # SPE and embedded FP instructions with MSR[SPE] = 0: IVOR32, ESR[SPV], SRR0 = the insn.
    for name in ("spe", "efp"):
        assert (r[name]["ivor"], r[name]["srr0"], r[name]["srr1"], r[name]["esr"]) == \
            (32, at(f"fault_{name}"), 0, ESR_SPV)
    # e500v2 has no classic FPU: fadd and lfd are illegal instructions (IVOR6, ESR[PIL]);
    # the FP unavailable vector (IVOR7) is never taken.
    for name in ("fadd", "lfd"):
        assert (r[name]["ivor"], r[name]["srr0"], r[name]["esr"]) == \
            (6, at(f"fault_{name}"), ESR_PIL)
    # A privileged SPR write and a privileged instruction in user mode: ESR[PPR].
    for name in ("priv_spr", "priv_insn"):
        assert (r[name]["ivor"], r[name]["srr0"], r[name]["esr"]) == \
            (6, at(f"fault_{name}"), ESR_PPR)
        assert r[name]["srr1"] & MSR_PR
    # sc from supervisor state: SRR0 = the next instruction, SRR1 = the MSR.
    assert (r["sc"]["ivor"], r["sc"]["srr0"], r["sc"]["srr1"]) == (8, at("fault_sc"), 0)


async def test_tlb_misses_fill_mas_from_mas4_pid_and_the_address_space() -> None:
    r = await take_each()
    # A store in AS1 under PID 7 with MAS4 = TLBSELD 1, TIDSELD PID0, 4 KiB, WIMGED I|G.
    d = r["dtlb_store"]
    assert (d["ivor"], d["srr0"], d["srr1"], d["esr"], d["dear"]) == \
        (13, at("fault_dtlb_store"), MSR_DS, ESR_ST, UNMAPPED + 0x124)
    assert d["mas0"] & 0x3000_0000 == 0x1000_0000  # TLBSEL from TLBSELD
    assert d["mas1"] == 0x8000_0000 | 7 << 16 | 0x1000 | 0x100  # V | TID 7 | TS | 4 KiB
    assert d["mas2"] == UNMAPPED | 0x0A  # EPN | WIMGED
    # An instruction fetch in AS1 under the same PID and MAS4.
    i = r["itlb_pid"]
    assert (i["ivor"], i["srr0"], i["srr1"]) == (14, UNMAPPED + 0x5000, MSR_IS)
    assert i["mas1"] == 0x8000_0000 | 7 << 16 | 0x1000 | 0x100
    assert i["mas2"] == UNMAPPED + 0x5000 | 0x0A


async def test_an_instruction_complete_debug_event_reaches_ivor15_through_csrr0() -> None:
    r = await take_each()
    d = r["debug"]
    # DBCR0[IDM | ICMP] with MSR[DE]: after one instruction the debug interrupt, a critical
    # class interrupt on e500v2: CSRR0 = the next instruction, CSRR1 = the MSR, DBSR[ICMP].
    assert (d["ivor"], d["csrr0"], d["csrr1"]) == (15, at("fault_debug"), MSR_DE)
    assert d["dbsr"] & DBSR_ICMP


# --- SRR1 and the handler's MSR exactly (e500v2 core reference manual, "Interrupts") ------
# On e500v2, SRR1 is the MSR the interrupt interrupted, and a non-critical interrupt leaves
# MSR[CE], [ME] and [DE] as they were.  QEMU's powerpc_excp (the engine's, and upstream's
# powerpc_excp_booke) ORs classic-PowerPC SRR1 reason bits into SRR1 (program: 0x80000
# illegal, 0x40000 privileged = MSR[WE] on e500, 0x20000 trap = MSR[CE]; ISI: 0x10000000)
# and clears CE and DE on entry.  The tests below fail on those.

async def test_srr1_is_exactly_the_msr_the_exception_interrupted() -> None:
    r = await take_each()
    seen = {name: r[name]["srr1"] for name in ("isi", "fadd", "priv_spr", "trap_msr")}
    assert seen == {
        "isi": MSR_IS | MSR_DS,
        "fadd": 0,
        "priv_spr": MSR_PR,
        "trap_msr": MSR_CE | MSR_ME | MSR_DE,
    }


async def test_a_non_critical_interrupt_keeps_msr_ce_me_and_de() -> None:
    r = await take_each()
    assert r["trap_msr"]["ivor"] == 6 and r["trap_msr"]["esr"] == ESR_PTR
    assert r["trap_msr"]["msr"] == MSR_CE | MSR_ME | MSR_DE


@pytest.mark.parametrize(
    ("insn", "msr"),
    [("mfspr 5, 287", MSR_PR), ("trap", 0)],
    ids=["user-mfpvr", "supervisor-trap"],
)
async def test_returning_from_a_program_interrupt_with_srr1_restores_the_msr(
    insn: str, msr: int
) -> None:
    """The OS pattern the extra SRR1 bits meet: the handler emulates or skips the
    instruction and returns with rfi to SRR0 + 4 and SRR1 as it was; the code then reads
    back its own MSR (through sc's SRR1)."""
    b = await boot(f"""
_start:
    lis 3, 0xFFF0
    mtspr 63, 3
    li 3, h_program@l
    mtspr 406, 3
    li 3, h_syscall@l
    mtspr 408, 3
    li32 4, code
    mtsrr0 4
    li32 4, {msr}
    mtsrr1 4
    rfi
code:
    {insn}
    sc                          /* tell the kernel what the MSR is now */
    .balign 16
h_program:
    mfsrr0 3
    addi 3, 3, 4
    mtsrr0 3
    rfi
    .balign 16
h_syscall:
    mfsrr1 3
    hcall HC_FW_POWEROFF
""")
    assert b.result.code == msr, f"came back with MSR {b.result.code:#x}"


# --- no handler: a guest fault report and exit 125 -----------------------------------------

SETUP_AS1 = f"""
    lis 3, 0x1001
    mtspr 624, 3
    li32 3, 0x80001100
    mtspr 625, 3
    li32 3, {NO_SX}
    mtspr 626, 3
    li32 3, 0x00200005
    mtspr 627, 3
    tlbwe
    isync
"""


@pytest.mark.parametrize(
    ("code", "kind", "address"),
    [
        (SETUP_AS1 + jump("x", NO_SX, msr=MSR_IS), FaultKind.INSTRUCTION_STORAGE, NO_SX),
        (jump("x", UNMAPPED, msr=MSR_IS), FaultKind.INSTRUCTION_TLB_MISS, UNMAPPED),
        (SETUP_AS1 + entered("x", "lwz 5, 0(9)", msr=MSR_PR | MSR_DS)
         .replace("    li32 4, fault_x", f"    li32 9, {NO_SX}\n    li32 4, fault_x"),
         FaultKind.DATA_STORAGE, NO_SX),
        ("    li32 9, 0x101002\nfault_x:\n    lwarx 5, 0, 9", FaultKind.ALIGNMENT, 0x101002),
        (entered("x", "mfmsr 5", msr=MSR_PR), FaultKind.PROGRAM, None),
        ("fault_x:\n    evaddw 5, 5, 5", FaultKind.EXCEPTION, None),
    ],
    ids=["isi", "itlb", "dsi", "alignment", "privileged", "spe-unavailable"],
)
async def test_without_a_handler_each_kind_is_a_guest_fault(
    code: str, kind: FaultKind, address: int | None
) -> None:
    src = f"_start:\n{code}\n    li 3, 0\n    hcall HC_FW_POWEROFF\n"
    b = await boot(src, timeout=5)
    assert b.result.code == 125, b.result.reason
    (fault,) = b.of(GuestFault)
    assert fault.kind is kind and fault.address == address
    expected_pc = address if kind in (FaultKind.INSTRUCTION_STORAGE,
                                      FaultKind.INSTRUCTION_TLB_MISS) else \
        symbols(src)["fault_x"]
    assert fault.pc == expected_pc
    assert kind.value in b.result.reason


@pytest.mark.parametrize(
    ("ivor", "handler", "kind"),
    [
        (408, "sc", FaultKind.SYSTEM_CALL),
        (405, "lwarx 5, 0, 9", FaultKind.ALIGNMENT),
        (528, "evaddw 5, 5, 5", FaultKind.EXCEPTION),
    ],
    ids=["sc", "alignment", "spe-unavailable"],
)
async def test_the_same_exception_at_its_own_handler_is_a_guest_fault(
    ivor: int, handler: str, kind: FaultKind
) -> None:
    src = f"""
_start:
    lis 3, 0xFFF0
    mtspr 63, 3
    li 3, handler@l
    mtspr {ivor}, 3
    li32 9, 0x101002
    {handler}
    li 3, 0
    hcall HC_FW_POWEROFF
    .balign 16
handler:
    {handler}
"""
    b = await boot(src, timeout=5)
    assert b.result.code == 125, b.result.reason
    (fault,) = b.of(GuestFault)
    assert fault.kind is kind and fault.pc == symbols(src)["handler"]
