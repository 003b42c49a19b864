"""Our fw_cfg against QEMU's, register for register, over the qtest protocol.

One real ``qemu-system-aarch64 -M virt`` (its fw_cfg has the same wide MMIO layout with DMA) and
one ``python -m machine`` in qtest mode get the same ``-fw_cfg`` files and then the same random
operation sequences: selects of every kind of key, data reads of every width, DMA READ / SKIP /
WRITE / SELECT descriptors in RAM with every trigger, bad DMA and descriptor addresses, ignored
and rejected register accesses, directory reads.  Every byte a guest could observe is compared:
data-register values, the DMA status word, the DMA target window and the last page of RAM.

The two machines differ where they must: RAM sits at 0x4000_0000 on virt and at 0 on the e500,
aarch64 composes qtest values little-endian and the e500 big-endian, and virt has its own
``etc/...`` files.  So operations name *places* (an offset in a scratch window, a distance from
the end of RAM) and *files* (by name), each side resolves them, and values are compared as the
bytes on the bus.  The directory, whose extra QEMU entries are expected, is compared
structurally: the same user files, sizes and order.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwcfg import DmaAccess, DmaControl, FileDir, Key
from fwcfg.client import FwCfgClient, QtestTransport
from machine.debug.qtest import QtestClient

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(
        shutil.which("qemu-system-aarch64") is None, reason="qemu-system-aarch64 not installed"
    ),
]

RAM_SIZE = 128 * 1024 * 1024
SCRATCH = 32 * 1024 * 1024  # well clear of the device tree QEMU puts at the base of RAM
WINDOW = 8 * 1024
TAIL = 4 * 1024
UUID = "4600cb32-38ec-4b2f-8acb-81c6ea54f2d8"

FILES = {
    "opt/a": os.urandom(37),
    "opt/c/big": os.urandom(5000),
    "opt/empty": b"",
    "opt/org.example/eight": bytes(range(8)),
}
STRINGS = {"opt/b": "string, with a comma", "opt/zz": "z" * 100}
NAMES = sorted([*FILES, *STRINGS])

Order = Literal["big", "little"]


@dataclass
class Side:
    """One machine under test, addressed in its own terms."""

    label: str
    client: QtestClient
    fw_cfg: int
    ram: int
    order: Order
    keys: dict[str, int]

    def cmd(self, line: str) -> str:
        answer = self.client.command(line)
        assert answer.startswith("OK"), f"{self.label}: {line!r} -> {answer!r}"
        return answer

    def reg_read(self, offset: int, size: int) -> bytes:
        word = {1: "readb", 2: "readw", 4: "readl", 8: "readq"}[size]
        value = int(self.cmd(f"{word} {self.fw_cfg + offset:#x}").split()[1], 16)
        return value.to_bytes(size, self.order)

    def reg_write(self, offset: int, data: bytes) -> None:
        word = {1: "writeb", 2: "writew", 4: "writel", 8: "writeq"}[len(data)]
        self.cmd(f"{word} {self.fw_cfg + offset:#x} {int.from_bytes(data, self.order):#x}")

    def mem_read(self, addr: int, size: int) -> bytes:
        return QtestTransport(self.client.command, base=self.fw_cfg).memread(addr, size)

    def mem_write(self, addr: int, data: bytes) -> None:
        QtestTransport(self.client.command, base=self.fw_cfg).memwrite(addr, data)

    def place(self, where: tuple[str, int]) -> int:
        """Resolve a place: ('scratch', off), ('end', delta from the end of RAM), ('abs', a)."""
        kind, value = where
        if kind == "scratch":
            return self.ram + SCRATCH + value
        if kind == "end":
            return self.ram + RAM_SIZE + value
        return value

    def key(self, target: tuple[str, int | str, int]) -> int:
        kind, value, extra = target
        base = self.keys[value] if kind == "file" else value
        assert isinstance(base, int)
        return base | extra


@pytest.fixture(scope="module")
def host_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("fwcfg-files")
    options = []
    for name, data in FILES.items():
        path = root / name.replace("/", "_")
        path.write_bytes(data)
        options.append(f"name={name},file={path}")
    for name, text in STRINGS.items():
        options.append(f"name={name},string={text.replace(',', ',,')}")
    return options


def _start(label: str, argv: list[str], options: list[str], fw: int, ram: int,
           order: Order) -> Side:
    for option in options:
        argv += ["-fw_cfg", option]
    client = QtestClient(argv)
    side = Side(label, client, fw, ram, order, {})
    directory = FwCfgClient(QtestTransport(client.command, base=fw, byteorder=order)).directory()
    side.keys = {e.name: e.key for e in directory}
    assert max(side.keys.values()) < min(EMPTY_KEYS[6:]), "EMPTY_KEYS must stay unused"
    return side


@pytest.fixture(scope="module")
def sides(host_files: list[str]) -> Iterator[tuple[Side, Side]]:
    common = ["-S", "-qtest", "stdio", "-m", str(RAM_SIZE >> 20), "-smp", "1", "-uuid", UUID]
    qemu = _start(
        "qemu",
        ["qemu-system-aarch64", "-M", "virt", "-accel", "tcg", "-display", "none",
         "-nodefaults", "-qtest-log", "/dev/null", *common],
        host_files, 0x0902_0000, 0x4000_0000, "little",
    )
    ours = _start("ours", [sys.executable, "-m", "machine", *common], host_files,
                  0xF000_0000, 0, "big")
    yield qemu, ours
    qemu.client.close()
    assert ours.client.close() == 0


# --- operations ------------------------------------------------------------------------------

Target = tuple[str, int | str, int]

#: Keys whose content is the same on both machines (set, or empty on both).  0x03 (RAM size)
#: and 0x0f (max CPUs) exist only here; 0x04 (NOGRAPHIC) reads 1 here (PLATFORM.md) and 0 on
#: virt; 0x14 (command-line size) is 1 here (qtest serves a boot's fw_cfg, whose command line
#: is always there, if only its NUL) and absent on virt without -kernel; 0x19 (the directory)
#: differs by QEMU's own files (and our etc/fdt), and 0x20..0x2f are files that the two
#: machines number differently: those are reached by name.
DIFFERENT_KEYS = (Key.RAM_SIZE, Key.NOGRAPHIC, Key.MAX_CPUS, Key.CMDLINE_SIZE)
SHARED_KEYS = [k for k in range(0x19) if k not in DIFFERENT_KEYS]
EMPTY_KEYS = [*range(0x1A, 0x20), *range(0x30, 0x40)]
INVALID_KEYS = [0x40, 0x41, 0x1000, 0x3FFF, 0x7FFF, 0xFFFF]
ARCH_KEYS = [0x8000, 0x8003, 0x8005, 0x801F, 0x8020, 0x803F, 0x8040, 0xBFFF]

targets: st.SearchStrategy[Target] = st.one_of(
    st.tuples(st.just("file"), st.sampled_from(NAMES), st.sampled_from([0, Key.WRITE_CHANNEL])),
    st.tuples(st.just("key"), st.sampled_from(SHARED_KEYS + EMPTY_KEYS), st.just(0)),
    st.tuples(st.just("key"), st.sampled_from(SHARED_KEYS), st.just(int(Key.WRITE_CHANNEL))),
    st.tuples(st.just("key"), st.sampled_from(INVALID_KEYS + ARCH_KEYS), st.just(0)),
)


@dataclass(frozen=True)
class Select:
    target: Target


@dataclass(frozen=True)
class ReadData:
    width: int
    count: int


@dataclass(frozen=True)
class RegRead:
    """A load the guest may do at any register: data, selector, DMA (signature)."""

    offset: int
    width: int


@dataclass(frozen=True)
class RegWrite:
    """Stores both devices ignore: data writes, 1-byte selector, 2-byte DMA, DMA-high only."""

    offset: int
    data: bytes


@dataclass(frozen=True)
class Dma:
    control: int
    target: Target
    length: int
    address: tuple[str, int]
    descriptor: tuple[str, int]
    trigger: Literal["quad", "halves", "low"]
    payload: bytes


@dataclass(frozen=True)
class Directory:
    by_dma: bool


Op = Select | ReadData | RegRead | RegWrite | Dma | Directory

widths = st.sampled_from([1, 2, 4, 8])


def _binary_of_size(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


reg_reads = st.one_of(
    st.builds(RegRead, st.just(0), widths),
    st.builds(RegRead, st.sampled_from([1, 2, 4, 6, 7]), st.just(1)),
    st.builds(RegRead, st.just(4), st.just(4)),
    st.builds(RegRead, st.just(8), st.sampled_from([1, 2, 4, 8])),
    st.builds(RegRead, st.just(0x10), widths),
    st.builds(RegRead, st.sampled_from([0x12, 0x14, 0x16]), st.just(2)),
    st.builds(RegRead, st.sampled_from([0x11, 0x15, 0x17]), st.just(1)),
    st.builds(RegRead, st.just(0x14), st.just(4)),
)
reg_writes = st.one_of(
    st.builds(RegWrite, st.just(0), widths.flatmap(_binary_of_size)),
    st.builds(RegWrite, st.sampled_from([8, 9]), st.binary(min_size=1, max_size=1)),
    st.builds(RegWrite, st.sampled_from([0x10, 0x12, 0x16]), st.binary(min_size=2, max_size=2)),
    st.builds(RegWrite, st.just(0x10),
              st.sampled_from([bytes(4), b"\0\0\0\x01", b"\xff\xff\xff\xff"])),
)

_R, _W, _S, _SEL = DmaControl.READ, DmaControl.WRITE, DmaControl.SKIP, DmaControl.SELECT
common_controls = st.sampled_from(
    [_SEL | _R, _R, _SEL | _S, _S, _SEL | _W, _W, _SEL, 0, _SEL | _R | _W, _S | _W]
)
any_controls = st.lists(
    st.sampled_from([DmaControl.READ, DmaControl.WRITE, DmaControl.SKIP, DmaControl.SELECT,
                     DmaControl.ERROR, 0x20, 0x100]),
    max_size=4,
).map(lambda bits: sum(set(bits)))
control_bits = st.one_of(common_controls, any_controls)
lengths = st.one_of(
    st.integers(0, 80), st.integers(0, 6000), st.sampled_from([0x1_0000, 0x2_0000, 0xFFFF_FFFF])
)
good_address = st.tuples(st.just("scratch"), st.integers(256, WINDOW - 1))
bad_address = st.one_of(
    st.tuples(st.just("end"), st.integers(-64, -1)),  # runs off the end of RAM
    st.tuples(st.just("end"), st.integers(0, 1 << 20)),
    st.tuples(st.just("abs"), st.sampled_from([0xFFFF_FFFF_0000_0000, 0x1_0000_0000])),
)
good_descriptor = st.tuples(st.just("scratch"), st.integers(0, 240))
bad_descriptor = st.one_of(
    st.tuples(st.just("end"), st.integers(-15, -4)),  # straddles: only the status word fits
    st.tuples(st.just("end"), st.integers(0, 4096)),
    st.tuples(st.just("abs"), st.just(0x1_0000_0000)),
)


@st.composite
def dmas(draw: st.DrawFn) -> Dma:
    control = draw(control_bits)
    target = draw(targets)
    length = draw(lengths)
    address = draw(st.one_of(good_address, bad_address))
    if length == 0xFFFF_FFFF and control & DmaControl.READ:
        # QEMU zero-fills in 512-byte pieces, even past the end of RAM: 4 GiB takes seconds.
        length = 0x1_0000
    descriptor = draw(st.one_of(good_descriptor, good_descriptor, good_descriptor, bad_descriptor))
    if draw(st.booleans()) and target[0] == "file":
        control |= DmaControl.SELECT
    # Only the low half: the high half is whatever the latch holds (0 after a transfer), so the
    # descriptor must be one whose high half is 0 (QEMU's flash at physical 0 is no RAM).
    trigger = draw(st.sampled_from(["quad", "halves"] + (["low"] if descriptor[0] == "scratch"
                                                       else [])))
    payload = draw(st.binary(max_size=96))
    return Dma(control, target, length, address, descriptor, trigger, payload)


ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(Select, targets),
    st.builds(ReadData, widths, st.integers(1, 12)),
    reg_reads,
    reg_writes,
    dmas(),
    st.builds(Directory, st.booleans()),
)


# --- running an operation on both sides ------------------------------------------------------


def _observe_dma(side: Side, op: Dma) -> bytes:
    desc = side.place(op.descriptor)
    address = side.place(op.address)
    key = side.key(op.target) & 0xFFFF
    control = (op.control & 0xFFFF) | (key << 16)
    if op.address[0] == "scratch":
        side.mem_write(address, op.payload)
    if op.descriptor[0] == "scratch":
        side.mem_write(desc, DmaAccess.build(
            {"control": control, "length": op.length, "address": address}))
    if op.trigger == "quad":
        side.reg_write(0x10, desc.to_bytes(8, "big"))
    elif op.trigger == "halves":
        side.reg_write(0x10, (desc >> 32).to_bytes(4, "big"))
        side.reg_write(0x14, (desc & 0xFFFF_FFFF).to_bytes(4, "big"))
    else:
        side.reg_write(0x14, (desc & 0xFFFF_FFFF).to_bytes(4, "big"))
    # The descriptor area [0, 256) holds side-specific addresses; compare its status word only,
    # and where the device left it alone (it never got the descriptor), the key in its top half
    # is this side's number for the target.
    status = b""
    if op.descriptor[0] == "scratch":
        word = side.mem_read(desc, 4)
        status = b"untouched" if int.from_bytes(word, "big") == control else word
    buffers = side.mem_read(side.ram + SCRATCH + 256, WINDOW - 256)
    return status + buffers + side.mem_read(side.ram + RAM_SIZE - TAIL, TAIL)


def _directory(side: Side, by_dma: bool) -> list[tuple[str, int, int]]:
    if by_dma:
        base = side.ram + SCRATCH
        buf = base + 256
        length = 4 + 64 * 32
        side.mem_write(base, DmaAccess.build({
            "control": DmaControl.SELECT | DmaControl.READ | (Key.FILE_DIR << 16),
            "length": length, "address": buf}))
        side.reg_write(0x10, base.to_bytes(8, "big"))
        assert side.mem_read(base, 4) == bytes(4)
        raw = side.mem_read(buf, length)
    else:
        side.reg_write(8, Key.FILE_DIR.to_bytes(2, "big"))
        raw = b"".join(side.reg_read(0, 8) for _ in range((4 + 64 * 32) // 8 + 1))
    parsed = FileDir.parse(raw)
    names = [f.name for f in parsed.files]
    assert names == sorted(names, key=lambda n: n.encode()), f"{side.label}: unsorted {names}"
    assert raw[4 + 64 * parsed.count :].count(0) == len(raw) - 4 - 64 * parsed.count
    return [(f.name, f.size, f.select) for f in parsed.files if f.name.startswith("opt/")]


def run_both(qemu: Side, ours: Side, op: Op) -> None:
    if isinstance(op, Select):
        for side in (qemu, ours):
            side.reg_write(8, side.key(op.target).to_bytes(2, "big"))
    elif isinstance(op, ReadData):
        for _ in range(op.count):
            assert qemu.reg_read(0, op.width) == ours.reg_read(0, op.width), op
    elif isinstance(op, RegRead):
        assert qemu.reg_read(op.offset, op.width) == ours.reg_read(op.offset, op.width), op
    elif isinstance(op, RegWrite):
        for side in (qemu, ours):
            side.reg_write(op.offset, op.data)
    elif isinstance(op, Dma):
        assert _observe_dma(qemu, op) == _observe_dma(ours, op), op
    else:
        theirs, mine = _directory(qemu, op.by_dma), _directory(ours, op.by_dma)
        assert [(n, s) for n, s, _ in theirs] == [(n, s) for n, s, _ in mine]
        assert all(qemu.keys[n] == k for n, _, k in theirs)
        assert all(ours.keys[n] == k for n, _, k in mine)
        for side in (qemu, ours):  # leave state whose bytes both machines share
            side.reg_write(8, bytes(2))
            side.cmd(f"memset {side.ram + SCRATCH:#x} {WINDOW} 0")


def _fresh(side: Side) -> None:
    side.cmd(f"memset {side.ram + SCRATCH:#x} {WINDOW} 0")
    side.cmd(f"memset {side.ram + RAM_SIZE - TAIL:#x} {TAIL} 0")
    side.reg_write(8, bytes(2))
    side.reg_write(0x10, bytes(4))  # the DMA address latch's high half


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sequence=st.lists(ops, min_size=1, max_size=12))
def test_random_sequences_match_qemu(sides: tuple[Side, Side], sequence: list[Op]) -> None:
    qemu, ours = sides
    for side in sides:
        _fresh(side)
    for op in sequence:
        run_both(qemu, ours, op)


def test_user_files_and_standard_items_read_the_same(sides: tuple[Side, Side]) -> None:
    qemu, ours = sides
    readers = {
        side.label: (
            FwCfgClient(QtestTransport(side.client.command, base=side.fw_cfg,
                                       byteorder=side.order)),
            FwCfgClient(QtestTransport(side.client.command, base=side.fw_cfg,
                                       byteorder=side.order, scratch=side.ram + SCRATCH),
                        use_dma=True),
        )
        for side in sides
    }
    expected = {**FILES, **{n: t.encode() for n, t in STRINGS.items()}}
    for label, (plain, dma) in readers.items():
        for client in (plain, dma):
            assert client.signature() == b"QEMU", label
            assert client.read_u32(Key.ID) == 3, label
            assert client.read_item(Key.UUID, 16).hex() == UUID.replace("-", ""), label
            assert client.read_u16(Key.NB_CPUS) == 1, label
            for name, data in expected.items():
                assert client.read_file(name) == data, (label, name)
    # Beyond the user's files, this machine has only the etc/fdt of a boot; virt has its own.
    assert [e for e in qemu.keys if e.startswith("opt/")] == [e for e in ours.keys
                                                              if e != "etc/fdt"]
    assert "etc/fdt" in ours.keys


@pytest.mark.parametrize("length", [1, 7, 8, 9, 16, 5000, 0x1_0000])
@pytest.mark.parametrize("before_end", [1, 8, 64])
def test_dma_read_running_off_the_end_of_ram_lands_the_part_inside(
    sides: tuple[Side, Side], length: int, before_end: int
) -> None:
    """READ into a range that leaves RAM: the bytes inside arrive, then ERROR (as QEMU)."""
    op = Dma(DmaControl.SELECT | DmaControl.READ, ("file", "opt/c/big", 0), length,
             ("end", -before_end), ("scratch", 0), "quad", b"")
    for side in sides:
        _fresh(side)
    run_both(*sides, op)
    tail = sides[1].mem_read(RAM_SIZE - before_end, before_end)
    assert tail == FILES["opt/c/big"][: min(before_end, length)].ljust(before_end, b"\0")
