"""The numbers and layouts of fw_cfg.rst, checked against the spec's own values."""

from __future__ import annotations

import pytest
from construct import PaddingError

from fwcfg import DmaAccess, DmaControl, Feature, FileDir, FileEntry, Key, PpcKey
from fwcfg._layouts import ENTRY_MASK, file_dir_size


def test_selector_keys_have_the_spec_values() -> None:
    assert (Key.SIGNATURE, Key.ID, Key.FILE_DIR, Key.FILE_FIRST) == (0, 1, 0x19, 0x20)
    assert (Key.KERNEL_DATA, Key.CMDLINE_DATA, Key.SETUP_DATA) == (0x11, 0x15, 0x18)
    assert (Key.WRITE_CHANNEL, Key.ARCH_LOCAL, Key.INVALID) == (0x4000, 0x8000, 0xFFFF)
    assert ENTRY_MASK == 0x3FFF
    assert (PpcKey.TBFREQ, PpcKey.IS_KVM, PpcKey.BUSFREQ) == (0x8003, 0x8005, 0x8009)


def test_feature_and_dma_control_bits() -> None:
    assert Feature.TRADITIONAL | Feature.DMA == 3
    assert [int(b) for b in DmaControl] == [0x01, 0x02, 0x04, 0x08, 0x10]


def test_dma_descriptor_is_sixteen_big_endian_bytes() -> None:
    raw = DmaAccess.build({"control": 0x0019_000A, "length": 0x40, "address": 0x1_2345_6789})
    assert raw == bytes.fromhex("0019000a" "00000040" "0000000123456789")
    assert DmaAccess.parse(raw).address == 0x1_2345_6789


def test_file_entry_layout_and_name_limits() -> None:
    raw = FileEntry.build({"size": 5, "select": 0x21, "name": "opt/x"})
    assert len(raw) == 64
    assert raw[:8] == bytes.fromhex("00000005" "0021" "0000")
    assert raw[8:].rstrip(b"\0") == b"opt/x"
    FileEntry.build({"size": 0, "select": 0x20, "name": "n" * 56})  # fits, but no NUL left
    with pytest.raises(PaddingError):
        FileEntry.build({"size": 0, "select": 0x20, "name": "n" * 57})


def test_directory_parses_count_then_entries() -> None:
    entries = [{"size": 1, "select": 0x20, "name": "a"}, {"size": 2, "select": 0x21, "name": "b"}]
    raw = FileDir.build({"count": 2, "files": entries})
    assert raw[:4] == b"\0\0\0\x02" and len(raw) == 4 + 128
    assert [f.name for f in FileDir.parse(raw).files] == ["a", "b"]
    assert file_dir_size(0x20) == 2052


def test_the_public_surface_is_exactly_all() -> None:
    import fwcfg

    public = {n for n in dir(fwcfg) if not n.startswith(("_", "@"))}  # @: pytest rewriting
    assert public - {"client"} == set(fwcfg.__all__)
    assert all(getattr(fwcfg, n) is not None for n in fwcfg.__all__)
