"""A device over a small bytearray RAM, with the items most scenarios read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fwcfg_scenario import KERNEL, RAM_BASE, RAM_SIZE

from fwcfg import BytearrayMemory, FwCfg, Key


@pytest.fixture
def ram() -> BytearrayMemory:
    return BytearrayMemory(RAM_SIZE, base=RAM_BASE)


@pytest.fixture
def dev(ram: BytearrayMemory) -> Iterator[FwCfg]:
    device = FwCfg(ram)
    device.add_u64(Key.RAM_SIZE, 0x1122_3344_5566_7788)
    device.add_u16(Key.NB_CPUS, 4)
    device.add_bytes(Key.KERNEL_DATA, KERNEL)
    device.add_string_file("opt/greeting", "hello, world")
    yield device
    device.close()
