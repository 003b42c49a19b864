"""Many machines in one process: 50 demo boots at once next to 50 one after another.

Each machine boots the bundled demo (firmware pulls the kernel and device tree through fw_cfg,
the kernel releases every secondary through the spin table, prints, powers off) with 256 MiB of
RAM.  Two runs, same process, same configuration:

* concurrent: all machines are built first, booted together in one trio nursery, and closed
  only when the last has powered off, so the peak resident size (``VmHWM``, reset before the
  run through ``/proc/self/clear_refs``) covers every machine resident at once;
* sequential: one machine at a time (built, booted, closed).

Why it can be small: guest RAM is an anonymous mapping committed only where the guest writes,
parked CPUs are a blocked thread and an awaiting task, and every CPU of a machine shares its RAM
(``mem_map_ptr``).  Target: the 50 concurrent machines under 1 GiB resident.

Usage: python bench/bench_many_machines.py [--count 50] [--smp 4] [--ram-mib 256]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine.board import E500Machine  # noqa: E402
from machine.boot.guest import DEMO_ELF  # noqa: E402

TARGET_MIB = 1024


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Start a new VmHWM from the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def summary_line(smp: int) -> bytes:
    return b"demo: 1 cpu up" if smp == 1 else f"demo: all {smp} cpus up".encode()


async def boot(m: E500Machine, smp: int) -> None:
    result = await m.run(timeout=120)
    if result.code != 0 or summary_line(smp) not in m.console.output:
        raise SystemExit(f"a machine failed: {result.reason}\n{m.console.text}")


async def concurrent(count: int, smp: int, ram: int) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, peak RSS MiB above the baseline before building)."""
    gc.collect()
    baseline = status_mib("VmRSS")
    exact_peak = reset_peak_rss()
    started = time.monotonic()
    machines = [E500Machine(kernel=DEMO_ELF, smp=smp, ram_size=ram) for _ in range(count)]
    try:
        async with trio.open_nursery() as nursery:
            for m in machines:
                nursery.start_soon(boot, m, smp)
        wall = time.monotonic() - started
        peak = status_mib("VmHWM") if exact_peak else status_mib("VmRSS")
    finally:
        for m in machines:
            m.close()
    return wall, peak, peak - baseline


async def sequential(count: int, smp: int, ram: int) -> float:
    gc.collect()
    started = time.monotonic()
    for _ in range(count):
        m = E500Machine(kernel=DEMO_ELF, smp=smp, ram_size=ram)
        try:
            await boot(m, smp)
        finally:
            m.close()
    return time.monotonic() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--smp", type=int, default=4)
    parser.add_argument("--ram-mib", type=int, default=256)
    args = parser.parse_args()
    ram = args.ram_mib << 20

    await sequential(2, args.smp, ram)  # warm-up: imports, allocator, unicorn's first instance
    wall_c, peak, above = await concurrent(args.count, args.smp, ram)
    wall_s = await sequential(args.count, args.smp, ram)
    threads = threading.active_count()

    n, smp = args.count, args.smp
    print(f"{n} demo machines, -smp {smp}, {args.ram_mib} MiB RAM each "
          f"({n * smp} vCPUs, {n * args.ram_mib / 1024:.1f} GiB of guest RAM in total)")
    for label, wall in (("concurrent, one process", wall_c), ("one after another", wall_s)):
        print(f"  {label:<24}: {wall:7.2f} s wall  ({wall / n * 1000:6.1f} ms/machine)")
    print(f"  {'speed-up':<24}: {wall_s / wall_c:7.2f} x  (host CPUs: {os.cpu_count()})")
    print(f"  {f'peak RSS, {n} resident':<24}: {peak:7.1f} MiB  ({above:.1f} MiB above the idle "
          f"process, {above / n:.1f} MiB/machine); target < {TARGET_MIB} MiB: "
          f"{'met' if peak < TARGET_MIB else 'MISSED'}")
    print(f"  {'threads left afterwards':<24}: {threads}")
    return 0 if peak < TARGET_MIB else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
