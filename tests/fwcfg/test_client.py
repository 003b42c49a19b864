"""One client, every transport: the same key -> bytes table through port, MMIO and DMA paths."""

from __future__ import annotations

import pytest
from fwcfg_scenario import BUF, KERNEL

from fwcfg import BytearrayMemory, Feature, FwCfg, IoPort, Key, MmioWide
from fwcfg.client import (
    DeviceTransport,
    DmaError,
    FwCfgClient,
    IoPortTransport,
    MmioTransport,
    Transport,
)

TABLE = {
    Key.SIGNATURE: b"QEMU",
    Key.ID: b"\x03\0\0\0",
    Key.RAM_SIZE: (0x1122_3344_5566_7788).to_bytes(8, "little"),
    Key.NB_CPUS: b"\x04\0",
    Key.KERNEL_DATA: KERNEL,
    0x1F: b"",
}


def transports(dev: FwCfg, ram: BytearrayMemory) -> dict[str, Transport]:
    return {
        "device": DeviceTransport(dev, BUF),
        "mmio": MmioTransport(MmioWide(dev), ram, BUF),
        "ioport": IoPortTransport(IoPort(dev), ram, BUF),
    }


@pytest.mark.parametrize("path", ["device", "mmio", "ioport"])
@pytest.mark.parametrize("use_dma", [False, True])
def test_every_path_reads_the_same_bytes(
    dev: FwCfg, ram: BytearrayMemory, path: str, use_dma: bool
) -> None:
    client = FwCfgClient(transports(dev, ram)[path], use_dma=use_dma)
    for key, data in TABLE.items():
        assert client.read_item(key, len(data) + 3) == data + bytes(3), hex(key)
        offset = max(len(data) - 2, 0)
        assert client.read_item(key, 5, offset=offset) == data[offset:].ljust(5, b"\0")
    assert client.signature() == b"QEMU"
    assert client.features() == Feature.TRADITIONAL | Feature.DMA
    assert client.read_u16(Key.NB_CPUS) == 4
    assert client.read_u32(Key.ID) == 3
    assert client.read_u64(Key.RAM_SIZE) == 0x1122_3344_5566_7788
    assert [(e.name, e.key, e.size) for e in client.directory()] == [("opt/greeting", 0x20, 12)]
    assert client.read_file("opt/greeting") == b"hello, world"
    with pytest.raises(KeyError):
        client.read_file("opt/missing")


def test_writing_through_the_client(dev: FwCfg, ram: BytearrayMemory) -> None:
    key = dev.add_file("opt/rw", bytes(6), writable=True)
    client = FwCfgClient(MmioTransport(MmioWide(dev), ram, BUF), use_dma=True)
    client.write_item(key, b"ab", offset=3)
    assert client.read_file("opt/rw") == b"\0\0\0ab\0"
    with pytest.raises(DmaError, match="status 0x1"):
        client.write_item(key, b"toolong")
    with pytest.raises(DmaError):
        client.write_item(Key.NB_CPUS, b"\x01")


def test_dma_needs_a_transport_that_can(dev: FwCfg) -> None:
    class Plain:
        def select(self, key: int) -> None:
            dev.select(key)

        def read(self, n: int) -> bytes:
            return dev.read_data(n)

    with pytest.raises(TypeError, match="cannot do DMA"):
        FwCfgClient(Plain(), use_dma=True)
    with pytest.raises(TypeError, match="without a scratch area"):
        FwCfgClient(DeviceTransport(dev), use_dma=True).signature()
