"""The atheris target runs: a short libFuzzer session finds nothing and executes every input.

The bench runs it for minutes; here a few hundred inputs prove the target still imports, drives
the harness and reports through libFuzzer (a broken target would otherwise only show up in the
bench).  The seeds start the session on every memory/layout combination.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[2] / "fuzz" / "fwcfg_target.py"


def test_a_short_fuzz_session_runs_clean(tmp_path: Path) -> None:
    seeds = tmp_path / "corpus"
    seeds.mkdir()
    # Each seed: a header (memory, layout) then operations 0..7 with edge-picking bytes.
    for header in range(8):
        (seeds / f"seed{header}").write_bytes(bytes([header]) + bytes(range(256)))
    p = subprocess.run(
        [sys.executable, str(TARGET), str(seeds), "-runs=400", "-print_final_stats=1",
         "-seed=7"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    units = re.search(r"stat::number_of_executed_units:\s*(\d+)", p.stderr)
    assert units is not None and int(units.group(1)) >= 400, p.stderr[-3000:]
