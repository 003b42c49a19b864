"""The fw_cfg device as a sans-I/O state machine.

:class:`FwCfg` holds the items and the guest-visible state (selected key, offset in it, the DMA
address latch) and implements the three registers' *behaviour*; the front ends in
:mod:`fwcfg._frontends` decide which bus access reaches which behaviour.  Guest memory is reached
only through the injected :class:`~fwcfg.GuestMemory`, so the device runs the same under the e500
machine, the qtest port, or a unit test with a ``bytearray``.

Semantics follow QEMU's ``hw/nvram/fw_cfg.c`` and ``docs/specs/fw_cfg.rst`` down to the corner
cases a guest can observe: a key outside the entry space selects INVALID, reads past the end of
an item are zeros and leave the offset at the end, a DMA transfer advances the offset even when
it fails, DMA READ past the end zero-fills, WRITE must fit in the rest of a writable item, and the
DMA address latch is cleared when a transfer starts.

Several vCPUs may touch the device at once; one lock makes every register access atomic, as
QEMU's big lock does.  A long DMA holds the lock for its whole duration, which is also QEMU's
behaviour (a transfer is synchronous).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from fwcfg._errors import ConfigError
from fwcfg._events import DmaOp, DmaTransfer, Selected
from fwcfg._items import (
    Buffer,
    BytesItem,
    CallbackItem,
    HostFileItem,
    Item,
    ReadCallback,
    WriteCallback,
)
from fwcfg._layouts import (
    DEFAULT_FILE_SLOTS,
    DMA_ACCESS_SIZE,
    DMA_CONTROL_OFFSET,
    DMA_SELECT_SHIFT,
    ENTRY_MASK,
    FILE_NAME_MAX,
    MAX_FILE_SLOTS,
    MIN_FILE_SLOTS,
    SIGNATURE,
    DmaAccess,
    DmaControl,
    Feature,
    FileDir,
    Key,
    PpcKey,
    file_dir_size,
)
from fwcfg._memory import GuestMemory, GuestMemoryError

#: Zero-fill is written in chunks of this size, so a 4 GiB READ past the end allocates nothing big.
_ZERO_CHUNK = 1 << 20
_ZEROS = bytes(_ZERO_CHUNK)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileInfo:
    """One file as the directory lists it."""

    name: str
    key: int
    size: int
    writable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FwCfgStatistics:
    """Counters for tests and traces, so nobody needs to look at private state."""

    selected_key: int
    offset: int
    items: int
    files: int
    selects: int
    data_reads: int
    data_bytes: int
    dma_transfers: int
    dma_errors: int
    dma_bytes_read: int
    dma_bytes_written: int


class FwCfg:
    """A QEMU-compatible fw_cfg device over ``memory``.

    ``dma_enabled`` sets the DMA feature bit (and lets front ends expose the DMA register);
    ``file_slots`` is QEMU's ``x-file-slots``: how many named files fit (0x10 .. 0x3fe0).
    The device starts with the signature and feature items, and with the signature selected.
    """

    def __init__(
        self,
        memory: GuestMemory,
        *,
        dma_enabled: bool = True,
        file_slots: int = DEFAULT_FILE_SLOTS,
        arch_keys: type[IntEnum] | None = PpcKey,
    ) -> None:
        if not MIN_FILE_SLOTS <= file_slots <= MAX_FILE_SLOTS:
            raise ConfigError(
                f"fw_cfg file_slots {file_slots:#x} is outside {MIN_FILE_SLOTS:#x}"
                f"..{MAX_FILE_SLOTS:#x}"
            )
        self.memory = memory
        self.dma_enabled = dma_enabled
        self.file_slots = file_slots
        self._arch_keys = arch_keys
        self._lock = threading.Lock()
        self._entries: dict[int, Item] = {}
        self._files: list[tuple[str, Item]] = []
        self._cur_key: int = Key.SIGNATURE
        self._cur_offset = 0
        self._dma_latch = 0
        self._counts = dict.fromkeys(
            ("selects", "data_reads", "data_bytes", "dma_transfers", "dma_errors",
             "dma_bytes_read", "dma_bytes_written"),
            0,
        )
        features = Feature.TRADITIONAL | (Feature.DMA if dma_enabled else 0)
        self._entries[Key.SIGNATURE] = BytesItem(SIGNATURE)
        self._entries[Key.ID] = BytesItem(int(features).to_bytes(4, "little"))
        self._entries[Key.FILE_DIR] = BytesItem(self._directory_bytes())

    # --- host side: adding items ---------------------------------------------------------

    @property
    def max_entry(self) -> int:
        """One past the highest entry index (``FW_CFG_FILE_FIRST + file_slots``)."""
        return Key.FILE_FIRST + self.file_slots

    def _slot(self, key: int) -> int:
        """Map a numeric key to its entry slot, refusing what a caller may not add."""
        if not 0 <= key <= 0xFFFF or key & Key.WRITE_CHANNEL:
            raise ValueError(f"fw_cfg key {key:#x} is not a selector key")
        index = key & ENTRY_MASK
        if key & Key.ARCH_LOCAL:
            if index >= self.max_entry:
                raise ValueError(f"fw_cfg arch-local key {key:#06x} is beyond the entry space")
        elif index >= Key.FILE_FIRST or index == Key.FILE_DIR:
            raise ValueError(f"fw_cfg key {key:#06x} is reserved for files; use add_file")
        return key

    def add_item(self, key: int, item: Item, *, replace: bool = False) -> None:
        """Put ``item`` at numeric ``key``.  Adding twice is a programming error unless ``replace``.

        Replacing the selected item rewinds nothing: like QEMU's ``fw_cfg_modify_*``, the guest's
        offset stays where it was.
        """
        slot = self._slot(key)
        with self._lock:
            if slot in self._entries and not replace:
                raise ValueError(f"fw_cfg key {key:#06x} already holds an item")
            self._entries[slot] = item

    def add_bytes(self, key: int, data: Buffer, *, replace: bool = False) -> None:
        """A read-only item holding a copy of ``data``."""
        self.add_item(key, BytesItem(data), replace=replace)

    def add_u16(self, key: int, value: int, *, replace: bool = False) -> None:
        """A little-endian u16, as QEMU's ``fw_cfg_add_i16``."""
        self.add_bytes(key, value.to_bytes(2, "little"), replace=replace)

    def add_u32(self, key: int, value: int, *, replace: bool = False) -> None:
        """A little-endian u32, as QEMU's ``fw_cfg_add_i32``."""
        self.add_bytes(key, value.to_bytes(4, "little"), replace=replace)

    def add_u64(self, key: int, value: int, *, replace: bool = False) -> None:
        """A little-endian u64, as QEMU's ``fw_cfg_add_i64``."""
        self.add_bytes(key, value.to_bytes(8, "little"), replace=replace)

    def add_file_item(self, name: str, item: Item) -> int:
        """Insert a named file in sorted position and return its key *at this moment*.

        QEMU keeps the directory sorted by name and numbers files by position, so adding a name
        that sorts earlier renumbers every later file.  Resolve keys with :meth:`key_of` (or the
        directory, as a guest does) once configuration is complete.
        """
        encoded = name.encode("utf-8")
        if not encoded or b"\0" in encoded:
            raise ConfigError(f"fw_cfg file name {name!r} is empty or contains a NUL byte")
        if len(encoded) > FILE_NAME_MAX:
            raise ConfigError(
                f"fw_cfg file name {name!r} is {len(encoded)} bytes long;"
                f" the limit is {FILE_NAME_MAX}"
            )
        if item.size > 0xFFFF_FFFF:  # the directory's size field is a be32
            raise ConfigError(
                f"fw_cfg file {name!r} is {item.size} bytes; a fw_cfg file holds at most"
                f" {0xFFFF_FFFF} bytes (4 GiB - 1)"
            )
        with self._lock:
            names = [n for n, _ in self._files]
            if name in names:
                raise ConfigError(f"duplicate fw_cfg file name {name!r}")
            if len(self._files) >= self.file_slots:
                raise ConfigError(
                    f"too many fw_cfg files: {name!r} does not fit in {self.file_slots} slots"
                )
            index = len(names)
            while index > 0 and encoded < names[index - 1].encode("utf-8"):
                index -= 1
            self._files.insert(index, (name, item))
            self._entries[Key.FILE_DIR] = BytesItem(self._directory_bytes())
            return Key.FILE_FIRST + index

    def add_file(
        self,
        name: str,
        data: Buffer,
        *,
        writable: bool = False,
        on_write: WriteCallback | None = None,
    ) -> int:
        """A file holding ``data``; ``writable`` lets the guest DMA WRITE into it (in place)."""
        if on_write is not None and not writable:
            raise ValueError("on_write needs writable=True")
        return self.add_file_item(name, BytesItem(data, writable=writable, on_write=on_write))

    def add_string_file(self, name: str, text: str) -> int:
        """A file holding ``text`` in UTF-8, without a trailing NUL (as ``-fw_cfg string=``)."""
        return self.add_file(name, text.encode("utf-8"))

    def add_host_file(self, name: str, path: str | Path) -> int:
        """A file with the contents of host file ``path``, mapped lazily on first read."""
        item = HostFileItem(Path(path))
        try:
            return self.add_file_item(name, item)
        except BaseException:
            item.close()
            raise

    def add_callback_file(self, name: str, size: int, read_cb: ReadCallback) -> int:
        """A file of ``size`` bytes produced by ``read_cb(offset, length)`` when read."""
        return self.add_file_item(name, CallbackItem(size, read_cb))

    def files(self) -> list[FileInfo]:
        """The directory, in the order the guest sees it."""
        with self._lock:
            return [
                FileInfo(name=n, key=Key.FILE_FIRST + i, size=it.size, writable=it.writable)
                for i, (n, it) in enumerate(self._files)
            ]

    def key_of(self, name: str) -> int | None:
        """The current key of file ``name``, or None."""
        with self._lock:
            for i, (n, _) in enumerate(self._files):
                if n == name:
                    return Key.FILE_FIRST + i
        return None

    def contents(self, key: int) -> bytes:
        """A copy of the item at ``key`` (empty if none): what a complete read would return."""
        with self._lock:
            item = self._item(key)
            return b"" if item is None else bytes(item.view(0, item.size))

    def name_of(self, key: int) -> str | None:
        """A readable name for ``key``: well-known and arch-local names, or the file name."""
        key &= 0xFFFF
        if key == Key.INVALID:
            return "invalid"
        plain = key & ~Key.WRITE_CHANNEL
        if plain & Key.ARCH_LOCAL:
            if self._arch_keys is not None and plain in self._arch_keys._value2member_map_:
                return self._arch_keys(plain).name.lower()
            return None
        if plain < Key.FILE_FIRST:
            return Key(plain).name.lower() if plain in Key._value2member_map_ else None
        index = plain - Key.FILE_FIRST
        files = self._files
        return files[index][0] if index < len(files) else None

    def _directory_bytes(self) -> bytes:
        entries = [
            {"size": item.size, "select": Key.FILE_FIRST + i, "name": name}
            for i, (name, item) in enumerate(self._files)
        ]
        built = FileDir.build({"count": len(entries), "files": entries})
        return built + bytes(file_dir_size(self.file_slots) - len(built))

    def close(self) -> None:
        """Release host files' mappings and descriptors."""
        with self._lock:
            for _, item in self._files:
                if isinstance(item, HostFileItem):
                    item.close()

    # --- guest side: register behaviour --------------------------------------------------

    def _item(self, key: int) -> Item | None:
        if key == Key.INVALID:
            return None
        index = key & ENTRY_MASK
        if key & Key.ARCH_LOCAL:
            return self._entries.get(Key.ARCH_LOCAL | index)
        if index >= Key.FILE_FIRST:
            i = index - Key.FILE_FIRST
            return self._files[i][1] if i < len(self._files) else None
        return self._entries.get(index)

    def _select(self, key: int) -> Selected:
        key &= 0xFFFF
        self._cur_offset = 0
        valid = (key & ENTRY_MASK) < self.max_entry
        self._cur_key = key if valid else Key.INVALID
        self._counts["selects"] += 1
        return Selected(key=key, name=self.name_of(key), valid=valid)

    def select(self, key: int) -> Selected:
        """The selector register: choose ``key`` and rewind to its first byte."""
        with self._lock:
            return self._select(key)

    def read_data(self, size: int) -> bytes:
        """The data register: the next ``size`` bytes of the item, zeros past its end."""
        with self._lock:
            self._counts["data_reads"] += 1
            item = self._item(self._cur_key)
            if item is None or self._cur_offset >= item.size:
                return bytes(size)
            n = min(size, item.size - self._cur_offset)
            data = bytes(item.view(self._cur_offset, n))
            self._cur_offset += n
            self._counts["data_bytes"] += n
            return data + bytes(size - n)

    def write_data(self, size: int, value: int) -> None:
        """The data register, written: ignored, as in QEMU since 2.4 (writes go through DMA)."""

    def reset(self) -> None:
        """Device reset: select the signature (QEMU's ``fw_cfg_reset``); items stay."""
        with self._lock:
            self._select(Key.SIGNATURE)

    def write_dma_high(self, value: int) -> None:
        """The high 32 bits of the DMA address register; nothing happens until the low half."""
        with self._lock:
            self._dma_latch = (value & 0xFFFF_FFFF) << 32

    def write_dma_low(self, value: int) -> DmaTransfer:
        """The low 32 bits of the DMA address register: completes the address and runs it."""
        with self._lock:
            address = self._dma_latch | (value & 0xFFFF_FFFF)
            return self._transfer(address)

    def dma(self, address: int) -> DmaTransfer:
        """A 64-bit write of the DMA address register: run the descriptor at ``address``."""
        with self._lock:
            return self._transfer(address & 0xFFFF_FFFF_FFFF_FFFF)

    def statistics(self) -> FwCfgStatistics:
        with self._lock:
            return FwCfgStatistics(
                selected_key=self._cur_key,
                offset=self._cur_offset,
                items=len(self._entries) + len(self._files),
                files=len(self._files),
                **self._counts,
            )

    # --- the DMA engine ------------------------------------------------------------------

    def _transfer(self, desc_addr: int) -> DmaTransfer:
        """QEMU's ``fw_cfg_dma_transfer``, step for step."""
        self._dma_latch = 0
        self._counts["dma_transfers"] += 1
        try:
            raw = self.memory.read(desc_addr, DMA_ACCESS_SIZE)
        except GuestMemoryError:
            self._store_status(desc_addr, DmaControl.ERROR)
            self._counts["dma_errors"] += 1
            return DmaTransfer(
                descriptor=desc_addr, key=self._cur_key, name=self.name_of(self._cur_key),
                control=0, op=DmaOp.BAD_DESCRIPTOR, offset=self._cur_offset, length=0,
                address=0, error=True,
            )
        desc = DmaAccess.parse(raw)
        control, length, address = desc.control, desc.length, desc.address
        if control & DmaControl.SELECT:
            self._select(control >> DMA_SELECT_SHIFT)
        op = _operation(control)
        start_offset = self._cur_offset
        remaining = length if op is not DmaOp.NONE else 0
        addr = address
        error = False
        item = self._item(self._cur_key)
        while remaining > 0 and not error:
            if item is None or self._cur_offset >= item.size:
                chunk = remaining
                if op is DmaOp.READ:
                    error = not self._zero_fill(addr, chunk)
                elif op is DmaOp.WRITE:
                    error = True
            else:
                chunk = min(remaining, item.size - self._cur_offset, item.span(self._cur_offset))
                assert chunk > 0, "an item's span is at least one byte inside it"
                if op is DmaOp.READ:
                    error = not _write_prefix(
                        self.memory, addr, item.view(self._cur_offset, chunk)
                    )
                    self._counts["dma_bytes_read"] += chunk
                elif op is DmaOp.WRITE:
                    error = not self._store_from_guest(item, addr, chunk, remaining)
                self._cur_offset += chunk
            addr = (addr + chunk) & 0xFFFF_FFFF_FFFF_FFFF
            remaining -= chunk
        status = DmaControl.ERROR if error else DmaControl(0)
        self._counts["dma_errors"] += error
        self._store_status(desc_addr, status)
        return DmaTransfer(
            descriptor=desc_addr, key=self._cur_key, name=self.name_of(self._cur_key),
            control=control, op=op, offset=start_offset, length=length, address=address,
            error=error,
        )

    def _zero_fill(self, addr: int, length: int) -> bool:
        while length > 0:
            n = min(length, _ZERO_CHUNK)
            if not _write_prefix(self.memory, addr, memoryview(_ZEROS)[:n]):
                return False
            addr += n
            length -= n
        return True

    def _store_from_guest(self, item: Item, addr: int, chunk: int, wanted: int) -> bool:
        """DMA WRITE: all of ``wanted`` must fit in the item, which must be writable.

        Unlike QEMU, a source range that is not wholly in RAM changes nothing (QEMU copies the
        part inside RAM): a host callback never sees half-written data.
        """
        if not item.writable or chunk != wanted:
            return False
        try:
            data = self.memory.read(addr, chunk)
        except GuestMemoryError:
            return False
        item.store(self._cur_offset, data)
        self._counts["dma_bytes_written"] += chunk
        return True

    def _store_status(self, desc_addr: int, status: int) -> None:
        """Write the completion word back (big-endian); a descriptor outside RAM gets nothing."""
        try:
            self.memory.write(desc_addr + DMA_CONTROL_OFFSET, int(status).to_bytes(4, "big"))
        except GuestMemoryError:
            pass


def _operation(control: int) -> DmaOp:
    """QEMU's priority: READ wins over WRITE, WRITE over SKIP."""
    if control & DmaControl.READ:
        return DmaOp.READ
    if control & DmaControl.WRITE:
        return DmaOp.WRITE
    if control & DmaControl.SKIP:
        return DmaOp.SKIP
    return DmaOp.NONE


def _write_prefix(memory: GuestMemory, addr: int, data: Buffer) -> bool:
    """Write ``data`` at ``addr``; if it runs out of RAM, write the part that is inside.

    QEMU's DMA writes go through the address space piece by piece, so a READ that runs past the
    end of RAM still lands the bytes before the end and then reports ERROR.  Guest RAM is one
    contiguous range, so the part inside is a prefix whose end a binary search on one-byte
    probes finds without touching anything.
    """
    try:
        memory.write(addr, data)
        return True
    except GuestMemoryError:
        pass
    good = _readable_prefix(memory, addr, len(data))
    if good:
        memory.write(addr, memoryview(data)[:good])
    return False


def _readable_prefix(memory: GuestMemory, addr: int, length: int) -> int:
    def inside(n: int) -> bool:
        try:
            memory.read(addr + n - 1, 1)
            return True
        except GuestMemoryError:
            return False

    if length == 0 or not inside(1):
        return 0
    lo, hi = 1, length  # [addr, addr+lo) is inside; [addr, addr+hi) is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if inside(mid):
            lo = mid
        else:
            hi = mid
    return lo

