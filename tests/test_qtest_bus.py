"""The physical address map: the checks made when a region is added, and decoding."""

from __future__ import annotations

import pytest

from fwcfg import FwCfg, GuestMemoryError, MmioWide
from machine import platform
from machine.bus import (
    MMIO,
    RAM,
    ROM,
    AddressMap,
    AddressMapError,
    CcsrWindow,
    RomImage,
    e500_address_map,
)
from machine.memory import GuestRAM


def test_the_e500_map_follows_platform_md() -> None:
    ram = GuestRAM(64 * platform.MiB)
    mmio = MmioWide(FwCfg(ram))
    amap = e500_address_map(ram, mmio, rom=ram)
    assert [(r.name, r.base, r.size, r.kind) for r in amap.regions] == [
        ("ram", 0, 64 * platform.MiB, RAM),
        ("fw_cfg", platform.FWCFG_BASE, platform.FWCFG_SIZE, MMIO),
        ("rom", platform.ROM_BASE, platform.ROM_SIZE, ROM),
    ]
    assert amap.frozen
    region, offset = amap.decode(platform.FWCFG_BASE + 0x10) or (None, 0)
    assert region is not None and region.target is mmio and offset == 0x10
    assert amap.decode(platform.FWCFG_BASE + platform.FWCFG_SIZE) is None
    assert amap.decode(64 * platform.MiB) is None
    assert amap.decode(platform.CCSR_BASE) is None  # no CCSR block given: a hole
    assert amap.decode(0xFFFF_FFFF)[1] == platform.ROM_SIZE - 1  # type: ignore[index]
    ram.close()


class _Block:
    """A CCSR stand-in that records what reaches it."""

    def __init__(self) -> None:
        self.log: list[tuple[object, ...]] = []

    def read(self, offset: int, size: int, cpu: int | None) -> int:
        self.log.append(("read", offset, size, cpu))
        return 0x1234

    def write(self, offset: int, size: int, value: int, cpu: int | None) -> None:
        self.log.append(("write", offset, size, value, cpu))


def test_the_ccsr_block_is_a_window_of_host_accesses() -> None:
    ram = GuestRAM(64 * platform.MiB)
    block = _Block()
    window = CcsrWindow(block)
    amap = e500_address_map(ram, MmioWide(FwCfg(ram)), ccsr=window)
    assert [(r.name, r.base, r.size) for r in amap.regions][1] == (
        "ccsr", platform.CCSR_BASE, platform.CCSR_SIZE)
    region, offset = amap.decode(platform.CCSR_BASE + 0x4_1120) or (None, 0)
    assert region is not None and region.target is window and offset == 0x4_1120
    assert window.read(0x4_1120, 4) == 0x1234
    assert window.write(0x4500, 1, 0x41) == ()
    assert block.log == [("read", 0x4_1120, 4, None), ("write", 0x4500, 1, 0x41, None)]
    assert amap.decode(platform.CCSR_BASE + platform.CCSR_SIZE) is None
    ram.close()


def test_the_rom_image_reads_at_its_base_and_refuses_writes() -> None:
    rom = RomImage(bytes(range(16)), base=0xFFF0_0000)
    assert rom.read(0xFFF0_0004, 4) == bytes([4, 5, 6, 7])
    for addr, size in ((0xFFF0_000E, 4), (0xFFEF_FFFF, 1)):
        with pytest.raises(GuestMemoryError):
            rom.read(addr, size)
    with pytest.raises(GuestMemoryError):
        rom.write(0xFFF0_0000, b"x")


@pytest.mark.parametrize(
    ("name", "base", "size", "align", "message"),
    [
        ("b", 0x1000, 0x100, 1, r"region 'b' \[0x1000, 0x1100\) overlaps 'a' \[0x1000, 0x2000\)"),
        ("b", 0x1FFF, 2, 1, r"overlaps 'a'"),
        ("a", 0x8000, 0x100, 1, r"a region named 'a' already exists"),
        ("b", 0x8001, 0x100, 0x1000, r"region 'b' base 0x8001 is not 0x1000-aligned"),
        ("b", 0x8000, 0, 1, r"region 'b' has size 0x0; it must be positive"),
        ("b", 0xF_FFFF_FF00, 0x200, 1, r"outside the 36-bit physical address space"),
        ("b", -0x100, 0x100, 1, r"outside the 36-bit physical address space"),
        ("b", 0x8000, 0x100, 3, r"alignment 0x3 of region 'b' is not a power of 2"),
    ],
)
def test_bad_regions_are_refused_by_name(
    name: str, base: int, size: int, align: int, message: str
) -> None:
    amap: AddressMap[str] = AddressMap()
    amap.add("a", 0x1000, 0x1000, "target-a", kind=RAM)
    with pytest.raises(AddressMapError, match=message):
        amap.add(name, base, size, "target-b", kind=MMIO, align=align)


def test_a_frozen_map_cannot_grow_and_decodes_by_bisection() -> None:
    amap: AddressMap[str] = AddressMap()
    for i in range(100):
        amap.add(f"r{i}", i * 0x2000, 0x1000, f"t{i}", kind=MMIO)
    amap.freeze()
    with pytest.raises(AddressMapError, match=r"cannot add region 'late': the address map is"):
        amap.add("late", 0x100_0000, 0x1000, "x", kind=RAM)
    assert amap.decode(0x6_2FFF) == (amap.region("r49"), 0xFFF)
    assert amap.decode(0x6_3000) is None
    assert amap.decode(-1) is None
