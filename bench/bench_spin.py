"""Spin-waits that cost nothing: two CPUs handing a word back and forth, parked vs spinning.

    python bench/bench_spin.py [--quick]

The guest (tests/e500/test_spin_waits.py, PING_PONG) has CPU 0 wait for even values of a word
and CPU 1 for odd ones, each storing the next: 10,000 hand-offs each way.  Both waits are plain
``lwz; cmpw; bne`` polling loops, as compilers emit ``while (flag != v);``.  The machine runs it
twice in the same run:

* **parked** (the default): the detector (machine/cpu/spinloop.py) finds the polling loop and
  the machine parks the waiting CPU on the word until the other CPU's store, which makes the
  hand-off a switch (machine/devices/spin_waits.py);
* **plain quantum** (``machine.spins.enabled = False``): the waiting CPU spins until its
  1 ms quantum ends, as a round-robin TCG does (QEMU runs 32-bit PowerPC guests one vCPU at a
  time too), so each hand-off costs about a quantum.

Printed: wall time per round trip, a hand-off each way (median of several runs, min..max),
the ratio, and the parking statistics.  The plain-quantum run is given fewer round trips (it
is slow); both are compared per round trip.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the guests live in tests/

from machine.asm import assemble
from machine.board import E500Machine
from tests.e500.guests import PUTS
from tests.e500.test_spin_waits import FLAG, HANDOFFS, PING_PONG


def _guest(handoffs: int) -> Path:
    source = PING_PONG.replace(f"li32 10, {2 * HANDOFFS}", f"li32 10, {2 * handoffs}")
    return Path(assemble(PUTS + source))


def run_once(bios: Path, handoffs: int, *, park: bool) -> tuple[float, dict[str, object]]:
    """Seconds per round trip (two hand-offs), from the first store to power-off, by the
    guest's own count (start-up is excluded: the clock starts when the word first moves)."""
    m = E500Machine(bios=bios, smp=2)
    m.spins.enabled = park
    marks: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as n:
            async def watch() -> None:
                while m.ram.read_u32(FLAG) == 0:
                    await trio.sleep(0.0005)
                marks.append(time.perf_counter())

            n.start_soon(watch)
            result = await m.run(timeout=600)
            marks.append(time.perf_counter())
            assert result.code == 0, result.reason
            n.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        m.close()
    done = m.ram.read_u32(FLAG) // 2
    return (marks[-1] - marks[0]) / done, m.spins.statistics()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    args = ap.parse_args()
    runs = 3 if args.quick else 5
    parked_handoffs, plain_handoffs = HANDOFFS, (300 if args.quick else 1000)
    print(__doc__.splitlines()[0])
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs); medians of {runs} runs, (min..max)\n")
    parked_bios, plain_bios = _guest(parked_handoffs), _guest(plain_handoffs)
    parked, plain = [], []
    stats: dict[str, object] = {}
    for _ in range(runs):
        t, stats = run_once(parked_bios, parked_handoffs, park=True)
        parked.append(t * 1e6)
        t, _ = run_once(plain_bios, plain_handoffs, park=False)
        plain.append(t * 1e6)
    p, q = statistics.median(parked), statistics.median(plain)
    print(f"round trip, parked on the word {p:9.1f} us  ({min(parked):8.1f}..{max(parked):8.1f})"
          f"   {parked_handoffs} round trips a run")
    print(f"round trip, plain quantum      {q:9.1f} us  ({min(plain):8.1f}..{max(plain):8.1f})"
          f"   {plain_handoffs} round trips a run")
    print(f"parking makes a hand-off {q / p:.1f}x faster; {parked_handoffs} round trips take "
          f"{p * parked_handoffs / 1e6:.2f} s parked and {q * parked_handoffs / 1e6:.1f} s "
          f"with the plain quantum")
    print(f"last parked run's statistics: {stats}")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
