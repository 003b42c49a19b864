"""The physical address map: the checks made when a region is added, and decoding."""

from __future__ import annotations

import pytest

from fwcfg import FwCfg, MmioWide
from machine import platform
from machine.bus import MMIO, RAM, ROM, AddressMap, AddressMapError, e500_address_map
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
    assert amap.decode(0xFFFF_FFFF)[1] == platform.ROM_SIZE - 1  # type: ignore[index]
    ram.close()


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
