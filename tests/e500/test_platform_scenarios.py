"""The platform devices seen from a guest: IPIs, the byte channel's interrupts, interrupt
priority, GPIO power-off, RSTCR reset, and a UART guest that prints the same on QEMU.

Each guest is firmware (or, for the UART guest, a kernel both machines load the same way) that
leaves exact facts in RAM, on the console or in its exit; the tests assert those facts.  The
addresses come from :mod:`machine.platform` and :mod:`machine.devices.mpic_regs`, so no
register offset is spelled twice.
"""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import trio

from machine import platform as P
from machine.asm import assemble
from machine.board import E500Machine
from machine.devices import mpic_regs as R
from machine.devices.gpio import GPDAT, GPDIR, pin_mask
from machine.events import CpuParked, ParkReason, Reset

from .guests import boot

pytestmark = pytest.mark.cross

MPIC = P.CCSR_BASE + P.MPIC_OFFSET
GUTS_RSTCR = P.CCSR_BASE + P.GUTS_OFFSET + 0xB0
RSTCR_RESET = 0x2  #: QEMU's MPC8544_GUTS_RSTCR_RESET
GPIO = P.CCSR_BASE + P.GPIO_OFFSET
SPURIOUS = 0xFFFF  #: the spurious vector after reset (SPVR: every vector bit set, as QEMU)
EPR = 702  #: SPR: the external proxy register (core-int mode)
RESULTS = 0x0010_0000
IPI_VECTOR0 = 0xA0  #: IPI channel n carries vector 0xA0 + n
IPI_PRIORITY = 5


def cpu_window(cpu: int) -> int:
    return MPIC + 0x2_0000 + R.CPU_STRIDE * cpu


def source(irq: int) -> int:
    return MPIC + 0x1_0000 + R.SOURCE_STRIDE * irq


def ipi_ivpr(n: int) -> int:
    return MPIC + R.IPI_IVPR0 + 0x10 * n


def words(m: E500Machine, addr: int, count: int) -> list[int]:
    return list(struct.unpack(f">{count}I", m.ram.read(addr, 4 * count)))


# --- IPIs: every ordered pair ---------------------------------------------------------------


def euler_walk(n: int) -> list[int]:
    """A closed walk from CPU 0 through every ordered pair (a, b), a != b, exactly once: the
    receiver of one IPI sends the next, so only one CPU runs at a time and nobody waits for a
    wake-up that nobody sends."""
    used: set[tuple[int, int]] = set()
    stack, walk = [0], []
    while stack:
        v = stack[-1]
        nxt = [w for w in range(n) if w != v and (v, w) not in used]
        if nxt:
            used.add((v, nxt[0]))
            stack.append(nxt[0])
        else:
            walk.append(stack.pop())
    return walk[::-1]


IPI_LOG = RESULTS  #: CPU n's log at IPI_LOG + 0x100 * n: (sender << 16 | vector, next IACK)
IPI_VARS = RESULTS + 0x1000  #: TURN, SENDER, READY

#: Every CPU: IVOR4, HID0[DOZE], CTPR = 0.  CPU 0 programs the IPI vectors (and core-int
#: mode), waits until the others are ready, then the walk begins: the sender of turn k writes
#: SENDER and dispatches IPI channel <sender> to the receiver; the receiver's handler takes the
#: vector (IACK, or EPR in core-int mode), logs (SENDER << 16 | vector) and what one more IACK
#: reads (nothing else is pending: the spurious vector), EOIs and advances TURN.  Between turns
#: every CPU dozes with MSR[WE] | MSR[EE], so an IPI is what wakes it.  ``win`` selects where
#: the per-CPU registers are reached: the current-CPU window or each CPU's own window.
IPI_ALL_PAIRS = """
    .set NPAIRS, {npairs}
_start:
    mr 24, 3                    /* me */
    lis 3, 0xFFF0
    mtspr 63, 3                 /* IVPR */
    li 3, h_ext@l
    mtspr 404, 3                /* IVOR4: external input */
    lis 3, 0x0080
    mtspr 1008, 3               /* HID0 = DOZE */
    {win}
    li 3, 0
    stw 3, 0x80(23)             /* CTPR = 0 */
    li32 22, {vars}
    li32 25, {log}
    slwi 3, 24, 8
    add 25, 25, 3               /* my log */
    li 27, -1                   /* the last turn I sent */
    cmpwi 24, 0
    bne secondary
    li32 4, {ipi_ivpr0}
    li 5, 0
1:  li32 3, {prio} << 16 | {vec0}
    add 3, 3, 5
    slwi 6, 5, 4
    stwx 3, 4, 6                /* IPI n: priority, vector 0xA0 + n, unmasked */
    addi 5, 5, 1
    cmpwi 5, 4
    blt 1b
    {coreint}
2:  lwz 3, 8(22)                /* READY */
    cmpwi 3, {others}
    blt 2b
    b loop
secondary:
    addi 3, 22, 8
3:  lwarx 4, 0, 3
    addi 4, 4, 1
    stwcx. 4, 0, 3
    bne 3b
loop:
    wrteei 0
    lwz 26, 0(22)               /* TURN */
    cmpwi 26, NPAIRS
    beq done
    li32 8, walk
    lbzx 4, 8, 26               /* the sender of this turn */
    cmpw 4, 24
    bne doze
    cmpw 27, 26
    beq doze
    mr 27, 26
    stw 24, 4(22)               /* SENDER = me */
    addi 5, 26, 1
    lbzx 5, 8, 5                /* the receiver */
    li 6, 1
    slw 6, 6, 5
    slwi 7, 24, 4
    addi 7, 7, 0x40
    stwx 6, 23, 7               /* IPIDR<me> = 1 << receiver */
    sync
doze:
    mfmsr 3
    oris 3, 3, 0x0004           /* MSR[WE] */
    ori 3, 3, 0x8000            /* MSR[EE] */
    mtmsr 3
    isync
    b loop
done:
    li 3, 0
    hcall HC_FW_POWEROFF

    .balign 16
h_ext:
    mfcr 19
    {take}
    lwz 16, 4(22)               /* SENDER */
    slwi 16, 16, 16
    or 16, 16, 14
    stw 16, 0(25)
    lwz 15, 0xA0(23)            /* one more IACK: nothing else is pending */
    stw 15, 4(25)
    addi 25, 25, 8
    li 16, 0
    stw 16, 0xB0(23)            /* EOI */
    sync
    lwz 16, 0(22)
    addi 16, 16, 1
    stw 16, 0(22)               /* TURN += 1 */
    mtcr 19
    rfi
walk:
    .byte {walk}
"""
WINDOWS = {
    "current": f"li32 23, {MPIC}",
    "own": f"""li32 23, {cpu_window(0)}
    slwi 3, 24, 12
    add 23, 23, 3""",
}
CLASSIC = {"coreint": "", "take": "lwz 14, 0xA0(23)           /* IACK */"}
COREINT = {"coreint": f"""li32 3, {MPIC + R.GCR}
    lis 4, {R.GCR_MODE_PROXY >> 16:#x}
    stw 4, 0(3)                 /* GCR: core-int (external proxy) mode */""",
           "take": f"mfspr 14, {EPR}              /* the vector the entry acknowledged */"}


@pytest.mark.parametrize(("mode", "win"), [(CLASSIC, "current"), (COREINT, "own")],
                         ids=["iack-eoi-current-window", "coreint-epr-own-window"])
async def test_an_ipi_from_each_cpu_to_each_other_cpu_arrives_with_its_channels_vector(
        mode: dict[str, str], win: str) -> None:
    n = 4
    walk = euler_walk(n)
    pairs = list(itertools.pairwise(walk))
    assert sorted(pairs) == [(a, b) for a in range(n) for b in range(n) if a != b]
    source_text = IPI_ALL_PAIRS.format(
        npairs=len(pairs), win=WINDOWS[win], vars=IPI_VARS, log=IPI_LOG,
        ipi_ivpr0=ipi_ivpr(0), prio=IPI_PRIORITY, vec0=IPI_VECTOR0, others=n - 1,
        walk=", ".join(map(str, walk)), **mode)
    b = await boot(source_text, smp=n, timeout=20)
    assert (b.result.code, b.result.reason) == (0, f"FW_POWEROFF by cpu {walk[-1]}")
    for cpu in range(n):
        got = words(b.machine, IPI_LOG + 0x100 * cpu, 2 * (n - 1) + 1)
        taken = [(w >> 16, w & 0xFFFF) for w in got[0:-1:2]]
        expected = [(s, IPI_VECTOR0 + s) for s, r in pairs if r == cpu]
        assert taken == expected, f"cpu {cpu} took {taken}"
        assert got[1:-1:2] == [SPURIOUS] * (n - 1), f"cpu {cpu}: a second IACK read {got}"
        assert got[-1] == 0, f"cpu {cpu} took more than {n - 1} IPIs"
    assert words(b.machine, IPI_VARS, 2) == [len(pairs), walk[-2]]


# --- the byte channel's interrupt lines ----------------------------------------------------

RX, TX = P.BYTE_CHANNEL_RX_IRQ, P.BYTE_CHANNEL_TX_IRQ
RX_VECTOR, TX_VECTOR = 0x56, 0x57


def unmask_for_cpu0(irq: int, vector: int) -> str:
    """Route source ``irq`` to CPU 0 with ``vector`` and unmask it (clobbers r3, r4)."""
    return f"""li32 4, {source(irq)}
    li 3, 1
    stw 3, {R.IDR}(4)
    li32 3, {IPI_PRIORITY << 16 | vector}
    stw 3, 0(4)"""


#: CPU 0 with MSR[EE] off: unmask rx (source 56) and IACK (spurious: no input yet); then idle
#: ({idle}) with MSR[EE].  The handler IACKs, receives with EV_BYTE_CHANNEL_RECEIVE, EOIs and
#: IACKs once more (the rx line fell when the byte was taken).  RESULTS: the IACK before input,
#: the handler's vector, count and bytes, its last IACK, how many times it ran, and 1 if it
#: returned to the instruction after the idle one.
RX_WAKE = f"""
_start:
    lis 3, 0xFFF0
    mtspr 63, 3
    li 3, h_ext@l
    mtspr 404, 3
    li 20, 0
    li32 23, {MPIC}
    li32 31, {RESULTS}
    li 3, 0
    stw 3, 0x80(23)             /* CTPR = 0 */
    {unmask_for_cpu0(RX, RX_VECTOR)}
    lwz 5, 0xA0(23)             /* no input yet: spurious */
    stw 5, 0(31)
    lis 3, 0x0080
    mtspr 1008, 3               /* HID0 = DOZE */
    {{idle}}
woke:
    stw 20, 20(31)
    lis 24, woke@h
    ori 24, 24, woke@l
    subf 3, 24, 21
    cntlzw 3, 3
    srwi 3, 3, 5                /* 1 if SRR0 was woke */
    stw 3, 24(31)
    li 3, 0
    hcall HC_FW_POWEROFF
    .balign 16
h_ext:
    addi 20, 20, 1
    mfsrr0 21
    lwz 14, 0xA0(23)
    stw 14, 4(31)
    li 3, 0
    li 4, 16
    hcall HC_EV_BYTE_CHANNEL_RECEIVE
    stw 4, 8(31)
    stw 5, 12(31)
    li 3, 0
    stw 3, 0xB0(23)             /* EOI */
    lwz 14, 0xA0(23)            /* the rx line fell with the byte taken */
    stw 14, 16(31)
    mfsrr1 3
    rlwinm 3, 3, 0, 17, 15      /* return with MSR[EE] off */
    mtsrr1 3
    rfi
"""
DOZE_EE = """mfmsr 3
    oris 3, 3, 0x0004           /* MSR[WE] */
    ori 3, 3, 0x8000            /* MSR[EE] */
    mtmsr 3"""
IDLE_EE = """wrteei 1
    hcall HC_EV_IDLE"""


@pytest.mark.parametrize(("idle", "reason"), [(DOZE_EE, ParkReason.DOZE),
                                              (IDLE_EE, ParkReason.IDLE)], ids=["doze", "ev-idle"])
async def test_a_byte_typed_raises_the_rx_interrupt_that_wakes_an_idle_cpu(
        idle: str, reason: ParkReason) -> None:
    async def type_when_idle(m: E500Machine) -> None:
        await m.wait_for(lambda e: isinstance(e, CpuParked) and e.reason is reason)
        await trio.sleep(0.05)
        assert m.cpu_parked(0) is reason  # nothing but the byte wakes it
        await m.console.send(b"x")

    b = await boot(RX_WAKE.format(idle=idle), record_events=True, during=type_when_idle)
    assert (b.result.code, b.result.reason) == (0, "FW_POWEROFF by cpu 0")
    got = words(b.machine, RESULTS, 7)
    assert got[0] == SPURIOUS, "rx is down while no input waits"
    assert got[1:5] == [RX_VECTOR, 1, ord("x") << 24, SPURIOUS], "the handler's view"
    assert got[5:] == [1, 1], "taken once, returning to the instruction after the idle"


#: CPU 0 with MSR[EE] off, before it has printed anything: unmask tx (source 57) and IACK, EOI;
#: print one byte (EV_BYTE_CHANNEL_SEND) and IACK, EOI again; mask tx and IACK (spurious).
TX_LEVEL = f"""
_start:
    li32 23, {MPIC}
    li32 31, {RESULTS}
    li 3, 0
    stw 3, 0x80(23)             /* CTPR = 0 */
    {unmask_for_cpu0(TX, TX_VECTOR)}
    lwz 5, 0xA0(23)             /* transmit space is free at power-on */
    stw 5, 0(31)
    li 3, 0
    stw 3, 0xB0(23)
    puts4 0x2e000000, 1
    lwz 5, 0xA0(23)             /* and still after a byte was sent */
    stw 5, 4(31)
    li 3, 0
    stw 3, 0xB0(23)
    li32 4, {source(TX)}
    li32 3, {0x8000_0000 | IPI_PRIORITY << 16 | TX_VECTOR}
    stw 3, 0(4)                 /* masked */
    lwz 5, 0xA0(23)
    stw 5, 8(31)
    li 3, 0
    hcall HC_FW_POWEROFF
"""


async def test_the_tx_interrupt_is_up_while_transmit_space_is_free() -> None:
    b = await boot(TX_LEVEL)
    assert (b.result.code, b.result.reason) == (0, "FW_POWEROFF by cpu 0")
    assert b.console == b"."
    assert words(b.machine, RESULTS, 3) == [TX_VECTOR, TX_VECTOR, SPURIOUS]


# --- priority: a decrementer and an external interrupt pending at once -----------------------

#: With MSR[EE] off, make both pending (in either order): the decrementer (DEC = 50, TCR[DIE],
#: wait for TSR[DIS]) and an external one (IPI 0 to CPU 0 itself); then enable MSR[EE].  Each
#: handler logs what it took (the IACK vector, or 0xDEC) at r20.
PRIORITY = f"""
_start:
    lis 3, 0xFFF0
    mtspr 63, 3
    li 3, h_ext@l
    mtspr 404, 3
    li 3, h_dec@l
    mtspr 410, 3
    li32 23, {MPIC}
    li 3, 0
    stw 3, 0x80(23)             /* CTPR = 0 */
    li32 4, {ipi_ivpr(0)}
    li32 3, {IPI_PRIORITY << 16 | IPI_VECTOR0}
    stw 3, 0(4)
    li32 20, {RESULTS}
    {{first}}
    {{second}}
    wrteei 1
    nop
    nop
    nop
    nop
    wrteei 0
    li 3, 0
    hcall HC_FW_POWEROFF
dec_up:
    li 3, 50
    mtspr 22, 3                 /* DEC */
    lis 3, 0x0400
    mtspr 340, 3                /* TCR = DIE */
1:  mfspr 3, 336
    andis. 3, 3, 0x0800         /* until TSR[DIS] */
    beq 1b
    blr
ext_up:
    li 3, 1
    stw 3, 0x40(23)             /* IPIDR0 = CPU 0 */
    sync
    blr
    .balign 16
h_ext:
    lwz 14, 0xA0(23)
    stw 14, 0(20)
    addi 20, 20, 4
    li 14, 0
    stw 14, 0xB0(23)
    rfi
    .balign 16
h_dec:
    li 14, 0xDEC
    stw 14, 0(20)
    addi 20, 20, 4
    lis 14, 0x0800
    mtspr 336, 14               /* clear TSR[DIS] */
    rfi
"""


@pytest.mark.parametrize("order", [("dec_up", "ext_up"), ("ext_up", "dec_up")],
                         ids=["decrementer-first", "external-first"])
async def test_an_external_interrupt_is_taken_before_a_decrementer_pending_with_it(
        order: tuple[str, str]) -> None:
    # QEMU's ppc_hw_interrupt (target/ppc/excp_helper.c, 5.0 and 7.2) tests the pending bits
    # in a fixed order whatever came first: ... EXT, then (MSR[CE]) CEXT, then with MSR[EE]:
    # WDT, CDOORBELL, FIT, PIT, DECR.
    b = await boot(PRIORITY.format(first=f"bl {order[0]}", second=f"bl {order[1]}"))
    assert (b.result.code, b.result.reason) == (0, "FW_POWEROFF by cpu 0")
    assert words(b.machine, RESULTS, 3) == [IPI_VECTOR0, 0xDEC, 0]


# --- GPIO power-off, RSTCR reset -------------------------------------------------------------

#: Drive GPIO pin 1 high (nothing happens: it is not the power-off pin), print "p1", then pin 0.
GPIO_POWEROFF = f"""
_start:
    li32 3, {GPIO}
    li32 4, {pin_mask(0) | pin_mask(1)}
    stw 4, {GPDIR}(3)           /* pins 0 and 1 are outputs */
    li32 4, {pin_mask(1)}
    stw 4, {GPDAT}(3)
    sync
    puts4 0x70310a00, 3
    li32 3, {GPIO}
    li32 4, {pin_mask(0) | pin_mask(1)}
    stw 4, {GPDAT}(3)           /* pin 0 high: power off */
    sync
1:  b 1b
"""


async def test_gpio_pin_0_high_powers_the_machine_off_with_code_0() -> None:
    b = await boot(GPIO_POWEROFF)
    assert (b.result.code, b.result.reason) == (0, "GPIO power-off by cpu 0")
    assert b.console == b"p1\n"


#: Print "B\n", then wait (EV_IDLE) for a typed byte: "r" writes RSTCR (after a write without
#: the reset bit, which does nothing), anything else powers off with the byte as the code.
RSTCR_GUEST = f"""
_start:
    puts4 0x420a0000, 2
wait:
    li 3, 0
    li 4, 1
    hcall HC_EV_BYTE_CHANNEL_RECEIVE
    cmpwi 4, 0
    bne got
    hcall HC_EV_IDLE
    b wait
got:
    srwi 3, 5, 24
    cmpwi 3, 'r'
    beq reset
    hcall HC_FW_POWEROFF
reset:
    li32 6, {GUTS_RSTCR}
    li 7, {~RSTCR_RESET & 0xFF}
    stw 7, 0(6)                 /* every bit but RST: nothing */
    sync
    puts4 0x2d0a0000, 2
    li32 6, {GUTS_RSTCR}
    li 7, {RSTCR_RESET}
    stw 7, 0(6)
    sync
1:  b 1b
"""


async def test_rstcr_restarts_the_machine_and_the_firmware_runs_again() -> None:
    async def drive(m: E500Machine) -> None:
        await m.console.expect(b"B\n")
        await m.console.send(b"r")
        reset = await m.wait_for(Reset)
        assert isinstance(reset, Reset)
        assert (reset.cpu, reset.by) == (0, "RSTCR")
        await m.console.expect(b"B\n")  # the second boot
        await m.console.send(b"q")

    b = await boot(RSTCR_GUEST, record_events=True, during=drive)
    assert (b.result.code, b.result.reason) == (ord("q"), "FW_POWEROFF by cpu 0")
    assert b.console == b"B\n-\nB\n"
    assert [(r.cpu, r.by) for r in b.of(Reset)] == [(0, "RSTCR")]


async def test_rstcr_with_no_reboot_ends_the_run_with_code_0() -> None:
    async def drive(m: E500Machine) -> None:
        await m.console.expect(b"B\n")
        await m.console.send(b"r")

    b = await boot(RSTCR_GUEST, record_events=True, no_reboot=True, during=drive)
    assert (b.result.code, b.result.reason) == (0, "RSTCR by cpu 0 with -no-reboot")
    assert b.console == b"B\n-\n"
    assert not b.of(Reset)


# --- a UART guest written for QEMU's ppce500 -------------------------------------------------

QEMU = shutil.which("qemu-system-ppc")
QEMU_CCSR = 0xF_E000_0000
CCSR_EA = 0xE000_0000  #: where the guest maps CCSR on both machines
UART = CCSR_EA + P.UART0_OFFSET
SAVE = 0x0010_0000

#: (label, CCSR offset, access size): what the guest reads before it prints anything (so the
#: UART's state does not depend on how fast the host drains its output).  The MPIC's and the
#: UART's reset values, the GPIO's; then an IPI to itself, acknowledged twice.
UART_REGS = [
    ("MPIC BRR1", P.MPIC_OFFSET + R.BRR1, 4),
    ("MPIC FRR", P.MPIC_OFFSET + R.FRR, 4),
    ("MPIC GCR", P.MPIC_OFFSET + R.GCR, 4),
    ("MPIC VIR", P.MPIC_OFFSET + R.VIR, 4),
    ("MPIC SPVR", P.MPIC_OFFSET + R.SPVR, 4),
    ("MPIC IPI0 VPR", P.MPIC_OFFSET + R.IPI_IVPR0, 4),
    ("MPIC WHOAMI", P.MPIC_OFFSET + R.WHOAMI, 4),
    ("MPIC CTPR", P.MPIC_OFFSET + R.CTPR, 4),
    ("MPIC UART VPR", P.MPIC_OFFSET + 0x1_0000 + R.SOURCE_STRIDE * P.UART_IRQ, 4),
    ("MPIC UART IDR", P.MPIC_OFFSET + 0x1_0000 + R.SOURCE_STRIDE * P.UART_IRQ + R.IDR, 4),
    ("UART IER", P.UART0_OFFSET + 1, 1),
    ("UART IIR", P.UART0_OFFSET + 2, 1),
    ("UART LCR", P.UART0_OFFSET + 3, 1),
    ("UART MCR", P.UART0_OFFSET + 4, 1),
    ("UART LSR", P.UART0_OFFSET + 5, 1),
    ("GPIO GPDIR", P.GPIO_OFFSET + GPDIR, 4),
    ("GPIO GPDAT", P.GPIO_OFFSET + GPDAT, 4),
]
SELF_IPI_VECTOR = 0x42


def uart_guest(ccsr: int) -> str:
    """One source for both machines; only ``ccsr`` (the physical base) differs."""
    reads = "\n".join(
        f"""    li32 4, {CCSR_EA + off}
    {"lwz" if size == 4 else "lbz"} 5, 0(4)
    stw 5, {4 * i}(30)""" for i, (_, off, size) in enumerate(UART_REGS))
    n = len(UART_REGS)
    prints = "\n".join(
        f"""    li32 3, s{i}
    bl puts
    lwz 6, {4 * i}(30)
    bl puthex
    bl crlf""" for i in range(n + 2))
    strings = "\n".join(
        f's{i}: .asciz "{label} "' for i, label in
        enumerate([lbl for lbl, _, _ in UART_REGS] + ["MPIC IACK self-IPI", "MPIC IACK again"]))
    return f"""
_start:
    li32 3, 0x10050000          /* MAS0: TLB1, ESEL 5 */
    mtspr 624, 3
    li32 3, 0x80000500          /* MAS1: valid, 1 MiB */
    mtspr 625, 3
    li32 3, {CCSR_EA | P.MAS2_I | P.MAS2_G}
    mtspr 626, 3
    li32 3, {ccsr & 0xFFFF_F000 | 0x5}  /* MAS3: RPN, SR | SW */
    mtspr 627, 3
    li 3, {ccsr >> 32}
    mtspr 944, 3                /* MAS7 */
    isync
    tlbwe
    isync
    li32 30, {SAVE}
{reads}
    li32 23, {CCSR_EA + P.MPIC_OFFSET}
    li 3, 0
    stw 3, {R.CTPR}(23)
    li32 3, {IPI_PRIORITY << 16 | SELF_IPI_VECTOR}
    stw 3, {R.IPI_IVPR0}(23)
    lwz 4, {R.WHOAMI}(23)
    li 3, 1
    slw 3, 3, 4
    stw 3, {R.IPIDR0}(23)       /* IPI 0 to myself */
    sync
    lwz 5, {R.IACK}(23)
    stw 5, {4 * n}(30)
    li 3, 0
    stw 3, {R.EOI}(23)
    lwz 5, {R.IACK}(23)
    stw 5, {4 * (n + 1)}(30)
    li32 31, {UART}
    li 3, 3
    stb 3, 3(31)                /* LCR: 8N1 */
    li32 3, hello
    bl puts
    bl crlf
{prints}
    li32 3, bye
    bl puts
    bl crlf
    li32 6, {ccsr_ea_rstcr()}
    li 7, {RSTCR_RESET}
    stw 7, 0(6)                 /* reset: with -no-reboot, both machines stop */
    sync
1:  b 1b

putc:                           /* r3 = the byte */
    lbz 5, 5(31)
    andi. 5, 5, 0x20            /* LSR[THRE] */
    beq putc
    stb 3, 0(31)
    blr
puts:                           /* r3 = the string */
    mflr 9
    mr 8, 3
2:  lbz 3, 0(8)
    cmpwi 3, 0
    beq 3f
    bl putc
    addi 8, 8, 1
    b 2b
3:  mtlr 9
    blr
crlf:
    mflr 9
    li 3, 13
    bl putc
    li 3, 10
    bl putc
    mtlr 9
    blr
puthex:                         /* r6 = the word */
    mflr 10
    li 7, 8
4:  rotlwi 6, 6, 4
    rlwinm 3, 6, 0, 28, 31
    cmplwi 3, 10
    blt 5f
    addi 3, 3, 39
5:  addi 3, 3, 48
    bl putc
    addic. 7, 7, -1
    bne 4b
    mtlr 10
    blr
hello: .asciz "hello from a ppce500 guest on the UART"
bye: .asciz "bye"
{strings}
"""


def ccsr_ea_rstcr() -> int:
    return CCSR_EA + P.GUTS_OFFSET + 0xB0


def uart_lines_on_qemu(kernel: Path) -> list[str]:
    assert QEMU is not None
    proc = subprocess.run(
        [QEMU, "-M", "ppce500", "-cpu", "e500v2", "-m", "256", "-nographic", "-no-reboot",
         "-kernel", str(kernel)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode(errors="replace").splitlines()


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-ppc not installed")
async def test_a_uart_guest_built_for_qemu_ppce500_prints_the_same_lines_here() -> None:
    ours_elf = assemble(uart_guest(P.CCSR_BASE), base=0)
    theirs_elf = assemble(uart_guest(QEMU_CCSR), base=0)
    theirs = await trio.to_thread.run_sync(uart_lines_on_qemu, theirs_elf)

    m = E500Machine(kernel=ours_elf, direct=True, no_reboot=True)
    out = bytearray()
    m.console.add_listener(lambda cpu, data: out.extend(data))
    try:
        result = await m.run(timeout=10)
    finally:
        m.close()
    assert (result.code, result.reason) == (0, "RSTCR by cpu 0 with -no-reboot")
    ours = out.decode(errors="replace").splitlines()
    assert ours == theirs
    # What both printed, so a change on both sides cannot pass unnoticed.
    assert ours[0] == "hello from a ppce500 guest on the UART"
    assert f"MPIC IACK self-IPI {SELF_IPI_VECTOR:08x}" in ours
    assert f"MPIC IACK again {SPURIOUS:08x}" in ours
    assert ours[-1] == "bye"
    assert len(ours) == len(UART_REGS) + 4
