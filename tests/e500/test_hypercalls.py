"""Each hypercall, from a real guest: boot a few instructions, look at what came back."""

from __future__ import annotations

import pytest
import trio

from machine.events import CpuReleased, Hypercall, Reset
from machine.platform import EvStatus

from .guests import boot

pytestmark = pytest.mark.cross

#: After a hypercall: print r3 (the status) as one byte 'A'+r3, then power off with code r4.
REPORT = """
    addi 20, 3, 0x41
    mr 21, 4
    li 3, 0
    li 4, 1
    slwi 5, 20, 24
    hcall HC_EV_BYTE_CHANNEL_SEND
    mr 3, 21
    hcall HC_FW_POWEROFF
"""


def status_byte(status: int) -> bytes:
    return bytes([0x41 + status])


async def test_console_send_prints_and_poweroff_returns_the_code() -> None:
    b = await boot("""
_start:
    puts4 0x68656c6c, 4
    puts4 0x6f0a0000, 2
    li 3, 42
    hcall HC_FW_POWEROFF
""")
    assert b.console == b"hello\n"
    assert b.result.code == 42
    assert "FW_POWEROFF" in b.result.reason


@pytest.mark.parametrize(
    ("handle", "count", "status"),
    [(0, 17, EvStatus.EINVAL), (1, 4, EvStatus.EINVAL), (0, 0, EvStatus.SUCCESS)],
)
async def test_console_send_rejects_bad_arguments(handle: int, count: int, status: int) -> None:
    b = await boot(f"""
_start:
    li 3, {handle}
    li 4, {count}
    li32 5, 0x58585858
    hcall HC_EV_BYTE_CHANNEL_SEND
""" + REPORT)
    assert b.console == status_byte(status)
    assert b.result.code == 0  # r4 = bytes sent


async def test_console_receive_and_poll_see_input_fed_by_the_host() -> None:
    # Idle until input arrives, poll it, receive it, echo it back.
    source = """
_start:
1:  li 3, 0
    hcall HC_EV_BYTE_CHANNEL_POLL
    mr 22, 4            /* rx waiting */
    mr 23, 5            /* tx space */
    cmpwi 22, 3
    bge 2f
    hcall HC_EV_IDLE
    b 1b
2:  li 3, 0
    li 4, 16
    hcall HC_EV_BYTE_CHANNEL_RECEIVE
    mr 4, 4
    li 3, 0
    hcall HC_EV_BYTE_CHANNEL_SEND   /* r4 = count received, r5.. = the bytes */
    mr 3, 23
    hcall HC_FW_POWEROFF
"""

    async def type_keys(m: object) -> None:
        await trio.sleep(0.05)
        m.console.feed(b"ab")  # type: ignore[attr-defined]
        await trio.sleep(0.05)
        m.console.feed(b"c")  # type: ignore[attr-defined]

    b = await boot(source, during=type_keys)
    assert b.console == b"abc"
    assert b.result.code > 0  # free transmit space reported


async def test_unknown_token_returns_unimplemented_and_changes_nothing_else() -> None:
    b = await boot("""
_start:
    li 4, 0x44
    li 5, 0x55
    li 10, 0x1010
    li32 11, 0x00017777
    sc 1
    cmpwi 4, 0x44
    bne bad
    cmpwi 5, 0x55
    bne bad
    cmpwi 10, 0x1010
    bne bad
    li 4, 0
""" + REPORT + """
bad:
    li 3, 99
    hcall HC_FW_POWEROFF
""")
    assert b.console == status_byte(EvStatus.UNIMPLEMENTED)
    assert b.result.code == 0
    calls = b.of(Hypercall)
    assert calls[0].name.startswith("unknown") and calls[0].status == EvStatus.UNIMPLEMENTED


async def test_get_time_is_monotonic_nanoseconds() -> None:
    b = await boot("""
_start:
    hcall HC_FW_GET_TIME
    mr 20, 4
    mr 21, 5
    lis 6, 0x200
    mtctr 6
1:  bdnz 1b
    hcall HC_FW_GET_TIME
    subfc 21, 21, 5     /* low difference */
    subfe 20, 20, 4     /* high difference */
    cmpwi 20, 0
    blt bad
    mr 3, 21
    srwi 3, 3, 10       /* microseconds, roughly */
    hcall HC_FW_POWEROFF
bad:
    li3 3, 1
""".replace("li3 3, 1", "li 3, 1\n    hcall HC_FW_POWEROFF"))
    assert 0 < b.result.code < 5_000_000


async def test_timebase_runs_at_400mhz() -> None:
    b = await boot("""
_start:
    hcall HC_FW_GET_TIME
    mr 20, 5
1:  mftbu 6
    mftb 7
    mftbu 8
    cmpw 6, 8
    bne 1b
    lis 9, 0x800
    mtctr 9
2:  bdnz 2b
3:  mftbu 10
    mftb 14
    mftbu 12
    cmpw 10, 12
    bne 3b
    hcall HC_FW_GET_TIME   /* clobbers r11 (the token) */
    subf 20, 20, 5      /* elapsed ns (low word) */
    subf 14, 7, 14      /* elapsed ticks (low word) */
    /* (ticks/1024) * 100 / (ns/1024) should be 40 (400 MHz = 0.4 ticks per ns) */
    srwi 14, 14, 10
    srwi 20, 20, 10
    mulli 14, 14, 100
    divwu 3, 14, 20
    hcall HC_FW_POWEROFF
""")
    # 0.4 ticks/ns * 100 = 40; the timebase is refreshed at least every millisecond.
    assert 36 <= b.result.code <= 41


async def test_reset_restarts_from_power_on() -> None:
    async def stop_after_second_boot(m: object) -> None:
        with trio.fail_after(5):
            while m.console.bytes_out < 2:  # type: ignore[attr-defined]
                await trio.sleep(0.01)
        m.stop(code=7)  # type: ignore[attr-defined]

    b = await boot("""
_start:
    puts4 0x42000000, 1
    lis 6, 0x10
    mtctr 6
1:  bdnz 1b
    hcall HC_FW_RESET
""", during=stop_after_second_boot)
    assert b.console.startswith(b"BB")
    assert b.of(Reset)
    assert b.result.code == 7


async def test_reset_puts_every_register_back_to_power_on() -> None:
    # Each boot prints "A" if SPRG0, r20 and the decrementer are as at power-on, "X" if they
    # kept what the previous boot wrote, then writes them and resets.
    async def stop_after_third_boot(m: object) -> None:
        with trio.fail_after(5):
            while m.console.bytes_out < 3:  # type: ignore[attr-defined]
                await trio.sleep(0.01)
        m.stop(code=7)  # type: ignore[attr-defined]

    b = await boot("""
_start:
    mfspr 5, 272
    or 5, 5, 20
    mfspr 6, 22
    or. 5, 5, 6
    bne 2f
    puts4 0x41000000, 1
    b 3f
2:  puts4 0x58000000, 1
3:  li32 5, 0x1234
    mtspr 272, 5
    li32 5, 0x7fffffff
    mtspr 22, 5
    li 20, 1
    lis 6, 0x10
    mtctr 6
1:  bdnz 1b
    hcall HC_FW_RESET
""", during=stop_after_third_boot)
    assert b.console.startswith(b"AAA"), b.console


SECONDARY_IDLES = """
_start:
    cmpwi 3, 0
    beq boot_cpu
1:  hcall HC_EV_IDLE
    b 1b
target:
    mr 20, 3
    puts4 0x52000000, 1     /* 'R' */
    mr 3, 20
    hcall HC_FW_POWEROFF
"""


async def test_cpu_release_starts_an_idle_cpu_at_the_entry_with_r3() -> None:
    b = await boot(SECONDARY_IDLES + """
boot_cpu:
    li 3, 1
    bl 1f
1:  mflr 4
    addi 4, 4, target - 1b
    li 5, 0x77
    hcall HC_FW_CPU_RELEASE
2:  hcall HC_EV_IDLE
    b 2b
""", smp=2)
    assert b.console == b"R"
    assert b.result.code == 0x77
    rel = b.of(CpuReleased)
    assert [(e.cpu, e.r3, e.by) for e in rel] == [(1, 0x77, "FW_CPU_RELEASE")]


@pytest.mark.parametrize(
    ("target", "twice", "expected"),
    [(5, False, EvStatus.EINVAL), (0, False, EvStatus.EINVAL),
     (1, True, EvStatus.INVALID_STATE)],
)
async def test_cpu_release_errors(target: int, twice: bool, expected: int) -> None:
    # CPU 1 spins (never parks) so a second release finds the first one still latched.
    second = (
        f"    li 3, {target}\n    li 4, 0x100\n    li 5, 0\n    hcall HC_FW_CPU_RELEASE\n"
        if twice else ""
    )
    b = await boot(f"""
_start:
    cmpwi 3, 0
    beq boot_cpu
spin:
    b spin
boot_cpu:
    li 3, {target}
    li 4, 0x100
    li 5, 0
    hcall HC_FW_CPU_RELEASE
{second}    li 4, 0
""" + REPORT, smp=2)
    assert b.console == status_byte(expected)


@pytest.mark.parametrize(
    ("address", "expected"),
    [("0x1002", EvStatus.EINVAL), ("0xE0000000", EvStatus.EFAULT)],
)
async def test_wait_store_rejects_bad_addresses(address: str, expected: int) -> None:
    b = await boot(f"""
_start:
    li32 3, {address}
    li 4, 0
    hcall HC_FW_WAIT_STORE
    li 4, 0
""" + REPORT)
    assert b.console == status_byte(expected)


async def test_wait_store_returns_at_once_when_the_word_already_differs() -> None:
    b = await boot("""
_start:
    li 6, 0x1234
    li 7, 0x2000
    stw 6, 0(7)
    li 3, 0x2000
    li 4, 0
    hcall HC_FW_WAIT_STORE
""" + REPORT)
    assert b.console == status_byte(EvStatus.SUCCESS)
    assert b.result.code == 0x1234


async def test_lev0_sc_with_a_guest_handler_is_delivered_to_it() -> None:
    b = await boot("""
_start:
    li32 3, 0xfff00000
    mtspr 63, 3            /* IVPR */
    li 3, handler - _start
    mtspr 408, 3           /* IVOR8 */
    li 3, 5
    sc
    /* the handler returns here with r3 = 6 */
    li 4, 0
    mr 4, 3
    li 3, 0
""" + REPORT + """
    .balign 16
handler:
    mfsrr0 9
    addi 3, 3, 1
    rfi
""")
    assert b.console == status_byte(EvStatus.SUCCESS)
    assert b.result.code == 6
