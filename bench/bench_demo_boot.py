"""Boot time of a 64 MiB kernel: fwcfg-e500 (firmware + fw_cfg DMA) next to QEMU's ppce500.

The kernel is the demo (``machine/boot/guest/demo.elf``) linked again with 64 MiB of zeros in a
loaded section, so that every boot really moves 64 MiB: QEMU copies it from the ELF into RAM,
this machine's firmware pulls it through fw_cfg (KERNEL_DATA by DMA).  Both runs boot the same
file to the same console line (the demo's last, "demo: all N cpus up") and then stop (FW_POWEROFF
here, a GUTS reset with -no-reboot on QEMU).  Times are wall-clock, measured in this run, median
of ``--runs``; the padded image is built into a temporary directory and never shipped.

Usage: python bench/bench_demo_boot.py [--smp N] [--runs N] [--pad BYTES]
Needs the powerpc-linux-gnu cross tools (to link the padded image) and qemu-system-ppc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import platform as P  # noqa: E402
from machine.board import E500Machine, MachineConfig  # noqa: E402

RAM_MIB = 256


def build_padded(out: Path, pad: int) -> Path:
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO / "guest-stubs"), f"O={out}", f"PAD_SIZE={pad:#x}",
         f"PYTHON={sys.executable}", "padded"],
        capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"),
    )
    if proc.returncode != 0:
        sys.exit(f"building the padded demo failed:\n{proc.stdout}{proc.stderr}")
    return out / "demo-padded.elf"


def last_line(smp: int) -> str:
    return "demo: 1 cpu up" if smp == 1 else f"demo: all {smp} cpus up"


def time_process(cmd: list[str], line: str) -> tuple[float, float]:
    """(seconds until `line` appears on stdout, seconds until the process exits)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    seen = None
    for raw in proc.stdout:
        if raw.decode(errors="replace").rstrip("\r\n") == line and seen is None:
            seen = time.perf_counter() - t0
    _, err = proc.communicate()
    total = time.perf_counter() - t0
    if proc.returncode != 0 or seen is None:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode} without printing {line!r}: "
                           f"{err.decode(errors='replace').strip()}")
    return seen, total


def time_in_process(kernel: Path, smp: int, line: str) -> tuple[float, float]:
    """The same boot through the Python API: build the machine, run it to power-off."""

    async def boot() -> tuple[float, float]:
        t0 = time.perf_counter()
        machine = E500Machine(MachineConfig(kernel=kernel, smp=smp, ram_size=RAM_MIB * P.MiB))
        buf = bytearray()
        seen: list[float] = []

        def listen(cpu: int, data: bytes) -> None:
            buf.extend(data)
            if not seen and (line + "\n").encode() in buf:
                seen.append(time.perf_counter() - t0)

        machine.console.add_listener(listen)
        try:
            result = await machine.run(timeout=60)
        finally:
            machine.close()
        total = time.perf_counter() - t0
        if result.code != 0 or not seen:
            raise RuntimeError(f"in-process boot ended with {result.code} ({result.reason})")
        return seen[0], total

    return trio.run(boot)


def measure(runs: int, once: Callable[[], tuple[float, float]]) -> tuple[float, float] | str:
    try:
        samples = [once() for _ in range(runs)]
    except (RuntimeError, OSError) as e:
        return str(e)
    return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smp", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pad", type=lambda s: int(s, 0), default=64 * P.MiB,
                    help="zero bytes appended to the demo (default 64 MiB)")
    args = ap.parse_args()
    qemu = shutil.which("qemu-system-ppc")
    if shutil.which("powerpc-linux-gnu-gcc") is None:
        sys.exit("needs the powerpc-linux-gnu cross tools to link the padded demo kernel")

    line = last_line(args.smp)
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        kernel = build_padded(Path(tmp), args.pad)
        size = kernel.stat().st_size
        cli = [sys.executable, "-m", "machine", "-kernel", str(kernel), "-smp", str(args.smp),
               "-m", str(RAM_MIB)]
        rows: list[tuple[str, tuple[float, float] | str]] = [
            ("fwcfg-e500, python -m machine (cold start)",
             measure(args.runs, lambda: time_process(cli, line))),
            ("fwcfg-e500, in-process API",
             measure(args.runs, lambda: time_in_process(kernel, args.smp, line))),
        ]
        if qemu is None:
            rows.append(("qemu-system-ppc -M ppce500", "qemu-system-ppc not installed"))
        else:
            qcmd = [qemu, "-M", "ppce500", "-cpu", "e500v2", "-smp", str(args.smp), "-m",
                    str(RAM_MIB), "-nographic", "-no-reboot", "-kernel", str(kernel)]
            rows.append(("qemu-system-ppc -M ppce500 (TCG)",
                         measure(args.runs, lambda: time_process(qcmd, line))))

    print(f"demo kernel padded with {args.pad / P.MiB:g} MiB of zeros ({size:,} byte ELF), "
          f"-smp {args.smp}, -m {RAM_MIB}, median of {args.runs} runs")
    print(f"{'':45} {'to ' + repr(line):>28} {'to exit':>10}")
    for name, value in rows:
        if isinstance(value, str):
            print(f"{name:45} failed: {value}")
        else:
            print(f"{name:45} {value[0] * 1e3:25.1f} ms {value[1] * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
