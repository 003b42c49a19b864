"""Debian's gdb-multiarch debugs the machine booting the bundled firmware and demo kernel.

This is the firmware developer's session from issue 6, in batch mode: ``-S``-style start,
break at the kernel entry, check the ePAPR registers, list every CPU, step, read memory, catch
a released secondary in its entry point and continue to power-off.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import trio
from elftools.elf.elffile import ELFFile

from machine.board import E500Machine, RunResult
from machine.boot.guest import DEMO_ELF
from machine.debug.gdb_target import REG_NAMES
from machine.debug.gdbstub import run_with_gdb
from machine.platform import EPAPR_MAGIC, ROM_BASE

GDB = shutil.which("gdb-multiarch")
pytestmark = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed")

SMP = 4


def symbols(elf: Path) -> dict[str, int]:
    with elf.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert symtab is not None
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


async def gdb_session(commands: list[str], arch: str = "powerpc:e500",
                      **config: object) -> tuple[str, RunResult, int]:
    """Run gdb-multiarch in batch mode against a fresh machine held at power-on."""
    assert GDB is not None
    m = E500Machine(kernel=Path(DEMO_ELF), **config)  # type: ignore[arg-type]
    box: list[RunResult] = []

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        box.append(await run_with_gdb(m, "tcp:127.0.0.1:0", wait_for_debugger=True,
                                      timeout=60, task_status=task_status))

    try:
        async with trio.open_nursery() as n:
            port = await n.start(run)
            argv = [GDB, "-batch", "-nx", "-ex", f"set architecture {arch}",
                    "-ex", "set confirm off", "-ex", f"file {DEMO_ELF}",
                    "-ex", f"target remote 127.0.0.1:{port}"]
            for c in commands:
                argv += ["-ex", c]
            with trio.fail_after(60):
                proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                              check=False)
        out = proc.stdout.decode() + proc.stderr.decode()
        return out, box[0], m.images.dtb_addr
    finally:
        m.close()


async def test_gdb_breaks_at_the_kernel_entry_and_follows_every_cpu_to_power_off() -> None:
    sym = symbols(Path(DEMO_ELF))
    out, result, dtb_addr = await gdb_session([
        "info threads",
        "break _start",
        "continue",
        "echo <<r3\\n", "p/x $r3",
        "echo <<r6\\n", "p/x $r6",
        "echo <<fdt\\n", "x/1xw $r3",
        "stepi",
        "echo <<pc\\n", "p/x $pc",
        "echo <<insn\\n", "x/2xw _start",
        "break secondary_entry",
        "continue",
        "echo <<sec-r3\\n", "p/x $r3",
        "info threads",
        "delete",
        "continue",
    ], smp=SMP)

    def after(mark: str) -> str:
        return out.split(f"<<{mark}\n", 1)[1].splitlines()[0]

    # -S: every CPU is a thread, all waiting at the reset vector.
    first_listing = out.split("Breakpoint 1 at", 1)[0]
    for i in range(SMP):
        assert re.search(rf"^\*?\s+{i + 1}\s+Thread {i + 1} \(CPU {i} \[stopped\]\)\s+"
                         rf"{ROM_BASE:#x} in \?\? \(\)", first_listing, re.M), first_listing
    # The kernel entry, in ePAPR boot state.
    assert re.search(r"Thread 1 hit Breakpoint 1, _start \(\)", out), out
    assert int(after("r3").split("=")[1], 16) == dtb_addr
    assert int(after("r6").split("=")[1], 16) == EPAPR_MAGIC
    assert after("fdt").split(":")[1].split() == ["0xd00dfeed"]  # the device tree is there
    assert int(after("pc").split("=")[1], 16) == sym["_start"] + 4
    with Path(DEMO_ELF).open("rb") as f:
        elf = ELFFile(f)
        text = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")
        words = [int.from_bytes(text.data()[i : i + 4], "big") for i in (0, 4)]
    assert [int(w, 16) for w in after("insn").split(":")[1].split()] == words
    # A released secondary stops in its entry point, with its spin-table r3 (= its index).
    hit = re.search(r"Thread (\d+) hit Breakpoint 2, secondary_entry \(\)", out)
    assert hit is not None, out
    cpu = int(hit.group(1)) - 1
    assert 1 <= cpu < SMP
    assert int(after("sec-r3").split("=")[1], 16) == cpu
    last_listing = out.rsplit("<<sec-r3", 1)[1]
    assert re.search(rf"^\*\s+{cpu + 1}\s+Thread {cpu + 1} \(CPU {cpu} \[stopped\]\)\s+"
                     r"secondary_entry \(\)", last_listing, re.M), last_listing
    for i in range(SMP):
        assert re.search(rf"^\*?\s+{i + 1}\s+Thread {i + 1} \(CPU {i} ", last_listing, re.M)
    # And on to the demo's power-off.
    assert "[Inferior 1 (Remote target) exited normally]" in out, out
    assert result.code == 0
    assert result.reason == "FW_POWEROFF by cpu 0"


async def test_gdb_watches_a_variable_written_by_a_secondary() -> None:
    out, result, _ = await gdb_session([
        "break demo_main",
        "continue",
        "watch cpus_reported",
        "continue",
        "echo <<value\\n", "p cpus_reported",
        "delete",
        "continue",
    ], smp=2)
    assert re.search(r"Thread 2 hit Hardware watchpoint 2: cpus_reported\s+Old value = 0\s+"
                     r"New value = 1", out), out
    assert out.split("<<value\n", 1)[1].splitlines()[0] == "$1 = 1"
    # The atomic increment ran exactly once: the demo saw both CPUs and powered off with 0.
    assert "[Inferior 1 (Remote target) exited normally]" in out, out
    assert result.code == 0


@pytest.mark.parametrize("arch", ["powerpc:e500", "powerpc:common"])
async def test_info_registers_shows_the_e500_core_registers(arch: str) -> None:
    out, result, _ = await gdb_session(["echo <<regs\\n", "info registers", "echo >>\\n",
                                        "continue"], arch=arch)
    listing = out.split("<<regs\n", 1)[1].split(">>\n", 1)[0].splitlines()
    names = [line.split()[0] for line in listing]
    assert names == list(REG_NAMES), listing
    pc = next(line for line in listing if line.startswith("pc "))
    assert int(pc.split()[1], 16) == ROM_BASE  # big-endian, 32 bits
    assert result.code == 0
