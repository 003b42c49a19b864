"""Where an item's bytes come from: memory, a host file, or a host callback.

The device only ever asks an item for its size and for a buffer covering ``[offset, offset+n)``.
Returning a *view* rather than fresh bytes is what makes DMA one copy: a slice of an mmap'd host
file goes straight into guest RAM.  Items never grow or shrink once added, as in QEMU.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Callable
from pathlib import Path

from fwcfg._errors import ConfigError

#: ``on_write(offset, data)``: a guest DMA WRITE changed ``data`` at ``offset`` of the item.
WriteCallback = Callable[[int, bytes], None]
#: ``read_cb(offset, length) -> bytes``: produce exactly ``length`` bytes at ``offset``.
ReadCallback = Callable[[int, int], bytes]

Buffer = bytes | bytearray | memoryview


class Item:
    """An item's content.  Subclasses provide :meth:`view`; writable ones also :meth:`store`."""

    size: int = 0
    writable: bool = False

    def view(self, offset: int, length: int) -> Buffer:
        """The bytes ``[offset, offset + length)``, which the caller keeps inside :attr:`size`."""
        raise NotImplementedError

    def span(self, offset: int) -> int:
        """How many bytes from ``offset`` one :meth:`view` can return without building them.

        DMA asks for at most this much at a time, so an item made of pieces (a kernel's ELF
        segments) is copied into guest RAM piece by piece, never assembled on the host."""
        return self.size - offset

    def store(self, offset: int, data: bytes) -> None:
        """Replace bytes at ``offset`` (only called on writable items, inside :attr:`size`)."""
        raise NotImplementedError


class BytesItem(Item):
    """Bytes held in memory; optionally writable by the guest (DMA WRITE) with a host callback."""

    def __init__(
        self, data: Buffer, *, writable: bool = False, on_write: WriteCallback | None = None
    ) -> None:
        self._data = bytearray(data) if writable else bytes(data)
        self.size = len(self._data)
        self.writable = writable
        self._on_write = on_write

    def view(self, offset: int, length: int) -> memoryview:
        return memoryview(self._data)[offset : offset + length]

    def store(self, offset: int, data: bytes) -> None:
        assert isinstance(self._data, bytearray)
        self._data[offset : offset + len(data)] = data
        if self._on_write is not None:
            self._on_write(offset, data)


class ViewItem(Item):
    """A read-only view of a buffer the caller keeps alive (an mmap'd initrd, say): no copy is
    made when it is added, and DMA copies straight from it into guest RAM."""

    def __init__(self, data: Buffer) -> None:
        self._view = memoryview(data).cast("B")
        self.size = len(self._view)

    def view(self, offset: int, length: int) -> memoryview:
        return self._view[offset : offset + length]


class HostFileItem(Item):
    """A host file, mapped on first read so that adding even a 1 GiB file costs no memory.

    The size is fixed when the file is added (QEMU reads ``-fw_cfg file=`` once at start-up).
    Should the host file shrink afterwards, the missing tail reads as zeros rather than faulting:
    the mapping is only touched below the file's current length.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ConfigError(f"fw_cfg host file {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"fw_cfg host file {str(path)!r} is a directory") from None
        except OSError as err:
            raise ConfigError(
                f"fw_cfg host file {str(path)!r} cannot be read: {err.strerror}"
            ) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ConfigError(f"fw_cfg host file {str(path)!r} is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"fw_cfg host file {str(path)!r} is not a regular file")
            try:
                os.pread(fd, 1, 0)
            except OSError as err:
                raise ConfigError(
                    f"fw_cfg host file {str(path)!r} cannot be read: {err.strerror}"
                ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.size = st.st_size
        self._map: mmap.mmap | None = None
        self._mview: memoryview | None = None

    def _mapping(self, current: int) -> memoryview:
        """The file mapped read-only, at most :attr:`size` bytes (less if it already shrank)."""
        if self._mview is None:
            length = min(self.size, current)
            if length == 0:
                return memoryview(b"")
            self._map = mmap.mmap(self._fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            self._mview = memoryview(self._map)
        return self._mview

    def view(self, offset: int, length: int) -> Buffer:
        current = os.fstat(self._fd).st_size
        mapping = self._mapping(current)
        available = max(0, min(length, min(current, len(mapping)) - offset))
        if available == length:
            return mapping[offset : offset + length]
        return bytes(mapping[offset : offset + available]) + bytes(length - available)

    def close(self) -> None:
        """Release the mapping and the descriptor (the item then must not be read again)."""
        if self._mview is not None:
            self._mview.release()
            self._mview = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class CallbackItem(Item):
    """Bytes produced on demand by a host callback, for content that is costly or changes."""

    def __init__(self, size: int, read_cb: ReadCallback) -> None:
        if size < 0:
            raise ValueError(f"callback item size {size} is negative")
        self.size = size
        self._read_cb = read_cb

    def view(self, offset: int, length: int) -> bytes:
        data = self._read_cb(offset, length)
        assert len(data) == length, f"read callback returned {len(data)} bytes, not {length}"
        return data
