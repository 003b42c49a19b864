"""The project's Linux 6.1 build (scripts/build-linux.sh) boots through the firmware and fw_cfg,
runs translated through the e500 MMU with its own exception handlers, finds the MPIC, timers and
byte-channel console; its log buffer reads through the gdb stub.  The boots to the project's
init (-smp 1, 2, 4, --direct, the CLI) are in test_linux_boot.py.

The kernel is built once (about 6 minutes on 2 cores) and cached outside the tree; this module
builds it if it is not there yet.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from machine.board import E500Machine, RunResult
from machine.debug.gdbstub import run_with_gdb
from tests.test_gdb_stub import Rsp

pytestmark = pytest.mark.cross

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def vmlinux() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-linux.sh")], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=3600)
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.is_file(), path
    return path


def symbol(vmlinux: Path, name: str) -> int:
    for line in (vmlinux.parent / "System.map").read_text().splitlines():
        addr, _kind, sym = line.split()
        if sym == name:
            return int(addr, 16)
    raise KeyError(name)


async def read_log(gdb: Rsp, log_buf: int, size: int = 1 << 16) -> str:
    """The kernel's log buffer, read with gdb's memory packets (through CPU 0's MMU: the
    buffer is at a kernel virtual address)."""
    data = bytearray()
    for off in range(0, size, 1024):
        reply = await gdb.ask(f"m{log_buf + off:x},400")
        assert not reply.startswith("E"), f"reading {log_buf + off:#x}: {reply}"
        data += bytes.fromhex(reply)
    return data.decode("ascii", errors="replace")


async def test_linux_runs_translated_and_its_log_buffer_reads_through_the_gdb_stub(
        vmlinux: Path) -> None:
    """The kernel's own log, read from its virtual address through CPU 0's MMU by a
    debugger, shows it came up through its TLB set-up, exception vectors, MPIC and timers."""
    m = E500Machine(kernel=vmlinux, append="console=hvc0")
    log_buf = symbol(vmlinux, "__log_buf")
    box: list[RunResult] = []

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        box.append(await run_with_gdb(m, "tcp:127.0.0.1:0", wait_for_debugger=False,
                                      timeout=60, task_status=task_status))

    try:
        async with trio.open_nursery() as n:
            port = await n.start(run)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                gdb = Rsp(stream)
                assert (await gdb.ask("?")).startswith("T")  # connecting stops the machine
                await gdb.send("c")
                text = ""
                with trio.fail_after(45):
                    # Without an initramfs the kernel ends looking for an init.
                    while "No working init found" not in text:
                        await trio.sleep(0.5)
                        await gdb.stream.send_all(b"\x03")
                        assert (await gdb.receive()).startswith("T")
                        text = await read_log(gdb, log_buf)
                        await gdb.send("c")
                assert "Linux version 6.1" in text
                assert "Hardware name: fwcfg-e500 e500v2" in text  # its platform: qemu-e500
                assert "Memory CAM mapping" in text  # its own TLB1 mappings, then translated
                assert "mpic: Setting up MPIC" in text  # init_IRQ found the interrupt controller
                assert "clocksource: Switched to clocksource timebase" in text
                n.cancel_scope.cancel()
    finally:
        m.close()
