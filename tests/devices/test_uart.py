"""The 16550A register by register: reset values, the divisor latch, transmission, loopback,
the FIFOs and their trigger levels, IIR priorities, the character timeout (on a fake clock),
and host input that reaches the guest exactly once."""

from __future__ import annotations

import random

import pytest

from machine.devices.uart import (
    FCR,
    IER,
    IIR,
    LCR,
    LSR,
    MCR,
    MSR,
    RBR,
    RESET_CHAR_TIME_NS,
    SCR,
    THR,
    Uart,
)


class Board:
    """Records the UART's outputs; a settable clock; optional held input it feeds on
    ``rx_space`` exactly as the board must (take only what ``receive`` accepted)."""

    def __init__(self) -> None:
        self.now = 0
        self.irq: list[bool] = []
        self.sent = bytearray()
        self.timer: int | None = None
        self.held = bytearray()
        self.offers = 0
        self.uart: Uart | None = None

    def clock(self) -> int:
        return self.now

    def set_irq(self, level: bool) -> None:
        self.irq.append(level)

    def transmit(self, data: bytes) -> None:
        self.sent += data

    def set_timer(self, deadline_ns: int | None) -> None:
        self.timer = deadline_ns

    def rx_space(self) -> None:
        self.offers += 1
        self.feed()

    def feed(self) -> None:
        assert self.uart is not None
        taken = self.uart.receive(bytes(self.held))
        del self.held[:taken]

    def advance(self, ns: int) -> None:
        self.now += ns
        assert self.uart is not None
        if self.timer is not None and self.now >= self.timer:
            self.uart.timer_expired()


@pytest.fixture
def board() -> Board:
    return Board()


@pytest.fixture
def uart(board: Board) -> Uart:
    board.uart = Uart(board, board.clock)
    return board.uart


def rd(uart: Uart, reg: int) -> int:
    return uart.read(reg, 1)


def wr(uart: Uart, reg: int, value: int) -> None:
    uart.write(reg, 1, value)


def test_reset_values(uart: Uart) -> None:
    """QEMU's serial_reset (as read through qtest on ppce500 with -serial null)."""
    assert [rd(uart, r) for r in range(8)] == [0, 0, 0x01, 0, 0x08, 0x60, 0xB0, 0]
    assert uart.char_time_ns == RESET_CHAR_TIME_NS == 1_041_660  # 9600 8N1, as QEMU resets
    wr(uart, LCR, 0x80)
    assert (rd(uart, RBR), rd(uart, IER)) == (0x0C, 0x00)
    assert uart.char_time_ns == 210_424  # the LCR write recomputes it: 399193 / 12 baud


def test_divisor_latch_and_char_time(uart: Uart) -> None:
    wr(uart, LCR, 0x83)
    wr(uart, RBR, 0x01)
    wr(uart, IER, 0x02)
    assert (rd(uart, RBR), rd(uart, IER), rd(uart, LCR)) == (0x01, 0x02, 0x83)
    # 399193 / 0x201 baud, 10 bits per 8N1 character, in single precision like QEMU.
    assert uart.char_time_ns == 12_850_926
    wr(uart, LCR, 0x03)
    assert rd(uart, IER) == 0 and rd(uart, RBR) == 0  # the normal registers again
    wr(uart, LCR, 0x83)
    wr(uart, RBR, 0)  # divisor 0x200
    assert uart.char_time_ns == 12_825_876
    wr(uart, IER, 0)  # divisor 0 keeps the previous character time
    assert uart.char_time_ns == 12_825_876


def test_transmit_is_instant(uart: Uart, board: Board) -> None:
    for byte in b"hi\n":
        wr(uart, THR, byte)
        assert rd(uart, LSR) == 0x60
    assert bytes(board.sent) == b"hi\n" and board.irq == []


def test_thr_empty_interrupt_and_its_rearm(uart: Uart, board: Board) -> None:
    wr(uart, IER, 0x02)
    assert board.irq == [True]
    assert rd(uart, IIR) == 0x02 and board.irq == [True, False]  # reading IIR clears THRI
    assert rd(uart, IIR) == 0x01
    wr(uart, IER, 0x02)  # unchanged: no re-arm
    assert rd(uart, IIR) == 0x01
    wr(uart, IER, 0x00)
    wr(uart, IER, 0x02)  # toggling THRI re-arms it while THR is empty
    assert rd(uart, IIR) == 0x02
    wr(uart, THR, ord("x"))  # the write clears it, the instant transmission sets it again
    assert board.irq[-1] is True and rd(uart, IIR) == 0x02


def test_loopback_without_fifo_and_overrun(uart: Uart, board: Board) -> None:
    wr(uart, MCR, 0x10)
    wr(uart, IER, 0x05)
    wr(uart, THR, 0x41)
    assert rd(uart, LSR) == 0x61 and rd(uart, IIR) == 0x04
    wr(uart, THR, 0x42)  # RBR still full: overrun, line status outranks data
    assert rd(uart, IIR) == 0x06
    assert rd(uart, LSR) == 0x63  # read clears OE
    assert rd(uart, IIR) == 0x04
    assert rd(uart, RBR) == 0x42 and rd(uart, LSR) == 0x60 and rd(uart, IIR) == 0x01
    assert rd(uart, RBR) == 0x42  # without FIFO RBR keeps the last byte
    assert board.sent == b"" and board.irq == [True, False]


def test_loopback_msr_follows_mcr(uart: Uart) -> None:
    wr(uart, MCR, 0x10)
    assert rd(uart, MSR) == 0x00
    wr(uart, MCR, 0x1F)
    assert rd(uart, MSR) == 0xF0
    wr(uart, MCR, 0x11)
    assert rd(uart, MSR) == 0x20
    wr(uart, MCR, 0x00)
    assert rd(uart, MSR) == 0xB0 and rd(uart, MCR) == 0x00


def test_fifo_trigger_levels(uart: Uart) -> None:
    wr(uart, MCR, 0x10)
    wr(uart, IER, 0x01)
    for fcr, level in ((0x01, 1), (0x41, 4), (0x81, 8), (0xC1, 14)):
        wr(uart, FCR, fcr)
        assert rd(uart, IIR) == 0xC1
        for i in range(level - 1):
            wr(uart, THR, i)
        assert rd(uart, IIR) == 0xC1, level
        wr(uart, THR, 0xEE)
        assert rd(uart, IIR) == 0xC4, level
        wr(uart, FCR, fcr | 0x02)  # receiver reset empties it
        assert rd(uart, IIR) == 0xC1 and rd(uart, LSR) == 0x60


def test_fifo_keeps_order_and_overrun_keeps_contents(uart: Uart) -> None:
    wr(uart, MCR, 0x10)
    wr(uart, FCR, 0x01)
    for i in range(17):
        wr(uart, THR, i)
    assert rd(uart, LSR) == 0x63 and rd(uart, LSR) == 0x61
    assert [rd(uart, RBR) for _ in range(17)] == [*range(16), 0]
    assert rd(uart, LSR) == 0x60


def test_fifo_enable_toggle_flushes(uart: Uart) -> None:
    wr(uart, MCR, 0x10)
    wr(uart, FCR, 0x01)
    wr(uart, THR, 1)
    wr(uart, FCR, 0x00)
    assert rd(uart, LSR) == 0x60 and rd(uart, IIR) == 0x01
    wr(uart, FCR, 0x07)
    assert rd(uart, IIR) == 0xC1


def test_iir_priorities(uart: Uart, board: Board) -> None:
    """Line status > rx data > THR empty > modem status, each cleared by its own action."""
    wr(uart, MCR, 0x10)
    wr(uart, THR, 1)
    wr(uart, THR, 2)  # overrun, without FIFO
    wr(uart, MCR, 0x00)
    uart.set_modem_lines(cts=False)  # a modem status change
    wr(uart, IER, 0x0F)
    assert rd(uart, IIR) == 0x06
    rd(uart, LSR)
    assert rd(uart, IIR) == 0x04
    rd(uart, RBR)
    assert rd(uart, IIR) == 0x02  # reading it as THRI clears THRI
    assert rd(uart, IIR) == 0x00
    assert rd(uart, MSR) == 0xA1  # DCTS, and the read clears the deltas
    assert rd(uart, IIR) == 0x01 and board.irq[-1] is False


def test_modem_delta_bits(uart: Uart) -> None:
    uart.set_modem_lines(ri=True)
    assert rd(uart, MSR) == 0xF0  # RI rising sets no TERI
    uart.set_modem_lines(ri=False, dcd=False)
    assert rd(uart, MSR) == 0x3C  # TERI (RI went away) and DDCD
    assert rd(uart, MSR) == 0x30


def test_character_timeout(uart: Uart, board: Board) -> None:
    wr(uart, MCR, 0x10)
    wr(uart, FCR, 0x81)  # trigger level 8
    wr(uart, IER, 0x01)
    wr(uart, THR, 0x61)
    wr(uart, THR, 0x62)
    four = 4 * RESET_CHAR_TIME_NS
    assert board.timer == four
    board.advance(four - 1)
    assert rd(uart, IIR) == 0xC1
    board.advance(1)
    assert rd(uart, IIR) == 0xCC and board.irq == [True]
    assert rd(uart, RBR) == 0x61  # a read clears it and restarts the timer: one byte left
    assert rd(uart, IIR) == 0xC1 and board.timer == board.now + four
    board.advance(four)
    assert rd(uart, IIR) == 0xCC
    assert rd(uart, RBR) == 0x62 and rd(uart, IIR) == 0xC1
    board.advance(four)  # empty: the timer fires into nothing
    assert rd(uart, IIR) == 0xC1
    wr(uart, IER, 0x00)
    wr(uart, THR, 0x63)
    board.advance(four)
    assert rd(uart, IIR) == 0xC1  # the timeout is masked by IER[RDI]
    wr(uart, IER, 0x01)
    assert rd(uart, IIR) == 0xCC


def test_timer_calls_before_the_deadline_do_nothing(uart: Uart, board: Board) -> None:
    wr(uart, MCR, 0x10)
    wr(uart, FCR, 0x41)
    wr(uart, IER, 0x01)
    wr(uart, THR, 1)
    uart.timer_expired()
    assert rd(uart, IIR) == 0xC1
    wr(uart, FCR, 0x43)  # receiver reset cancels the timer
    assert board.timer is None


def test_host_input_without_fifo_one_byte_at_a_time(uart: Uart, board: Board) -> None:
    assert uart.receive(b"ab") == 1
    assert rd(uart, LSR) == 0x61 and uart.receive(b"b") == 0
    assert rd(uart, RBR) == ord("a")
    assert uart.receive(b"b") == 1 and rd(uart, RBR) == ord("b")
    assert rd(uart, LSR) == 0x60  # never an overrun from host input


def test_host_input_fills_to_the_trigger_level(uart: Uart) -> None:
    wr(uart, FCR, 0x41)
    assert uart.can_receive() == 4 and uart.receive(b"0123456789") == 4
    assert uart.can_receive() == 0
    rd(uart, RBR)
    assert uart.can_receive() == 1


def test_loopback_refuses_host_input(uart: Uart, board: Board) -> None:
    wr(uart, MCR, 0x10)
    board.held += b"typed"
    assert uart.receive(b"typed") == 0
    wr(uart, IER, 0x01)
    wr(uart, THR, 0x55)
    assert rd(uart, RBR) == 0x55 and board.held == b"typed"
    wr(uart, MCR, 0x00)  # leaving loopback with the rx interrupt on asks for the input
    assert rd(uart, RBR) == ord("t")


def test_polling_reader_is_offered_input(uart: Uart, board: Board) -> None:
    """U-Boot style: poll LSR[DR], then read RBR.  The UART pulls held bytes on those reads."""
    board.held += b"xy"
    assert rd(uart, LSR) == 0x60  # this read asks for input, the next one sees it
    assert board.offers == 1
    got = bytearray()
    for _ in range(10):
        if rd(uart, LSR) & 0x01:
            got.append(rd(uart, RBR))
    assert got == b"xy" and board.held == b""


def test_uart_takes_nothing_from_a_guest_that_does_not_read_it(uart: Uart, board: Board) -> None:
    board.held += b"for the byte channel"
    wr(uart, THR, ord("x"))
    wr(uart, IER, 0x02)
    rd(uart, IIR)
    assert board.offers == 0 and not uart.wants_input
    assert board.held == b"for the byte channel"


@pytest.mark.parametrize("fcr", [0x00, 0x01, 0x41, 0x81, 0xC1])
def test_each_typed_byte_arrives_exactly_once(uart: Uart, board: Board, fcr: int) -> None:
    """An interrupt-driven reader against a host that types faster than it reads: the FIFO
    fills, the rest is held, every byte arrives once and in order."""
    rng = random.Random(fcr)
    typed = bytes(rng.randrange(256) for _ in range(300))
    wr(uart, FCR, fcr)
    wr(uart, IER, 0x01)
    got = bytearray()
    pos = 0
    while len(got) < len(typed):
        if pos < len(typed):  # the host types a burst; the board offers it if wanted
            burst = typed[pos:pos + rng.randrange(1, 40)]
            pos += len(burst)
            board.held += burst
            if uart.wants_input:
                board.feed()
        if rng.random() < 0.3:
            board.advance(4 * uart.char_time_ns)  # sometimes the guest is slow
        if uart.irq_level:
            while rd(uart, LSR) & 0x01 and rng.random() < 0.8:
                got.append(rd(uart, RBR))
        else:
            board.advance(4 * uart.char_time_ns)
        assert not rd(uart, LSR) & 0x02, "host input must never overrun"
    assert bytes(got) == typed and board.held == b""


def test_wide_and_bad_accesses(uart: Uart) -> None:
    uart.write(MCR, 4, 0x1234_5678)  # the low byte, masked to MCR's five bits
    assert uart.read(MCR, 4) == 0x18 and uart.read(MCR, 2) == 0x18 and uart.read(0, 8) == 0
    uart.write(SCR, 1, 0xAB)
    uart.write(SCR, 4, 0xCD)  # unaligned: ignored
    assert uart.read(SCR, 1) == 0xAB and uart.read(SCR, 2) == 0
    uart.write(8, 1, 0xFF)
    assert uart.read(8, 1) == 0 and uart.read(0xFF, 1) == 0 and uart.read(-1, 1) == 0
    uart.write(MCR, 1, 0x08)  # out of the loopback that 0x78 selected
    uart.write(LSR, 1, 0)
    uart.write(MSR, 1, 0)
    assert (rd(uart, LSR), rd(uart, MSR)) == (0x60, 0xB0)


def test_reset_and_snapshot(uart: Uart, board: Board) -> None:
    wr(uart, MCR, 0x10)
    wr(uart, FCR, 0x41)
    wr(uart, IER, 0x0F)
    wr(uart, THR, 7)
    wr(uart, SCR, 0x5A)
    saved = uart.snapshot()
    uart.reset()
    assert [rd(uart, r) for r in range(8)] == [0, 0, 0x01, 0, 0x08, 0x60, 0xB0, 0]
    assert board.timer is None and board.irq[-1] is False
    uart.restore(saved)
    assert uart.irq_level and rd(uart, SCR) == 0x5A and rd(uart, IIR) == 0xC2
    assert rd(uart, RBR) == 7 and board.timer is not None
