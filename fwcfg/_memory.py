"""The guest memory that the fw_cfg device reaches through DMA.

The device model never owns memory: whoever embeds it (the e500 machine, the qtest port, a test)
hands it an object with this shape.  Keeping it a protocol is what lets the device run without
unicorn, threads or trio, and lets tests use a plain ``bytearray``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class GuestMemoryError(Exception):
    """A guest-physical access that does not fall entirely inside guest RAM.

    Raised by :class:`GuestMemory` implementations; the device turns it into the DMA ERROR bit,
    so a guest never sees an exception, only the documented error.
    """

    def __init__(self, addr: int, size: int) -> None:
        super().__init__(f"guest access of {size} bytes at {addr:#x} is outside guest RAM")
        self.addr = addr
        self.size = size


@runtime_checkable
class GuestMemory(Protocol):
    """Guest-physical memory as the DMA engine sees it.

    ``read`` returns a copy; ``write`` accepts any buffer (a ``memoryview`` over an mmap'd host
    file goes straight into guest RAM with a single copy).  Both raise :class:`GuestMemoryError`
    when ``[addr, addr + size)`` is not wholly inside RAM, and then touch nothing.
    """

    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None: ...


class BytearrayMemory:
    """A :class:`GuestMemory` over a ``bytearray`` based at ``base``: for tests and tools."""

    def __init__(self, size: int, base: int = 0) -> None:
        self.base = base
        self.data = bytearray(size)

    def _check(self, addr: int, size: int) -> int:
        off = addr - self.base
        if addr < 0 or size < 0 or off < 0 or off + size > len(self.data):
            raise GuestMemoryError(addr, size)
        return off

    def read(self, addr: int, size: int) -> bytes:
        off = self._check(addr, size)
        return bytes(self.data[off : off + size])

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        n = len(memoryview(data).cast("B")) if isinstance(data, memoryview) else len(data)
        off = self._check(addr, n)
        self.data[off : off + n] = data
