"""The examples are part of the documentation: each must run, as a script, and succeed.

They run in a subprocess exactly as a reader would start them (``python examples/x.py``), so
an example that only works inside the test process (imports, working directory) fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e500.test_linux import vmlinux as vmlinux  # the session fixture that builds it

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=120, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_boot_demo_asserts_on_console_lines() -> None:
    out = run_example("boot_demo.py", "3", "quiet splash")
    assert "cmdline: quiet splash\n" in out
    assert out.endswith("-- FW_POWEROFF by cpu 0, exit code 0\n")


@pytest.mark.cross
def test_firmware_loop_rebuilds_boots_and_reads_back() -> None:
    out = run_example("firmware_loop.py", "from ci")
    assert "console: HELLO, FROM CI!\n" in out
    assert "opt/reply: 'HELLO, FROM CI!'\n" in out
    assert "fw_cfg DMA write 15 bytes of opt/reply" in out


def test_many_machines_at_once() -> None:
    out = run_example("many_machines.py", "20")
    rows = [line.split() for line in out.splitlines()[1:21]]
    assert [int(r[0]) for r in rows] == list(range(20))
    assert all(r[2] == r[1] and r[3] == "0" for r in rows)  # every CPU up, exit code 0
    assert "20 machines in" in out


def test_boot_protocol_events() -> None:
    out = run_example("boot_protocol_events.py", "4")
    assert "spin-table releases (firmware boot): [1, 2, 3]\n" in out
    assert out.endswith("ok: the boot protocol went as PLATFORM.md describes\n")


@pytest.mark.cross
def test_boot_linux_follows_the_boot_from_fw_cfg_to_power_off(vmlinux: Path) -> None:
    out = run_example("boot_linux.py", "4", str(vmlinux))
    lines = out.splitlines()
    # The firmware's releases into its parking code come first, then the loads, then Linux's.
    assert [line.split(" to ")[0] for line in lines[:3]] == [
        f"cpu {cpu}: released by FW_CPU_RELEASE" for cpu in (1, 2, 3)]
    assert [line.split(":")[1] for line in lines[3:5]] == [" fw_cfg DMA of kernel_data",
                                                            " fw_cfg DMA of initrd_data"]
    assert lines[5:8] == [f"cpu {cpu}: woken by Linux's store to its spin-table entry"
                          for cpu in (1, 2, 3)]
    assert "console: init: cpus=4\n" in out
    assert "console: init: echo: hello from the example\n" in out
    assert "\n-- GPIO power-off by cpu 0, exit code 0 " in out
