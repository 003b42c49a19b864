"""The boot timeline file: load it back and check it is a trace Perfetto can draw.

What the viewers need (Trace Event Format): a JSON array of records with ``ph``/``pid``/``tid``/
``ts``; per track, ``B``/``E`` pairs that nest (ours never overlap: running and parked take
turns); ``i`` instants with a scope; ``s``/``f`` flow pairs with matching ids; ``M`` metadata
naming the tracks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import trio

from machine.api import DEMO_ELF, ConfigError, E500Machine, FwCfgDma
from machine.asm import assemble

Record = dict[str, Any]


def load(path: Path) -> list[Record]:
    records = json.loads(path.read_text())
    assert isinstance(records, list)
    for r in records:
        assert r["ph"] in {"M", "B", "E", "i", "s", "f"}, r
        assert r["pid"] == 1
        if r["ph"] != "M":
            assert isinstance(r["ts"], int | float) and r["ts"] >= 0, r
    return records


def spans_by_track(records: list[Record]) -> dict[int, list[tuple[str, float, float]]]:
    """(name, begin, end) per track; fails unless B and E alternate and match."""
    spans: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    open_: dict[int, Record] = {}
    last: dict[int, float] = {}
    for r in records:
        if r["ph"] == "M":
            continue
        tid = r["tid"]
        assert r["ts"] >= last.get(tid, 0.0), f"time goes backwards on track {tid}: {r}"
        last[tid] = r["ts"]
        if r["ph"] == "B":
            assert tid not in open_, f"span {r['name']!r} opens inside {open_[tid]['name']!r}"
            open_[tid] = r
        elif r["ph"] == "E":
            begin = open_.pop(tid)
            assert begin["name"] == r["name"]
            spans[tid].append((r["name"], begin["ts"], r["ts"]))
    assert open_ == {}, "every span is closed when the run ends"
    return spans


async def test_a_demo_boot_timeline(tmp_path: Path) -> None:
    trace = tmp_path / "boot.json"
    async with E500Machine(kernel=DEMO_ELF, smp=4, trace_file=trace, record_events=True) as m:
        assert (await m.wait(timeout=10)).code == 0
    records = load(trace)

    names = {r["tid"]: r["args"]["name"] for r in records if r["name"] == "thread_name"}
    assert names == {0: "cpu 0", 1: "cpu 1", 2: "cpu 2", 3: "cpu 3", 4: "machine"}
    process = next(r for r in records if r["name"] == "process_name")
    assert process["args"]["name"] == "fwcfg-e500 (smp 4, 256 MiB)"

    spans = spans_by_track(records)
    assert spans[0][0][0] == "running"  # CPU 0 runs the firmware from power-on
    for cpu in (1, 2, 3):
        kinds = [name for name, _, _ in spans[cpu]]
        assert kinds[0] == "running"
        # Each secondary waits in its spin-table entry until the kernel releases it.
        assert "parked: spin table" in kinds
        assert all(end >= begin for _, begin, end in spans[cpu])

    instants = [r for r in records if r["ph"] == "i"]
    dma = [r for r in instants if r["cat"] == "fw_cfg" and "DMA" in r["name"]]
    recorded = [e for e in m.events.history if isinstance(e, FwCfgDma)]
    assert [(r["args"]["file"], r["args"]["bytes"]) for r in dma] == [
        (e.name, e.length) for e in recorded
    ]
    by_file = {r["args"]["file"]: r for r in dma}
    assert m.images.kernel is not None
    assert by_file["kernel_data"]["args"]["bytes"] == m.images.kernel.size
    assert by_file["etc/fdt"]["args"]["bytes"] == len(m.images.fdt)
    assert by_file["etc/fdt"]["name"] == "fw_cfg DMA read etc/fdt"

    releases = [r for r in instants if r["name"].startswith("released to")]
    assert sorted(r["tid"] for r in releases) == [1, 2, 3]
    starts = {r["id"]: r for r in records if r["ph"] == "s"}
    finishes = {r["id"]: r for r in records if r["ph"] == "f"}
    assert starts.keys() == finishes.keys() and len(starts) == 3
    assert {r["tid"] for r in starts.values()} == {0}  # CPU 0 released them all
    assert sorted(r["tid"] for r in finishes.values()) == [1, 2, 3]

    hypercalls = {r["name"] for r in instants if r["cat"] == "hypercall"}
    assert {"FW_CPU_RELEASE", "FW_WAIT_STORE", "EV_BYTE_CHANNEL_SEND", "FW_POWEROFF"} <= hypercalls

    console = "".join(r["args"]["text"] for r in instants if r["cat"] == "console")
    assert console == m.console.text

    power_off = [r for r in instants if r["name"].startswith("power-off")]
    assert len(power_off) == 1 and power_off[0]["s"] == "g"
    assert power_off[0]["args"]["code"] == 0
    end = power_off[0]["ts"]
    assert all(e <= end for track in spans.values() for _, _, e in track)


async def test_a_cancelled_run_still_leaves_a_complete_file(tmp_path: Path) -> None:
    trace = tmp_path / "spin.json"
    with trio.move_on_after(0.2):
        async with E500Machine(bios=assemble("_start: b _start"), smp=2, trace_file=trace):
            await trio.sleep_forever()
    spans = spans_by_track(load(trace))
    assert [name for name, _, _ in spans[0]] == ["running"]
    assert [name for name, _, _ in spans[1]] == ["running"]


async def test_an_unfinished_trace_is_still_a_valid_prefix(tmp_path: Path) -> None:
    # The writer streams records; if the process dies first, the array lacks only its "]",
    # which the trace format allows (and which makes the text strict JSON again).
    trace = tmp_path / "partial.json"
    m = E500Machine(kernel=DEMO_ELF, trace_file=trace)
    m.close()
    text = trace.read_text()
    assert not text.rstrip().endswith("]")
    assert json.loads(text + "]")[0]["name"] == "process_name"


def test_an_unwritable_trace_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "boot.json"
    with pytest.raises(ConfigError, match=r"--trace-file '.*no-such-dir/boot.json' cannot be "
                                          r"written: No such file or directory"):
        E500Machine(kernel=DEMO_ELF, trace_file=missing)


def test_the_command_line_writes_the_same_file(tmp_path: Path) -> None:
    trace = tmp_path / "cli.json"
    proc = subprocess.run(
        [sys.executable, "-m", "machine", "--demo", "-smp", "2", "--trace-file", str(trace)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    records = load(trace)
    spans = spans_by_track(records)
    assert set(spans) == {0, 1}
    assert any(r["name"] == "fw_cfg DMA read etc/fdt" for r in records)

    bad = subprocess.run(
        [sys.executable, "-m", "machine", "--demo", "--trace-file", str(tmp_path / "x" / "y")],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("fwcfg-e500: --trace-file ")
    assert bad.stderr.count("\n") == 1
