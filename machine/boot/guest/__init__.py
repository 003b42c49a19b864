"""The guest images that ship with the machine, built from ``guest-stubs/``.

``firmware.elf`` is the default ``-bios``: the boot ROM that pulls the kernel, initrd and device
tree through fw_cfg and parks the secondary CPUs in the spin table.  ``demo.elf`` is the
``--demo`` kernel: an ePAPR client that prints what its device tree says and brings up every
CPU; it boots on QEMU's ``ppce500`` too.  Both are checked in so that running the machine needs
no cross compiler; ``tests/test_guest_stubs.py`` rebuilds them and checks they are identical.

:class:`FirmwareExit` is the firmware's side of the contract with the host: when the boot
cannot go on, the firmware prints the member's message as one console line and powers off with
its value, which becomes the CLI's exit status.  ``guest-stubs/gen_abi.py`` copies both into
the firmware's header, so this enum is the only place they are spelled.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Final

from machine.platform import MAX_CPUS, MIN_CPUS

GUEST_DIR: Final = Path(__file__).resolve().parent
FIRMWARE_ELF: Final = GUEST_DIR / "firmware.elf"
DEMO_ELF: Final = GUEST_DIR / "demo.elf"


class FirmwareExit(enum.IntEnum):
    """Why the firmware powered off instead of entering a kernel (FW_POWEROFF codes)."""

    NO_FWCFG = 1
    BAD_RAM_SIZE = 2
    BAD_CPU_COUNT = 3
    NO_KERNEL = 4
    NO_FDT = 5
    DOES_NOT_FIT = 6
    DMA_ERROR = 7
    CPU_RELEASE = 8

    @property
    def message(self) -> str:
        """The console line the firmware prints (without the newline)."""
        return _MESSAGES[self]


_MESSAGES: Final = {
    FirmwareExit.NO_FWCFG: 'firmware: no fw_cfg device (selector 0 does not read "QEMU")',
    FirmwareExit.BAD_RAM_SIZE: "firmware: fw_cfg RAM_SIZE is not a usable RAM size",
    FirmwareExit.BAD_CPU_COUNT: (
        f"firmware: fw_cfg NB_CPUS is not between {MIN_CPUS} and {MAX_CPUS}"
    ),
    FirmwareExit.NO_KERNEL: "firmware: no kernel (fw_cfg KERNEL_SIZE is 0)",
    FirmwareExit.NO_FDT: 'firmware: no device tree (no "etc/fdt" in the fw_cfg file directory)',
    FirmwareExit.DOES_NOT_FIT: (
        "firmware: kernel, initrd and device tree do not fit below the spin table"
    ),
    FirmwareExit.DMA_ERROR: "firmware: fw_cfg DMA transfer failed (ERROR bit set)",
    FirmwareExit.CPU_RELEASE: "firmware: FW_CPU_RELEASE of a secondary CPU failed",
}

__all__ = ["DEMO_ELF", "FIRMWARE_ELF", "GUEST_DIR", "FirmwareExit"]
