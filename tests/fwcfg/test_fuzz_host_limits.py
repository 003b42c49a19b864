"""Host input at the limits of the fw_cfg format: a file is at most 2^32 - 1 bytes.

The directory gives each file's size as a big-endian u32, so a 4 GiB host file cannot be
listed.  It must be refused with one :class:`~fwcfg.ConfigError` naming the file (it used to
escape as a ``struct.error`` from building the directory), and 4 GiB - 1 must still work.
Sparse files keep these tests cheap.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from fwcfg import BytearrayMemory, ConfigError, DmaControl, FwCfg, Key


def sparse(path: Path, size: int, tail: bytes = b"") -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        if tail:
            f.seek(size - len(tail))
            f.write(tail)
    return path


def test_a_host_file_of_4_gib_is_refused_by_name(tmp_path: Path) -> None:
    dev = FwCfg(BytearrayMemory(0x1000))
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ConfigError, match=r"'opt/huge' is 4294967296 bytes.*at most 4294967295"):
        dev.add_host_file("opt/huge", sparse(tmp_path / "huge", 1 << 32))
    assert len(os.listdir("/proc/self/fd")) == before  # the descriptor was closed
    assert dev.files() == []


def test_a_callback_file_of_4_gib_is_refused_by_name() -> None:
    dev = FwCfg(BytearrayMemory(0x1000))
    with pytest.raises(ConfigError, match="'opt/cb' is 4294967296 bytes"):
        dev.add_callback_file("opt/cb", 1 << 32, lambda offset, length: bytes(length))
    assert dev.files() == []


def test_a_host_file_of_4_gib_minus_1_is_listed_and_its_last_byte_reads(tmp_path: Path) -> None:
    ram = BytearrayMemory(0x1000)
    dev = FwCfg(ram)
    key = dev.add_host_file("opt/edge", sparse(tmp_path / "edge", (1 << 32) - 1, b"Z"))
    try:
        (info,) = dev.files()
        assert info.size == 0xFFFF_FFFF
        directory = dev.contents(Key.FILE_DIR)
        assert struct.unpack(">IIH", directory[:10])[1:] == (0xFFFF_FFFF, key)
        ram.write(0x100, struct.pack(">IIQ", (key << 16) | DmaControl.SELECT | DmaControl.SKIP,
                                     0xFFFF_FFFE, 0))
        assert not dev.dma(0x100).error
        ram.write(0x100, struct.pack(">IIQ", DmaControl.READ, 2, 0x200))
        assert not dev.dma(0x100).error
        assert ram.read(0x200, 2) == b"Z\0"  # the last byte, then zero-fill past the end
    finally:
        dev.close()
