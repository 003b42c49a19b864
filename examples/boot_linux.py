"""Example 5: boot Linux through the firmware and follow it from fw_cfg to power-off.

The project's Linux 6.1 build (``scripts/build-linux.sh``) and the project's init
(``guest-stubs/linux-init``, packed into a newc initramfs by ``machine.boot.initramfs``) boot
on the bundled firmware.  The script checks, from the machine's events and its console:

1. the firmware sends each secondary CPU, with FW_CPU_RELEASE, into its own parking code,
   which arms the CPU's spin-table entry and parks it there (one ``CpuReleased`` per
   secondary, before anything is loaded);
2. the firmware DMAs the kernel and the initramfs from fw_cfg (``kernel_data``,
   ``initrd_data``) to where the machine placed them, then enters Linux;
3. Linux releases each secondary with an ordinary store to its spin-table entry: the store
   wakes the parked CPU (``CpuWoken`` by ``store``), no CPU ever spun;
4. Linux runs ``/init``, which sees every CPU, reads the line typed here and powers off
   through the GPIO: the run ends with ``PowerOff``, exit code 0.

``record_events=True`` keeps every event from power-on, and each ``m.wait_for`` continues
from the previous match, so the waits below also pin the order.  The console's ``expect``
has its own cursor.

Run: ``python examples/boot_linux.py [SMP] [VMLINUX]``.  Without VMLINUX the script asks
``scripts/build-linux.sh`` for the kernel: the first time it builds it (about 6 minutes on
2 cores, cached in ``~/.cache/fwcfg-e500/``); later it only prints the cached path.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio

from machine.api import CpuReleased, CpuWoken, E500Machine, Event, FwCfgDma, PowerOff
from machine.boot.initramfs import default_initramfs

ROOT = Path(__file__).resolve().parent.parent


def project_kernel() -> Path:
    """The project's vmlinux: built (or found in the cache) by scripts/build-linux.sh, whose
    last line on stdout is its path (the build log goes to stderr)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-linux.sh")], check=True,
                         stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def dma_read_of(name: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, FwCfgDma) and e.name == name and e.op == "read"


async def boot(vmlinux: Path, initrd: Path, smp: int, line: str) -> int:
    async with E500Machine(kernel=vmlinux, initrd=initrd, append="console=hvc0", smp=smp,
                           record_events=True) as m:
        # 1. The firmware arms the spin table: one release per secondary, into the ROM.
        for cpu in range(1, smp):
            rel = await m.wait_for(lambda e, cpu=cpu: isinstance(e, CpuReleased)
                                   and e.cpu == cpu, timeout=30)
            assert isinstance(rel, CpuReleased) and rel.by == "FW_CPU_RELEASE"
            print(f"cpu {cpu}: released by {rel.by} to {rel.entry:#010x} "
                  "(the firmware's parking code)")

        # 2. ... then loads the kernel and the initramfs over fw_cfg DMA.
        kernel, ramdisk = m.images.kernel, m.images.initrd
        assert kernel is not None and ramdisk is not None
        for name, where in (("kernel_data", kernel.load_addr), ("initrd_data", ramdisk.addr)):
            ev = await m.wait_for(dma_read_of(name), timeout=30)
            assert isinstance(ev, FwCfgDma) and not ev.error and ev.address == where
            print(f"firmware: fw_cfg DMA of {name}: {ev.length} bytes to {ev.address:#x}")

        # 3. Linux releases the secondaries, one store each, in order.
        for cpu in range(1, smp):
            await m.wait_for(lambda e, cpu=cpu: isinstance(e, CpuWoken) and e.cpu == cpu
                             and e.by == "store", timeout=30)
            print(f"cpu {cpu}: woken by Linux's store to its spin-table entry")

        # 4. Userspace: the init sees every CPU and echoes what we type.
        await m.console.expect("Run /init", timeout=30, fail=["Kernel panic", "Oops"])
        await m.console.expect(f"init: cpus={smp}\r\n")
        await m.console.expect("init: type a line:")
        await m.console.send(line + "\n")
        await m.console.expect(f"init: echo: {line}\r\n")

        off: Event = await m.wait_for(PowerOff, timeout=30)
        result = await m.wait(timeout=10)
    assert isinstance(off, PowerOff)
    for text in m.console.text.splitlines():
        if text.startswith(("Run /init", "fwcfg-e500 init:", "init:", "reboot:")):
            print("console:", text.rstrip())
    print(f"-- {result.reason}, exit code {result.code} (at {off.time:.2f} s)")
    return result.code


async def main(smp: int = 4, kernel: str | None = None) -> int:
    vmlinux = Path(kernel) if kernel else project_kernel()
    with tempfile.TemporaryDirectory() as tmp:
        initrd = Path(tmp) / "initrd.cpio"
        initrd.write_bytes(default_initramfs())
        return await boot(vmlinux, initrd, smp, "hello from the example")


if __name__ == "__main__":
    smp = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    kernel = sys.argv[2] if len(sys.argv) > 2 else None
    sys.exit(trio.run(main, smp, kernel))
