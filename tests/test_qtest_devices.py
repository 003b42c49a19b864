"""``python -m machine -qtest stdio``: the machine a boot builds, its devices and its clock.

Under qtest the port serves the same :class:`E500Machine` a boot would build from the same
options: its fw_cfg (kernel, command line, initrd, etc/fdt), the boot ROM and the CCSR block
at 0xE000_0000 (MPIC, UART, GUTS, GPIO).  No CPU runs, and the devices' time is a virtual clock
that starts at 0 and moves only through ``clock_step``/``clock_set``, as in QEMU.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fwcfg import Key
from fwcfg.client import FwCfgClient, QtestTransport
from machine import platform
from machine.board import E500Machine
from machine.boot.guest import DEMO_ELF
from machine.cli import build_parser, machine_config
from machine.debug.qtest import QtestClient
from machine.devices import guts
from machine.devices import mpic_regs as r

FW = platform.FWCFG_BASE
MPIC = platform.CCSR_BASE + platform.MPIC_OFFSET
TIMER0 = MPIC + r.TIMER0
GTCCR, GTBCR, GTVPR, GTDR = (TIMER0 + off for off in (r.GTCCR, r.GTBCR, r.GTVPR, r.GTDR))
CPU0 = MPIC + 0x2_0000  # CPU 0's own window (the current-CPU one needs a CPU)
SRC = MPIC + 0x1_0000
UART = platform.CCSR_BASE + platform.UART0_OFFSET
GUTS = platform.CCSR_BASE + platform.GUTS_OFFSET
SCRATCH = 0x10_0000


def _qtest(*options: str) -> QtestClient:
    return QtestClient([sys.executable, "-m", "machine", "-S", "-qtest", "stdio", *options])


def _value(answer: str) -> int:
    assert answer.startswith("OK 0x"), answer
    return int(answer.split()[1], 16)


@pytest.fixture
def q() -> Iterator[QtestClient]:
    with _qtest("--demo", "-smp", "2") as client:
        yield client


def readl(q: QtestClient, addr: int) -> int:
    return _value(q.command(f"readl {addr:#x}"))


def writel(q: QtestClient, addr: int, value: int) -> None:
    assert q.command(f"writel {addr:#x} {value:#x}") == "OK"


# --- fw_cfg: what a boot has ------------------------------------------------------------------


@pytest.mark.parametrize("image", ["--demo", "-kernel"])
def test_fw_cfg_has_the_items_of_a_boot(image: str, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 17)
    options = [*(["--demo"] if image == "--demo" else ["-kernel", str(DEMO_ELF)]),
               "-initrd", str(initrd), "-append", "console=ttyS0 quiet",
               "-fw_cfg", "opt/x,string=hi"]
    booted = E500Machine(machine_config(build_parser().parse_args(options)))
    try:
        with _qtest(*options) as q:
            fw = FwCfgClient(QtestTransport(q.command, base=FW, scratch=SCRATCH), use_dma=True)
            directory = [(e.name, e.key, e.size) for e in fw.directory()]
            assert directory == [(f.name, f.key, f.size) for f in booted.fwcfg.files()]
            assert [name for name, _, _ in directory] == ["etc/fdt", "opt/x"]
            assert fw.read_file("etc/fdt") == booted.images.fdt
            kernel = booted.images.kernel
            assert kernel is not None
            assert fw.read_u32(Key.KERNEL_SIZE) == kernel.size > 0
            assert fw.read_u32(Key.KERNEL_ENTRY) == kernel.entry
            assert fw.read_item(Key.KERNEL_DATA, kernel.size) == \
                booted.fwcfg.contents(Key.KERNEL_DATA)
            assert fw.read_u32(Key.CMDLINE_SIZE) == len(b"console=ttyS0 quiet\0")
            assert fw.read_item(Key.CMDLINE_DATA, 20) == b"console=ttyS0 quiet\0"
            assert fw.read_u32(Key.INITRD_SIZE) == initrd.stat().st_size
            assert fw.read_item(Key.INITRD_DATA, 4352) == initrd.read_bytes()
            # the boot ROM is the firmware image the CPUs would start in
            assert q.command(f"read {platform.ROM_BASE:#x} 16") == \
                "OK 0x" + booted.images.rom[:16].hex()
    finally:
        booted.close()
        booted.fwcfg.close()


# --- the platform devices ---------------------------------------------------------------------


def test_mpic_registers_read_their_reset_values(q: QtestClient) -> None:
    assert readl(q, MPIC + r.BRR1) == 0x0040_0402
    assert readl(q, MPIC + r.FRR) == 0x00C3_0102  # 196 sources, 2 CPUs, spec 1.2
    assert readl(q, MPIC + r.GCR) == 0
    assert readl(q, MPIC + r.VIR) == 0
    assert readl(q, MPIC + r.SPVR) == 0xFFFF
    assert readl(q, MPIC + r.IPI_IVPR0) == 0x8000_0000  # masked
    assert readl(q, GTBCR) == 0x8000_0000  # count inhibited
    assert readl(q, GTVPR) == 0x8000_0000
    assert readl(q, GTDR) == 1
    assert readl(q, SRC + r.IVPR) == 0x8000_0000
    assert readl(q, CPU0 + r.CTPR) == 15
    assert readl(q, CPU0 + 0x1000 + r.WHOAMI) == 1


def test_uart_and_guts_registers_are_readable(q: QtestClient) -> None:
    assert _value(q.command(f"readb {UART + 5:#x}")) == 0x60  # LSR: THR and TSR empty
    assert _value(q.command(f"readb {UART + 3:#x}")) == 0  # LCR
    assert q.command(f"writeb {UART + 7:#x} 0x5a") == "OK"  # the scratch register keeps it
    assert _value(q.command(f"readb {UART + 7:#x}")) == 0x5A
    assert readl(q, GUTS + guts.PVR) == 0x8021_0022  # e500v2, as the CPUs' own PVR
    assert readl(q, GUTS + guts.DEVDISR) == 0


def _program_timer(q: QtestClient, count: int) -> None:
    """Timer 0 to CPU 0 with vector 0x42, priority 5, counting ``count`` ticks of 40 ns."""
    writel(q, CPU0 + r.CTPR, 0)
    writel(q, GTVPR, 0x0005_0042)
    writel(q, GTDR, 1)
    writel(q, GTBCR, count)


def test_a_global_timer_fires_only_when_the_clock_passes_its_period(q: QtestClient) -> None:
    assert q.command("clock_step 0") == "OK 0"  # the clock starts at 0
    _program_timer(q, 1000)  # 40 us
    assert readl(q, GTCCR) == 1000
    assert readl(q, CPU0 + r.IACK) == 0xFFFF  # nothing pending: the spurious vector
    assert q.command("clock_step 20000") == "OK 20000"
    assert readl(q, GTCCR) == 500  # no toggle yet, half the count left
    assert readl(q, GTVPR) == 0x0005_0042  # not active
    assert q.command("clock_step 19960") == "OK 39960"
    assert readl(q, GTCCR) == 1
    assert q.command("clock_step 40") == "OK 40000"
    assert readl(q, GTCCR) == 0x8000_0000 | 1000  # toggled and reloaded
    assert readl(q, GTVPR) == 0x4005_0042  # activity: the interrupt is pending
    assert readl(q, CPU0 + r.IACK) == 0x42
    writel(q, CPU0 + r.EOI, 0)


def test_clock_set_moves_time_absolutely_and_never_back(q: QtestClient) -> None:
    _program_timer(q, 1000)
    assert q.command("clock_set 30000") == "OK 30000"
    assert readl(q, GTCCR) == 250
    assert q.command("clock_set 1000") == "OK 30000"  # already past: nothing moves
    assert q.command("clock_step -5") == "OK 30000"
    # 25 periods: the toggle flipped once per period, so 25 times, and the count reloaded
    assert q.command("clock_set 0xF4240") == "OK 1000000"
    assert readl(q, GTCCR) == 0x8000_0000 | 1000
    assert q.command("clock_set 1040000") == "OK 1040000"
    assert readl(q, GTCCR) == 1000


def test_clock_step_without_an_argument_goes_to_the_next_deadline(q: QtestClient) -> None:
    assert q.command("clock_step") == "OK 0"  # no timer runs: QEMU stays where it is
    assert q.command("clock_step 123") == "OK 123"
    _program_timer(q, 250)  # 10 us from now
    assert q.command("clock_step") == "OK 10123"
    assert readl(q, GTCCR) == 0x8000_0000 | 250
    assert q.command("clock_step") == "OK 20123"
    assert readl(q, GTCCR) == 250
    writel(q, GTBCR, 0x8000_0000 | 250)  # inhibit: the timer stops, no deadline left
    assert q.command("clock_step") == "OK 20123"


def test_set_irq_in_drives_mpic_sources(q: QtestClient) -> None:
    writel(q, CPU0 + r.CTPR, 0)
    writel(q, SRC + 3 * r.SOURCE_STRIDE + r.IVPR, 0x0006_0033)  # source 3, priority 6
    writel(q, SRC + 3 * r.SOURCE_STRIDE + r.IDR, 1)
    assert q.command("set_irq_in /machine/pic unnamed-gpio-in 3 1") == "OK"
    assert readl(q, CPU0 + r.IACK) == 0x33
    writel(q, CPU0 + r.EOI, 0)
    assert q.command("set_irq_in pic unnamed-gpio-in 3 0") == "OK"
    assert readl(q, CPU0 + r.IACK) == 0xFFFF


BAD_LINES = [
    ("clock_step x", "FAIL invalid step 'x'"),
    ("clock_step 1_000", "FAIL invalid step '1_000'"),
    ("clock_step 0x8000000000000000", "FAIL step '0x8000000000000000' is out of range"),
    ("clock_step 1 2", "FAIL clock_step takes at most 1 argument"),
    ("clock_set", "FAIL clock_set takes 1 argument"),
    ("clock_set 09", "FAIL invalid time '09'"),
    ("clock_set --1", "FAIL invalid time '--1'"),
    ("set_irq_in /machine/nope unnamed-gpio-in 1 1", "FAIL Unknown device"),
    ("set_irq_in /machine/pic gpio 1 1", "FAIL no gpio-in list 'gpio' on /machine/pic"),
    ("set_irq_in /machine/pic unnamed-gpio-in 264 1", "FAIL irq number 264 is outside 0..263"),
    ("set_irq_in /machine/pic unnamed-gpio-in x 1", "FAIL invalid irq number 'x'"),
    ("set_irq_in /machine/pic unnamed-gpio-in 1", "FAIL set_irq_in takes 4 arguments"),
    ("irq_intercept_out /machine/pic", "FAIL Unknown command 'irq_intercept_out'"),
]


def test_bad_clock_and_irq_lines_fail_and_the_port_goes_on() -> None:
    with _qtest() as q:
        assert [(line, q.command(line)) for line, _ in BAD_LINES] == BAD_LINES
        assert q.command("clock_step 5") == "OK 5"  # nothing above moved the clock
    assert q.process.returncode == 0
