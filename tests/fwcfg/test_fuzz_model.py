"""A reference model of the fw_cfg registers, and a harness that checks the device against it.

The property tests (``test_fuzz_state.py``), the atheris target (``fuzz/fwcfg_target.py``) and
the bench (``bench/bench_fuzz.py``) all drive a :class:`Harness`: every register access goes to
the real device through a real front end *and* to :class:`Model`, and :meth:`Harness.check`
then compares everything a guest or host could observe — the selected key and offset, every
byte of guest RAM, the writable items, the counters — and that nothing landed outside RAM.

The model is written from ``docs/specs/fw_cfg.rst`` and PLATFORM.md, byte by byte, not from the
device's code: a READ delivers ``item[offset:]`` then zeros, lands the part of the destination
that is inside RAM and reports ERROR for the rest; a WRITE must fit in the rest of a writable
item with its source wholly in RAM; every transfer advances the offset over the item bytes it
covered even when it fails; the status word is stored last, big-endian, when it is in RAM.

The memory the device gets is a real :class:`~fwcfg.BytearrayMemory` or
:class:`~machine.memory.GuestRAM` wrapped in :class:`GuardedMemory`: a write the real memory
accepted although part of it lies outside RAM lands in a guard band on either side, and
:meth:`Harness.check` fails when a guard band is no longer pristine.

This file also holds directed tests of the DMA edges, so the model's own reading of the spec is
pinned by hand-checked cases.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

from fwcfg import (
    DMA_SIGNATURE,
    BytearrayMemory,
    DmaTransfer,
    FileDir,
    FwCfg,
    GuestMemory,
    IoPort,
    Key,
    MmioWide,
    PpcKey,
    Selected,
)
from machine.memory import GuestRAM

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
GUARD = 4096
GUARD_BYTE = 0xA5

ERROR, READ, SKIP, SELECT, WRITE = 0x01, 0x02, 0x04, 0x08, 0x10
INVALID = 0xFFFF
FILE_FIRST = 0x20
FILE_SLOTS = 0x10

MemoryKind = Literal["bytearray", "guestram"]
Layout = Literal["mmio", "ioport"]


class GuardedMemory:
    """A real guest memory between two guard bands.

    The device reaches RAM only through this object.  Accesses go to ``inner`` (the memory
    implementation under test), which must refuse anything not wholly inside RAM; if it ever
    accepts a write that reaches outside, the bytes outside land in the guard bands (or, beyond
    them, in :attr:`stray`) where :meth:`intact` notices them.
    """

    def __init__(self, inner: GuestMemory, base: int, size: int) -> None:
        self.inner = inner
        self.base = base
        self.end = base + size
        self.below = bytearray([GUARD_BYTE]) * GUARD
        self.above = bytearray([GUARD_BYTE]) * GUARD
        self.stray: list[tuple[int, int]] = []

    def read(self, addr: int, size: int) -> bytes:
        return self.inner.read(addr, size)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(memoryview(data).cast("B"))
        self.inner.write(addr, raw)
        end = addr + len(raw)
        if self.base <= addr and end <= self.end:
            return
        for i, byte in enumerate(raw):  # only reached when the inner memory is broken
            a = addr + i
            if self.base - GUARD <= a < self.base:
                self.below[a - (self.base - GUARD)] = byte ^ 0xFF
            elif self.end <= a < self.end + GUARD:
                self.above[a - self.end] = byte ^ 0xFF
            elif not self.base <= a < self.end:
                self.stray.append((a, byte))

    def intact(self) -> bool:
        pristine = bytes([GUARD_BYTE]) * GUARD
        return self.below == pristine and self.above == pristine and not self.stray


@dataclass
class ModelItem:
    data: bytearray
    writable: bool = False


@dataclass
class Model:
    """What the spec says the device holds and does, over a model of guest RAM."""

    base: int
    size: int
    numbered: dict[int, ModelItem]
    files: list[tuple[str, ModelItem]]
    max_entry: int
    ram: bytearray = field(init=False)
    key: int = Key.SIGNATURE
    offset: int = 0
    latch: int = 0
    selects: int = 0
    data_reads: int = 0
    data_bytes: int = 0
    transfers: int = 0
    errors: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    def __post_init__(self) -> None:
        self.ram = bytearray(self.size)

    @property
    def end(self) -> int:
        return self.base + self.size

    # --- RAM --------------------------------------------------------------------------------

    def inside(self, addr: int, n: int) -> bool:
        return self.base <= addr and addr + n <= self.end

    def run_inside(self, addr: int, n: int) -> int:
        """How many of the ``n`` bytes from ``addr`` are inside RAM before the first outside."""
        if not self.base <= addr < self.end:
            return 0
        return min(n, self.end - addr)

    def ram_read(self, addr: int, n: int) -> bytes:
        return bytes(self.ram[addr - self.base : addr - self.base + n])

    def ram_write(self, addr: int, data: bytes) -> None:
        self.ram[addr - self.base : addr - self.base + len(data)] = data

    # --- items ------------------------------------------------------------------------------

    def item(self, key: int) -> ModelItem | None:
        if key == INVALID:
            return None
        index = key & 0x3FFF
        if key & Key.ARCH_LOCAL:
            return self.numbered.get(Key.ARCH_LOCAL | index)
        if index >= FILE_FIRST:
            i = index - FILE_FIRST
            return self.files[i][1] if i < len(self.files) else None
        return self.numbered.get(index)

    def select(self, key: int) -> None:
        key &= 0xFFFF
        self.key = key if (key & 0x3FFF) < self.max_entry else INVALID
        self.offset = 0
        self.selects += 1

    def reset(self) -> None:
        self.select(Key.SIGNATURE)

    def read_data(self, n: int) -> bytes:
        self.data_reads += 1
        item = self.item(self.key)
        if item is None:
            return bytes(n)
        got = bytes(item.data[self.offset : self.offset + n])
        self.offset += len(got)
        self.data_bytes += len(got)
        return got + bytes(n - len(got))

    # --- DMA --------------------------------------------------------------------------------

    def dma(self, desc: int) -> bool:
        """Run the descriptor at ``desc``; returns whether ERROR was reported."""
        self.latch = 0
        self.transfers += 1
        if not self.inside(desc, 16):
            self._status(desc, True)
            return True
        control, length, address = struct.unpack(">IIQ", self.ram_read(desc, 16))
        if control & SELECT:
            self.select(control >> 16)
        item = self.item(self.key)
        size = len(item.data) if item is not None else 0
        take = min(length, max(0, size - self.offset))
        error = False
        if control & READ:
            landed = self.run_inside(address, length)
            body = bytes(item.data[self.offset : self.offset + min(take, landed)]) if item else b""
            if landed:
                self.ram_write(address, body + bytes(landed - len(body)))
            error = landed < length
            self.offset += take
            self.bytes_read += take
        elif control & WRITE:
            if length:
                error = not (
                    item is not None and item.writable and take == length
                    and self.inside(address, length)
                )
                if not error:
                    assert item is not None
                    item.data[self.offset : self.offset + take] = self.ram_read(address, take)
                    self.bytes_written += take
                self.offset += take
        elif control & SKIP:
            self.offset += take
        self._status(desc, error)
        return error

    def _status(self, desc: int, error: bool) -> None:
        self.errors += error
        if self.inside(desc, 4):
            self.ram_write(desc, (ERROR if error else 0).to_bytes(4, "big"))

    # --- the front ends ---------------------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        if offset == 0 and size in (1, 2, 4, 8):
            return int.from_bytes(self.read_data(size), "big")
        rel = offset - 0x10
        if 0 <= rel < 8 and size in (1, 2, 4, 8) and rel % size == 0:
            return int.from_bytes(DMA_SIGNATURE[rel : rel + size], "big")
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> bool | None:
        """Returns the ERROR result when the access ran a transfer."""
        value &= (1 << (8 * size)) - 1
        if (offset, size) == (0x08, 2):
            self.select(value)
        elif (offset, size) == (0x10, 4):
            self.latch = value << 32
        elif (offset, size) == (0x14, 4):
            return self.dma(self.latch | value)
        elif (offset, size) == (0x10, 8):
            return self.dma(value)
        return None

    def io_read(self, offset: int, size: int) -> int:
        if offset in (0, 1) and size == 1:
            return self.read_data(1)[0]
        rel = offset - 0x4
        if 0 <= rel < 8 and size in (1, 2, 4, 8) and rel % size == 0:
            return int.from_bytes(DMA_SIGNATURE[rel : rel + size], "little")
        return 0

    def io_write(self, offset: int, size: int, value: int) -> bool | None:
        value &= (1 << (8 * size)) - 1
        swapped = int.from_bytes(value.to_bytes(size, "little"), "big")
        if (offset, size) == (0x0, 2):
            self.select(value)
        elif (offset, size) == (0x4, 4):
            self.latch = swapped << 32
        elif (offset, size) == (0x8, 4):
            return self.dma(self.latch | swapped)
        elif (offset, size) == (0x4, 8):
            return self.dma(swapped)
        return None


#: Items every harness starts with, besides the three the device creates itself.
NUMBERED: dict[int, tuple[bytes, bool]] = {
    Key.RAM_SIZE: ((0x4000).to_bytes(8, "little"), False),
    Key.NB_CPUS: ((4).to_bytes(2, "little"), False),
    Key.KERNEL_DATA: (bytes(range(256)) * 2 + b"tail", False),
    Key.CMDLINE_DATA: (b"console=hvc0\0", False),
    PpcKey.TBFREQ: ((400_000_000).to_bytes(4, "little"), False),
}
FILES: dict[str, tuple[bytes, bool]] = {
    "opt/rw": (bytes(range(0x40, 0x58)), True),
    "etc/fdt": (bytes(range(7, 107)), False),
    "opt/big": (bytes(i * 7 & 0xFF for i in range(3000)), False),
    "opt/a": (b"x", True),
}


def _directory(files: list[tuple[str, ModelItem]]) -> bytes:
    entries = [{"size": len(it.data), "select": FILE_FIRST + i, "name": n}
               for i, (n, it) in enumerate(files)]
    built = FileDir.build({"count": len(entries), "files": entries})
    return built + bytes(4 + 64 * FILE_SLOTS - len(built))


class Harness:
    """One device, one front end, one guarded memory, one model: step both, compare."""

    def __init__(self, kind: MemoryKind = "bytearray", layout: Layout = "mmio",
                 base: int = 0x10000, size: int = 0x4000) -> None:
        inner: GuestMemory = GuestRAM(size, base) if kind == "guestram" else \
            BytearrayMemory(size, base)
        self.memory = GuardedMemory(inner, base, size)
        self.device = FwCfg(self.memory, file_slots=FILE_SLOTS)
        self.front: MmioWide | IoPort = IoPort(self.device) if layout == "ioport" \
            else MmioWide(self.device)
        self.layout = layout
        numbered = {k: ModelItem(bytearray(d), w) for k, (d, w) in NUMBERED.items()}
        for key, (data, _) in NUMBERED.items():
            self.device.add_bytes(key, data)
        for name, (data, writable) in FILES.items():
            self.device.add_file(name, data, writable=writable)
        files = sorted(((n, ModelItem(bytearray(d), w)) for n, (d, w) in FILES.items()),
                       key=lambda f: f[0].encode())
        numbered[Key.SIGNATURE] = ModelItem(bytearray(b"QEMU"))
        numbered[Key.ID] = ModelItem(bytearray((3).to_bytes(4, "little")))
        numbered[Key.FILE_DIR] = ModelItem(bytearray(_directory(files)))
        self.model = Model(base=base, size=size, numbered=numbered, files=files,
                           max_entry=FILE_FIRST + FILE_SLOTS)
        self.steps = 0

    @property
    def base(self) -> int:
        return self.model.base

    @property
    def end(self) -> int:
        return self.model.end

    # --- what a guest does ------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        got = self.front.read(offset, size)
        want = (self.model.io_read if self.layout == "ioport" else self.model.mmio_read)(
            offset, size)
        assert got == want, f"read {size} at +{offset:#x}: device {got:#x}, spec {want:#x}"
        self.steps += 1
        return got

    def write(self, offset: int, size: int, value: int) -> None:
        events = self.front.write(offset, size, value)
        error = (self.model.io_write if self.layout == "ioport" else self.model.mmio_write)(
            offset, size, value)
        transfers = [e for e in events if isinstance(e, DmaTransfer)]
        for e in events:
            assert isinstance(e, Selected | DmaTransfer) and str(e)
        if error is None:
            assert not transfers, f"write {size} at +{offset:#x} ran a transfer: {transfers}"
        else:
            assert len(transfers) == 1 and transfers[0].error == error, (transfers, error)
        self.steps += 1

    def select(self, key: int) -> None:
        if self.layout == "ioport":
            self.write(0x0, 2, key)
        else:
            self.write(0x08, 2, key)

    def dma(self, desc: int, how: str = "wide") -> None:
        """Start the descriptor at ``desc`` the way ``how`` says: one 64-bit store, two
        halves, or only the low half (whatever the high latch holds then)."""
        desc &= U64
        hi, lo = desc >> 32, desc & U32
        reg = 0x04 if self.layout == "ioport" else 0x10

        def be(v: int, n: int) -> int:
            return int.from_bytes(v.to_bytes(n, "big"), "little") if self.layout == "ioport" \
                else v

        if how == "wide":
            self.write(reg, 8, be(desc, 8))
        elif how == "halves":
            self.write(reg, 4, be(hi, 4))
            self.write(reg + 4, 4, be(lo, 4))
        else:
            self.write(reg + 4, 4, be(lo, 4))

    def guest_store(self, addr: int, data: bytes) -> None:
        """A CPU store: lands where it is inside RAM (a CPU store outside RAM is a fault)."""
        n = self.model.run_inside(addr, len(data))
        if n:
            self.memory.inner.write(addr, data[:n])
            self.model.ram_write(addr, data[:n])

    def put_descriptor(self, desc: int, control: int, length: int, address: int) -> None:
        self.guest_store(desc, struct.pack(">IIQ", control & U32, length & U32, address & U64))

    def reset(self) -> None:
        self.device.reset()
        self.model.reset()

    # --- what must hold after every step ----------------------------------------------------

    def check(self) -> None:
        s, m = self.device.statistics(), self.model
        assert (s.selected_key, s.offset) == (m.key, m.offset), (
            f"device at key {s.selected_key:#x} offset {s.offset}, spec {m.key:#x} {m.offset}")
        counts = (s.selects, s.data_reads, s.data_bytes, s.dma_transfers, s.dma_errors,
                  s.dma_bytes_read, s.dma_bytes_written)
        want = (m.selects, m.data_reads, m.data_bytes, m.transfers, m.errors, m.bytes_read,
                m.bytes_written)
        assert counts == want, (counts, want)
        ram = self.memory.inner.read(m.base, m.size)
        if ram != m.ram:
            first = next(i for i in range(m.size) if ram[i] != m.ram[i])
            raise AssertionError(f"RAM differs from the spec first at {m.base + first:#x}")
        assert self.memory.intact(), "a device write landed outside guest RAM"
        for name, item in m.files:
            if item.writable:
                key = self.device.key_of(name)
                assert key is not None and self.device.contents(key) == item.data, name

    def close(self) -> None:
        self.device.close()


def edge_addresses(base: int, end: int) -> list[int]:
    """Guest-physical addresses where a DMA engine goes wrong if it is going to."""
    return [
        base, base + 1, base + 16, end - 32, end - 17, end - 16, end - 15, end - 12, end - 8,
        end - 5, end - 4, end - 3, end - 1, end, end + 1, end + 16, base - 1, base - 4,
        base - 15, base - 16, 0, 4, U32 - 15, U32, U32 + 1, U64 - 15, U64 - 3, U64 - 1, U64,
        1 << 63, 0xF000_0000, 0xFFF0_0000,
    ]


#: Descriptor lengths at every edge (the field is 32 bits).
EDGE_LENGTHS = [0, 1, 2, 3, 4, 15, 16, 17, 24, 25, 516, 3000, 3001, 0x3FFF, 0x4000, 0x4001,
                0xFFFF, 1 << 31, U32 - 1, U32]

#: Keys a SELECT tries: every kind of slot, the ends of the entry space, beyond it.
EDGE_KEYS = [0x00, 0x01, 0x02, 0x03, 0x05, 0x11, 0x15, 0x19, 0x1F, 0x20, 0x21, 0x22, 0x23,
             0x24, 0x2F, 0x30, 0x31, 0x3FFF, 0x4000, 0x4011, 0x4020, 0x8000, 0x8003, 0x8004,
             0x802F, 0x8030, 0xC003, 0xFFFE, 0xFFFF]

#: Control bits in every combination that matters (READ wins over WRITE over SKIP).
EDGE_OPS = [0, ERROR, READ, SKIP, WRITE, READ | WRITE, WRITE | SKIP, READ | SKIP,
            READ | WRITE | SKIP, ERROR | READ, 0xFFE0 | READ, 0xFFE0 | WRITE, 0xFFFF]


# --- directed edges: the model's reading of the spec, checked by hand ---------------------------

@pytest.fixture(params=[("bytearray", "mmio"), ("guestram", "mmio"), ("guestram", "ioport")],
                ids=["bytearray", "guestram", "ioport"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    kind, layout = request.param
    base = 0 if kind == "guestram" else 0x10000
    harness = Harness(kind, layout, base=base)
    yield harness
    harness.close()


def _key_of(h: Harness, name: str) -> int:
    key = h.device.key_of(name)
    assert key is not None
    return key


def test_read_into_the_last_bytes_of_ram_lands_whole(h: Harness) -> None:
    desc = h.base + 0x100
    h.put_descriptor(desc, (Key.KERNEL_DATA << 16) | SELECT | READ, 8, h.end - 8)
    h.dma(desc)
    h.check()
    assert h.memory.inner.read(h.end - 8, 8) == bytes(range(8))
    assert h.memory.inner.read(desc, 4) == bytes(4)


def test_read_straddling_the_end_lands_the_inside_part_and_reports_error(h: Harness) -> None:
    desc = h.base + 0x100
    h.put_descriptor(desc, (Key.KERNEL_DATA << 16) | SELECT | READ, 16, h.end - 5)
    h.dma(desc, "halves")
    h.check()
    assert h.memory.inner.read(h.end - 5, 5) == bytes(range(5))
    assert h.memory.inner.read(desc, 4) == ERROR.to_bytes(4, "big")
    assert h.device.statistics().offset == 16  # the offset covers the whole transfer


@pytest.mark.parametrize("k", range(1, 16))
def test_descriptor_straddling_the_end_is_an_error_stored_if_the_word_fits(
    h: Harness, k: int
) -> None:
    desc = h.end - k
    h.guest_store(desc, b"\x5a" * k)
    h.dma(desc)
    h.check()
    tail = h.memory.inner.read(desc, k)
    assert tail == (ERROR.to_bytes(4, "big") + b"\x5a" * (k - 4) if k >= 4 else b"\x5a" * k)


@pytest.mark.parametrize("address", [U64 - 15, U64 - 3, U64, U64 - 0x3FFF])
def test_destination_wrapping_at_2_64_writes_nothing(h: Harness, address: int) -> None:
    """A READ that would wrap past 2^64 lands nowhere, not at address 0 (RAM, when based at 0)."""
    desc = h.base + 0x200
    h.put_descriptor(desc, (Key.KERNEL_DATA << 16) | SELECT | READ, 0x4000 + 32, address)
    h.dma(desc)
    h.check()
    assert h.memory.inner.read(desc, 4) == ERROR.to_bytes(4, "big")


@pytest.mark.parametrize("desc", [U64 - 15, U64 - 3, U64, U64 - 7])
def test_descriptor_wrapping_at_2_64_is_an_error_and_touches_nothing(h: Harness, desc: int) -> None:
    h.dma(desc, "halves")
    h.check()
    assert h.device.statistics().dma_errors == 1


def test_length_zero_changes_nothing_but_the_status(h: Harness) -> None:
    desc = h.base + 0x100
    for op in (READ, WRITE, SKIP):
        h.guest_store(desc, b"\xff" * 4)
        h.put_descriptor(desc, (_key_of(h, "opt/rw") << 16) | SELECT | op, 0, h.base)
        h.dma(desc)
        h.check()
        assert h.memory.inner.read(desc, 4) == bytes(4)
        assert h.device.statistics().offset == 0


def test_length_2_32_minus_1_reads_the_item_then_zeros_until_ram_ends(h: Harness) -> None:
    desc = h.base + 0x100
    h.guest_store(h.base + 0x1000, b"\xee" * 0x100)
    h.put_descriptor(desc, (Key.CMDLINE_DATA << 16) | SELECT | READ, U32, h.base + 0x1000)
    h.dma(desc)
    h.check()
    assert h.memory.inner.read(h.base + 0x1000, 16) == b"console=hvc0\0\0\0\0"
    assert h.memory.inner.read(h.end - 4, 4) == bytes(4)
    assert h.memory.inner.read(desc, 4) == ERROR.to_bytes(4, "big")


def test_length_2_32_minus_1_write_and_skip(h: Harness) -> None:
    desc = h.base + 0x100
    rw = _key_of(h, "opt/rw")
    h.put_descriptor(desc, (rw << 16) | SELECT | WRITE, U32, h.base)
    h.dma(desc)
    h.check()  # too long for the item: ERROR, item unchanged, offset at its end
    assert h.device.statistics().offset == 24
    h.put_descriptor(desc, (rw << 16) | SELECT | SKIP, U32, 0)
    h.dma(desc)
    h.check()
    assert h.memory.inner.read(desc, 4) == bytes(4)


def test_write_from_the_last_bytes_of_ram_and_across_the_end(h: Harness) -> None:
    desc = h.base + 0x100
    rw = _key_of(h, "opt/rw")
    h.guest_store(h.end - 4, b"WXYZ")
    h.put_descriptor(desc, (rw << 16) | SELECT | WRITE, 4, h.end - 4)
    h.dma(desc)
    h.check()
    assert h.device.contents(rw)[:4] == b"WXYZ"
    h.put_descriptor(desc, (rw << 16) | SELECT | WRITE, 8, h.end - 4)
    h.dma(desc)
    h.check()  # the source straddles the end: ERROR and the item keeps its bytes
    assert h.device.contents(rw)[:4] == b"WXYZ"


def test_descriptor_inside_its_own_destination_ends_with_the_status(h: Harness) -> None:
    desc = h.base + 0x300
    h.put_descriptor(desc, (Key.KERNEL_DATA << 16) | SELECT | READ, 32, desc - 8)
    h.dma(desc)
    h.check()
    assert h.memory.inner.read(desc - 8, 8) == bytes(range(8))
    assert h.memory.inner.read(desc, 4) == bytes(4)
    assert h.memory.inner.read(desc + 4, 20) == bytes(range(12, 32))
