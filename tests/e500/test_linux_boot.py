"""Linux 6.1 boots through the firmware and fw_cfg to the project's init, at -smp 1, 2 and 4.

What a user of the machine sees (issue 14): the firmware pulls the kernel and the initramfs
over fw_cfg, Linux brings the secondaries up through the ePAPR spin table, the project's init
(``guest-stubs/linux-init``) prints what it found, echoes a line typed on the console and
powers off through the GPIO, and the machine exits 0.  Also: ``--direct`` boots the same
kernel, the CLI does it from a shell, and ``--timeout`` on a Linux that waits for ever says
where every CPU was.

The kernel is the project's build (``scripts/build-linux.sh``), cached outside the tree; the
``vmlinux`` fixture builds it the first time (about 6 minutes on 2 cores).  A boot takes about
a second, so the module runs in 15 to 20 s, 8 of them the timeout scenario.

A line is typed only once the init asks for it: bytes typed earlier wait in the console's one
input queue, where the 8250 driver's probe of the UART (which reads RBR) may take some of them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from machine.api import (
    CpuParked,
    CpuReleased,
    CpuWoken,
    E500Machine,
    FwCfgDma,
    ParkReason,
    PowerOff,
)
from machine.board import RunResult
from machine.boot.initramfs import default_initramfs
from machine.platform import ROM_BASE, ROM_SIZE, SPIN_ENTRY_ADDR_LO, spin_entry_addr
from tests.e500.test_linux import vmlinux as vmlinux  # the session fixture that builds it

pytestmark = pytest.mark.cross

ROOT = Path(__file__).resolve().parents[2]
Boot = Callable[..., Awaitable[E500Machine]]

#: Output that means the boot went wrong: fail at once rather than wait for a timeout.
TROUBLE = ("Kernel panic", "Oops", "BUG:", "No working init found")
POWER_OFF = "GPIO power-off by cpu 0"


@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("linux") / "initrd.cpio"
    path.write_bytes(default_initramfs())
    return path


async def type_into_init(m: E500Machine, line: str) -> None:
    """Wait for the init's prompt, type ``line``, see it echoed and the init power off."""
    await m.console.expect("init: type a line:", fail=TROUBLE)
    await m.console.send(line + "\n")
    await m.console.expect(f"init: echo: {line}\r\n", fail=TROUBLE)
    await m.console.expect("init: powering off")


async def run_to_power_off(m: E500Machine) -> RunResult:
    result = await m.wait(timeout=30)
    assert (result.code, result.reason) == (0, POWER_OFF)
    return result


@pytest.mark.parametrize("smp", [1, 2, 4])
async def test_linux_boots_to_its_init_echoes_a_typed_line_and_powers_off(
        e500: Boot, vmlinux: Path, initrd: Path, smp: int) -> None:
    """The default boot: the firmware pulls the kernel, initramfs and command line over
    fw_cfg; Linux brings up the MPIC, its timers, the byte-channel console and every CPU, runs
    the project's init, which sees N CPUs, reads a line typed on the console and powers off
    through the GPIO."""
    m = await e500(kernel=vmlinux, initrd=initrd, append=f"console=hvc0 test.smp={smp}",
                  smp=smp)
    expect = m.console.expect
    await expect("Linux version 6.1", timeout=30, fail=TROUBLE)
    await expect("mpic: Setting up MPIC", fail=TROUBLE)
    await expect("ehv-bc: registered console driver for byte channel 0", fail=TROUBLE)
    s = "" if smp == 1 else "s"
    await expect(f"smp: Brought up 1 node, {smp} CPU{s}", fail=TROUBLE)
    await expect("Run /init as init process", fail=TROUBLE)
    await expect("fwcfg-e500 init: hello from userspace", fail=TROUBLE)
    await expect(f"init: cpus={smp}\r\n")
    await expect(f"init: cmdline=console=hvc0 test.smp={smp}\r\n")
    await type_into_init(m, f"typed on the console of {smp} cpus")
    await expect("reboot: Power down")
    await run_to_power_off(m)


async def test_the_firmware_loads_linux_over_fw_cfg_and_linux_releases_the_spin_table(
        e500: Boot, vmlinux: Path, initrd: Path) -> None:
    """The boot protocol, from the events of a -smp 4 boot: CPU 0 DMAs the kernel and the
    initrd from fw_cfg to where the machine placed them; each secondary is sent once, with
    FW_CPU_RELEASE, into the firmware's parking code, which parks it (FW_WAIT_STORE) on its
    spin-table entry; Linux's store to that entry wakes it; the run ends with PowerOff."""
    smp = 4
    m = await e500(kernel=vmlinux, initrd=initrd, append="console=hvc0", smp=smp)
    await m.console.expect("Run /init", timeout=30, fail=TROUBLE)
    await type_into_init(m, "events")
    await run_to_power_off(m)
    events = m.events.history

    # The firmware (CPU 0) read the kernel and the initrd, whole, to their load addresses.
    dma = {e.name: e for e in events if isinstance(e, FwCfgDma) and e.op == "read"}
    assert {"kernel_addr", "kernel_size", "kernel_entry", "initrd_addr", "initrd_size",
            "file_dir", "kernel_data", "initrd_data", "etc/fdt"} <= set(dma)
    assert not any(isinstance(e, FwCfgDma) and (e.error or e.cpu != 0) for e in events)
    kernel, ramdisk = m.images.kernel, m.images.initrd
    assert kernel is not None and ramdisk is not None
    assert (dma["kernel_data"].address, dma["kernel_data"].length) == (kernel.load_addr,
                                                                       kernel.size)
    assert (dma["initrd_data"].address, dma["initrd_data"].length) == (ramdisk.addr,
                                                                       initrd.stat().st_size)
    assert (dma["etc/fdt"].address, dma["etc/fdt"].length) == (m.images.dtb_addr,
                                                           len(m.images.fdt))

    # One CpuReleased per secondary, in order: the firmware's FW_CPU_RELEASE into its own
    # parking code in the boot ROM.  Linux's release is a store to the spin table, which
    # wakes the parked CPU (CpuWoken by "store"), not a second CpuReleased.
    releases = [e for e in events if isinstance(e, CpuReleased)]
    assert [e.cpu for e in releases] == list(range(1, smp))
    assert all(e.by == "FW_CPU_RELEASE" and ROM_BASE <= e.entry < ROM_BASE + ROM_SIZE
               for e in releases)
    entry_word = {cpu: spin_entry_addr(m.ram_size, cpu) + SPIN_ENTRY_ADDR_LO
                  for cpu in range(1, smp)}
    parked_on = {e.cpu: e.address for e in events if isinstance(e, CpuParked)
                 and e.reason is ParkReason.WAIT_STORE and e.cpu in entry_word}
    assert parked_on == entry_word

    # Linux releases them after the firmware loaded it, one at a time, in order.
    loaded = max(i for i, e in enumerate(events)
                 if isinstance(e, FwCfgDma) and e.name in ("kernel_data", "initrd_data"))
    woken = [(i, e.cpu) for i, e in enumerate(events)
             if i > loaded and isinstance(e, CpuWoken) and e.by == "store" and e.cpu != 0]
    assert [cpu for _, cpu in woken] == list(range(1, smp))
    # (When each CpuReleased is emitted relative to CPU 0's DMA events depends on when the
    # secondary's side takes its release: the order of the two is not part of the contract.)

    # PowerOff is the last event, and there is one.
    assert [e for e in events if isinstance(e, PowerOff)] == [events[-1]]
    assert isinstance(events[-1], PowerOff)
    assert (events[-1].code, events[-1].reason) == (0, POWER_OFF)


async def test_direct_boot_runs_the_same_kernel_to_its_init(
        e500: Boot, vmlinux: Path, initrd: Path) -> None:
    """``--direct``: no firmware, no fw_cfg; the machine puts the kernel, initrd and device
    tree in RAM and holds the secondaries on the spin table, which Linux releases to its one
    secondary entry point with r3 = the CPU's index."""
    smp = 2
    m = await e500(kernel=vmlinux, initrd=initrd, append="console=hvc0", smp=smp,
                   direct=True)
    await m.console.expect("Run /init as init process", timeout=30, fail=TROUBLE)
    await m.console.expect(f"init: cpus={smp}\r\n", fail=TROUBLE)
    await type_into_init(m, "direct")
    await run_to_power_off(m)
    events = m.events.history
    assert not any(isinstance(e, FwCfgDma) for e in events)
    releases = [e for e in events if isinstance(e, CpuReleased)]
    assert [(e.cpu, e.by, e.r3) for e in releases] == [(1, "spin-table", 1)]


def test_the_cli_boots_linux_with_the_console_on_stdin_and_stdout(
        vmlinux: Path, initrd: Path) -> None:
    """What a user types: ``fwcfg-e500 -kernel vmlinux -initrd initrd.cpio -append ... -smp 2``
    with the console on the terminal; the exit status is the guest's power-off code."""
    cmd = [sys.executable, "-m", "machine", "-kernel", str(vmlinux), "-initrd", str(initrd),
           "-append", "console=hvc0", "-smp", "2", "--timeout", "60"]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        seen = []
        for line in proc.stdout:  # --timeout ends the machine (and stdout) if it hangs
            seen.append(line)
            if line.startswith("init: type a line:"):
                break
        out, err = proc.communicate("from the shell\n", timeout=60)
    out = "".join(seen) + out
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert "fwcfg-e500 init: hello from userspace\ninit: cpus=2\n" in out
    assert "init: echo: from the shell\ninit: powering off\n" in out
    assert err == ""


async def test_timeout_on_a_linux_waiting_for_input_says_where_every_cpu_is(
        vmlinux: Path, initrd: Path) -> None:
    """``--timeout`` (``run(timeout=)``) stops a Linux that cannot finish (its init waits for
    a line nobody types) and names every CPU and its PC: kernel addresses, the idle loop."""
    smp, timeout = 4, 8
    m = E500Machine(kernel=vmlinux, initrd=initrd, append="console=hvc0", smp=smp)
    box: list[RunResult] = []
    try:
        async with trio.open_nursery() as n:
            async def run() -> None:
                box.append(await m.run(timeout=timeout))

            n.start_soon(run)  # (on a loaded host it may not reach the prompt: it need not)
    finally:
        m.close()
    (result,) = box
    assert result.code == 124
    head, _, where = result.reason.partition(": ")
    assert head == f"timeout after {timeout} s"
    cpus = re.findall(r"cpu (\d+)(?: parked in [\w ]+?)? at pc (0x[0-9a-f]{8})", where)
    assert [int(cpu) for cpu, _ in cpus] == list(range(smp)), result.reason
    assert all(int(pc, 16) >= 0xC000_0000 for _, pc in cpus), result.reason  # in the kernel


def guts_as_qemu_has_it(tmp_path: Path, smp: int) -> Path:
    """The machine's own device tree with the GUTS compatible reduced to QEMU's alone
    ("fsl,mpc8544-guts"): Linux then syncs each secondary's timebase with its software contest
    (kernel/smp-tbsync.c, ~10^4 spin-wait hand-offs each), where QEMU 7.2 hangs."""
    from machine.boot.devicetree import TreeConfig, build_fdt

    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts"], capture_output=True, check=True,
                         input=build_fdt(TreeConfig(ram_size=256 << 20, n_cpus=smp))).stdout
    qemu = dts.replace(b'"fsl,mpc8544-guts\\0fsl,p2020-guts"', b'"fsl,mpc8544-guts"')
    assert qemu != dts, "the tree lists the freeze-selecting compatible"
    dtb = tmp_path / "qemu-guts.dtb"
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(dtb)], input=qemu,
                   capture_output=True, check=True)
    return dtb


async def test_linux_syncs_timebases_by_software_contest_at_smp_4_through_spin_waits(
        e500: Boot, vmlinux: Path, initrd: Path, tmp_path: Path) -> None:
    """With QEMU's GUTS compatible alone, every secondary's timebase sync is a software
    contest of spin-wait hand-offs: the machine parks each waiting CPU on the word it polls
    until the other CPU's store, so the contest ends in seconds and Linux reaches its init."""
    m = await e500(kernel=vmlinux, initrd=initrd, append="console=hvc0", smp=4,
                  dtb=guts_as_qemu_has_it(tmp_path, 4))
    await m.console.expect("smp: Brought up 1 node, 4 CPUs", timeout=120, fail=TROUBLE)
    stats = m.spins.statistics()
    assert stats["parks"] > 10_000 and stats["store"] > 0.99 * stats["parks"], stats
    await type_into_init(m, "after the contest")
    await run_to_power_off(m)
