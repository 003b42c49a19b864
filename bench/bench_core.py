"""Core benchmarks of issue 12 (Book E MMU, exceptions, timers, idle), each figure printed next to
qemu-system-ppc -M ppce500 running the same guest in the same run.

    python3 bench/bench_core.py [--quick] [--reps N]

Every guest but the idle one is one ELF linked at 0 and booted the same way on both machines:
this machine with ``--direct`` (the kernel entered in the ePAPR state, TLB1[0] mapping EA 0 =
PA 0 over the initial mapped area) and QEMU with ``-kernel`` (the same state).  The guest times
itself with the timebase (400 MHz on both, following host time: QEMU's ppce500 device tree says
so too), so start-up never enters a figure.  Only the last few instructions differ: here the guest
leaves its results in RAM and powers off with a hypercall; on QEMU it has no hypercalls, so it
maps CCSR (0xF_E000_0000) through TLB1, prints its results on the UART and asks GUTS for a reset
(with ``-no-reboot`` QEMU exits).  Each figure is the median of ``--reps`` runs, alternating the
two machines so that a change in the host's load (2 shared cores) weighs on both alike; the
min..max spread says how noisy the run was.

1. **TLB miss -> guest handler -> retry**, us per miss: a loop loads one word from each of 512
   4 KiB pages, many passes, invalidating TLB0 before each pass.  The pages are mapped only in the
   guest's page table: its DTLB-miss handler (IVOR13) reads the PTE, completes the MAS registers
   the miss filled from MAS4 with MAS3, ``tlbwe``s and ``rfi``s to retry the load.  The reference
   is the same loop with the range pre-mapped by one TLB1 entry; the difference is the miss.
2. **Exception entry**, us per round trip through a guest handler that ``rfi``s back: ``sc`` (the
   system call, IVOR8; not ``sc 1``, the hypercall) and a program interrupt from ``trap``
   (IVOR6, the handler steps SRR0 over it); minus the same loop with a ``nop``.
3. **Decrementer interrupt**, us per interrupt delivered and returned from: a counting loop runs
   once without interrupts and once with the decrementer auto-reloading every 100 us (TCR[DIE],
   TCR[ARE]; the handler clears TSR[DIS]); the time the loop lost, divided by the interrupts it
   took.  This is what a periodic tick costs the code it interrupts, the timer machinery of each
   emulator included.
4. **Idle**: host CPU while a guest idles between 250 Hz decrementer ticks, in MSR[WE] doze
   (HID0[DOZE], as Linux's e500_idle) and in EV_IDLE, measured after boot over several windows:
   the vCPU worker thread (``/proc/self/task/<tid>/schedstat``, ns) and the whole process
   (CLOCK_PROCESS_CPUTIME_ID).  Target < 2 % of one core.  Reference: qemu-system-ppc running
   the same guest in MSR[WE] doze, all its threads (``/proc/<pid>/task/*/schedstat``).  Each
   guest's tick rate over the window is printed too, to show it really ticked at 250 Hz.
5. **Loops with the MMU on**: a 3-instruction loop running through a TLB1 mapping at
   0xC000_0000 (not EA = PA), and a store loop (4 ``stw`` per 6 instructions) to a page mapped
   without execute permission and to one mapped with it: this engine sends every store to an
   executable page through its slow path (unicorn never clears TLB_NOTDIRTY there), QEMU does
   not; the bench says by how much.

Needs the powerpc-linux-gnu cross tools; without qemu-system-ppc the references are skipped.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine.asm import assemble  # noqa: E402
from machine.board import E500Machine  # noqa: E402
from machine.platform import TIMEBASE_HZ  # noqa: E402

QEMU = shutil.which("qemu-system-ppc")
QEMU_ARGS = ["-M", "ppce500", "-cpu", "e500v2", "-m", "256", "-nographic", "-no-reboot"]
#: Where a guest leaves its 32-bit results (physical = virtual, inside TLB1[0]'s mapping).
RES = 0x0010_0000
OURS, QEMU_TARGET = "fwcfg-e500", "qemu"

# --- the guest frame ----------------------------------------------------------------------------
#
# Registers r28..r31 belong to the frame: r28 the status (0, or 0xBAD0_00nn after an unexpected
# interrupt nn), r29 the handlers' event counter, r30 scratch of `stamp`, r31 = RES.  Handlers sit
# in the first 64 KiB (IVPR = 0) and use SPRG0..2 to save what they touch.

FRAME = """
    .set RES, {res:#x}
    .macro stamp k              /* RES[k] = timebase (low word; every phase is < 10 s) */
    mftb 30
    stw 30, (\\k)*4(31)
    .endm
    .macro put reg, k
    stw \\reg, (\\k)*4(31)
    .endm
    .macro tlb1 esel, mas1, mas2, mas3   /* write TLB1[esel], MAS7 = 0 */
    li32 3, 0x10000000 | (\\esel << 16)
    mtspr 624, 3
    li32 3, \\mas1
    mtspr 625, 3
    li32 3, \\mas2
    mtspr 626, 3
    li32 3, \\mas3
    mtspr 627, 3
    li 3, 0
    mtspr 944, 3
    isync
    tlbwe
    isync
    .endm

_start:
    li 3, 0
    mtspr 63, 3                 /* IVPR = 0 */
{ivors}
    li 28, 0
    li 29, 0
    li32 31, RES
{body}
finish:
{finish}

    .balign 16
h_sc:                           /* system call: SRR0 is already past the sc */
    rfi
    .balign 16
h_prog:                         /* program interrupt (trap): step over it */
    mtspr 272, 10
    mfsrr0 10
    addi 10, 10, 4
    mtsrr0 10
    mfspr 10, 272
    rfi
    .balign 16
h_dec:                          /* decrementer: count, clear TSR[DIS] */
    mtspr 272, 10
    addi 29, 29, 1
    lis 10, 0x0800
    mtspr 336, 10
{dec_extra}
    mfspr 10, 272
    rfi
    .balign 16
h_dtlb:                         /* data TLB miss: refill TLB0 from the page table */
    mtspr 272, 10
    mtspr 273, 11
    mfcr 10
    mtspr 274, 10
    mfspr 10, 626               /* MAS2: the EPN of the miss */
    rlwinm 10, 10, 0, 0, 19
    lis 11, MISS_EA@h
    subf 10, 11, 10
    srwi 10, 10, 10             /* the PTE's offset: page index * 4 */
    cmplwi 10, NPAGES*4
    bge unexpected_13
    lis 11, PT@h
    lwzx 11, 11, 10
    mtspr 627, 11               /* MAS3 = the PTE; MAS0-2 as the miss left them (from MAS4) */
    li 10, 0
    mtspr 944, 10
    tlbwe
    addi 29, 29, 1
    mfspr 10, 274
    mtcrf 0xff, 10
    mfspr 10, 272
    mfspr 11, 273
    rfi
{stubs}
unexpected:
    oris 28, 28, 0xBAD0
    mfsrr0 27
    b finish
{tail}
"""
#: The interrupts a guest may take on purpose; every other IVOR goes to an "unexpected" stub.
HANDLERS = {6: "h_prog", 8: "h_sc", 10: "h_dec", 13: "h_dtlb"}
IVORS = [*range(16), 32, 33, 34, 35]


def _ivor_spr(n: int) -> int:
    return 400 + n if n < 16 else 528 + n - 32


FINISH = {
    OURS: "    mr 3, 28\n    hcall HC_FW_POWEROFF",
    QEMU_TARGET: "    bl qemu_map_ccsr\n    bl qemu_dump\n    b qemu_reset",
}

#: QEMU only: CCSR (physical 0xF_E000_0000) at EA 0xE000_0000 through TLB1[15], 1 MiB, I|G;
#: the UART (CCSR + 0x4500), the results printed as "R <status> <word> ...", GUTS' RSTCR.
QEMU_TAIL = """
qemu_map_ccsr:
    li32 3, 0x100F0000
    mtspr 624, 3
    li32 3, 0x80000500
    mtspr 625, 3
    li32 3, 0xE000000A
    mtspr 626, 3
    li32 3, 0xE0000005
    mtspr 627, 3
    li 3, 0xF
    mtspr 944, 3
    isync
    tlbwe
    isync
    blr
qemu_putc:                      /* r3 = the byte; clobbers r4, r5 */
    li32 4, 0xE0004500
1:  lbz 5, 5(4)                 /* LSR[THRE] */
    andi. 5, 5, 0x20
    beq 1b
    stb 3, 0(4)
    blr
qemu_puthex:                    /* r6 = the word; clobbers r3-r9 */
    mflr 9
    li 7, 8
2:  rotlwi 6, 6, 4
    rlwinm 3, 6, 0, 28, 31
    cmplwi 3, 10
    blt 3f
    addi 3, 3, 39
3:  addi 3, 3, 48
    bl qemu_putc
    addic. 7, 7, -1
    bne 2b
    mtlr 9
    blr
qemu_dump:
    mflr 26
    li 3, 'R'
    bl qemu_putc
    li 3, ' '
    bl qemu_putc
    mr 6, 28
    bl qemu_puthex
    li 25, 0
4:  cmplwi 25, NWORDS
    bge 5f
    li 3, ' '
    bl qemu_putc
    slwi 6, 25, 2
    lwzx 6, 31, 6
    bl qemu_puthex
    addi 25, 25, 1
    b 4b
5:  li 3, 10
    bl qemu_putc
    mtlr 26
    blr
qemu_reset:
    li32 6, 0xE00E00B0          /* GUTS RSTCR: reset request */
    li 7, 2
    stw 7, 0(6)
    sync
    b .
"""


def guest(body: str, target: str, nwords: int, *, consts: dict[str, int] | None = None,
          dec_extra: str = "") -> str:
    """The guest source for ``target``: the frame around ``body``, which stores ``nwords``
    results at RES (``stamp`` and ``put``)."""
    handlers = {n: HANDLERS.get(n, f"unexpected_{n}") for n in IVORS}
    ivors = "\n".join(f"    li 3, {h}@l\n    mtspr {_ivor_spr(n)}, 3" for n, h in handlers.items())
    stubs = "\n".join(f"    .balign 16\nunexpected_{n}:\n    li 28, {n}\n    b unexpected"
                      for n in IVORS)
    sets = {"NPAGES": 1, "PT": 0, "MISS_EA": 0, "NWORDS": nwords, **(consts or {})}
    head = "".join(f"    .set {k}, {v:#x}\n" for k, v in sets.items())
    return head + FRAME.format(
        res=RES, ivors=ivors, body=body, finish=FINISH[target], stubs=stubs,
        tail=QEMU_TAIL if target == QEMU_TARGET else "", dec_extra=dec_extra)


def build(source: str) -> Path:
    return assemble(source, base=0)


async def run_ours(source: str, nwords: int, timeout: float = 120) -> list[int]:
    m = E500Machine(kernel=build(source), direct=True)
    try:
        result = await m.run(timeout=timeout)
        if result.code != 0:
            raise RuntimeError(f"guest on {OURS}: {result.reason} (status {result.code:#x})")
        raw = m.ram.read(RES, 4 * nwords)
        return [int.from_bytes(raw[i:i + 4], "big") for i in range(0, len(raw), 4)]
    finally:
        m.close()


def run_qemu(source: str, nwords: int, timeout: float = 120) -> list[int] | None:
    if QEMU is None:
        return None
    proc = subprocess.run([QEMU, *QEMU_ARGS, "-kernel", str(build(source))],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    match = re.search(r"R ([0-9a-f]{8})((?: [0-9a-f]{8})*)", proc.stdout)
    if match is None:
        raise RuntimeError(f"guest on qemu printed no results:\n{proc.stdout}{proc.stderr}")
    status = int(match.group(1), 16)
    if status != 0:
        raise RuntimeError(f"guest on qemu: unexpected interrupt, status {status:#x}")
    words = [int(w, 16) for w in match.group(2).split()]
    assert len(words) == nwords
    return words


def ticks(a: int, b: int) -> float:
    """Microseconds between two timebase stamps (low words)."""
    return ((b - a) & 0xFFFF_FFFF) / TIMEBASE_HZ * 1e6


@dataclass
class Series:
    """One figure over the repetitions."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, fmt: str = ".2f") -> str:
        return f"{min(self.values):{fmt}}..{max(self.values):{fmt}}"


Figures = dict[str, dict[str, Series]]  # figure name -> target -> series


async def repeat(reps: int, make: Callable[[str], str], nwords: int,
                 derive: Callable[[list[int]], dict[str, float]]) -> Figures:
    """Run the guest ``make(target)`` ``reps`` times on each machine, alternating; derive the
    figures of each run from its result words."""
    out: Figures = {}
    for _ in range(reps):
        runs = [(OURS, await run_ours(make(OURS), nwords)),
                (QEMU_TARGET, run_qemu(make(QEMU_TARGET), nwords))]
        for target, words in runs:
            if words is None:
                continue
            for name, value in derive(words).items():
                out.setdefault(name, {}).setdefault(target, Series([])).values.append(value)
    return out


# --- 1. TLB misses ------------------------------------------------------------------------------

NPAGES = 512
MISS_EA = 0x1000_0000  # the pages' virtual addresses: MISS_EA + 4 KiB * i
MISS_PA = 0x0200_0000  # -> MISS_PA + 4 KiB * i
PT = 0x0080_0000  # the page table: one MAS3 word per page

TLB_MISS = """
    li32 3, PT                  /* the page table: RPN | SR | SW */
    li32 4, MISS_PA | 0x05
    li 5, NPAGES
    mtctr 5
1:  stw 4, 0(3)
    addi 3, 3, 4
    addi 4, 4, 0x1000
    bdnz 1b
    li 3, 0x100
    mtspr 628, 3                /* MAS4: TLB0, TID = PID0, 4 KiB */
    tlb1 1, 0x80000700, MISS_EA, MISS_PA | 0x05   /* pre-mapped: 16 MiB through TLB1[1] */
    stamp 0
    bl touch
    stamp 1
    tlb1 1, 0, MISS_EA, 0                          /* now only in the page table */
    stamp 2
    bl touch
    stamp 3
    put 29, 4
    b finish

touch:                          /* {passes} passes, each: invalidate TLB0, load from every page */
    li 8, {passes}
5:  li 6, 0x04
    tlbivax 0, 6
    tlbsync
    isync
    li32 7, MISS_EA
    li 5, NPAGES
    mtctr 5
6:  lwz 9, 0(7)
    addi 7, 7, 0x1000
    bdnz 6b
    addic. 8, 8, -1
    bne 5b
    blr
"""


def tlb_miss_guest(target: str, passes: int) -> str:
    return guest(TLB_MISS.format(passes=passes), target, 5,
                 consts={"NPAGES": NPAGES, "PT": PT, "MISS_EA": MISS_EA, "MISS_PA": MISS_PA})


def tlb_miss_figures(passes: int) -> Callable[[list[int]], dict[str, float]]:
    def derive(w: list[int]) -> dict[str, float]:
        accesses = passes * NPAGES
        assert w[4] == accesses, f"{w[4]} misses, expected {accesses}"
        mapped, missing = ticks(w[0], w[1]), ticks(w[2], w[3])
        return {"pre-mapped access": mapped / accesses,
                "TLB miss": (missing - mapped) / accesses}
    return derive


# --- 2. exception entry ---------------------------------------------------------------------------

EXCEPTIONS = """
    li32 5, {n}
    mtctr 5
    stamp 0
1:  nop
    bdnz 1b
    stamp 1
    mtctr 5
2:  sc
    bdnz 2b
    stamp 2
    mtctr 5
3:  trap
    bdnz 3b
    stamp 3
    b finish
"""


def exceptions_figures(n: int) -> Callable[[list[int]], dict[str, float]]:
    def derive(w: list[int]) -> dict[str, float]:
        empty = ticks(w[0], w[1])
        return {"sc round trip": (ticks(w[1], w[2]) - empty) / n,
                "trap round trip": (ticks(w[2], w[3]) - empty) / n}
    return derive


# --- 3. decrementer -------------------------------------------------------------------------------

DEC_PERIOD_US = 100
#: {rounds} rounds of: the counting loop quiet, then the same loop with the decrementer
#: interrupting; the sums of both times (r24, r25) and the interrupts taken (r29).  Alternating
#: short phases keeps a change in the host's load from landing on one side only.
DECREMENTER = """
    li32 3, {period}
    mtspr 54, 3                 /* DECAR */
    li 24, 0
    li 25, 0
    li 26, {rounds}
    li32 5, {n}
outer:
    mtctr 5
    mftb 6
1:  bdnz 1b
    mftb 7
    subf 7, 6, 7
    add 24, 24, 7
    li32 3, {period}
    mtspr 22, 3                 /* DEC */
    lis 3, 0x0440
    mtspr 340, 3                /* TCR = DIE | ARE */
    mtctr 5
    mftb 6
    wrteei 1
2:  bdnz 2b
    wrteei 0
    mftb 7
    subf 7, 6, 7
    add 25, 25, 7
    li 3, 0
    mtspr 340, 3                /* TCR = 0 */
    lis 3, 0x0800
    mtspr 336, 3                /* TSR: clear DIS */
    addic. 26, 26, -1
    bne outer
    put 24, 0
    put 25, 1
    put 29, 2
    b finish
"""


def decrementer_figures(w: list[int]) -> dict[str, float]:
    quiet, ticking = ticks(0, w[0]), ticks(0, w[1])
    return {"decrementer interrupt": (ticking - quiet) / w[2],
            "interrupts per ms": w[2] / ticking * 1000}


#: One interrupt at a time, {k} times: DEC = 1 us (TCR[DIE], no auto-reload), then spin until the
#: handler has counted it; the time from just before the ``mtspr DEC`` to back in the loop goes
#: into a histogram of 0.5 us buckets at RES[0..511] (the last: 255.5 us or more).  A spin that
#: runs out (1 M turns, a few ms) counts as lost in RES[513].  RES[512]: the same two timebase
#: reads around an ``mtspr DEC`` without the interrupt, summed over {k} turns (the baseline).
ONE_SHOT = """
    lis 3, 0x0400
    mtspr 340, 3                /* TCR = DIE */
    li 24, 0                    /* lost */
    li 25, 0                    /* baseline sum */
    li32 26, {k}
    li32 3, 400                 /* DEC = 1 us */
    li32 4, 200                 /* ticks per bucket */
    wrteei 1
next:
    mr 23, 29
    mftb 6
    mtspr 22, 3
    li32 5, {spin}
    mtctr 5
1:  cmpw 29, 23
    bne 2f
    bdnz 1b
    addi 24, 24, 1
    b 3f
2:  mftb 7
    subf 7, 6, 7
    divwu 7, 7, 4
    cmplwi 7, 511
    ble 4f
    li 7, 511
4:  slwi 7, 7, 2
    lwzx 8, 31, 7
    addi 8, 8, 1
    stwx 8, 31, 7
3:  addic. 26, 26, -1
    bne next
    wrteei 0
    li 3, 0
    mtspr 340, 3                /* TCR = 0: the same without the interrupt */
    li32 26, {k}
    li32 3, 400
5:  mftb 6
    mtspr 22, 3
    mftb 7
    subf 7, 6, 7
    add 25, 25, 7
    addic. 26, 26, -1
    bne 5b
    lis 3, 0x0800
    mtspr 336, 3                /* TSR: clear DIS */
    put 25, 512
    put 24, 513
    b finish
"""
BUCKET_US = 0.5


def one_shot_figures(k: int) -> Callable[[list[int]], dict[str, float]]:
    def derive(w: list[int]) -> dict[str, float]:
        hist, lost = w[:512], w[513]
        base = ticks(0, w[512]) / k + 1.0  # the two reads and the mtspr, and DEC's 1 us
        taken = sum(hist)
        seen, median = 0, 0.0
        for i, c in enumerate(hist):
            seen += c
            if seen * 2 >= taken:
                median = (i + 0.5) * BUCKET_US
                break
        return {"one-shot interrupt": median - base, "lost": lost}
    return derive


# --- 5. loops with the MMU on -------------------------------------------------------------------

#: TLB1[2]: EA 0xC000_0000 -> PA 0, 16 MiB, SX|SR|SW; TLB1[3]: EA 0xD000_0000 -> PA 16 MiB,
#: 1 MiB, SR|SW; TLB1[4]: EA 0xD010_0000 -> PA 17 MiB, 1 MiB, SX|SR|SW.
LOOPS = """
    tlb1 2, 0x80000700, 0xC0000000, 0x00000015
    tlb1 3, 0x80000500, 0xD0000000, 0x01000005
    tlb1 4, 0x80000500, 0xD0100000, 0x01100015
    li32 3, 0xC0000000 + mmu_on
    mtctr 3
    bctr
mmu_on:                         /* from here on through TLB1[2] */
    stamp 0
    li32 5, {iters}
    li 3, 0
1:  addi 3, 3, 1
    cmpw 3, 5
    bne 1b
    stamp 1
    li32 20, {stores}
    li32 21, 0xD0000000
    bl stores
    stamp 2
    li32 20, {stores_x}
    li32 21, 0xD0100000
    bl stores
    stamp 3
    b finish
stores:
2:  stw 20, 0(21)
    stw 20, 4(21)
    stw 20, 8(21)
    stw 20, 12(21)
    addic. 20, 20, -1
    bne 2b
    blr
"""


def loops_figures(iters: int, stores: int, stores_x: int
                  ) -> Callable[[list[int]], dict[str, float]]:
    def derive(w: list[int]) -> dict[str, float]:
        return {"tight loop, MIPS": 3 * iters / ticks(w[0], w[1]),
                "stores, no-exec page, M/s": 4 * stores / ticks(w[1], w[2]),
                "stores, exec page, M/s": 4 * stores_x / ticks(w[2], w[3])}
    return derive


# --- 4. idle --------------------------------------------------------------------------------------

#: 250 Hz decrementer ticks, idling between them.  The handler also counts in RES[0] (the host
#: reads it); on QEMU it prints a '.' every 25 ticks instead, so the host can see the rate.
IDLE = f"""
    li32 3, {TIMEBASE_HZ // 250}
    mtspr 54, 3
    mtspr 22, 3
    lis 3, 0x0440
    mtspr 340, 3                /* TCR = DIE | ARE */
{{qemu_setup}}
    wrteei 1
1:  {{idle}}
    b 1b
"""
EV_IDLE = "hcall HC_EV_IDLE"
#: As Linux's e500_idle: HID0[DOZE], then MSR[WE] | MSR[EE] (tests/e500/test_timers.py).
DOZE = """lis 3, 0x0080
    mtspr 1008, 3               /* HID0 = DOZE */
    mfmsr 3
    oris 3, 3, 0x0004           /* MSR[WE] */
    ori 3, 3, 0x8000            /* MSR[EE] */
    isync
    mtmsr 3
    isync"""
IDLE_COUNT_OURS = "    stw 29, 0(31)"
IDLE_COUNT_QEMU = """    mtspr 273, 11
    mfcr 10
    mtspr 274, 10
    li 10, 25
    divwu 11, 29, 10
    mullw 11, 11, 10
    cmpw 11, 29
    bne 1f
    mtspr 275, 3
    mtspr 276, 4
    mtspr 277, 5
    li 3, '.'
    li32 4, 0xE0004500
    stb 3, 0(4)
    mfspr 3, 275
    mfspr 4, 276
    mfspr 5, 277
1:  mfspr 10, 274
    mtcrf 0xff, 10
    mfspr 11, 273"""


def idle_guest(target: str, idle: str) -> str:
    body = IDLE.format(idle=idle, qemu_setup="    bl qemu_map_ccsr" if target == QEMU_TARGET
                       else "")
    extra = IDLE_COUNT_QEMU if target == QEMU_TARGET else IDLE_COUNT_OURS
    return guest(body, target, 1, dec_extra=extra)


def schedstat_ns(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def worker_tid() -> int:
    found = [t.native_id for t in threading.enumerate() if t.name.startswith("vcpus of")]
    assert len(found) == 1 and found[0] is not None, "expected one vCPU worker thread"
    return found[0]


@dataclass
class IdleFigures:
    worker: Series  # % of one core
    process: Series
    hz: Series


async def idle_ours(idle: str, windows: int, seconds: float) -> IdleFigures:
    m = E500Machine(kernel=build(idle_guest(OURS, idle)), direct=True)
    fig = IdleFigures(Series([]), Series([]), Series([]))
    try:
        async with trio.open_nursery() as n:
            n.start_soon(m.run)
            await trio.sleep(0.5)  # boot excluded
            stat = f"/proc/self/task/{worker_tid()}/schedstat"

            def sample() -> tuple[float, int, int, int]:
                count = int.from_bytes(m.ram.read(RES, 4), "big")
                return time.perf_counter(), schedstat_ns(stat), time.process_time_ns(), count

            for _ in range(windows):
                t0, w0, p0, c0 = sample()
                await trio.sleep(seconds)
                t1, w1, p1, c1 = sample()
                fig.worker.values.append((w1 - w0) / 1e9 / (t1 - t0) * 100)
                fig.process.values.append((p1 - p0) / 1e9 / (t1 - t0) * 100)
                fig.hz.values.append((c1 - c0) / (t1 - t0))
            m.stop()
    finally:
        m.close()
    return fig


def process_ns(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += schedstat_ns(f"/proc/{pid}/task/{tid}/schedstat")
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended during the read
    return total


def idle_qemu(windows: int, seconds: float) -> IdleFigures | None:
    if QEMU is None:
        return None
    fig = IdleFigures(Series([]), Series([]), Series([]))
    dots: list[float] = []
    proc = subprocess.Popen([QEMU, *QEMU_ARGS, "-kernel", str(build(idle_guest(QEMU_TARGET,
                                                                               DOZE)))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)

    def read() -> None:
        assert proc.stdout is not None
        while ch := proc.stdout.read(1):
            if ch == b".":
                dots.append(time.perf_counter())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.perf_counter() + 10
        while not dots and time.perf_counter() < deadline:
            time.sleep(0.01)
        if not dots:
            raise RuntimeError("the idle guest on qemu never ticked")
        time.sleep(0.3)
        for _ in range(windows):
            t0, c0 = time.perf_counter(), process_ns(proc.pid)
            time.sleep(seconds)
            t1, c1 = time.perf_counter(), process_ns(proc.pid)
            fig.process.values.append((c1 - c0) / 1e9 / (t1 - t0) * 100)
            seen = [t for t in dots if t0 <= t <= t1]
            if len(seen) >= 2:
                fig.hz.values.append(25 * (len(seen) - 1) / (seen[-1] - seen[0]))
    finally:
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
    return fig


# --- the report -----------------------------------------------------------------------------------


def row(name: str, figs: dict[str, Series], unit: str, fmt: str = ".2f",
        lower_is_better: bool = True, compare: bool = True) -> None:
    """One figure: ours (median, spread), qemu's, and how many times qemu's time ours takes."""
    ours, ref = figs.get(OURS), figs.get(QEMU_TARGET)
    assert ours is not None
    line = f"   {name:<28} {ours.median:>9{fmt}} {unit:<5} ({ours.spread(fmt):>15})"
    if ref is not None:
        line += f"   qemu {ref.median:>9{fmt}} ({ref.spread(fmt):>15})"
        if compare:
            ratio = ours.median / ref.median if lower_is_better else ref.median / ours.median
            line += f"   ours {ratio:5.2f}x the time"
    print(line)


def per_tick(fig: IdleFigures) -> float:
    """Host CPU (us) the whole process spends per guest tick."""
    hz = fig.hz.median if fig.hz.values else 250
    return fig.process.median / 100 / hz * 1e6


@contextmanager
def section(title: str) -> Iterator[None]:
    t = time.perf_counter()
    print(title)
    yield
    print(f"   [{time.perf_counter() - t:.0f} s]\n")


async def main(quick: bool, reps: int) -> None:
    load0 = os.getloadavg()
    print("fwcfg-e500 core benchmarks (issue 12); reference: qemu-system-ppc -M ppce500"
          f" ({'not installed' if QEMU is None else QEMU}) running the same guest in this run")
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
          f" ({os.cpu_count()} CPUs); medians of {reps} runs, (min..max)\n")
    scale = 1 if not quick else 4

    passes = 200 // scale
    with section(f"1. TLB miss -> DTLB handler (tlbwe, rfi) -> retry, us per access;"
                 f" {passes} x {NPAGES} pages"):
        f = await repeat(reps, lambda t: tlb_miss_guest(t, passes), 5,
                         tlb_miss_figures(passes))
        row("loop, pages pre-mapped", f["pre-mapped access"], "us", ".3f")
        row("TLB miss (the difference)", f["TLB miss"], "us", ".3f")

    n = 200_000 // scale
    with section(f"2. exception entry, us per round trip through a handler that rfi's; {n} each"):
        f = await repeat(reps, lambda t: guest(EXCEPTIONS.format(n=n), t, 4), 4,
                         exceptions_figures(n))
        row("sc (IVOR8)", f["sc round trip"], "us", ".3f")
        row("trap (program, IVOR6)", f["trap round trip"], "us", ".3f")

    k, spin, rounds = 2000 // scale, 1_000_000, 8
    with section(f"3. decrementer interrupt, us each: one at a time (DEC = 1 us, {k} times,"
                 f" median), and every {DEC_PERIOD_US} us with auto-reload (the time a counting"
                 " loop lost)"):
        src = ONE_SHOT.format(k=k, spin=spin)
        f = await repeat(reps, lambda t: guest(src, t, 514), 514, one_shot_figures(k))
        row("one at a time", f["one-shot interrupt"], "us", ".2f")
        row("  not back within the spin", f["lost"], "", ".0f", compare=False)
        period = TIMEBASE_HZ // 1_000_000 * DEC_PERIOD_US
        src = DECREMENTER.format(n=spin * 25, period=period, rounds=rounds)
        f = await repeat(reps, lambda t: guest(src, t, 3), 3, decrementer_figures)
        row(f"every {DEC_PERIOD_US} us, auto-reload", f["decrementer interrupt"], "us", ".2f")
        row(f"  taken per ms (of {1000 // DEC_PERIOD_US})", f["interrupts per ms"], "", ".2f",
            compare=False)

    windows, seconds = (3, 0.5) if quick else (5, 1.0)
    with section(f"4. idle between 250 Hz decrementer ticks, % of one core over {windows} x"
                 f" {seconds:g} s after boot (target < 2 %)"):
        doze = await idle_ours(DOZE, windows, seconds)
        ev = await idle_ours(EV_IDLE, windows, seconds)
        ref = idle_qemu(windows, seconds)
        for name, fig in (("MSR[WE] doze", doze), ("EV_IDLE", ev)):
            ok = "met" if fig.process.median < 2 else "NOT met"
            print(f"   {name:<19} worker thread {fig.worker.median:5.2f} %"
                  f" ({fig.worker.spread()}), whole process {fig.process.median:5.2f} %"
                  f" ({fig.process.spread()}) = {per_tick(fig):.0f} us a tick at"
                  f" {fig.hz.median:.0f} Hz; target < 2 %: {ok}")
        if ref is not None:
            hz = f"{ref.hz.median:.0f} Hz" if ref.hz.values else "rate unseen"
            print(f"   qemu, MSR[WE] doze  all its threads {ref.process.median:5.2f} %"
                  f" ({ref.process.spread()}) = {per_tick(ref):.0f} us a tick at {hz}")

    iters = 400_000_000 // scale
    stores = 40_000_000 // scale
    stores_x = stores // 20
    with section("5. loops with the MMU on (code at 0xC000_0000 through TLB1);"
                 f" {3 * iters / 1e9:.1f} G instructions,"
                 f" {4 * stores / 1e6:.0f} M / {4 * stores_x / 1e6:.0f} M stores"):
        src = LOOPS.format(iters=iters, stores=stores, stores_x=stores_x)
        f = await repeat(reps, lambda t: guest(src, t, 4), 4,
                         loops_figures(iters, stores, stores_x))
        row("tight loop", f["tight loop, MIPS"], "MIPS", ".0f", lower_is_better=False)
        row("stores, page without exec", f["stores, no-exec page, M/s"], "M/s", ".1f",
            lower_is_better=False)
        row("stores, executable page", f["stores, exec page, M/s"], "M/s", ".1f",
            lower_is_better=False)
        nx, x = f["stores, no-exec page, M/s"], f["stores, exec page, M/s"]
        print(f"   stores to an executable page: {nx[OURS].median / x[OURS].median:.1f}x slower"
              " here" + (f", {nx[QEMU_TARGET].median / x[QEMU_TARGET].median:.2f}x on qemu"
                         if QEMU_TARGET in nx else ""))

    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts, shorter windows")
    ap.add_argument("--reps", type=int, default=None, help="runs per figure (5; --quick: 3)")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(main, args.quick, args.reps or (3 if args.quick else 5))
