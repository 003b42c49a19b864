"""What the loaders produce: guest-physical regions, flat images (fw_cfg items that are
sparse views of a file), the kernel, firmware and initrd images, and the boot layout."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from fwcfg import GuestMemory, Item

# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A named guest-physical range ``[start, start + size)``."""

    name: str
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    def overlaps(self, other: Region) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.name} at {self.start:#x}-{self.end:#x}"


class FlatImage(Item):
    """A kernel laid out flat without building the flat bytes.

    ``pieces`` are ``(offset, view)`` pairs, views of the mapped file in offset order; every
    byte between and after them (ELF gaps, bss) is zero.  It is a read-only fw_cfg item whose
    :meth:`span` stops at piece edges, so the guest's DMA copies each piece straight from the
    page cache into guest RAM, and direct boot writes the pieces: a 64 MiB kernel is never
    copied on the host.  ``bytes(image)`` builds the flat bytes for whoever really wants them,
    and an image compares equal to its flat bytes.
    """

    def __init__(self, size: int, pieces: list[tuple[int, memoryview]]) -> None:
        self.size = size
        self._pieces = [(off, memoryview(v).cast("B")) for off, v in pieces if len(v)]
        self._starts = [off for off, _ in self._pieces]
        assert all(a + len(v) <= b for (a, v), b in
                   zip(self._pieces, [*self._starts[1:], size], strict=True))

    @property
    def pieces(self) -> list[tuple[int, memoryview]]:
        return list(self._pieces)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        flat = bytearray(self.size)
        for off, v in self._pieces:
            flat[off : off + len(v)] = v
        return bytes(flat)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FlatImage | bytes | bytearray | memoryview):
            return bytes(self) == bytes(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> bytes: ...

    def __getitem__(self, key: int | slice) -> int | bytes:
        """Bytes of the flat image, like indexing ``bytes(image)`` (without building it)."""
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            if step != 1:
                return bytes(self)[key]
            return bytes(self.view(start, max(0, stop - start)))
        index = key + self.size if key < 0 else key
        if not 0 <= index < self.size:
            raise IndexError("flat image index out of range")
        return self.view(index, 1)[0]

    def _locate(self, offset: int) -> tuple[int, int]:
        """(index of the piece at or before ``offset``, or -1; where the run there ends)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0:
            start, v = self._pieces[i]
            if offset < start + len(v):
                return i, start + len(v)
        nxt = self._starts[i + 1] if i + 1 < len(self._starts) else self.size
        return i, nxt

    def span(self, offset: int) -> int:
        return self._locate(offset)[1] - offset

    def release(self) -> None:
        """Let go of the file mapping (the image is unusable afterwards)."""
        for _, v in self._pieces:
            v.release()
        self._pieces = []

    def view(self, offset: int, length: int) -> bytes | bytearray | memoryview:
        i, run_end = self._locate(offset)
        if offset + length <= run_end:
            if i >= 0 and offset < self._starts[i] + len(self._pieces[i][1]):
                start, v = self._pieces[i]
                return v[offset - start : offset - start + length]
            return bytes(length)  # inside a gap
        out = bytearray(length)
        for start, v in self._pieces[max(i, 0):]:
            if start >= offset + length:
                break
            lo, hi = max(offset, start), min(offset + length, start + len(v))
            if lo < hi:
                out[lo - offset : hi - offset] = v[lo - start : hi - start]
        return out

    def write_to(self, memory: GuestMemory, addr: int) -> None:
        """Put the image at ``addr`` (direct boot): the pieces, and zeros between them."""
        cursor = 0
        for off, v in self._pieces:
            if off > cursor:
                memory.write(addr + cursor, bytes(off - cursor))
            memory.write(addr + off, v)
            cursor = off + len(v)
        if self.size > cursor:
            memory.write(addr + cursor, bytes(self.size - cursor))


@dataclass(frozen=True)
class KernelImage:
    """The kernel as one flat image: ``data`` goes to ``load_addr``; the CPU starts at ``entry``.

    ``data`` is a :class:`FlatImage` over the mapped file when loaded from a file (plain bytes
    are accepted too, e.g. in tests)."""

    load_addr: int
    entry: int
    data: FlatImage | bytes = field(repr=False)  # megabytes: keep reprs readable
    path: Path

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def end(self) -> int:
        return self.load_addr + self.size


@dataclass(frozen=True)
class FirmwareImage:
    """The boot ROM contents (exactly ``ROM_SIZE`` bytes for ``ROM_BASE``) and where CPUs start."""

    entry: int
    rom: bytes = field(repr=False)
    path: Path


@dataclass(frozen=True)
class InitrdImage:
    """The initrd, a read-only view of the mapped file, and its guest-physical address."""

    addr: int
    data: memoryview = field(repr=False)
    path: Path

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class BootLayout:
    """Where everything goes in RAM, checked by :func:`plan_layout`.

    ``dtb`` is the blob itself; ``dtb_window`` is the ``DTB_MAX_SIZE`` bytes at the same base that
    the placement rule keeps free for it (QEMU reserves the same 8 MiB).
    """

    ram_size: int
    kernel: Region | None
    initrd: Region | None
    dtb: Region
    dtb_window: Region
    spin_table: Region
