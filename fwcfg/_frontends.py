"""Register front ends: which bus access reaches which part of the device.

A front end is a table of registers, each with the access shapes it accepts, like QEMU's
``MemoryRegionOps`` with a ``valid.accepts`` predicate: the handlers never recheck a shape.  An
access that no register accepts is absorbed as QEMU absorbs a rejected access from a guest —
reads return 0 and writes do nothing — and never raises.

Values are integers as the guest's register sees them:

* :class:`MmioWide` (PLATFORM.md, QEMU's Arm ``virt`` layout) is for a big-endian guest: the
  bytes of a data read, in memory order, composed big-endian; the selector and the DMA address
  are big-endian registers, so their values are plain numbers.
* :class:`IoPort` (QEMU's x86 layout at port 0x510) is what ``in``/``out`` see on a little-endian
  CPU: the selector is little-endian, while the DMA register stays big-endian, so a guest writes
  the DMA address halves byte-swapped, as QEMU's option ROM does with ``cpu_to_be32``.

Accesses must be naturally aligned, as QEMU requires of these regions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from fwcfg._device import FwCfg
from fwcfg._events import Event
from fwcfg._layouts import DMA_SIGNATURE

ByteOrder = Literal["big", "little"]
Reader = Callable[[int, int], int]
Writer = Callable[[int, int, int], tuple[Event, ...]]

_SIZES: Final = (1, 2, 4, 8)


def _aligned_shapes(span: int, sizes: Iterable[int] = _SIZES) -> frozenset[tuple[int, int]]:
    """Every naturally aligned (offset, size) that fits in ``span`` bytes."""
    return frozenset((o, s) for s in sizes for o in range(0, span - s + 1, s))


@dataclass(frozen=True, slots=True)
class Register:
    """One register window: where it sits, what it accepts, who handles it."""

    name: str
    offset: int
    span: int
    read: Reader | None = None
    reads: frozenset[tuple[int, int]] = frozenset()
    write: Writer | None = None
    writes: frozenset[tuple[int, int]] = frozenset()


class FrontEnd:
    """An offset -> register table over one :class:`FwCfg`."""

    #: Total size of the register window.
    size: int = 0

    def __init__(self, device: FwCfg, registers: Iterable[Register]) -> None:
        self.device = device
        self.registers = tuple(registers)
        self._by_byte: dict[int, Register] = {}
        for reg in self.registers:
            for off in range(reg.offset, reg.offset + reg.span):
                assert off not in self._by_byte, f"{reg.name} overlaps at {off:#x}"
                self._by_byte[off] = reg

    def _find(self, offset: int, size: int) -> tuple[Register, int] | None:
        reg = self._by_byte.get(offset)
        return None if reg is None else (reg, offset - reg.offset)

    def read(self, offset: int, size: int) -> int:
        """A guest load of ``size`` bytes at ``offset``; rejected shapes read 0."""
        found = self._find(offset, size)
        if found is None:
            return 0
        reg, rel = found
        if reg.read is None or (rel, size) not in reg.reads:
            return 0
        return reg.read(rel, size)

    def write(self, offset: int, size: int, value: int) -> tuple[Event, ...]:
        """A guest store of ``size`` bytes at ``offset``; rejected shapes do nothing."""
        found = self._find(offset, size)
        if found is None:
            return ()
        reg, rel = found
        if reg.write is None or (rel, size) not in reg.writes:
            return ()
        return reg.write(rel, size, value & ((1 << (8 * size)) - 1))

    # Handlers shared by both layouts.

    def _ignore(self, rel: int, size: int, value: int) -> tuple[Event, ...]:
        self.device.write_data(size, value)
        return ()

    def _signature(self, order: ByteOrder) -> Reader:
        def read(rel: int, size: int) -> int:
            return int.from_bytes(DMA_SIGNATURE[rel : rel + size], order)

        return read

    def _dma_register(self, offset: int, order: ByteOrder) -> Register:
        """The 8-byte DMA address register: reads give the signature in ``order``; the whole
        register or its low half written starts the transfer."""
        return Register(
            "dma", offset, 8,
            read=self._signature(order), reads=_aligned_shapes(8),
            write=self._dma, writes=frozenset({(0, 4), (4, 4), (0, 8)}),
        )

    def _dma_address(self, value: int, size: int) -> int:
        """The written value as the big-endian address part it stands for (layout-specific)."""
        return value

    def _dma(self, rel: int, size: int, value: int) -> tuple[Event, ...]:
        value = self._dma_address(value, size)
        if size == 8:
            return (self.device.dma(value),)
        if rel == 0:
            self.device.write_dma_high(value)
            return ()
        return (self.device.write_dma_low(value),)


def _swap(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big")


class MmioWide(FrontEnd):
    """The wide MMIO layout of PLATFORM.md: data +0 (1..8 bytes), selector +8, DMA +0x10."""

    DATA: Final = 0x00
    SELECTOR: Final = 0x08
    DMA: Final = 0x10
    size = 0x18

    def __init__(self, device: FwCfg) -> None:
        regs = [
            Register(
                "data", self.DATA, 8,
                read=self._read_data, reads=frozenset((0, s) for s in _SIZES),
                write=self._ignore, writes=frozenset((0, s) for s in _SIZES),
            ),
            Register("selector", self.SELECTOR, 2, write=self._select, writes=frozenset({(0, 2)})),
        ]
        if device.dma_enabled:
            regs.append(self._dma_register(self.DMA, "big"))
        super().__init__(device, regs)

    def _read_data(self, rel: int, size: int) -> int:
        return int.from_bytes(self.device.read_data(size), "big")

    def _select(self, rel: int, size: int, value: int) -> tuple[Event, ...]:
        return (self.device.select(value),)



class IoPort(FrontEnd):
    """QEMU's x86 I/O-port layout, offsets relative to :attr:`BASE` (port 0x510).

    0x510 is a two-byte "combined" register: a 16-bit ``out`` selects, an 8-bit ``in`` at 0x510
    or 0x511 reads data, an 8-bit ``out`` is an (ignored) data write.  0x514/0x518 are the high
    and low halves of the big-endian DMA address register.
    """

    BASE: Final = 0x510
    SELECTOR: Final = 0x0
    DATA: Final = 0x1
    DMA: Final = 0x4
    size = 0xC

    def __init__(self, device: FwCfg) -> None:
        regs = [
            Register(
                "control", self.SELECTOR, 2,
                read=self._read_data, reads=frozenset({(0, 1), (1, 1)}),
                write=self._combined, writes=frozenset({(0, 1), (1, 1), (0, 2)}),
            ),
        ]
        if device.dma_enabled:
            regs.append(self._dma_register(self.DMA, "little"))
        super().__init__(device, regs)

    def _read_data(self, rel: int, size: int) -> int:
        return self.device.read_data(1)[0]

    def _combined(self, rel: int, size: int, value: int) -> tuple[Event, ...]:
        if size == 2:
            return (self.device.select(value),)
        return self._ignore(rel, size, value)

    def _dma_address(self, value: int, size: int) -> int:
        # An x86 `out` is little-endian; the option ROM writes cpu_to_be32(address).
        return _swap(value, size)
