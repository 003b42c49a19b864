"""The bundled firmware boots the bundled demo kernel on 1 to 32 CPUs, through fw_cfg."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from machine.board import E500Machine
from machine.boot.guest import DEMO_ELF
from machine.events import CpuParked, CpuReleased, Event, FwCfgDma, ParkReason


async def boot_demo(smp: int, **kw: object) -> tuple[int, str, list[Event]]:
    m = E500Machine(kernel=Path(DEMO_ELF), smp=smp, append="hello world", **kw)  # type: ignore[arg-type]
    out = bytearray()
    events: list[Event] = []
    m.console.add_listener(lambda cpu, data: out.extend(data))
    m.events.subscribe(events.append)
    try:
        result = await m.run(timeout=30)
    finally:
        m.close()
    return result.code, out.decode(), events


@pytest.mark.parametrize("smp", [1, 2, 4, 8, 32])
async def test_firmware_boots_the_demo_on_n_cpus(smp: int) -> None:
    code, text, events = await boot_demo(smp)
    assert code == 0, text
    assert "cmdline: hello world" in text
    lines = re.findall(r"^cpu (\d+): r3=(\S+) .*r6=(\S+) r7=(\S+) pir=(\d+)$", text, re.M)
    assert sorted(int(n) for n, *_ in lines) == list(range(smp))
    for n, r3, r6, r7, pir in lines:
        if int(n) > 0:  # released secondaries: r3 = index, r6 = 0, r7 = 64 MiB, PIR = index
            got = (int(r3, 16), int(r6, 16), int(r7, 16), int(pir))
            assert got == (int(n), 0, 64 << 20, int(n))
    assert (f"all {smp} cpus up" if smp > 1 else "1 cpu up") in text
    # The firmware pulled the kernel and the device tree through fw_cfg DMA.
    names = {e.name for e in events if isinstance(e, FwCfgDma) and e.op == "read"}
    assert {"kernel_data", "etc/fdt"} <= names
    # Every secondary parked on its spin-table word and was released from it by a store.
    released = {e.cpu for e in events if isinstance(e, CpuReleased) and e.by == "FW_CPU_RELEASE"}
    assert released == set(range(1, smp))
    waits = {e.cpu for e in events
             if isinstance(e, CpuParked) and e.reason is ParkReason.WAIT_STORE}
    assert set(range(1, smp)) <= waits


async def test_direct_boot_releases_secondaries_from_the_spin_table() -> None:
    code, text, events = await boot_demo(4, direct=True)
    assert code == 0, text
    assert "all 4 cpus up" in text
    released = sorted(e.cpu for e in events if isinstance(e, CpuReleased))
    assert released == [1, 2, 3]
    assert not [e for e in events if isinstance(e, FwCfgDma)]


async def test_cancelling_a_running_machine_stops_every_cpu() -> None:
    m = E500Machine(kernel=Path(DEMO_ELF), smp=4)
    try:
        with trio.move_on_after(0.02):
            await m.run()
        assert not any(cpu.running for cpu in m.cpus)
    finally:
        m.close()
