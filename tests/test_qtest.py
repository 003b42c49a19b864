"""The qtest port: each command, big-endian values, dispatch through the map, bad lines."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwcfg import FwCfg, Key, MmioWide, Selected
from machine import platform
from machine.bus import e500_address_map
from machine.debug.qtest import IrqInputs, QtestServer, VirtualClock
from machine.memory import GuestRAM

FW = platform.FWCFG_BASE
RAM_SIZE = 16 * platform.MiB  # GuestRAM itself has no minimum


@pytest.fixture
def machine() -> Iterator[tuple[QtestServer, GuestRAM, list[object]]]:
    ram = GuestRAM(RAM_SIZE)
    dev = FwCfg(ram)
    dev.add_u16(Key.NB_CPUS, 2)
    dev.add_string_file("opt/x", "0123456789abcdef")
    events: list[object] = []
    server = QtestServer(e500_address_map(ram, MmioWide(dev)), on_event=events.append)
    yield server, ram, events
    dev.close()
    ram.close()


def ask(server: QtestServer, *lines: str) -> list[str | None]:
    return [server.handle(line) for line in lines]


def test_ram_values_are_composed_big_endian(machine: tuple[QtestServer, GuestRAM, list]) -> None:
    server, ram, _ = machine
    assert ask(server, "writel 0x100 0x11223344", "readl 0x100", "readw 0x102", "readb 0x103",
               "readq 0x100") == ["OK", "OK 0x0000000011223344", "OK 0x0000000000003344",
                                  "OK 0x0000000000000044", "OK 0x1122334400000000"]
    assert ram.read(0x100, 4) == bytes.fromhex("11223344")
    assert ask(server, "writeq 0x200 0x0102030405060708", "read 0x200 8") == [
        "OK", "OK 0x0102030405060708"]
    assert ask(server, "writeb 0x300 0x1ff", "readb 0x300") == ["OK", "OK 0x00000000000000ff"]
    assert ask(server, "writew 0x300 01234", "readw 0x300") == ["OK", "OK 0x000000000000029c"]


def test_byte_string_commands(machine: tuple[QtestServer, GuestRAM, list]) -> None:
    server, _, _ = machine
    payload = bytes(range(20))
    b64 = base64.b64encode(payload).decode()
    assert ask(server, f"b64write 0x1000 20 {b64}", "b64read 0x1000 20", "read 0x1000 4") == [
        "OK", f"OK {b64}", "OK 0x00010203"]
    assert ask(server, "write 0x2000 4 0xaabbc", "read 0x2000 4") == ["OK", "OK 0xaabb0000"]
    assert ask(server, "memset 0x3000 5 0x5a", "read 0x2fff 7") == ["OK", "OK 0x005a5a5a5a5a00"]
    assert ask(server, "b64write 0x4000 4 AAE=", "read 0x4000 4") == ["OK", "OK 0x00010000"]
    assert ask(server, "read 0x10 0", "endianness") == ["OK 0x", "OK big"]


def test_fw_cfg_registers_through_the_map(machine: tuple[QtestServer, GuestRAM, list]) -> None:
    server, _, events = machine
    assert ask(server, f"readq {FW + 0x10:#x}") == ["OK 0x51454d5520434647"]
    assert ask(server, f"writew {FW + 8:#x} 0x5", f"readw {FW:#x}", f"readw {FW:#x}") == [
        "OK", "OK 0x0000000000000200", "OK 0x0000000000000000"]
    assert events == [Selected(key=5, name="nb_cpus", valid=True)]
    assert ask(server, f"writew {FW + 8:#x} 0x20", f"read {FW:#x} 16") == [
        "OK", "OK 0x" + b"01234567".hex() + "00" * 8]  # data, then the unreadable selector
    assert ask(server, f"readl {FW + 8:#x}", f"writel {FW + 8:#x} 0x1") == [
        "OK 0x0000000000000000", "OK"]  # a 4-byte store at the selector: rejected, as a guest
    assert ask(server, f"readq {FW:#x}") == ["OK 0x3839616263646566"]


def test_fw_cfg_dma_through_qtest(machine: tuple[QtestServer, GuestRAM, list]) -> None:
    server, _, events = machine
    desc = (0x0020_000A).to_bytes(4, "big") + (16).to_bytes(4, "big") + (0x800).to_bytes(8, "big")
    assert ask(server, f"write 0x700 16 0x{desc.hex()}", f"writeq {FW + 0x10:#x} 0x700",
               "read 0x700 4", "read 0x800 16") == [
        "OK", "OK", "OK 0x00000000", "OK 0x" + b"0123456789abcdef".hex()]
    assert str(events[-1]) == "fw_cfg DMA read 16 bytes of opt/x at offset 0 to 0x800"


def test_holes_and_rom_space_read_zero_and_ignore_writes(
    machine: tuple[QtestServer, GuestRAM, list],
) -> None:
    server, _, _ = machine
    assert ask(server, "writel 0xe0000000 0x1234", "readl 0xe0000000", "readq 0xfff00000",
               f"read {RAM_SIZE - 2:#x} 4") == ["OK", "OK 0x0000000000000000",
                                                 "OK 0x0000000000000000", "OK 0x00000000"]
    assert ask(server, f"writel {RAM_SIZE - 2:#x} 0xaabbccdd", f"read {RAM_SIZE - 2:#x} 4") == [
        "OK", "OK 0xaabb0000"]


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("bogus 1 2", "FAIL Unknown command 'bogus'"),
        ("readb", "FAIL readb takes 1 argument"),
        ("readl 0x10 0x20", "FAIL readl takes 1 argument"),
        ("writel 0x10", "FAIL writel takes 2 arguments"),
        ("readl zz", "FAIL invalid address 'zz'"),
        ("readl 0x1ffffffffffffffff", "FAIL address '0x1ffffffffffffffff' is out of range"),
        ("writeb 0 -1", "FAIL value '-1' is out of range"),
        ("writeb 0 09", "FAIL invalid value '09'"),
        ("read 0 999999999", "FAIL size 999999999 is larger than 67108864"),
        ("write 0 4 1234", "FAIL data '1234' must start with 0x"),
        ("write 0 4 0xzz", "FAIL data '0xzz' is not hexadecimal"),
        ("b64write 0 4 !!!", "FAIL data '!!!' is not base64"),
        ("endianness now", "FAIL endianness takes 0 arguments"),
    ],
)
def test_bad_lines_answer_fail_and_never_raise(
    machine: tuple[QtestServer, GuestRAM, list], line: str, answer: str
) -> None:
    server, _, _ = machine
    assert server.handle(line) == answer
    assert server.handle("readb 0") == "OK 0x0000000000000000"  # still serving


def test_blank_lines_get_no_answer(machine: tuple[QtestServer, GuestRAM, list]) -> None:
    assert machine[0].handle("   \n") is None


@settings(max_examples=300, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(line=st.one_of(
    st.text(max_size=60),
    st.builds(lambda c, a: f"{c} {a}", st.sampled_from(
        ["readb", "readw", "readl", "readq", "writeb", "writew", "writel", "writeq", "read",
         "write", "b64read", "b64write", "memset", "endianness"]),
        st.lists(st.one_of(st.integers(-5, 1 << 66).map(hex), st.text(max_size=8)),
                 max_size=4).map(" ".join)),
))
def test_any_line_gets_ok_or_fail(machine: tuple[QtestServer, GuestRAM, list], line: str) -> None:
    answer = machine[0].handle(line)
    assert answer is None or answer.startswith(("OK", "FAIL "))
    assert answer is None or "\n" not in answer


# --- the clock and interrupt inputs -------------------------------------------------------------


class _Periodic:
    """A device with a deadline every ``period`` ns of ``clock``: records when it was fired."""

    def __init__(self, period: int | None) -> None:
        self.period = period
        self.clock: VirtualClock | None = None
        self.fired: list[int] = []

    def deadline(self) -> int | None:
        if self.period is None:
            return None
        assert self.clock is not None
        return (self.clock.now() // self.period + 1) * self.period

    def fire(self) -> None:
        assert self.clock is not None
        self.fired.append(self.clock.now())


def _clock(period: int | None, **kwargs: int) -> tuple[VirtualClock, _Periodic]:
    device = _Periodic(period)
    device.clock = VirtualClock(device.deadline, device.fire, **kwargs)
    return device.clock, device


def test_the_virtual_clock_stops_at_every_deadline_on_its_way_like_qemu() -> None:
    clock, device = _clock(100)
    assert clock.now() == 0
    assert clock.step(350) == 350
    assert device.fired == [100, 200, 300, 350]  # each deadline, then the destination
    assert clock.step(None) == 400  # the next deadline
    assert clock.set(50) == 400 and clock.step(-7) == 400 and clock.step(0) == 400
    assert device.fired == [100, 200, 300, 350, 400]
    assert clock.set(600) == 600
    assert device.fired[-2:] == [500, 600]


def test_without_a_deadline_clock_step_stays_and_moves_jump() -> None:
    clock, device = _clock(None)
    assert clock.step(None) == 0 and device.fired == []
    assert clock.step(10**12) == 10**12 and device.fired == [10**12]
    assert clock.step((1 << 63) - 1) == (1 << 63) - 1 == clock.step(1)  # an int64, as QEMU's


def test_one_move_fires_a_bounded_number_of_deadlines() -> None:
    clock, device = _clock(10, max_firings=3)
    assert clock.step(10**9) == 10**9
    assert device.fired == [10, 20, 30, 10**9]  # then the devices catch up in one go


def test_a_deadline_that_does_not_move_cannot_hang_the_clock() -> None:
    fired: list[int] = []
    clock = VirtualClock(lambda: 0, lambda: fired.append(0), max_firings=5)
    assert clock.step(100) == 100 and len(fired) == 6


#: RAM for servers that only answer clock and interrupt commands.
_RAM = GuestRAM(platform.PAGE_SIZE)


def _clocked_server(clock: VirtualClock, inputs: IrqInputs) -> QtestServer:
    return QtestServer(e500_address_map(_RAM, MmioWide(FwCfg(_RAM))), clock=clock,
                       irq_inputs={"/machine/pic": inputs})


def test_clock_commands_answer_the_new_time_in_decimal() -> None:
    clock, _ = _clock(1000)
    levels: list[tuple[int, bool]] = []
    server = _clocked_server(clock, IrqInputs(8, lambda n, v: levels.append((n, v))))
    assert ask(server, "clock_step", "clock_step 0x10", "clock_set 5000", "clock_set 10",
               "clock_step -0x10", "clock_step +010") == [
        "OK 1000", "OK 1016", "OK 5000", "OK 5000", "OK 5000", "OK 5008"]
    assert ask(server, "set_irq_in /machine/pic unnamed-gpio-in 7 1",
               "set_irq_in pic unnamed-gpio-in 0x2 -1",
               "set_irq_in machine/pic unnamed-gpio-in 2 0",
               "set_irq_in /pic unnamed-gpio-in 2 0") == ["OK", "OK", "OK", "FAIL Unknown device"]
    assert levels == [(7, True), (2, True), (2, False)]


def test_a_port_without_a_clock_does_not_know_the_clock_commands(
    machine: tuple[QtestServer, GuestRAM, list],
) -> None:
    # What QEMU answers when qtest is not the accelerator (Debian's 7.2 builds, for one).
    assert ask(machine[0], "clock_step", "clock_set 5", "set_irq_in pic unnamed-gpio-in 1 1") == [
        "FAIL Unknown command 'clock_step'", "FAIL Unknown command 'clock_set'",
        "FAIL Unknown device"]


@settings(max_examples=300, deadline=None)
@given(line=st.builds(
    lambda c, a: f"{c} {a}",
    st.sampled_from(["clock_step", "clock_set", "set_irq_in", "set_irq_in /machine/pic",
                     "set_irq_in pic unnamed-gpio-in"]),
    st.lists(st.one_of(st.integers(-(1 << 66), 1 << 66).map(hex), st.integers(-9, 9).map(str),
                       st.text(max_size=8)), max_size=3).map(" ".join)))
def test_any_clock_or_irq_line_gets_ok_or_fail(line: str) -> None:
    clock, _ = _clock(1 << 40, max_firings=50)
    server = _clocked_server(clock, IrqInputs(4, lambda n, v: None))
    answer = server.handle(line)
    assert answer is None or answer.startswith(("OK", "FAIL "))
    assert answer is None or "\n" not in answer
