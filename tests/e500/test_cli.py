"""The ``fwcfg-e500`` command: what a user types, what they see, what it exits with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from machine.asm import assemble
from machine.boot.guest import DEMO_ELF

from .guests import PUTS


def run(
    *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "machine", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
    )


def test_demo_prints_the_command_line_and_every_cpu_and_exits_0() -> None:
    p = run("--demo", "-smp", "4", "-append", "hello world", "--trace")
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr.decode()
    assert "cmdline: hello world" in out
    for n in range(4):
        assert f"cpu {n}: " in out
    trace = p.stderr.decode()
    # The firmware pulled everything through fw_cfg, and released the CPUs through the table.
    assert "fw_cfg DMA read" in trace and "of etc/fdt" in trace and "of kernel_data" in trace
    assert trace.count("released by FW_CPU_RELEASE") == 3
    assert "power-off: code 0" in trace


def test_poweroff_code_is_the_exit_status(tmp_path: Path) -> None:
    bios = assemble("_start:\n    li 3, 3\n    hcall HC_FW_POWEROFF\n")
    assert run("-bios", str(bios)).returncode == 3


def test_console_input_comes_from_stdin() -> None:
    bios = assemble(PUTS + """
_start:
1:  li 3, 0
    li 4, 16
    hcall HC_EV_BYTE_CHANNEL_RECEIVE
    cmpwi 4, 0
    bne 2f
    hcall HC_EV_IDLE
    b 1b
2:  li 3, 0
    hcall HC_EV_BYTE_CHANNEL_SEND
    li 3, 0
    hcall HC_FW_POWEROFF
""")
    p = run("-bios", str(bios), stdin=b"ping")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"ping"


def test_timeout_says_where_the_cpu_was() -> None:
    bios = assemble("_start:\n    nop\nloop:\n    b loop\n")
    p = run("-bios", str(bios), "--timeout", "0.3")
    assert p.returncode == 124
    assert b"timeout after 0.3 s: cpu 0 at pc 0xfff00004" in p.stderr


def test_guest_fault_is_reported_with_registers() -> None:
    bios = assemble("_start:\n    li32 4, 0xD0000000\n    lwz 5, 0(4)\n")
    p = run("-bios", str(bios))
    assert p.returncode == 125
    err = p.stderr.decode()
    assert "guest fault: read of unmapped address at 0xd0000000" in err
    assert "r4=0xd0000000" in err
    assert "Traceback" not in err


def _bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    truncated = tmp_path / "truncated.elf"
    truncated.write_bytes(Path(DEMO_ELF).read_bytes()[:100])
    corrupt_dtb = tmp_path / "corrupt.dtb"
    corrupt_dtb.write_bytes(b"\xd0\x0d\xfe\xed" + b"\xff" * 60)
    return [
        (["-m", "5"], "-m"),
        (["-m", "lots"], "-m"),
        (["-m", "4G"], "-m"),
        (["-smp", "33"], "-smp"),
        (["-smp", "0"], "-smp"),
        (["-kernel", str(tmp_path / "missing.elf")], "missing.elf"),
        (["-kernel", sys.executable], "ELF"),
        (["-kernel", str(truncated)], "truncated"),
        (["--demo", "-dtb", str(corrupt_dtb)], "corrupt.dtb"),
        (["--demo", "-fw_cfg", "name=opt/x"], "file="),
        (["--demo", "-fw_cfg", f"name=opt/x,file={tmp_path / 'nope'}"], "nope"),
        (["--demo", "-fw_cfg", "name=opt/" + "x" * 60 + ",string=a"], "55"),
        (["--no-such-option"], "no-such-option"),
        (["-bios", str(tmp_path / "missing-firmware.elf")], "missing-firmware"),
        (["--direct"], "-kernel"),
    ]


def test_every_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    for args, needle in _bad_inputs(tmp_path):
        p = run(*args)
        err = p.stderr.decode()
        assert p.returncode == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (args, err)
        assert lines[0].startswith("fwcfg-e500: "), (args, err)
        assert needle in lines[0], (args, err)
        assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["-nographic"])
def test_qemu_spellings_are_accepted(flag: str) -> None:
    p = run("--demo", flag)
    assert p.returncode == 0, p.stderr
