"""The physical address map: named regions, checked when added, frozen, then decoded.

Modelled on amaranth-soc's ``MemoryMap``: the map is data.  Adding a region checks its alignment,
its bounds, overlap with every other region and the uniqueness of its name, each with an error
that names the bad value; after :meth:`AddressMap.freeze` the map cannot change, so everything
that decodes addresses (the qtest port, the vCPU MMIO hooks) agrees for the machine's lifetime.
Decoding is a bisect over the sorted region starts.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from fwcfg import Event, GuestMemory, GuestMemoryError
from machine import platform
from machine.memory import GuestRAM

T = TypeVar("T")

#: e500 physical addresses are 36 bits wide.
PHYS_ADDR_BITS = 36


class AddressMapError(ValueError):
    """A region that cannot be added (a programming or configuration mistake in the machine)."""


@dataclass(frozen=True, slots=True)
class Region(Generic[T]):
    """``[base, base + size)`` of the physical address space, served by ``target``."""

    name: str
    base: int
    size: int
    target: T
    kind: str

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, addr: int, size: int = 1) -> bool:
        return self.base <= addr and addr + size <= self.end


class AddressMap(Generic[T]):
    """A set of non-overlapping regions, frozen before use."""

    def __init__(self, addr_bits: int = PHYS_ADDR_BITS) -> None:
        self.addr_bits = addr_bits
        self._regions: list[Region[T]] = []
        self._starts: list[int] = []
        self._frozen = False

    def add(
        self, name: str, base: int, size: int, target: T, *, kind: str, align: int = 1
    ) -> Region[T]:
        """Add a region; ``align`` (a power of two) is the alignment ``base`` must have."""
        if self._frozen:
            raise AddressMapError(f"cannot add region {name!r}: the address map is frozen")
        if align <= 0 or align & (align - 1):
            raise AddressMapError(f"alignment {align:#x} of region {name!r} is not a power of 2")
        if any(r.name == name for r in self._regions):
            raise AddressMapError(f"a region named {name!r} already exists")
        if size <= 0:
            raise AddressMapError(f"region {name!r} has size {size:#x}; it must be positive")
        if base % align:
            raise AddressMapError(f"region {name!r} base {base:#x} is not {align:#x}-aligned")
        if base < 0 or base + size > 1 << self.addr_bits:
            raise AddressMapError(
                f"region {name!r} [{base:#x}, {base + size:#x}) is outside the"
                f" {self.addr_bits}-bit physical address space"
            )
        for other in self._regions:
            if base < other.end and other.base < base + size:
                raise AddressMapError(
                    f"region {name!r} [{base:#x}, {base + size:#x}) overlaps {other.name!r}"
                    f" [{other.base:#x}, {other.end:#x})"
                )
        region = Region(name, base, size, target, kind)
        index = bisect.bisect(self._starts, base)
        self._regions.insert(index, region)
        self._starts.insert(index, base)
        return region

    def freeze(self) -> AddressMap[T]:
        self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def regions(self) -> tuple[Region[T], ...]:
        return tuple(self._regions)

    def region(self, name: str) -> Region[T]:
        for r in self._regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def decode(self, addr: int) -> tuple[Region[T], int] | None:
        """The region holding ``addr`` and the offset inside it, or None for a hole."""
        index = bisect.bisect_right(self._starts, addr) - 1
        if index < 0:
            return None
        region = self._regions[index]
        if addr >= region.end:
            return None
        return region, addr - region.base


#: Region kinds: RAM and ROM hold bytes (a GuestMemory), MMIO is a register window
#: (an :class:`MmioTarget`, e.g. fw_cfg's ``FrontEnd`` or a :class:`CcsrWindow`).
RAM, ROM, MMIO = "ram", "rom", "mmio"


class MmioTarget(Protocol):
    """A register window as a bus access sees it: offsets relative to the region's base,
    ``size`` bytes wide.  Rejected shapes read 0 and write nothing; ``write`` returns the
    device's events (fw_cfg's ``Selected``/``DmaDone``; none for the platform devices)."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> Sequence[Event]: ...


class CcsrBlock(Protocol):
    """The CCSR block's host interface (:class:`machine.devices.ccsr.Ccsr`): ``cpu`` is the
    accessing CPU, None for the host (qtest)."""

    def read(self, offset: int, size: int, cpu: int | None) -> int: ...

    def write(self, offset: int, size: int, value: int, cpu: int | None) -> None: ...


class CcsrWindow:
    """The CCSR block as an :class:`MmioTarget` for host accesses (no accessing CPU: the
    MPIC's current-CPU registers then read as QEMU's do without a CPU)."""

    def __init__(self, block: CcsrBlock) -> None:
        self.block = block

    def read(self, offset: int, size: int) -> int:
        return self.block.read(offset, size, None)

    def write(self, offset: int, size: int, value: int) -> Sequence[Event]:
        self.block.write(offset, size, value, None)
        return ()


class RomImage:
    """The boot ROM as a :class:`fwcfg.GuestMemory` at ``base``: reads see the image, and
    writes raise (the bus never sends any: stores to ROM are ignored, PLATFORM.md)."""

    def __init__(self, image: bytes | bytearray | memoryview, base: int) -> None:
        self.base = base
        self._image = memoryview(image).toreadonly()

    def read(self, addr: int, size: int) -> bytes:
        off = addr - self.base
        if size < 0 or off < 0 or off + size > len(self._image):
            raise GuestMemoryError(addr, size)
        return bytes(self._image[off : off + size])

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        raise GuestMemoryError(addr, len(data))


def e500_address_map(
    ram: GuestRAM,
    fw_cfg: MmioTarget,
    rom: GuestMemory | None = None,
    ccsr: MmioTarget | None = None,
) -> AddressMap[object]:
    """The e500 physical map of PLATFORM.md: RAM at 0, the CCSR block (the platform devices),
    fw_cfg MMIO, the boot ROM at the top."""
    amap: AddressMap[object] = AddressMap()
    amap.add("ram", platform.RAM_BASE, ram.size, ram, kind=RAM, align=platform.RAM_ALIGN)
    if ccsr is not None:
        amap.add("ccsr", platform.CCSR_BASE, platform.CCSR_SIZE, ccsr, kind=MMIO,
                 align=platform.CCSR_SIZE)
    amap.add("fw_cfg", platform.FWCFG_BASE, platform.FWCFG_SIZE, fw_cfg, kind=MMIO, align=8)
    if rom is not None:
        amap.add(
            "rom", platform.ROM_BASE, platform.ROM_SIZE, rom, kind=ROM, align=platform.PAGE_SIZE
        )
    return amap.freeze()
