"""Boot-protocol events as values: wait for them, stream them, and what it costs not to.

Most scenarios boot the bundled demo (firmware + ePAPR kernel, no cross tools needed); the
ones that need a guest that never stops assemble a few instructions.
"""

from __future__ import annotations

import gc

import pytest
import trio

from machine.api import (
    DEMO_ELF,
    CpuReleased,
    CpuWoken,
    E500Machine,
    Event,
    EventsEnded,
    EventsLost,
    EventTimeout,
    FwCfgDma,
    Hypercall,
    PowerOff,
)
from machine.asm import assemble

#: Idles until console input arrives, then powers off with the first byte as the code.
IDLE_UNTIL_INPUT = """
_start:
    li 3, 0
    li 4, 1
    hcall HC_EV_BYTE_CHANNEL_RECEIVE
    cmpwi 4, 0
    bne got
    hcall HC_EV_IDLE
    b _start
got:
    srwi 3, 5, 24
    hcall HC_FW_POWEROFF
"""


def is_release_call(event: Event, cpu: int) -> bool:
    return (isinstance(event, Hypercall) and event.name == "FW_CPU_RELEASE"
            and event.args[0] == cpu)


async def test_recorded_waits_see_the_past_and_check_order() -> None:
    async with E500Machine(kernel=DEMO_ELF, smp=4, record_events=True) as m:
        result = await m.wait(timeout=10)
        assert result.code == 0
        # The boot is over; the waits still find what happened, in order.
        # CPU 0's firmware releases the secondaries one after the other.
        for cpu in (1, 2, 3):
            call = await m.wait_for(lambda e, cpu=cpu: is_release_call(e, cpu))
            assert isinstance(call, Hypercall)
            assert call.cpu == 0
            assert call.status == 0
        # Then (not before) it loads the device tree.
        fdt = await m.wait_for(lambda e: isinstance(e, FwCfgDma) and e.name == "etc/fdt")
        assert isinstance(fdt, FwCfgDma)
        assert fdt.length == len(m.images.fdt)
        # The call for cpu 1 came before the cursor: a second wait for it finds nothing.
        with pytest.raises(EventsEnded, match="the run ended without an event matching"):
            await m.wait_for(lambda e: is_release_call(e, 1))
        assert isinstance(await m.wait_for(PowerOff), PowerOff)


async def test_firmware_reads_the_kernel_before_the_device_tree() -> None:
    async with E500Machine(kernel=DEMO_ELF, smp=2, record_events=True) as m:
        await m.wait(timeout=10)
    reads = [e.name for e in m.events.history if isinstance(e, FwCfgDma) and e.op == "read"]
    assert reads.index("kernel_data") < reads.index("etc/fdt")
    kernel = next(e for e in m.events.history if isinstance(e, FwCfgDma)
                  and e.name == "kernel_data")
    assert m.images.kernel is not None
    assert kernel.length == m.images.kernel.size
    assert not kernel.error


async def test_a_live_wait_subscribes_before_anything_can_happen() -> None:
    async with E500Machine(bios=assemble(IDLE_UNTIL_INPUT)) as m:
        assert not m.events.active  # nobody listens yet: the machine builds no events
        async with trio.open_nursery() as nursery:
            nursery.start_soon(m.console.send, "*")
            # No checkpoint between the call and the subscription: the power-off that the
            # input causes cannot slip past.
            off = await m.wait_for(PowerOff, timeout=5)
        assert off.code == ord("*")  # type: ignore[attr-defined]
        assert not m.events.active  # the wait unsubscribed


async def test_wait_timeout_lists_the_events_it_saw() -> None:
    async with E500Machine(bios=assemble(IDLE_UNTIL_INPUT), record_events=True) as m:
        await m.wait_for(lambda e: e.describe().startswith("cpu 0: parked (idle)"))
        with pytest.raises(EventTimeout) as info:
            await m.wait_for(PowerOff, timeout=0.3)
    message = str(info.value)
    assert message.startswith("no event matching PowerOff within 0.3 s.")
    assert "hcall EV_IDLE()" in message
    assert "parked (idle)" in message
    assert isinstance(info.value, TimeoutError)


async def test_a_broken_predicate_fails_the_wait_not_the_machine() -> None:
    async with E500Machine(bios=assemble(IDLE_UNTIL_INPUT)) as m:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(m.console.send, "x")
            with pytest.raises(ZeroDivisionError):
                await m.wait_for(lambda e: 1 / 0 > 0, timeout=5)
        assert (await m.wait(timeout=5)).code == ord("x")


async def test_a_stream_yields_the_boot_in_order_and_ends_at_power_off() -> None:
    m = E500Machine(kernel=DEMO_ELF, smp=4)
    stream = m.events.stream()  # before power-on: it sees everything
    seen: list[Event] = []
    async with m:
        async for event in stream:
            seen.append(event)
    assert isinstance(seen[-1], PowerOff)
    assert seen[-1].code == 0
    assert seen[0].describe() == "cpu 0: started at 0xfff00000"  # the firmware's entry
    # Each secondary takes its FW_CPU_RELEASE when its thread gets to it: any order.
    assert sorted(e.cpu for e in seen if isinstance(e, CpuReleased)) == [1, 2, 3]
    # The demo kernel then starts them through the spin table one at a time: in order.
    spin_table_wakes = [e.cpu for e in seen
                        if isinstance(e, CpuWoken) and e.by == "store" and e.cpu != 0]
    assert spin_table_wakes == [1, 2, 3]


async def test_a_filtered_stream_in_the_block_replays_a_recorded_boot() -> None:
    async with E500Machine(kernel=DEMO_ELF, smp=2, record_events=True) as m:
        names = [e.name async for e in m.events.stream(FwCfgDma)]  # type: ignore[attr-defined]
    assert names[-2:] == ["kernel_data", "etc/fdt"]
    assert "file_dir" in names


async def test_a_slow_stream_loses_events_but_never_slows_the_machine() -> None:
    m = E500Machine(kernel=DEMO_ELF, smp=4, record_events=True)
    slow = m.events.stream(bufsize=5, replay=False)
    async with m:
        assert (await m.wait(timeout=10)).code == 0  # the boot finished without a reader
    got = [e async for e in slow]
    history = m.events.history
    assert isinstance(history[-1], PowerOff)  # always the last event of a run
    assert got[:5] == history[:5]
    lost = got[5]
    assert isinstance(lost, EventsLost)
    assert lost.count == slow.lost == len(history) - 6
    assert got[6] is history[-1]  # the end always gets through
    assert len(got) == 7


async def test_dropping_a_stream_unsubscribes_it() -> None:
    m = E500Machine(kernel=DEMO_ELF)
    try:
        assert not m.events.active
        stream = m.events.stream(Hypercall)
        assert m.events.active
        del stream
        gc.collect()
        assert not m.events.active
        with m.events.stream() as closed:
            assert m.events.active
        assert [e async for e in closed] == []
    finally:
        m.close()


async def test_streams_and_waits_after_the_end_finish_at_once() -> None:
    async with E500Machine(kernel=DEMO_ELF) as m:
        await m.wait(timeout=10)
    with trio.fail_after(1):
        assert [e async for e in m.events] == []
        with pytest.raises(EventsEnded, match="No other events were seen"):
            await m.wait_for(PowerOff)
