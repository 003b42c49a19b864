"""Guest RAM: one lazily-committed host mapping shared by every vCPU and every device.

RAM is an anonymous private ``mmap``: the kernel hands out zero pages on first touch, so a
3 GiB machine costs only what the guest actually writes.  Every unicorn instance maps the same
host pages (``mem_map_ptr`` on :attr:`GuestRAM.address`), which is what makes stores by one CPU
visible to the others and to the fw_cfg DMA engine with no copying.

Host-side writes (DMA, loaders, the qtest port) go through :meth:`GuestRAM.write`, which tells
an optional observer which bytes changed.  The machine uses that to wake CPUs parked on a watched
word when a device, not a CPU, stores to it.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable

from fwcfg import GuestMemoryError

WriteObserver = Callable[[int, int], None]


class GuestRAM:
    """Guest-physical RAM at ``[base, base + size)``; implements :class:`fwcfg.GuestMemory`."""

    def __init__(self, size: int, base: int = 0) -> None:
        if size <= 0 or size % mmap.PAGESIZE:
            raise ValueError(f"RAM size {size:#x} must be a positive multiple of the page size")
        self.base = base
        self.size = size
        self._map = mmap.mmap(
            -1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        )
        self._anchor = ctypes.c_char.from_buffer(self._map)
        #: Host virtual address of guest-physical ``base``, for ``Uc.mem_map_ptr``.
        self.address: int = ctypes.addressof(self._anchor)
        #: A writable view of all of RAM (index 0 = guest-physical ``base``).
        self.view = memoryview(self._map)
        #: Called with (guest address, length) after every host-side write.
        self.write_observer: WriteObserver | None = None

    def contains(self, addr: int, size: int) -> bool:
        return size >= 0 and self.base <= addr and addr + size <= self.base + self.size

    def _offset(self, addr: int, size: int) -> int:
        if not self.contains(addr, size):
            raise GuestMemoryError(addr, size)
        return addr - self.base

    def read(self, addr: int, size: int) -> bytes:
        off = self._offset(addr, size)
        return bytes(self.view[off : off + size])

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        src = memoryview(data).cast("B")
        off = self._offset(addr, len(src))
        self.view[off : off + len(src)] = src
        if self.write_observer is not None and len(src):
            self.write_observer(addr, len(src))

    def read_u32(self, addr: int) -> int:
        """A big-endian word, as the guest sees it."""
        return int.from_bytes(self.read(addr, 4), "big")

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, (value & 0xFFFF_FFFF).to_bytes(4, "big"))

    def zero(self) -> None:
        """Return every page to the zero state and give the host memory back (machine reset)."""
        self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Unmap RAM.  Only valid once no unicorn instance maps it any more."""
        self.view.release()
        del self._anchor
        self._map.close()
