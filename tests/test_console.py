"""The console's host side: expect without races, failure patterns, timeouts that explain.

The first scenarios drive :class:`Console` exactly as the machine does (guest output from worker
threads, delivered to trio in batches); the last ones boot tiny guests and talk to them.
"""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

from machine.asm import assemble
from machine.devices.console import (
    Console,
    ConsoleEnded,
    ConsoleFailure,
    ConsoleTimeout,
)
from machine.platform import CONSOLE_TX_SPACE


async def attached() -> Console:
    console = Console()
    console.attach(trio.lowlevel.current_trio_token(), lambda: None)
    return console


async def guest_prints(console: Console, *chunks: bytes, cpu: int = 0) -> None:
    """Print from a worker thread, as a vCPU does, and let trio deliver it."""

    def work() -> None:
        for chunk in chunks:
            assert console.guest_send(cpu, chunk)

    await trio.to_thread.run_sync(work)
    await trio.testing.wait_all_tasks_blocked()


async def test_expect_finds_output_printed_before_the_call() -> None:
    console = await attached()
    await guest_prints(console, b"firmware: hello\n", b"kernel: booting\n")
    with trio.fail_after(1):
        match = await console.expect("kernel: booting")
    assert match.group() == "kernel: booting"


async def test_successive_expects_check_the_order_of_lines() -> None:
    console = await attached()
    await guest_prints(console, b"one\ntwo\nthree\n")
    await console.expect(b"two")
    await console.expect(b"three")
    # "one" came before the cursor: it is not found again, and the wait times out.
    with pytest.raises(ConsoleTimeout):
        await console.expect(b"one", timeout=0.05)


async def test_expect_waits_for_output_that_arrives_later() -> None:
    console = await attached()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guest_prints, console, b"cpus: 4 (boot cpu 0)\n")
        match = await console.expect(re.compile(rb"cpus: (\d+)"), timeout=2)
    assert int(match[1]) == 4


async def test_pieces_of_a_pattern_split_across_hypercalls_still_match() -> None:
    console = await attached()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guest_prints, console, b"all 4 c", b"pus ", b"up\n")
        await console.expect("all 4 cpus up", timeout=2)


async def test_text_regex_sees_utf8_and_the_cursor_moves_in_bytes() -> None:
    console = await attached()
    await guest_prints(console, "température: 21°C\nnext\n".encode())
    match = await console.expect(re.compile(r"température: (\d+)°C"))
    assert match[1] == "21"
    assert console.unread == b"\nnext\n"


async def test_a_failure_pattern_raises_at_once_with_the_output() -> None:
    console = await attached()
    await guest_prints(console, b"booting\nKernel panic - not syncing: no init\n")
    with trio.fail_after(1), pytest.raises(ConsoleFailure) as info:
        await console.expect("login:", timeout=60, fail=["panic", "Oops"])
    assert "failure pattern 'panic' appeared while waiting for 'login:'" in str(info.value)
    assert "  | Kernel panic - not syncing: no init" in str(info.value)
    assert info.value.failure.group() == "panic"


async def test_a_failure_after_the_expected_text_does_not_count() -> None:
    console = await attached()
    await guest_prints(console, b"login: \npanic later\n")
    await console.expect("login:", fail="panic")


async def test_a_failure_at_the_same_place_as_the_expected_text_wins() -> None:
    console = await attached()
    await guest_prints(console, b"stub: error: no opt/greeting\n")
    with pytest.raises(ConsoleFailure):
        await console.expect("stub: ", fail="stub: error")


async def test_a_failure_arriving_while_waiting_ends_the_wait() -> None:
    console = await attached()
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guest_prints, console, b"...\n", b"BUG: oops\n")
            with pytest.raises(ConsoleFailure, match="BUG: oops"):
                await console.expect("done", timeout=None, fail=re.compile(r"BUG|panic"))


async def test_timeout_message_quotes_what_the_guest_printed(autojump_clock: object) -> None:
    console = await attached()
    await guest_prints(console, b"firmware: no fw_cfg device\n")
    with pytest.raises(ConsoleTimeout) as info:
        await console.expect("demo:", timeout=5)
    message = str(info.value)
    assert message.startswith("'demo:' did not appear within 5 s.")
    assert "  | firmware: no fw_cfg device" in message
    assert isinstance(info.value, TimeoutError)
    assert info.value.output == b"firmware: no fw_cfg device\n"


async def test_timeout_says_when_nothing_new_was_printed(autojump_clock: object) -> None:
    console = await attached()
    await guest_prints(console, b"ready\n")
    await console.expect("ready")
    with pytest.raises(ConsoleTimeout, match=r"printed only b'\\n' since the last match"):
        await console.expect("more", timeout=1)
    await console.expect("\n")
    with pytest.raises(ConsoleTimeout, match=r"printed nothing since the last match \(6 bytes"):
        await console.expect("more", timeout=1)


async def test_a_stopped_machine_ends_the_wait_with_its_reason() -> None:
    console = await attached()
    console.stop_reason = lambda: "FW_POWEROFF by cpu 0"
    await guest_prints(console, b"bye\n")
    console.flush()  # what the machine does when it stops
    with trio.fail_after(1), pytest.raises(ConsoleEnded) as info:
        await console.expect("never")
    assert "the machine stopped (FW_POWEROFF by cpu 0) before 'never' appeared" in str(info.value)
    # Output that did arrive is still found after the end.
    await console.expect("bye")


async def test_history_keeps_the_tail_of_endless_output() -> None:
    console = Console(history=64)
    console.attach(trio.lowlevel.current_trio_token(), lambda: None)
    await guest_prints(console, *(f"line {i}\n".encode() for i in range(100)))
    assert len(console.output) == 64
    assert console.output.endswith(b"line 99\n")
    await console.expect("line 98")
    assert console.bytes_out == sum(len(f"line {i}\n") for i in range(100))


async def test_patterns_must_be_text_or_compiled() -> None:
    console = await attached()
    with pytest.raises(ValueError, match="empty pattern"):
        await console.expect(b"")
    with pytest.raises(TypeError, match="not int"):
        await console.expect(42)  # type: ignore[arg-type]


async def test_guest_side_keeps_epapr_back_pressure() -> None:
    # Not attached to trio: nothing drains, so the transmit space fills and sends fail.
    console = Console()
    assert console.send(0, b"x" * CONSOLE_TX_SPACE) is True  # the guest-side spelling
    assert console.poll() == (0, 0)
    assert console.guest_send(1, b"y") is False


async def test_host_input_is_buffered_for_the_guest_and_wakes_idle_cpus() -> None:
    woken: list[str] = []
    console = Console()
    console.attach(trio.lowlevel.current_trio_token(), lambda: woken.append("wake"))
    await console.send("ls\n")
    await console.send(b"\x03")
    assert woken == ["wake", "wake"]
    assert console.poll()[0] == 4
    assert console.receive(16) == b"ls\n\x03"
    assert console.receive(16) == b""


# --- with a machine ------------------------------------------------------------------------

ECHO = """
_start:
    li 3, 0
    li 4, 16
    hcall HC_EV_BYTE_CHANNEL_RECEIVE
    cmpwi 4, 0
    beq idle
    srwi 9, 5, 24
    cmpwi 9, 0x71            # 'q' first: power off
    beq quit
    li 3, 0
    hcall HC_EV_BYTE_CHANNEL_SEND
    b _start
idle:
    hcall HC_EV_IDLE
    b _start
quit:
    li 3, 7
    hcall HC_FW_POWEROFF
"""

PANIC = """
    .macro puts4 word, count
    li 3, 0
    li 4, \\count
    li32 5, \\word
    hcall HC_EV_BYTE_CHANNEL_SEND
    .endm
_start:
    puts4 0x6f6b0a00, 3     # "ok\\n"
    puts4 0x70616e69, 4     # "pani"
    puts4 0x630a0000, 2     # "c\\n"
idle:
    hcall HC_EV_IDLE
    b idle
"""


@pytest.mark.cross
async def test_console_input_reaches_an_idle_guest_and_its_echo_comes_back(e500: object) -> None:
    boot = e500
    m = await boot(bios=assemble(ECHO))  # type: ignore[operator]
    await m.console.send("ping\n")
    await m.console.expect("ping\n", timeout=5)
    await m.console.send(b"pong")
    await m.console.expect(b"pong", timeout=5)
    await m.console.send("q")
    result = await m.wait(timeout=5)
    assert result.code == 7
    assert m.console.output == b"ping\npong"


@pytest.mark.cross
async def test_a_guest_panic_fails_the_expect_without_waiting(e500: object) -> None:
    m = await e500(bios=assemble(PANIC))  # type: ignore[operator]
    await m.console.expect("ok")
    with trio.fail_after(5), pytest.raises(ConsoleFailure, match="'panic' appeared"):
        await m.console.expect("login:", timeout=None, fail="panic")
