"""The loading half of the board: images, the device tree and the fw_cfg items.

Everything here runs once, when a machine is built, and raises :class:`fwcfg.ConfigError` for
bad host input.  Kept apart from :mod:`machine.board` (which is about running CPUs) so each
module holds one concern: what the guest is given vs. how the guest runs.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fwcfg import ConfigError, FwCfg, Item, Key, MmioWide, PpcKey, ViewItem
from machine.boot import devicetree, loader, user_dtb
from machine.memory import GuestRAM
from machine.platform import BUS_HZ, CLOCK_HZ, FDT_FILE_NAME, TIMEBASE_HZ

if TYPE_CHECKING:
    from machine.config import MachineConfig


@dataclass(frozen=True)
class BootImages:
    """What the machine hands the guest, loaded and placed."""

    rom: bytes
    firmware_entry: int
    kernel: loader.KernelImage | None
    initrd: loader.InitrdImage | None
    fdt: bytes
    dtb_addr: int
    cmdline: str


def default_firmware() -> Path:
    from machine.boot.guest import FIRMWARE_ELF

    return Path(FIRMWARE_ELF)


def load_images(config: MachineConfig) -> BootImages:
    bios = config.bios if config.bios is not None else default_firmware()
    firmware = loader.load_firmware(bios)
    kernel = loader.load_kernel(config.kernel, config.ram_size) if config.kernel else None
    if config.initrd is not None and kernel is None:
        raise ConfigError("-initrd needs -kernel: the initrd is placed after the kernel")
    kernel_end = kernel.end if kernel is not None else 0
    initrd = (
        loader.load_initrd(config.initrd, config.ram_size, kernel_end)
        if config.initrd is not None
        else None
    )
    tree = devicetree.TreeConfig(
        ram_size=config.ram_size,
        n_cpus=config.smp,
        bootargs=config.append,
        initrd=(initrd.addr, initrd.end) if initrd is not None else None,
    )
    if config.dtb is not None:
        fdt = user_dtb.load_user_dtb(Path(config.dtb), tree)
    else:
        fdt = devicetree.build_fdt(tree)
    layout = loader.plan_layout(kernel, initrd, len(fdt), config.ram_size)
    dtb_addr = layout.dtb.start
    return BootImages(
        rom=firmware.rom,
        firmware_entry=firmware.entry,
        kernel=kernel,
        initrd=initrd,
        fdt=fdt,
        dtb_addr=dtb_addr,
        cmdline=config.append,
    )


def build_fwcfg(
    config: MachineConfig, images: BootImages, ram: GuestRAM
) -> tuple[FwCfg, MmioWide, list[str]]:
    """The fw_cfg device with every item of PLATFORM.md, its MMIO front end, and the QEMU-style
    warnings about the user's -fw_cfg files (e.g. a name outside "opt/")."""
    dev = FwCfg(ram, dma_enabled=config.fwcfg_dma)
    uuid = uuidlib.UUID(config.uuid).bytes if config.uuid else bytes(16)
    dev.add_bytes(Key.UUID, uuid)
    dev.add_u64(Key.RAM_SIZE, config.ram_size)
    dev.add_u16(Key.NB_CPUS, config.smp)
    dev.add_u16(Key.MAX_CPUS, config.smp)
    dev.add_u16(Key.NOGRAPHIC, 1)
    k = images.kernel
    dev.add_u32(Key.KERNEL_ADDR, k.load_addr if k else 0)
    dev.add_u32(Key.KERNEL_SIZE, k.size if k else 0)
    dev.add_u32(Key.KERNEL_ENTRY, k.entry if k else 0)
    # Served from the mapped kernel file piece by piece (loader.FlatImage): no host copy.
    dev.add_item(Key.KERNEL_DATA, _as_item(k.data) if k else ViewItem(b""))
    i = images.initrd
    dev.add_u32(Key.INITRD_ADDR, i.addr if i else 0)
    dev.add_u32(Key.INITRD_SIZE, i.size if i else 0)
    # The initrd stays a view of the mapped file: adding it copies nothing, and the guest's
    # DMA copies it once, straight into RAM.
    dev.add_item(Key.INITRD_DATA, ViewItem(i.data if i else b""))
    cmdline = images.cmdline.encode() + b"\0"
    dev.add_u32(Key.CMDLINE_SIZE, len(cmdline))
    dev.add_bytes(Key.CMDLINE_DATA, cmdline)
    dev.add_u32(PpcKey.TBFREQ, TIMEBASE_HZ)
    dev.add_u32(PpcKey.CLOCKFREQ, CLOCK_HZ)
    dev.add_u32(PpcKey.BUSFREQ, BUS_HZ)
    dev.add_u32(PpcKey.IS_KVM, 0)
    dev.add_file(FDT_FILE_NAME, images.fdt)
    from fwcfg import apply_fw_cfg_options

    warnings = apply_fw_cfg_options(dev, list(config.fw_cfg))
    return dev, MmioWide(dev), warnings


def load_direct(images: BootImages, ram: GuestRAM) -> None:
    """Direct boot (``--direct``): put kernel, initrd and device tree in RAM as QEMU does."""
    k = images.kernel
    assert k is not None
    if isinstance(k.data, loader.FlatImage):
        k.data.write_to(ram, k.load_addr)
    else:
        ram.write(k.load_addr, k.data)
    if images.initrd is not None:
        ram.write(images.initrd.addr, images.initrd.data)
    ram.write(images.dtb_addr, images.fdt)


def _as_item(data: loader.FlatImage | bytes) -> Item:
    return data if isinstance(data, loader.FlatImage) else ViewItem(data)
