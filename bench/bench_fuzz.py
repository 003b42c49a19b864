"""Hostile guests and bad inputs at scale: how much was tried, how much failed (should be zero).

The test suite runs each of these briefly; this runs them long:

* hypothesis sessions against the fw_cfg spec model (``tests/fwcfg/test_fuzz_state.py``) with a
  large ``max_examples``, for the three memory/layout combinations;
* the atheris target ``fuzz/fwcfg_target.py``, coverage-guided, for ``--fuzz-seconds``;
* the garbage-hypercall interpreter guest (``tests/e500/test_hostile_hypercalls.py``) over
  ``--hcall-seeds`` tables of ``--hcall-rows`` random rows each;
* every malformed host file of ``tests/e500/test_hostile_loaders.py`` through the CLI;
* the console flood of ``--flood-mb`` MB (default 100, as the issue asks) from ``--flood-cpus``
  CPUs, with its time and throughput.

It prints one line per part and a total, and exits 1 if anything failed.  With the defaults,
on a 2-core VM (Nov 2026): 1,230 hypothesis sessions (220,869 steps) in 83 s, 70,237 atheris
inputs in 90 s, 101,305 garbage hypercalls in 5 boots, 40 malformed files, and the 100 MB
flood from 4 CPUs in 74 s (1.35 MB/s, 6.25 M hypercalls, 3,515 EV_EAGAIN retries); 0 failed.
The flood is why the suite floods only 1 MiB.

Usage: python bench/bench_fuzz.py [--examples N] [--fuzz-seconds S] [--flood-mb MB] ...
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import fwcfg  # noqa: F401  (before tests/ joins sys.path: tests/fwcfg must not shadow it)
import machine.board  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests"))
sys.path.append(str(ROOT / "tests" / "fwcfg"))

from e500 import test_hostile_hypercalls as hcalls  # noqa: E402
from e500 import test_hostile_loaders as loaders  # noqa: E402
from e500 import test_hostile_smp as smp  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402
from test_fuzz_state import FwCfgSession, GuestRamSession, IoPortSession  # noqa: E402

from machine.cli import main as cli_main  # noqa: E402


@dataclass
class Part:
    name: str
    sequences: int = 0
    inputs: int = 0
    failures: int = 0
    seconds: float = 0.0
    note: str = ""

    def line(self) -> str:
        return (f"{self.name:<34} {self.sequences:>9} seq {self.inputs:>10} inputs "
                f"{self.failures:>3} failed {self.seconds:>7.1f} s  {self.note}")


def _counted(base: type[FwCfgSession], counts: dict[str, int]) -> type[FwCfgSession]:
    """``base`` counting its sessions (one per example) and their steps into ``counts``."""

    class Counted(base):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            super().__init__()
            counts["sessions"] += 1

        def teardown(self) -> None:
            counts["steps"] += self.h.steps
            super().teardown()

    return Counted


def fwcfg_sessions(examples: int, steps: int) -> Part:
    """Hypothesis state machines: each example is one session (a sequence of steps)."""
    part = Part("fw_cfg sessions (hypothesis)")
    start = time.monotonic()
    for base in (FwCfgSession, GuestRamSession, IoPortSession):
        counts = {"sessions": 0, "steps": 0}
        Counted = _counted(base, counts)
        try:
            run_state_machine_as_test(Counted, settings=settings(
                max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                suppress_health_check=list(HealthCheck)))
        except Exception:
            part.failures += 1
            print(f"--- {base.__name__} failed:\n{traceback.format_exc()}", file=sys.stderr)
        part.sequences += counts["sessions"]
        part.inputs += counts["steps"]
    part.seconds = time.monotonic() - start
    part.note = f"{examples} examples x 3 layouts, up to {steps} steps"
    return part


def fwcfg_atheris(seconds: int) -> Part:
    """The coverage-guided target in a child process (libFuzzer owns the process)."""
    part = Part("fw_cfg registers/DMA (atheris)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fwcfg-corpus-") as corpus:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "fuzz" / "fwcfg_target.py"), corpus,
             f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=30"],
            capture_output=True, text=True, cwd=tempfile.gettempdir())
    part.seconds = time.monotonic() - start
    units = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    part.inputs = int(units.group(1)) if units else 0
    part.sequences = part.inputs  # each input is one sequence of register operations
    if proc.returncode != 0 or units is None:
        part.failures = 1
        print(f"--- atheris exited {proc.returncode}:\n{proc.stderr[-4000:]}", file=sys.stderr)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", proc.stderr)
    part.note = f"{seconds} s budget" + (f", coverage {cov[-1][0]} edges" if cov else "")
    return part


def hypercall_garbage(seeds: int, rows: int) -> Part:
    part = Part("hypercall garbage (guest)")
    start = time.monotonic()
    for seed in range(seeds):
        table = hcalls.garbage_rows(seed=1000 + seed, n=rows)
        try:
            b, results = trio.run(hcalls.run_garbage, table)
            part.inputs += hcalls.check_garbage(b, table, results)
        except Exception:
            part.failures += 1
            print(f"--- seed {1000 + seed} failed:\n{traceback.format_exc()}", file=sys.stderr)
        part.sequences += 1
    part.seconds = time.monotonic() - start
    part.note = f"{seeds} boots of {rows}+ hypercalls"
    return part


def malformed_files() -> Part:
    part = Part("malformed host files (CLI)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fwcfg-hostile-") as d:
        files = loaders.make_files(Path(d))
        for name, (args, needle) in loaders.CASES.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli_main([*args(files), "--timeout", "10"])
            lines = err.getvalue().strip().splitlines()
            ok = code == 2 and len(lines) == 1 and needle in lines[0]
            if not ok:
                part.failures += 1
                print(f"--- {name}: exit {code}: {err.getvalue()}", file=sys.stderr)
            part.inputs += 1
    part.sequences = part.inputs
    part.seconds = time.monotonic() - start
    return part


def console_flood(megabytes: int, cpus: int) -> Part:
    part = Part(f"console flood ({cpus} CPUs)")
    total = megabytes * 1_000_000
    total -= total % (cpus * smp.RECORD)
    start = time.monotonic()
    try:
        f: Any = trio.run(smp.run_flood, cpus, total)
        smp.check_flood(f, cpus, total)
        part.note = (f"{total / 1e6:.0f} MB in {f.seconds:.1f} s = {total / 1e6 / f.seconds:.2f}"
                     f" MB/s, {total // smp.RECORD} hypercalls, {sum(f.eagain)} EV_EAGAIN")
    except Exception:
        part.failures += 1
        print(f"--- flood failed:\n{traceback.format_exc()}", file=sys.stderr)
    part.sequences = cpus
    part.inputs = total // smp.RECORD
    part.seconds = time.monotonic() - start
    return part


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=400, help="hypothesis sessions per layout")
    p.add_argument("--steps", type=int, default=60, help="steps per hypothesis session")
    p.add_argument("--fuzz-seconds", type=int, default=90, help="atheris time budget")
    p.add_argument("--hcall-seeds", type=int, default=5, help="garbage tables to boot")
    p.add_argument("--hcall-rows", type=int, default=20000, help="random rows per table")
    p.add_argument("--flood-mb", type=int, default=100, help="console flood size (0: skip)")
    p.add_argument("--flood-cpus", type=int, default=4, help="CPUs printing at once")
    args = p.parse_args()
    os.chdir(ROOT)
    print(f"{'part':<34} {'tried':>13} {'':>17} {'':>10} {'time':>9}")
    parts = []
    for run in (lambda: fwcfg_sessions(args.examples, args.steps),
                lambda: fwcfg_atheris(args.fuzz_seconds),
                lambda: hypercall_garbage(args.hcall_seeds, args.hcall_rows),
                malformed_files,
                *([lambda: console_flood(args.flood_mb, args.flood_cpus)]
                  if args.flood_mb else [])):
        part = run()
        parts.append(part)
        print(part.line(), flush=True)
    sequences = sum(x.sequences for x in parts)
    inputs = sum(x.inputs for x in parts)
    failures = sum(x.failures for x in parts)
    print(f"total: {sequences} sequences, {inputs} inputs tried, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
