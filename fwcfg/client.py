"""A fw_cfg client that sees what a guest sees, through any transport.

Like QEMU's libqos ``QFWCFG``, the client is parametrised by a *transport*: something that can
select a key and read data bytes, and optionally run one DMA descriptor.  The same client then
reads our device directly, our device through its MMIO registers over guest RAM, or a real QEMU
over the qtest protocol (which is how the differential test compares the two).

Integer items are little-endian (QEMU stores them so on every architecture); the file directory
is big-endian and parsed with :data:`fwcfg._layouts.FileDir`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from fwcfg._device import FwCfg
from fwcfg._frontends import IoPort, MmioWide
from fwcfg._layouts import (
    DMA_ACCESS_SIZE,
    DMA_SELECT_SHIFT,
    FILE_DIR_HEADER_SIZE,
    FILE_ENTRY_SIZE,
    DmaAccess,
    DmaControl,
    Feature,
    FileDir,
    Key,
)
from fwcfg._memory import GuestMemory


@runtime_checkable
class Transport(Protocol):
    """The traditional interface: select a key, read the next ``n`` data bytes."""

    def select(self, key: int) -> None: ...

    def read(self, n: int) -> bytes: ...


@runtime_checkable
class DmaTransport(Transport, Protocol):
    """A transport that can also run one DMA descriptor.

    ``dma`` places ``data`` (zero-padded to ``length``) in a guest buffer, runs a descriptor with
    ``control`` and ``length`` pointing at it, and returns the control word the device stored
    back and the buffer's ``length`` bytes afterwards.
    """

    def dma(self, control: int, length: int, data: bytes = b"") -> tuple[int, bytes]: ...


class DmaError(Exception):
    """The device answered a client DMA with the ERROR bit."""


@dataclass(frozen=True, slots=True)
class DirEntry:
    """A file as a guest finds it in the directory."""

    name: str
    key: int
    size: int


def _widths(n: int) -> list[int]:
    """Access widths that read exactly ``n`` data bytes: 8-byte reads, then 4, 2, 1."""
    widths = [8] * (n // 8)
    for width in (4, 2, 1):
        if n & width:
            widths.append(width)
    return widths


class _ScratchDma:
    """DMA through a descriptor at ``scratch`` and a buffer right after it, in ``memory``."""

    memory: GuestMemory
    scratch: int | None

    def _kick(self, address: int) -> None:
        raise NotImplementedError

    def dma(self, control: int, length: int, data: bytes = b"") -> tuple[int, bytes]:
        if self.scratch is None:
            raise TypeError("this transport was created without a scratch area for DMA")
        buf = self.scratch + DMA_ACCESS_SIZE
        self.memory.write(buf, data.ljust(length, b"\0"))
        desc = DmaAccess.build({"control": control, "length": length, "address": buf})
        self.memory.write(self.scratch, desc)
        self._kick(self.scratch)
        status = int.from_bytes(self.memory.read(self.scratch, 4), "big")
        return status, self.memory.read(buf, length)


class DeviceTransport(_ScratchDma):
    """Calls the device's register behaviour directly (DMA scratch in the device's memory)."""

    def __init__(self, device: FwCfg, scratch: int | None = None) -> None:
        self.device = device
        self.memory = device.memory
        self.scratch = scratch

    def select(self, key: int) -> None:
        self.device.select(key)

    def read(self, n: int) -> bytes:
        return self.device.read_data(n)

    def _kick(self, address: int) -> None:
        self.device.dma(address)


class MmioTransport(_ScratchDma):
    """Goes through the wide MMIO registers, as a big-endian guest would."""

    def __init__(self, mmio: MmioWide, memory: GuestMemory, scratch: int | None = None) -> None:
        self.mmio = mmio
        self.memory = memory
        self.scratch = scratch

    def select(self, key: int) -> None:
        self.mmio.write(MmioWide.SELECTOR, 2, key)

    def read(self, n: int) -> bytes:
        out = bytearray()
        for width in _widths(n):
            out += self.mmio.read(MmioWide.DATA, width).to_bytes(width, "big")
        return bytes(out)

    def _kick(self, address: int) -> None:
        self.mmio.write(MmioWide.DMA, 4, address >> 32)
        self.mmio.write(MmioWide.DMA + 4, 4, address & 0xFFFF_FFFF)


class IoPortTransport(_ScratchDma):
    """Goes through the x86 I/O ports, as a little-endian x86 guest would (byte by byte)."""

    def __init__(self, io: IoPort, memory: GuestMemory, scratch: int | None = None) -> None:
        self.io = io
        self.memory = memory
        self.scratch = scratch

    def select(self, key: int) -> None:
        self.io.write(IoPort.SELECTOR, 2, key)

    def read(self, n: int) -> bytes:
        return bytes(self.io.read(IoPort.DATA, 1) for _ in range(n))

    def _kick(self, address: int) -> None:
        # cpu_to_be32 on a little-endian CPU: the port sees the halves byte-swapped.
        for rel, half in ((0, address >> 32), (4, address & 0xFFFF_FFFF)):
            self.io.write(IoPort.DMA + rel, 4, int.from_bytes(half.to_bytes(4, "big"), "little"))


class QtestTransport:
    """Drives a wide-MMIO fw_cfg over the qtest text protocol (QEMU or ``python -m machine``).

    ``command`` sends one line and returns the answer line.  ``byteorder`` is how the target
    composes multi-byte values ("big" for PPC, "little" for aarch64); values are converted so
    that both targets see the same bytes on the bus.
    """

    def __init__(
        self,
        command: Callable[[str], str],
        *,
        base: int,
        scratch: int | None = None,
        byteorder: Literal["big", "little"] = "big",
    ) -> None:
        self.command = command
        self.base = base
        self.scratch = scratch
        self.byteorder: Literal["big", "little"] = byteorder

    def _ok(self, line: str) -> str:
        answer = self.command(line)
        if not answer.startswith("OK"):
            raise RuntimeError(f"qtest {line!r} answered {answer!r}")
        return answer[2:].strip()

    def write_bytes(self, addr: int, data: bytes) -> None:
        """A single register access of ``len(data)`` bytes carrying ``data`` in bus order."""
        cmd = {1: "writeb", 2: "writew", 4: "writel", 8: "writeq"}[len(data)]
        self._ok(f"{cmd} {addr:#x} {int.from_bytes(data, self.byteorder):#x}")

    def read_bytes(self, addr: int, size: int) -> bytes:
        cmd = {1: "readb", 2: "readw", 4: "readl", 8: "readq"}[size]
        return int(self._ok(f"{cmd} {addr:#x}"), 16).to_bytes(size, self.byteorder)

    def memwrite(self, addr: int, data: bytes) -> None:
        if data:
            self._ok(f"b64write {addr:#x} {len(data)} {base64.b64encode(data).decode()}")

    def memread(self, addr: int, size: int) -> bytes:
        if size == 0:
            return b""
        return base64.b64decode(self._ok(f"b64read {addr:#x} {size}"))

    def select(self, key: int) -> None:
        self.write_bytes(self.base + MmioWide.SELECTOR, key.to_bytes(2, "big"))

    def read(self, n: int) -> bytes:
        out = bytearray()
        for width in _widths(n):
            out += self.read_bytes(self.base + MmioWide.DATA, width)
        return bytes(out)

    def dma(self, control: int, length: int, data: bytes = b"") -> tuple[int, bytes]:
        if self.scratch is None:
            raise TypeError("this transport was created without a scratch area for DMA")
        buf = self.scratch + DMA_ACCESS_SIZE
        self.memwrite(buf, data.ljust(length, b"\0"))
        desc = DmaAccess.build({"control": control, "length": length, "address": buf})
        self.memwrite(self.scratch, desc)
        self.write_bytes(self.base + MmioWide.DMA, self.scratch.to_bytes(8, "big"))
        status = int.from_bytes(self.memread(self.scratch, 4), "big")
        return status, self.memread(buf, length)


class FwCfgClient:
    """Lists and reads items and files as a guest would; uses DMA if asked and available."""

    def __init__(self, transport: Transport, *, use_dma: bool = False) -> None:
        if use_dma and not isinstance(transport, DmaTransport):
            raise TypeError(f"{type(transport).__name__} cannot do DMA")
        self.transport = transport
        self.use_dma = use_dma

    def read_item(self, key: int, n: int, *, offset: int = 0) -> bytes:
        """``n`` bytes of item ``key`` from ``offset`` (zeros past its end)."""
        if self.use_dma:
            return self._dma_read(key, n, offset)
        self.transport.select(key)
        if offset:
            self.transport.read(offset)
        return self.transport.read(n)

    def _dma_read(self, key: int, n: int, offset: int) -> bytes:
        assert isinstance(self.transport, DmaTransport)
        select: int = DmaControl.SELECT | (key << DMA_SELECT_SHIFT)
        if offset:
            self._dma_ok(select | DmaControl.SKIP, offset)
            select = 0
        return self._dma_ok(select | DmaControl.READ, n)

    def _dma_ok(self, control: int, length: int, data: bytes = b"") -> bytes:
        assert isinstance(self.transport, DmaTransport)
        status, out = self.transport.dma(control, length, data)
        if status != 0:
            raise DmaError(f"fw_cfg DMA {control:#x} of {length} bytes -> status {status:#x}")
        return out

    def write_item(self, key: int, data: bytes, *, offset: int = 0) -> None:
        """DMA WRITE ``data`` into item ``key`` at ``offset``; raises :class:`DmaError`."""
        if not isinstance(self.transport, DmaTransport):
            raise TypeError(f"{type(self.transport).__name__} cannot do DMA")
        self._dma_ok(DmaControl.SELECT | DmaControl.SKIP | (key << DMA_SELECT_SHIFT), offset)
        self._dma_ok(DmaControl.WRITE, len(data), data)

    def read_u16(self, key: int) -> int:
        return int.from_bytes(self.read_item(key, 2), "little")

    def read_u32(self, key: int) -> int:
        return int.from_bytes(self.read_item(key, 4), "little")

    def read_u64(self, key: int) -> int:
        return int.from_bytes(self.read_item(key, 8), "little")

    def signature(self) -> bytes:
        return self.read_item(Key.SIGNATURE, 4)

    def features(self) -> Feature:
        return Feature(self.read_u32(Key.ID) & (Feature.TRADITIONAL | Feature.DMA))

    def directory(self) -> list[DirEntry]:
        """The file directory: read the count, then the whole directory again from the start."""
        count = int.from_bytes(self.read_item(Key.FILE_DIR, FILE_DIR_HEADER_SIZE), "big")
        raw = self.read_item(Key.FILE_DIR, FILE_DIR_HEADER_SIZE + FILE_ENTRY_SIZE * count)
        parsed = FileDir.parse(raw)
        return [DirEntry(name=f.name, key=f.select, size=f.size) for f in parsed.files]

    def find(self, name: str) -> DirEntry | None:
        return next((e for e in self.directory() if e.name == name), None)

    def read_file(self, name: str) -> bytes:
        """The whole of file ``name``; raises KeyError if the directory does not list it."""
        entry = self.find(name)
        if entry is None:
            raise KeyError(name)
        return self.read_item(entry.key, entry.size)
