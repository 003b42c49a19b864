"""The DMA engine: every control bit, every way a transfer can fail, and what it reports."""

from __future__ import annotations

import pytest
from fwcfg_scenario import BUF, DESC, KERNEL, RAM_BASE, RAM_END

from fwcfg import BytearrayMemory, DmaAccess, DmaControl, DmaOp, DmaTransfer, FwCfg, Key

R, W, S, SEL, ERR = (DmaControl.READ, DmaControl.WRITE, DmaControl.SKIP, DmaControl.SELECT,
                     DmaControl.ERROR)


def run(dev: FwCfg, control: int, length: int, address: int = BUF, *, key: int = 0,
        desc: int = DESC) -> DmaTransfer:
    """Place a descriptor in RAM and start it with one 64-bit write, as a guest does."""
    dev.memory.write(desc, DmaAccess.build(
        {"control": control | (key << 16), "length": length, "address": address}))
    return dev.dma(desc)


def status(ram: BytearrayMemory, desc: int = DESC) -> int:
    return int.from_bytes(ram.read(desc, 4), "big")


def test_select_read_copies_and_reports_success(dev: FwCfg, ram: BytearrayMemory) -> None:
    t = run(dev, SEL | R, 100, key=Key.KERNEL_DATA)
    assert ram.read(BUF, 100) == KERNEL[:100]
    assert status(ram) == 0
    assert t == DmaTransfer(descriptor=DESC, key=Key.KERNEL_DATA, name="kernel_data",
                            control=(SEL | R) | (Key.KERNEL_DATA << 16), op=DmaOp.READ,
                            offset=0, length=100, address=BUF, error=False)
    assert str(t) == f"fw_cfg DMA read 100 bytes of kernel_data at offset 0 to {BUF:#x}"


def test_reads_continue_where_the_last_access_stopped(dev: FwCfg, ram: BytearrayMemory) -> None:
    dev.select(Key.KERNEL_DATA)
    dev.read_data(10)  # the data register and DMA share one offset
    run(dev, R, 6)
    assert ram.read(BUF, 6) == KERNEL[10:16]
    assert dev.read_data(2) == KERNEL[16:18]


def test_read_past_the_end_zero_fills_without_error(dev: FwCfg, ram: BytearrayMemory) -> None:
    ram.write(BUF, b"\xaa" * 64)
    t = run(dev, SEL | R, 64, key=Key.NB_CPUS)
    assert ram.read(BUF, 64) == b"\x04" + bytes(63)
    assert not t.error and status(ram) == 0 and dev.statistics().offset == 2


@pytest.mark.parametrize("key", [0x1F, 0x3F, 0x40, 0x3FFF, 0x8001, 0xFFFF])
def test_read_of_an_empty_or_invalid_key_is_all_zeros(
    dev: FwCfg, ram: BytearrayMemory, key: int
) -> None:
    ram.write(BUF, b"\xaa" * 16)
    assert not run(dev, SEL | R, 16, key=key).error
    assert ram.read(BUF, 16) == bytes(16)


def test_skip_moves_the_offset_and_may_run_past_the_end(dev: FwCfg, ram: BytearrayMemory) -> None:
    assert not run(dev, SEL | S, 5, key=Key.KERNEL_DATA).error
    assert dev.read_data(3) == KERNEL[5:8]
    assert not run(dev, S, 0xFFFF_FFFF).error
    assert dev.statistics().offset == len(KERNEL)
    assert dev.read_data(4) == bytes(4)


def test_select_alone_ignores_the_length(dev: FwCfg, ram: BytearrayMemory) -> None:
    ram.write(BUF, b"\xaa" * 4)
    t = run(dev, SEL, 4, key=Key.NB_CPUS)
    assert t.op is DmaOp.NONE and not t.error and ram.read(BUF, 4) == b"\xaa" * 4
    assert str(t) == "fw_cfg DMA select nb_cpus"
    assert dev.read_data(2) == b"\x04\x00"


def test_without_select_the_current_item_is_used(dev: FwCfg, ram: BytearrayMemory) -> None:
    dev.select(Key.RAM_SIZE)
    run(dev, R, 8, key=Key.KERNEL_DATA)  # key bits without SELECT mean nothing
    assert ram.read(BUF, 8) == (0x1122_3344_5566_7788).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("control", "op"),
    [(R | W | S, DmaOp.READ), (R | W, DmaOp.READ), (W | S, DmaOp.WRITE), (S, DmaOp.SKIP),
     (ERR, DmaOp.NONE), (0x20 | 0x100, DmaOp.NONE)],
)
def test_read_beats_write_beats_skip_and_other_bits_are_ignored(
    dev: FwCfg, control: int, op: DmaOp
) -> None:
    t = run(dev, SEL | control, 4, key=Key.KERNEL_DATA)
    assert t.op is op


def test_the_guests_error_bit_is_not_sticky(dev: FwCfg, ram: BytearrayMemory) -> None:
    assert not run(dev, SEL | R | ERR, 4, key=Key.KERNEL_DATA).error
    assert status(ram) == 0


def test_write_into_a_writable_file_calls_the_host(dev: FwCfg, ram: BytearrayMemory) -> None:
    seen: list[tuple[int, bytes]] = []
    key = dev.add_file("opt/w", bytes(8), writable=True,
                       on_write=lambda off, data: seen.append((off, data)))
    ram.write(BUF, b"WXYZ")
    assert not run(dev, SEL | S, 2, key=key).error
    t = run(dev, W, 4)
    assert (t.op, t.offset, t.error, status(ram)) == (DmaOp.WRITE, 2, False, 0)
    assert seen == [(2, b"WXYZ")]
    assert dev.contents(key) == b"\0\0WXYZ\0\0"
    assert dev.read_data(2) == b"\0\0"  # the offset moved past the written bytes
    assert dev.statistics().dma_bytes_written == 4


@pytest.mark.parametrize(
    ("name", "skip", "length"),
    [
        ("opt/greeting", 0, 1),  # read-only file
        ("opt/w", 6, 4),  # does not fit in the rest of the item
        ("opt/w", 8, 1),  # at the end
    ],
)
def test_write_errors_leave_the_item_alone_but_advance_the_offset(
    dev: FwCfg, ram: BytearrayMemory, name: str, skip: int, length: int
) -> None:
    dev.add_file("opt/w", bytes(8), writable=True)
    key = dev.key_of(name)
    assert key is not None
    before = dev.contents(key)
    run(dev, SEL | S, skip, key=key)
    t = run(dev, W, length)
    assert t.error and status(ram) == ERR
    assert dev.contents(key) == before
    size = len(before)
    assert dev.statistics().offset == min(size, skip + length) if skip < size else size


@pytest.mark.parametrize("key", [Key.NB_CPUS, Key.SIGNATURE, 0x1F, 0xFFFF])
def test_numeric_and_missing_items_are_never_writable(
    dev: FwCfg, ram: BytearrayMemory, key: int
) -> None:
    assert run(dev, SEL | W, 1, key=key).error
    assert run(dev, SEL | W, 0, key=key).error is False  # nothing to write, nothing wrong


def test_write_from_outside_ram_changes_nothing(dev: FwCfg, ram: BytearrayMemory) -> None:
    key = dev.add_file("opt/w", bytes(8), writable=True)
    assert run(dev, SEL | W, 8, RAM_END - 4, key=key).error
    assert dev.contents(key) == bytes(8)


@pytest.mark.parametrize("address", [RAM_END, RAM_BASE - 8, 0, 1 << 40, 0xFFFF_FFFF_FFFF_FFF8])
def test_read_to_an_address_outside_ram_sets_error(
    dev: FwCfg, ram: BytearrayMemory, address: int
) -> None:
    ram.write(DESC, DmaAccess.build({
        "control": SEL | R | (Key.KERNEL_DATA << 16), "length": 16, "address": address}))
    before = bytes(ram.data)
    t = dev.dma(DESC)
    assert t.error and status(ram) == ERR
    after = bytearray(ram.data)
    after[DESC - RAM_BASE : DESC - RAM_BASE + 4] = before[DESC - RAM_BASE : DESC - RAM_BASE + 4]
    assert bytes(after) == before  # nothing but the status word changed
    assert dev.statistics().offset == 16  # QEMU advances even on error


@pytest.mark.parametrize("inside", [1, 5, 8])
def test_read_running_off_the_end_of_ram_lands_the_bytes_inside(
    dev: FwCfg, ram: BytearrayMemory, inside: int
) -> None:
    assert run(dev, SEL | R, 16, RAM_END - inside, key=Key.KERNEL_DATA).error
    assert ram.read(RAM_END - inside, inside) == KERNEL[:inside]


def test_zero_fill_running_off_the_end_of_ram(dev: FwCfg, ram: BytearrayMemory) -> None:
    ram.write(RAM_END - 8, b"\xaa" * 8)
    assert run(dev, SEL | R, 0xFFFF_FFFF, RAM_END - 8, key=0x1F).error
    assert ram.read(RAM_END - 8, 8) == bytes(8)


@pytest.mark.parametrize("desc", [RAM_END, RAM_END + 0x1000, RAM_BASE - 16, 1 << 63])
def test_a_descriptor_outside_ram_is_reported_and_touches_nothing(
    dev: FwCfg, ram: BytearrayMemory, desc: int
) -> None:
    before = bytes(ram.data)
    t = dev.dma(desc)
    assert (t.op, t.error, t.descriptor) == (DmaOp.BAD_DESCRIPTOR, True, desc)
    assert "outside RAM" in str(t)
    assert bytes(ram.data) == before


def test_a_descriptor_straddling_the_end_gets_error_in_its_control_word(
    dev: FwCfg, ram: BytearrayMemory
) -> None:
    desc = RAM_END - 8
    ram.write(desc, b"\xee" * 8)
    assert dev.dma(desc).op is DmaOp.BAD_DESCRIPTOR
    assert ram.read(desc, 8) == b"\0\0\0\x01" + b"\xee" * 4


def test_a_status_word_straddling_the_end_is_not_written(dev: FwCfg, ram: BytearrayMemory) -> None:
    ram.write(RAM_END - 2, b"\xee\xee")
    dev.dma(RAM_END - 2)
    assert ram.read(RAM_END - 2, 2) == b"\xee\xee"


def test_a_read_may_overwrite_its_own_descriptor_before_the_status(
    dev: FwCfg, ram: BytearrayMemory
) -> None:
    run(dev, SEL | R, 16, DESC, key=Key.KERNEL_DATA)
    assert ram.read(DESC, 16) == bytes(4) + KERNEL[4:16]


def test_statistics_count_transfers_and_errors(dev: FwCfg) -> None:
    run(dev, SEL | R, 8, key=Key.KERNEL_DATA)
    run(dev, SEL | R, 8, RAM_END, key=Key.KERNEL_DATA)
    stats = dev.statistics()
    assert (stats.dma_transfers, stats.dma_errors, stats.dma_bytes_read) == (2, 1, 16)
