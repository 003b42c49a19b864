"""Platform benchmarks of issue 13 (MPIC, UART, byte-channel interrupts), each figure printed next
to qemu-system-ppc -M ppce500 (7.2) running the same guest in the same run where QEMU can.

    python3 bench/bench_platform.py [--quick] [--reps N]

Every guest is one source assembled twice, once for each machine's CCSR base: 0xE000_0000 here,
0xF_E000_0000 on QEMU (reached through a TLB1 entry with MAS7 = 0xF).  Both machines load it the
same way (``--direct`` here, ``-kernel`` on QEMU: the ePAPR entry state, TLB1[0] mapping EA 0 = PA
0), both print on the ns16550 UART at CCSR + 0x4500 and both stop with GUTS' RSTCR and
``-no-reboot``.  Each figure is the median of ``--reps`` runs, alternating the machines so that a
change in the host's load (2 shared cores) weighs on both alike; min..max says how noisy it was.

1. **IPI round trip** (-smp 2), us: CPU 0 dispatches MPIC IPI 0 to CPU 1 and dozes (MSR[WE],
   HID0[DOZE], as Linux idles); CPU 1, dozing, takes it (IACK, EOI) and dispatches IPI 1 back;
   CPU 0's handler (IACK, EOI) sets a flag its loop sees.  CPU 1 is released through the spin
   table whose address each machine's device tree gives (cpu-release-addr: a RAM page here,
   QEMU's spin device at 0xF_EF00_0000 there), also mapped through TLB1.  The guest times the
   whole loop with the timebase (400 MHz on both) and prints the two stamps.
2. **Host input -> guest handler -> echo**, us from the host's send to the echo's arrival: the
   guest dozes with one MPIC source unmasked; a byte typed on the console raises it; the handler
   takes the byte and sends it back.  Two paths here: the console byte channel (rx source 56,
   EV_BYTE_CHANNEL_RECEIVE / SEND) and the UART (source 42, IER[ERBFI], RBR / THR); the UART
   path runs unchanged on QEMU, typed into its stdio serial through a pipe.  This is a round
   trip: the input's way in, the handler, and the output's way back to the host.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_core import OURS, QEMU, QEMU_TARGET, Series, row, section, ticks  # noqa: E402

from machine import platform as P  # noqa: E402
from machine.asm import assemble  # noqa: E402
from machine.board import E500Machine  # noqa: E402
from machine.devices import mpic_regs as R  # noqa: E402

RAM_MIB = 256
QEMU_ARGS = ["-M", "ppce500", "-cpu", "e500v2", "-m", str(RAM_MIB), "-nographic", "-no-reboot"]
#: Where each machine has CCSR and the spin-table page (physical).
CCSR = {OURS: P.CCSR_BASE, QEMU_TARGET: 0xF_E000_0000}
SPIN_PAGE = {OURS: P.spin_table_base(RAM_MIB * P.MiB), QEMU_TARGET: 0xF_EF00_0000}
CCSR_EA, SPIN_EA = 0xE000_0000, 0xEF00_0000
MPIC_EA = CCSR_EA + P.MPIC_OFFSET
UART_EA = CCSR_EA + P.UART0_OFFSET
RSTCR_EA = CCSR_EA + P.GUTS_OFFSET + 0xB0
VARS = 0x0010_0000  #: FLAG, READY

# --- the frame both guests share ------------------------------------------------------------

#: ``map`` (TLB1 entries for CCSR and the spin page), ``putc``/``puthex``/``crlf`` on the
#: UART, ``reset`` (RSTCR).  r31 = the UART, r23 = the MPIC's current-CPU window.
FRAME = """
map:                            /* TLB1[5]: CCSR, 1 MiB; TLB1[6]: the spin page, 4 KiB; I|G */
    li32 3, 0x10050000
    mtspr 624, 3
    li32 3, 0x80000500
    mtspr 625, 3
    li32 3, {ccsr_ea} | 0x0A
    mtspr 626, 3
    li32 3, {ccsr_lo} | 0x05
    mtspr 627, 3
    li 3, {ccsr_hi}
    mtspr 944, 3
    isync
    tlbwe
    isync
    li32 3, 0x10060000
    mtspr 624, 3
    li32 3, 0x80000100
    mtspr 625, 3
    li32 3, {spin_ea} | 0x0A
    mtspr 626, 3
    li32 3, {spin_lo} | 0x05
    mtspr 627, 3
    li 3, {spin_hi}
    mtspr 944, 3
    isync
    tlbwe
    isync
    li32 31, {uart}
    li32 23, {mpic}
    blr
putc:                           /* r3 = the byte; clobbers r5 */
    lbz 5, 5(31)
    andi. 5, 5, 0x20            /* LSR[THRE] */
    beq putc
    stb 3, 0(31)
    blr
crlf:
    mflr 9
    li 3, 13
    bl putc
    li 3, 10
    bl putc
    mtlr 9
    blr
puthex:                         /* r6 = the word; clobbers r3, r5, r7, r10 */
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
reset:
    li32 6, {rstcr}
    li 7, 2
    stw 7, 0(6)
    sync
    b .
"""


def frame(target: str) -> str:
    ccsr, spin = CCSR[target], SPIN_PAGE[target]
    return FRAME.format(ccsr_ea=CCSR_EA, ccsr_lo=ccsr & 0xFFFF_F000, ccsr_hi=ccsr >> 32,
                        spin_ea=SPIN_EA, spin_lo=spin & 0xFFFF_F000, spin_hi=spin >> 32,
                        uart=UART_EA, mpic=MPIC_EA, rstcr=RSTCR_EA)


# --- 1. IPI round trip ----------------------------------------------------------------------

IPI = """
_start:
    bl map
    bl setup
    li32 3, {prio} << 16 | 0xA0
    stw 3, {ipi0}(23)           /* IPI 0: CPU 0 -> 1 */
    addi 3, 3, 1
    stw 3, {ipi1}(23)           /* IPI 1: CPU 1 -> 0 */
    li32 3, {spin_ea} + {entry}  /* CPU 1's spin-table entry: r3, then the entry address */
    li 4, 0
    stw 4, 8(3)
    li 4, 1
    stw 4, 12(3)
    li 4, 0
    stw 4, 0(3)
    li32 4, second
    stw 4, 4(3)
    sync
    li32 22, {vars}
1:  lwz 3, 4(22)                /* until CPU 1 is ready */
    cmpwi 3, 0
    beq 1b
    li 21, {n}
    mftb 20
loop:
    li 3, 0
    stw 3, 0(22)                /* FLAG = 0 */
    li 3, 2
    stw 3, 0x40(23)             /* IPIDR0 = CPU 1 */
    sync
wait:
    wrteei 0
    lwz 3, 0(22)
    cmpwi 3, 0
    bne got
    mfmsr 3
    oris 3, 3, 0x0004
    ori 3, 3, 0x8000
    mtmsr 3                     /* doze with MSR[EE] */
    isync
    b wait
got:
    addic. 21, 21, -1
    bne loop
    mftb 24
    li 3, 'R'
    bl putc
    li 3, ' '
    bl putc
    mr 6, 20
    bl puthex
    li 3, ' '
    bl putc
    mr 6, 24
    bl puthex
    bl crlf
    b reset

second:
    bl map
    bl setup
    li32 22, {vars}
    li 3, 1
    stw 3, 4(22)                /* READY */
2:  mfmsr 3
    oris 3, 3, 0x0004
    ori 3, 3, 0x8000
    mtmsr 3
    isync
    b 2b

setup:                          /* IVPR = 0, IVOR4, HID0[DOZE], CTPR = 0 */
    li 3, 0
    mtspr 63, 3
    li 3, h_ext@l
    mtspr 404, 3
    lis 3, 0x0080
    mtspr 1008, 3
    li 3, 0
    stw 3, 0x80(23)
    blr

    .balign 16
h_ext:
    mfspr 14, 286               /* PIR */
    lwz 15, 0xA0(23)            /* IACK */
    li 16, 0
    stw 16, 0xB0(23)            /* EOI */
    cmpwi 14, 0
    beq 3f
    li 16, 1
    stw 16, 0x50(23)            /* CPU 1: IPIDR1 = CPU 0 */
    sync
    rfi
3:  li 16, 1
    stw 16, 0(22)               /* CPU 0: FLAG */
    rfi
"""


def ipi_guest(target: str, n: int) -> str:
    return IPI.format(prio=5, ipi0=R.IPI_IVPR0, ipi1=R.IPI_IVPR0 + 0x10, spin_ea=SPIN_EA,
                      entry=P.SPIN_ENTRY_SIZE, vars=VARS, n=n) + frame(target)


def stamps(text: str, target: str) -> tuple[int, int]:
    match = re.search(r"R ([0-9a-f]{8}) ([0-9a-f]{8})", text)
    if match is None:
        raise RuntimeError(f"the guest on {target} printed no result:\n{text}")
    return int(match.group(1), 16), int(match.group(2), 16)


async def ipi_ours(n: int) -> float:
    m = E500Machine(kernel=assemble(ipi_guest(OURS, n), base=0), direct=True, smp=2,
                    ram_size=RAM_MIB * P.MiB, no_reboot=True)
    out = bytearray()
    m.console.add_listener(lambda cpu, data: out.extend(data))
    try:
        result = await m.run(timeout=120)
    finally:
        m.close()
    if result.code != 0:
        raise RuntimeError(f"IPI guest on {OURS}: {result.reason}")
    t0, t1 = stamps(out.decode(errors="replace"), OURS)
    return ticks(t0, t1) / n


def ipi_qemu(n: int) -> float | None:
    if QEMU is None:
        return None
    proc = subprocess.run([QEMU, *QEMU_ARGS, "-smp", "2", "-kernel",
                           str(assemble(ipi_guest(QEMU_TARGET, n), base=0))],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    t0, t1 = stamps(proc.stdout + proc.stderr, QEMU_TARGET)
    return ticks(t0, t1) / n


# --- 2. host input -> handler -> echo --------------------------------------------------------

#: CPU 0 unmasks one source for itself, prints "K" and dozes; the handler echoes every byte it
#: can take, and a "q" resets (the run ends).  ``{take}`` leaves the byte in r4 (or -1 when none
#: is left), ``{give}`` sends r4.
ECHO = """
_start:
    bl map
    li 3, 0
    mtspr 63, 3
    li 3, h_ext@l
    mtspr 404, 3
    lis 3, 0x0080
    mtspr 1008, 3
    li 3, 0
    stw 3, 0x80(23)             /* CTPR = 0 */
    li32 4, {src}
    li 3, 1
    stw 3, 0x10(4)              /* IDR: CPU 0 */
    li32 3, 0x00850000 | {vec}
    stw 3, 0(4)                 /* priority 5, unmasked (polarity as at reset) */
    {enable}
    li 3, 'K'
    bl putc
    bl crlf
1:  mfmsr 3
    oris 3, 3, 0x0004
    ori 3, 3, 0x8000
    mtmsr 3
    isync
    b 1b

    .balign 16
h_ext:
    lwz 15, 0xA0(23)            /* IACK */
2:  {take}
    cmpwi 4, -1
    beq 3f
    cmpwi 4, 'q'
    beq reset
    {give}
    b 2b
3:  li 3, 0
    stw 3, 0xB0(23)             /* EOI */
    rfi
"""
PATHS: dict[str, dict[str, Any]] = {
    "uart": dict(src=P.UART_IRQ, vec=0x2A, enable="li 3, 1\n    stb 3, 1(31)  /* IER[ERBFI] */",
                 take="""li 4, -1
    lbz 5, 5(31)
    andi. 5, 5, 1               /* LSR[DR] */
    beq 9f
    lbz 4, 0(31)                /* RBR */
9:""",
                 give="mr 3, 4\n    bl putc"),
    "byte channel": dict(src=P.BYTE_CHANNEL_RX_IRQ, vec=0x38, enable="",
                         take="""li 3, 0
    li 4, 1
    hcall HC_EV_BYTE_CHANNEL_RECEIVE
    cmpwi 4, 0
    li 4, -1
    beq 9f
    srwi 4, 5, 24
9:""",
                         give="""slwi 5, 4, 24
    li 3, 0
    li 4, 1
    hcall HC_EV_BYTE_CHANNEL_SEND"""),
}


def echo_guest(target: str, path: str) -> str:
    p = PATHS[path]
    src = MPIC_EA + 0x1_0000 + R.SOURCE_STRIDE * p["src"]
    return ECHO.format(src=src, vec=p["vec"], enable=p["enable"], take=p["take"],
                       give=p["give"]) + frame(target)


async def echo_ours(path: str, n: int, gap: float) -> list[float]:
    m = E500Machine(kernel=assemble(echo_guest(OURS, path), base=0), direct=True,
                    ram_size=RAM_MIB * P.MiB, no_reboot=True)
    arrived: list[float] = []
    got = trio.Event()
    ready = trio.Event()

    def on_out(cpu: int, data: bytes) -> None:
        nonlocal got
        if not ready.is_set():
            if b"K" in data:
                ready.set()
            return
        arrived.append(time.perf_counter())
        got.set()

    m.console.add_listener(on_out)
    lat: list[float] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(m.run)
            await ready.wait()
            for _ in range(n):
                await trio.sleep(gap)  # the guest is dozing again
                got = trio.Event()
                t0 = time.perf_counter()
                await m.console.send(b"x")
                with trio.fail_after(5):
                    await got.wait()
                lat.append((arrived[-1] - t0) * 1e6)
            await m.console.send(b"q")
            result = await m.wait(timeout=10)
    finally:
        m.close()
    if result.code != 0:
        raise RuntimeError(f"echo guest on {OURS}: {result.reason}")
    return lat


def echo_qemu(n: int, gap: float) -> list[float] | None:
    if QEMU is None:
        return None
    elf = assemble(echo_guest(QEMU_TARGET, "uart"), base=0)
    proc = subprocess.Popen([QEMU, *QEMU_ARGS, "-kernel", str(elf)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    fin, fout = proc.stdin.fileno(), proc.stdout.fileno()

    def read_until(want: bytes, timeout: float = 5) -> None:
        buf = b""
        deadline = time.perf_counter() + timeout
        while want not in buf:
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([fout], [], [], left)[0]:
                raise RuntimeError(f"qemu: {want!r} did not come; got {buf!r}")
            buf += os.read(fout, 4096)

    lat: list[float] = []
    try:
        read_until(b"K")
        for _ in range(n):
            time.sleep(gap)
            t0 = time.perf_counter()
            os.write(fin, b"x")
            read_until(b"x")
            lat.append((time.perf_counter() - t0) * 1e6)
        os.write(fin, b"q")
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return lat


# --- the report -------------------------------------------------------------------------------


def add(figs: dict[str, Series], target: str, value: float | None) -> None:
    if value is not None:
        figs.setdefault(target, Series([])).values.append(value)


async def main(quick: bool, reps: int) -> None:
    load0 = os.getloadavg()
    print("fwcfg-e500 platform benchmarks (issue 13); reference: qemu-system-ppc -M ppce500"
          f" ({'not installed' if QEMU is None else QEMU}) running the same guest in this run")
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
          f" ({os.cpu_count()} CPUs); medians of {reps} runs, (min..max)\n")

    n = 2000 if quick else 10_000
    with section(f"1. IPI round trip CPU 0 -> CPU 1 -> CPU 0 through the MPIC (both dozing"
                 f" between), us; {n} per run"):
        figs: dict[str, Series] = {}
        for _ in range(reps):
            add(figs, OURS, await ipi_ours(n))
            add(figs, QEMU_TARGET, await trio.to_thread.run_sync(ipi_qemu, n))
        row("IPI round trip", figs, "us")

    k, gap = (20, 0.005) if quick else (50, 0.005)
    with section(f"2. host input -> MPIC source -> guest handler -> echo -> host, us; median"
                 f" of {k} bytes per run, {gap * 1e3:g} ms apart"):
        per_path: dict[str, dict[str, Series]] = {"uart": {}, "byte channel": {}}
        for _ in range(reps):
            for path in per_path:
                lat = await echo_ours(path, k, gap)
                add(per_path[path], OURS, Series(lat).median)
            ref = await trio.to_thread.run_sync(echo_qemu, k, gap)
            if ref is not None:
                add(per_path["uart"], QEMU_TARGET, Series(ref).median)
        row("UART (source 42)", per_path["uart"], "us", ".0f")
        row("byte channel (source 56)", per_path["byte channel"], "us", ".0f")

    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts")
    ap.add_argument("--reps", type=int, default=None, help="runs per figure (5; --quick: 3)")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(main, args.quick, args.reps or (3 if args.quick else 5))
