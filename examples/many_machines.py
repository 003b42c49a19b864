"""Example 3: a trio program running 20 machines at once and collecting their results.

Each machine is an ordinary trio task: the nursery starts twenty, each boots the demo with its
own CPU count and command line, waits for the demo's summary line, and records what it saw.
Parked CPUs cost no host CPU and guest RAM is committed only where the guest writes, so twenty
machines of 256 MiB fit comfortably in one process.

Run: ``python examples/many_machines.py [COUNT]``.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

import trio

from machine.api import DEMO_ELF, E500Machine


@dataclass(frozen=True)
class Outcome:
    index: int
    smp: int
    cpus_up: int
    code: int
    seconds: float


async def boot_one(index: int, outcomes: list[Outcome]) -> None:
    smp = 1 + index % 4
    started = time.monotonic()
    async with E500Machine(kernel=DEMO_ELF, smp=smp, append=f"machine-{index}") as m:
        await m.console.expect(f"cmdline: machine-{index}\n", timeout=60)
        up = await m.console.expect(re.compile(r"demo: (?:all )?(\d+) cpus? up"), timeout=60,
                                    fail="did not come up")
        result = await m.wait(timeout=60)
    outcomes.append(Outcome(index, smp, int(up[1]), result.code, time.monotonic() - started))


async def main(count: int = 20) -> int:
    outcomes: list[Outcome] = []
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(boot_one, index, outcomes)
    wall = time.monotonic() - started

    print(f"{'machine':>8} {'smp':>4} {'cpus up':>8} {'exit':>5} {'seconds':>8}")
    for o in sorted(outcomes, key=lambda o: o.index):
        print(f"{o.index:>8} {o.smp:>4} {o.cpus_up:>8} {o.code:>5} {o.seconds:>8.3f}")
    print(f"{count} machines in {wall:.2f} s of wall time")
    assert len(outcomes) == count
    assert all(o.code == 0 and o.cpus_up == o.smp for o in outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, *map(int, sys.argv[1:2])))
