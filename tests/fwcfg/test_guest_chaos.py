"""Whatever a guest does to the registers, the device answers and never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fwcfg import BytearrayMemory, DmaTransfer, FwCfg, IoPort, Key, MmioWide, Selected

RAM = 0x2000

accesses = st.lists(
    st.tuples(
        st.booleans(),  # write?
        st.integers(-2, 0x20),  # offset, a little outside the window too
        st.sampled_from([1, 2, 3, 4, 8, 16]),
        st.integers(0, (1 << 64) - 1),
    ),
    max_size=40,
)


def _device(ram_bytes: bytes) -> FwCfg:
    ram = BytearrayMemory(RAM)
    ram.data[: len(ram_bytes)] = ram_bytes
    dev = FwCfg(ram, file_slots=0x10)
    dev.add_bytes(Key.KERNEL_DATA, bytes(range(200)))
    dev.add_file("opt/rw", bytes(16), writable=True)
    dev.add_string_file("opt/s", "text")
    return dev


@settings(max_examples=300, deadline=None)
@given(ram_bytes=st.binary(max_size=RAM), ops=accesses, io=st.booleans())
def test_random_register_traffic_is_absorbed(ram_bytes: bytes, ops: list, io: bool) -> None:
    dev = _device(ram_bytes)
    front = IoPort(dev) if io else MmioWide(dev)
    for write, offset, size, value in ops:
        if write:
            for event in front.write(offset, size, value):
                assert isinstance(event, Selected | DmaTransfer)
                assert str(event)
        else:
            assert 0 <= front.read(offset, size) < 1 << (8 * size)
    stats = dev.statistics()
    assert stats.dma_errors <= stats.dma_transfers


@settings(max_examples=300, deadline=None)
@given(descs=st.lists(st.tuples(st.integers(-16, RAM + 16), st.binary(min_size=16, max_size=16)),
                      max_size=10))
def test_random_descriptors_anywhere_are_absorbed(descs: list[tuple[int, bytes]]) -> None:
    """Descriptors of random bytes (any control word, length, address), anywhere."""
    dev = _device(bytes(range(256)) * (RAM // 256))
    for desc, raw in descs:
        inside = 0 <= desc <= RAM - 16
        if inside:
            dev.memory.write(desc, raw)
        transfer = dev.dma(desc & 0xFFFF_FFFF_FFFF_FFFF)
        assert (transfer.op == "bad-descriptor") == (not inside)
        if inside:  # the status word is stored last: always 0 or ERROR
            assert int.from_bytes(dev.memory.read(desc, 4), "big") == transfer.error
