"""Every register of both layouts, at every width, including the accesses QEMU rejects."""

from __future__ import annotations

import pytest
from fwcfg_scenario import BUF, DESC, KERNEL

from fwcfg import (
    DMA_SIGNATURE,
    BytearrayMemory,
    DmaAccess,
    DmaControl,
    FwCfg,
    IoPort,
    Key,
    MmioWide,
    Selected,
)


def select(mmio: MmioWide, key: int) -> None:
    mmio.write(MmioWide.SELECTOR, 2, key)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_data_reads_stream_the_item_in_memory_order_at_every_width(
    dev: FwCfg, width: int
) -> None:
    mmio = MmioWide(dev)
    select(mmio, Key.KERNEL_DATA)
    stream = b"".join(
        mmio.read(MmioWide.DATA, width).to_bytes(width, "big")
        for _ in range((len(KERNEL) + width - 1) // width)
    )
    # The last access runs past the end: its missing bytes are zeros on the right.
    assert stream == KERNEL.ljust(len(stream), b"\0")


def test_reads_past_the_end_are_zero_and_the_offset_stays_at_the_end(dev: FwCfg) -> None:
    mmio = MmioWide(dev)
    select(mmio, Key.NB_CPUS)
    assert mmio.read(MmioWide.DATA, 8) == 0x0400_0000_0000_0000  # u16 LE 4, then zeros
    assert mmio.read(MmioWide.DATA, 8) == 0
    assert dev.statistics().offset == 2


def test_selecting_rewinds_and_integers_are_little_endian(dev: FwCfg) -> None:
    mmio = MmioWide(dev)
    select(mmio, Key.RAM_SIZE)
    mmio.read(MmioWide.DATA, 4)
    select(mmio, Key.RAM_SIZE)
    assert mmio.read(MmioWide.DATA, 8).to_bytes(8, "big") == (0x1122_3344_5566_7788).to_bytes(
        8, "little"
    )


def test_selector_is_a_big_endian_two_byte_register_that_reports_the_selection(
    dev: FwCfg,
) -> None:
    mmio = MmioWide(dev)
    assert mmio.write(MmioWide.SELECTOR, 2, 0x0005) == (
        Selected(key=5, name="nb_cpus", valid=True),
    )
    assert mmio.read(MmioWide.DATA, 2) == 0x0400
    (event,) = mmio.write(MmioWide.SELECTOR, 2, dev.key_of("opt/greeting") or 0)
    assert str(event) == "fw_cfg select opt/greeting"


def test_signature_and_features_after_power_on(ram: BytearrayMemory) -> None:
    mmio = MmioWide(FwCfg(ram))
    assert mmio.read(MmioWide.DATA, 4).to_bytes(4, "big") == b"QEMU"  # selected at start
    select(mmio, Key.ID)
    assert mmio.read(MmioWide.DATA, 4) == 0x0300_0000
    no_dma = MmioWide(FwCfg(ram, dma_enabled=False))
    select(no_dma, Key.ID)
    assert no_dma.read(MmioWide.DATA, 4) == 0x0100_0000
    assert no_dma.read(MmioWide.DMA, 8) == 0  # no DMA register at all


@pytest.mark.parametrize(
    ("offset", "size"),
    [(0x10, 8), (0x10, 4), (0x14, 4), (0x10, 2), (0x12, 2), (0x16, 2), (0x10, 1), (0x13, 1),
     (0x17, 1)],
)
def test_dma_register_reads_back_the_signature_bytes(dev: FwCfg, offset: int, size: int) -> None:
    rel = offset - MmioWide.DMA
    expected = int.from_bytes(DMA_SIGNATURE[rel : rel + size], "big")
    assert MmioWide(dev).read(offset, size) == expected


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (0x00, 3), (0x01, 1), (0x04, 4), (0x07, 1),  # data: only at +0
        (0x08, 2), (0x08, 1), (0x08, 4), (0x09, 1),  # selector: write-only, 2 bytes
        (0x0A, 2), (0x0C, 4),  # the hole between selector and DMA
        (0x11, 2), (0x12, 4), (0x14, 8),  # DMA: unaligned
        (0x18, 1), (0x100, 8), (-1, 1),  # outside the window
    ],
)
def test_rejected_reads_return_zero_and_change_nothing(
    dev: FwCfg, offset: int, size: int
) -> None:
    mmio = MmioWide(dev)
    select(mmio, Key.KERNEL_DATA)
    assert mmio.read(offset, size) == 0
    assert mmio.read(MmioWide.DATA, 1) == KERNEL[0]


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (0x08, 1), (0x08, 4), (0x08, 8), (0x09, 1), (0x09, 2),  # selector: only 2 bytes at +8
        (0x00, 1), (0x00, 2), (0x00, 4), (0x00, 8), (0x04, 4),  # data writes: ignored
        (0x10, 1), (0x10, 2), (0x12, 2), (0x14, 8), (0x11, 4), (0x18, 4),  # DMA: bad shapes
    ],
)
def test_rejected_or_ignored_writes_do_nothing(
    dev: FwCfg, ram: BytearrayMemory, offset: int, size: int
) -> None:
    mmio = MmioWide(dev)
    ram.write(DESC, DmaAccess.build({"control": DmaControl.READ, "length": 4, "address": BUF}))
    select(mmio, Key.KERNEL_DATA)
    assert mmio.write(offset, size, DESC) == ()
    assert mmio.read(MmioWide.DATA, 1) == KERNEL[0]
    assert dev.statistics().dma_transfers == 0


def test_dma_starts_on_the_low_half_or_a_full_write_and_clears_the_latch(
    dev: FwCfg, ram: BytearrayMemory
) -> None:
    mmio = MmioWide(dev)
    read4 = DmaAccess.build({
        "control": DmaControl.SELECT | DmaControl.READ | (Key.KERNEL_DATA << 16),
        "length": 4, "address": BUF,
    })
    ram.write(DESC, read4)
    assert mmio.write(MmioWide.DMA, 4, 0) == ()  # high half: latched, nothing yet
    (transfer,) = mmio.write(MmioWide.DMA + 4, 4, DESC)
    assert not transfer.error and ram.read(BUF, 4) == KERNEL[:4]
    ram.write(DESC, read4)
    (transfer,) = mmio.write(MmioWide.DMA, 8, DESC)
    assert not transfer.error
    # A high half left in the latch makes the next low-half write point outside RAM...
    mmio.write(MmioWide.DMA, 4, 1)
    ram.write(DESC, read4)
    (transfer,) = mmio.write(MmioWide.DMA + 4, 4, DESC)
    assert transfer.error and transfer.descriptor == (1 << 32) | DESC
    # ...and the transfer cleared it, so the next low half alone works again.
    (transfer,) = mmio.write(MmioWide.DMA + 4, 4, DESC)
    assert not transfer.error


def test_io_port_layout(dev: FwCfg, ram: BytearrayMemory) -> None:
    io = IoPort(dev)
    assert io.write(IoPort.SELECTOR, 2, Key.NB_CPUS)[0].key == Key.NB_CPUS  # LE: plain value
    assert [io.read(IoPort.DATA, 1), io.read(IoPort.SELECTOR, 1)] == [4, 0]  # both read data
    assert io.read(IoPort.DATA, 2) == 0 and io.write(IoPort.DATA, 2, 0x0500) == ()
    assert io.write(IoPort.DATA, 1, 0xFF) == ()  # ignored data write
    assert io.read(IoPort.DMA, 4) == int.from_bytes(b"QEMU", "little")
    assert io.read(IoPort.DMA + 4, 4) == int.from_bytes(b" CFG", "little")
    ram.write(DESC, DmaAccess.build({
        "control": DmaControl.SELECT | DmaControl.READ | (Key.KERNEL_DATA << 16),
        "length": 8, "address": BUF,
    }))
    io.write(IoPort.DMA, 4, 0)
    # A little-endian CPU stores cpu_to_be32(address) to port 0x518.
    (transfer,) = io.write(IoPort.DMA + 4, 4, int.from_bytes(DESC.to_bytes(4, "big"), "little"))
    assert transfer.descriptor == DESC and ram.read(BUF, 8) == KERNEL[:8]
