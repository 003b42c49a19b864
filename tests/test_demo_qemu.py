"""The demo kernel on QEMU's ppce500, and the same image on this machine: the consoles agree.

The demo is an ePAPR client that learns everything from the device tree it is handed, so the
same ELF runs on ``qemu-system-ppc -M ppce500`` (ns16550 console, QEMU's spin-table device,
reset through GUTS) and on fwcfg-e500 (byte-channel console, the firmware's spin table,
FW_POWEROFF).  Every line except the banner naming the machine must be identical: that is the
check that this machine hands a kernel the same boot state as QEMU does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from machine import platform as P
from machine.board import E500Machine, MachineConfig
from machine.boot.guest import DEMO_ELF
from machine.boot.loader import load_kernel

QEMU = shutil.which("qemu-system-ppc")
pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-ppc not installed"),
]
RAM_MIB = 256


def boot_on_qemu(kernel: Path, smp: int, append: str, *extra: str) -> list[str]:
    """Console lines of a ppce500 boot; the demo's reset request ends QEMU (-no-reboot)."""
    assert QEMU is not None
    proc = subprocess.run(
        [QEMU, "-M", "ppce500", "-cpu", "e500v2", "-smp", str(smp), "-m", str(RAM_MIB),
         "-nographic", "-no-reboot", "-kernel", str(kernel), "-append", append, *extra],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode(errors="replace").splitlines()


async def boot_on_this_machine(kernel: Path, smp: int, append: str) -> list[str]:
    machine = E500Machine(MachineConfig(kernel=kernel, smp=smp, append=append,
                                        ram_size=RAM_MIB * P.MiB))
    out = bytearray()
    machine.console.add_listener(lambda cpu, data: out.extend(data))
    try:
        result = await machine.run(timeout=30)
    finally:
        machine.close()
    assert (result.code, result.reason) == (0, "FW_POWEROFF by cpu 0")
    return out.decode(errors="replace").splitlines()


def secondary_line(i: int) -> str:
    """A released secondary's registers, as ePAPR 5.5.3 and PLATFORM.md boot step 3 define them:
    r3 = the table's r3 (the CPU index), r6 = 0, r7 = the 64 MiB secondary mapped area."""
    return (f"cpu {i}: r3={i:#010x} r4=0x00000000 r5=0x00000000 r6=0x00000000 "
            f"r7={P.SECONDARY_IMA_SIZE:#010x} pir={i}")


def test_demo_on_qemu_prints_the_command_line_and_every_cpu() -> None:
    kernel = load_kernel(DEMO_ELF, RAM_MIB * P.MiB)
    # QEMU puts the (small) tree 24 MiB past the kernel; r7 covers 0 .. its end.
    ima = P.ima_size(P.dtb_base(kernel.end) + 1)

    lines = [line.rstrip("\r") for line in boot_on_qemu(DEMO_ELF, 4, "hello world")]

    assert lines == [
        "demo: ePAPR demo kernel on QEMU ppce500",
        "cmdline: hello world",
        f"memory: {RAM_MIB} MiB at 0x0",
        "cpus: 4 (boot cpu 0, 3 spin-table)",
        f"cpu 0: r3=fdt r4=0x00000000 r5=0x00000000 r6={P.EPAPR_MAGIC:#010x} r7={ima:#010x} "
        "pir=0",
        secondary_line(1),
        secondary_line(2),
        secondary_line(3),
        "demo: all 4 cpus up",
    ]


@pytest.mark.parametrize(("smp", "append"), [(1, ""), (4, "hello world"), (8, "a b=c  d")])
async def test_demo_prints_the_same_lines_on_qemu_and_on_this_machine(
    smp: int, append: str
) -> None:
    ours = await boot_on_this_machine(DEMO_ELF, smp, append)
    theirs = await trio.to_thread.run_sync(boot_on_qemu, DEMO_ELF, smp, append)
    theirs = [line.rstrip("\r") for line in theirs]

    assert ours[0] == "demo: ePAPR demo kernel on fwcfg-e500"
    assert theirs[0] == "demo: ePAPR demo kernel on QEMU ppce500"
    assert ours[1:] == theirs[1:]
    assert [line for line in ours if line.startswith("cpu ")][1:] == [
        secondary_line(i) for i in range(1, smp)]


def test_fwcfg_e500_demo_command_matches_qemu_and_shows_the_fw_cfg_boot() -> None:
    """`fwcfg-e500 --demo` boots the bundled demo through the firmware: same lines as QEMU."""
    proc = subprocess.run(
        [sys.executable, "-m", "machine", "--demo", "-smp", "4", "-append", "hello world",
         "--trace"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    ours = proc.stdout.decode().splitlines()
    theirs = [line.rstrip("\r") for line in boot_on_qemu(DEMO_ELF, 4, "hello world")]

    assert ours[1:] == theirs[1:]
    assert "cmdline: hello world" in ours
    assert [line.split(":")[0] for line in ours if line.startswith("cpu ")] == [
        f"cpu {i}" for i in range(4)]
    trace = proc.stderr.decode(errors="replace")
    for item in ("kernel_data", P.FDT_FILE_NAME):
        assert re.search(rf"fw_cfg DMA read \d+ bytes of {re.escape(item)} at offset 0", trace)


@pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc not installed")
def test_demo_finds_a_console_named_by_an_alias_with_options(tmp_path: Path) -> None:
    """stdout-path = "serial0:115200n8" (the form U-Boot and Linux trees use) must work too."""
    assert QEMU is not None
    dumped = tmp_path / "ppce500.dtb"
    subprocess.run([QEMU, "-M", f"ppce500,dumpdtb={dumped}", "-cpu", "e500v2", "-smp", "2",
                    "-m", str(RAM_MIB), "-nographic", "-kernel", str(DEMO_ELF),
                    "-append", "via alias"], stdin=subprocess.DEVNULL, capture_output=True,
                   check=True, timeout=60)
    dts = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(dumped)],
                         capture_output=True, text=True, check=True).stdout
    dts, n = re.subn(r'(\s(?:linux,)?stdout-path) = "[^"]*";', r'\1 = "serial0:115200n8";', dts)
    assert n == 2 and "serial0 = " in dts
    aliased = tmp_path / "aliased.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(aliased), "-"],
                   input=dts, text=True, check=True)

    lines = [line.rstrip("\r") for line in
             boot_on_qemu(DEMO_ELF, 2, "via alias", "-dtb", str(aliased))]

    assert "cmdline: via alias" in lines and lines[-1] == "demo: all 2 cpus up"
    assert lines == [
        line.rstrip("\r") for line in boot_on_qemu(DEMO_ELF, 2, "via alias")]


def test_given_qemus_own_device_tree_this_machine_prints_exactly_what_qemu_prints(
    tmp_path: Path,
) -> None:
    """-dtb with ppce500's tree: the machine fills in its CPUs, hypervisor and /chosen, and the
    demo's whole console, banner included, matches QEMU's."""
    assert QEMU is not None
    dumped = tmp_path / "ppce500.dtb"
    subprocess.run([QEMU, "-M", f"ppce500,dumpdtb={dumped}", "-cpu", "e500v2", "-smp", "2",
                    "-m", str(RAM_MIB), "-nographic", "-kernel", str(DEMO_ELF)],
                   stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=60)
    proc = subprocess.run(
        [sys.executable, "-m", "machine", "-kernel", str(DEMO_ELF), "-dtb", str(dumped),
         "-smp", "2", "-m", str(RAM_MIB), "-append", "one tree"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    assert proc.stdout.decode().splitlines() == [
        line.rstrip("\r") for line in boot_on_qemu(DEMO_ELF, 2, "one tree")]
