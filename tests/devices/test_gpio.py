"""The mpc8xxx GPIO block register by register: reset values, output pins and the power-off
line, input edges into GPIER, the interrupt level GPIER & GPIMR, and bad accesses."""

from __future__ import annotations

import pytest

from machine.devices.gpio import (
    GPDAT,
    GPDIR,
    GPICR,
    GPIER,
    GPIMR,
    GPODR,
    POWEROFF_PIN,
    Gpio,
    pin_mask,
)
from machine.platform import GPIO_SIZE

REGS = (GPDIR, GPODR, GPDAT, GPIER, GPIMR, GPICR)


class Board:
    """Records the lines the block drives, and powers off the way the board must."""

    def __init__(self) -> None:
        self.irq: list[bool] = []
        self.pins: list[tuple[int, bool]] = []
        self.powered_off = 0

    def set_irq(self, level: bool) -> None:
        self.irq.append(level)

    def pin_changed(self, pin: int, level: bool) -> None:
        self.pins.append((pin, level))
        if pin == POWEROFF_PIN and level:
            self.powered_off += 1


@pytest.fixture
def board() -> Board:
    return Board()


@pytest.fixture
def gpio(board: Board) -> Gpio:
    return Gpio(board)


def test_reset_values(gpio: Gpio) -> None:
    assert [gpio.read(r, 4) for r in REGS] == [0] * 6
    assert not gpio.irq_level


def test_plain_registers_read_back(gpio: Gpio, board: Board) -> None:
    for reg, value in ((GPDIR, 0x0F0F_0F0F), (GPODR, 0xDEAD_BEEF), (GPIMR, 0x1234_5678),
                       (GPICR, 0xFFFF_FFFF)):
        gpio.write(reg, 4, value)
        assert gpio.read(reg, 4) == value
    assert board.irq == [] and board.pins == []


def test_pin_numbering_is_msb_first() -> None:
    assert pin_mask(0) == 0x8000_0000 and pin_mask(31) == 1


def test_pin0_high_powers_off(gpio: Gpio, board: Board) -> None:
    """Linux's gpio-poweroff via gpio-mpc8xxx: data first, then direction, then 0 and 1."""
    gpio.write(GPDAT, 4, 0x8000_0000)  # pin 0 still an input: nothing driven
    gpio.write(GPDIR, 4, 0x8000_0000)  # becomes an output: QEMU drives nothing on DIR writes
    assert board.pins == [] and board.powered_off == 0
    gpio.write(GPDAT, 4, 0)
    assert board.pins == [(0, False)] and board.powered_off == 0
    gpio.write(GPDAT, 4, 0x8000_0000)
    assert board.pins == [(0, False), (0, True)] and board.powered_off == 1
    gpio.write(GPDAT, 4, 0x8000_0000)  # no change, no call
    assert board.powered_off == 1


def test_only_changed_output_pins_are_driven(gpio: Gpio, board: Board) -> None:
    gpio.write(GPDIR, 4, 0x0000_00FF)
    gpio.write(GPDAT, 4, 0xFFFF_FF05)
    assert board.pins == [(29, True), (31, True)]
    assert gpio.read(GPDAT, 4) == 0xFFFF_FF05  # QEMU stores input bits too
    gpio.write(GPDAT, 4, 0x0000_0003)
    assert board.pins[2:] == [(29, False), (30, True)]
    assert board.powered_off == 0


def test_input_edges_latch_events_and_raise_irq(gpio: Gpio, board: Board) -> None:
    gpio.set_input(5, True)
    assert gpio.read(GPIER, 4) == pin_mask(5) and gpio.read(GPDAT, 4) == pin_mask(5)
    assert board.irq == []  # masked
    gpio.write(GPIMR, 4, pin_mask(5))
    assert board.irq == [True] and gpio.irq_level
    gpio.write(GPIER, 4, pin_mask(6))  # w1c of another bit: still pending
    assert board.irq == [True]
    gpio.write(GPIER, 4, pin_mask(5))
    assert board.irq == [True, False] and gpio.read(GPIER, 4) == 0
    gpio.set_input(5, True)  # no edge, no event
    assert gpio.read(GPIER, 4) == 0
    gpio.set_input(5, False)
    assert gpio.read(GPIER, 4) == pin_mask(5) and board.irq == [True, False, True]
    gpio.write(GPIMR, 4, 0)
    assert board.irq[-1] is False


def test_icr_selects_falling_edges_only(gpio: Gpio) -> None:
    gpio.write(GPICR, 4, pin_mask(7))
    gpio.set_input(7, True)
    assert gpio.read(GPIER, 4) == 0
    gpio.set_input(7, False)
    assert gpio.read(GPIER, 4) == pin_mask(7)


def test_output_pins_ignore_inputs(gpio: Gpio) -> None:
    gpio.write(GPDIR, 4, pin_mask(3))
    gpio.set_input(3, True)
    assert gpio.read(GPDAT, 4) == 0 and gpio.read(GPIER, 4) == 0
    with pytest.raises(ValueError, match=r"GPIO pin 32 out of range 0\.\.31"):
        gpio.set_input(32, True)


@pytest.mark.parametrize(("offset", "size"), [(GPDIR, 1), (GPDIR, 2), (GPIMR + 2, 2),
                                              (GPIMR + 1, 4), (GPIMR + 4, 8), (GPIO_SIZE, 4)])
def test_bad_accesses_read_zero_and_change_nothing(gpio: Gpio, board: Board, offset: int,
                                                   size: int) -> None:
    gpio.write(GPIMR, 4, 0x55AA_55AA)
    gpio.write(offset, size, 0xFFFF_FFFF)
    assert gpio.read(offset, size) == 0
    assert gpio.read(GPIMR, 4) == 0x55AA_55AA and gpio.read(GPDIR, 4) == 0


def test_doubleword_is_two_words(gpio: Gpio, board: Board) -> None:
    gpio.write(GPIMR, 8, 0x1111_2222_3333_4444)
    assert (gpio.read(GPIMR, 4), gpio.read(GPICR, 4)) == (0x1111_2222, 0x3333_4444)
    assert gpio.read(GPIMR, 8) == 0x1111_2222_3333_4444
    gpio.write(GPDIR, 8, 0x0000_0001_0000_0000)
    gpio.write(GPDAT, 8, 0x0000_0001_0000_0000)  # GPDAT then GPIER (w1c of nothing)
    assert board.pins == [(31, True)]


def test_unused_offsets(gpio: Gpio) -> None:
    gpio.write(0x18, 4, 0xFFFF_FFFF)
    assert gpio.read(0x18, 4) == 0 and gpio.read(0xFFC, 4) == 0


def test_reset_and_snapshot(gpio: Gpio, board: Board) -> None:
    gpio.set_input(1, True)
    gpio.write(GPIMR, 4, 0xFFFF_FFFF)
    saved = gpio.snapshot()
    gpio.reset()
    assert [gpio.read(r, 4) for r in REGS] == [0] * 6 and board.irq == [True, False]
    gpio.restore(saved)
    assert gpio.read(GPIER, 4) == pin_mask(1) and board.irq == [True, False, True]
