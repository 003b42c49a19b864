"""Items and files: where bytes come from, how the directory tracks them, host-side mistakes."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest
from fwcfg_scenario import BUF, DESC

from fwcfg import (
    BytearrayMemory,
    ConfigError,
    DmaAccess,
    DmaControl,
    FileDir,
    FwCfg,
    Key,
    PpcKey,
)
from fwcfg.client import DeviceTransport, FwCfgClient


def directory(dev: FwCfg) -> list[tuple[str, int, int]]:
    dev.select(Key.FILE_DIR)
    raw = dev.read_data(4 + 64 * dev.file_slots)
    return [(f.name, f.select, f.size) for f in FileDir.parse(raw).files]


def test_directory_stays_sorted_and_renumbers_like_qemu(ram: BytearrayMemory) -> None:
    dev = FwCfg(ram)
    assert dev.add_string_file("opt/m", "m") == 0x20
    assert dev.add_string_file("opt/z", "zz") == 0x21
    assert dev.add_string_file("etc/a", "aaa") == 0x20  # sorts first: the others move up
    assert directory(dev) == [("etc/a", 0x20, 3), ("opt/m", 0x21, 1), ("opt/z", 0x22, 2)]
    assert dev.key_of("opt/z") == 0x22 and dev.key_of("nope") is None
    assert [f.name for f in dev.files()] == ["etc/a", "opt/m", "opt/z"]
    dev.select(0x22)
    assert dev.read_data(2) == b"zz"


def test_directory_item_is_sized_for_every_slot(ram: BytearrayMemory) -> None:
    dev = FwCfg(ram, file_slots=0x10)
    dev.add_string_file("opt/a", "a")
    dev.select(Key.FILE_DIR)
    raw = dev.read_data(4 + 64 * 0x10 + 8)
    assert raw[:4] == b"\0\0\0\x01"
    assert raw[4 + 64 :] == bytes(len(raw) - 4 - 64)
    assert dev.statistics().offset == 4 + 64 * 0x10


def test_names_sort_bytewise_as_strcmp(ram: BytearrayMemory) -> None:
    dev = FwCfg(ram)
    for name in ["opt/é", "opt/Z", "opt/a", "opt/_"]:
        dev.add_string_file(name, name)
    assert [f.name for f in dev.files()] == ["opt/Z", "opt/_", "opt/a", "opt/é"]


def test_string_files_have_no_trailing_nul(dev: FwCfg) -> None:
    assert FwCfgClient(DeviceTransport(dev)).read_file("opt/greeting") == b"hello, world"


def test_host_file_is_read_lazily_and_costs_no_memory_until_read(
    ram: BytearrayMemory, tmp_path: Path
) -> None:
    big = tmp_path / "sparse"
    with big.open("wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse
        f.seek((1 << 30) - 5)
        f.write(b"last!")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dev = FwCfg(ram)
    key = dev.add_host_file("opt/big", big)
    assert dev.files()[0].size == 1 << 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 16 * 1024  # KiB
    ram.write(DESC, DmaAccess.build({
        "control": DmaControl.SELECT | DmaControl.SKIP | (key << 16),
        "length": (1 << 30) - 5, "address": 0}))
    dev.dma(DESC)
    assert dev.read_data(8) == b"last!\0\0\0"
    dev.close()


def test_a_host_file_that_shrinks_reads_zeros_instead_of_faulting(
    ram: BytearrayMemory, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    dev = FwCfg(ram)
    key = dev.add_host_file("opt/f", path)
    dev.select(key)
    assert dev.read_data(2) == b"01"  # mapped now
    os.truncate(path, 4)
    dev.select(key)
    assert dev.read_data(12) == b"0123" + bytes(8)
    other = tmp_path / "g"
    other.write_bytes(b"abcdef")
    key = dev.add_host_file("opt/g", other)
    os.truncate(other, 3)  # shrinks before it was ever mapped
    dev.select(key)
    assert dev.read_data(8) == b"abc" + bytes(5)
    dev.close()


def test_callback_files_are_produced_on_demand(dev: FwCfg, ram: BytearrayMemory) -> None:
    calls: list[tuple[int, int]] = []

    def produce(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return bytes((offset + i) & 0xFF for i in range(length))

    key = dev.add_callback_file("opt/cb", 300, produce)
    assert calls == []
    ram.write(DESC, DmaAccess.build({
        "control": DmaControl.SELECT | DmaControl.READ | (key << 16),
        "length": 400, "address": BUF}))
    dev.dma(DESC)
    assert ram.read(BUF, 400) == bytes(i & 0xFF for i in range(300)) + bytes(100)
    assert calls == [(0, 300)]


def test_name_of_knows_keys_files_and_ppc_names(dev: FwCfg) -> None:
    assert dev.name_of(Key.SIGNATURE) == "signature"
    assert dev.name_of(Key.FILE_DIR) == "file_dir"
    assert dev.name_of(Key.CMDLINE_DATA | Key.WRITE_CHANNEL) == "cmdline_data"
    assert dev.name_of(PpcKey.TBFREQ) == "tbfreq"
    assert dev.name_of(0x20) == "opt/greeting"
    assert dev.name_of(0x21) is None and dev.name_of(0x1A) is None
    assert dev.name_of(0x80FF) is None and dev.name_of(Key.INVALID) == "invalid"


def test_reset_selects_the_signature_and_keeps_items(dev: FwCfg) -> None:
    dev.select(Key.NB_CPUS)
    dev.reset()
    assert dev.read_data(4) == b"QEMU"
    dev.select(Key.NB_CPUS)
    assert dev.read_data(2) == b"\x04\0"


def test_replacing_an_item_needs_replace(dev: FwCfg) -> None:
    with pytest.raises(ValueError, match=r"key 0x0005 already holds an item"):
        dev.add_u16(Key.NB_CPUS, 2)
    dev.add_u16(Key.NB_CPUS, 2, replace=True)
    dev.select(Key.NB_CPUS)
    assert dev.read_data(2) == b"\x02\0"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (Key.FILE_DIR, r"reserved for files"),
        (0x20, r"reserved for files"),
        (0x4003, r"not a selector key"),
        (0x10000, r"not a selector key"),
        (0x8040, r"beyond the entry space"),
    ],
)
def test_numeric_items_only_go_where_numeric_items_belong(
    dev: FwCfg, key: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dev.add_bytes(key, b"x")


def test_arch_local_items_are_separate_from_the_common_ones(dev: FwCfg) -> None:
    dev.add_u32(PpcKey.IS_KVM, 0)
    dev.add_u32(PpcKey.TBFREQ, 400_000_000)
    dev.select(PpcKey.TBFREQ)
    assert int.from_bytes(dev.read_data(4), "little") == 400_000_000
    dev.select(0x8020)  # an arch-local key inside the entry space, but empty
    assert dev.read_data(4) == bytes(4)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("o" * 56, r"is 56 bytes long; the limit is 55"),
        ("opt/" + "é" * 26, r"is 56 bytes long; the limit is 55"),
        ("", r"empty or contains a NUL"),
        ("opt/a\0b", r"empty or contains a NUL"),
        ("opt/greeting", r"duplicate fw_cfg file name 'opt/greeting'"),
    ],
)
def test_bad_file_names_are_refused_with_one_clear_message(
    dev: FwCfg, name: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        dev.add_string_file(name, "x")


def test_a_55_byte_name_fits(dev: FwCfg) -> None:
    name = "opt/" + "n" * 51
    key = dev.add_string_file(name, "x")
    assert FwCfgClient(DeviceTransport(dev)).find(name) is not None and key >= 0x20


def test_too_many_files(ram: BytearrayMemory) -> None:
    dev = FwCfg(ram, file_slots=0x10)
    for i in range(0x10):
        dev.add_string_file(f"opt/{i:02}", "x")
    with pytest.raises(ConfigError, match=r"too many fw_cfg files: 'opt/x' does not fit in 16"):
        dev.add_string_file("opt/x", "x")


@pytest.mark.parametrize("slots", [0xF, 0x3FE1])
def test_file_slots_outside_qemus_range(ram: BytearrayMemory, slots: int) -> None:
    with pytest.raises(ConfigError, match=r"file_slots"):
        FwCfg(ram, file_slots=slots)


def test_missing_unreadable_and_odd_host_files(
    dev: FwCfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"host file '.*nope' does not exist"):
        dev.add_host_file("opt/a", tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"is a directory"):
        dev.add_host_file("opt/a", tmp_path)
    with pytest.raises(ConfigError, match=r"not a regular file"):
        dev.add_host_file("opt/a", "/dev/null")
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    secret.chmod(0)
    if os.access(secret, os.R_OK):  # root reads anything: make the open fail as it would
        real_open = os.open

        def refuse(path: object, *args: object, **kwargs: object) -> int:
            if path == secret:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ConfigError, match=r"'.*secret' cannot be read: Permission denied"):
        dev.add_host_file("opt/a", secret)
