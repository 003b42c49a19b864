"""A 16550A UART (ns16550), sans I/O, as QEMU 7.2's hw/char/serial.c models it.

QEMU's ppce500 maps UART0 at CCSR + 0x4500 with ``serial_mm_init(regshift 0, baudbase 399193,
DEVICE_BIG_ENDIAN)``, MPIC source 42, and only when a serial backend exists (``-nodefaults``
alone leaves nothing there: the differential test passes ``-serial null``).  Eight byte
registers at +0..+7; an access of 2, 4 or 8 bytes at an aligned offset reaches the register at
that offset (a load returns the byte zero-extended, a store uses the low byte: QEMU's
``impl.max_access_size = 8``); offsets +8 and up read 0 and are ignored (unassigned in QEMU,
whose region is 8 bytes), and so are unaligned wider accesses, as a CPU access finds them in
QEMU (invalid: the ops do not allow unaligned).  (qtest differs: its memory core splits an
unaligned access into aligned pieces before the device sees it.)

The model follows QEMU register by register: the interrupt identification priority (line
status, character timeout, received data at the FIFO trigger level, THR empty, modem status),
the FIFOs (16 bytes, trigger levels 1/4/8/14, reset bits, the enable toggle flushing both), the
divisor latch behind LCR[DLAB], loopback (MCR[LOOP]: transmitted bytes are received, MSR shows
MCR's outputs), LSR's overrun and its clear-on-read, THRE interrupt re-arming through IER.

**Transmission is instantaneous**, as QEMU's is with a backend that always accepts: a THR write
hands the byte to :meth:`UartOutputs.transmit` (or, in loopback, to the receiver) at once, so
LSR[THRE|TEMT] are set again before the store returns.

**Input, exactly once.**  Host bytes come in through :meth:`Uart.receive`, which takes only
what the receiver has room for (QEMU's ``serial_can_receive``: up to the FIFO trigger level,
then one at a time until the FIFO is full; one byte without FIFO, while RBR is empty) and says
how many it took; the caller keeps the rest.  Nothing is ever overwritten (host input never
sets LSR[OE]).  The UART asks for more through :meth:`UartOutputs.rx_space` when the guest
reads RBR or LSR (a polling reader) or while its received-data interrupt is enabled (an
interrupt-driven reader) and there is room; the caller answers by calling :meth:`receive` with
what it holds (it may do so from inside the callback).  So a byte typed is taken out of the
host's queue exactly once, and only by a guest that reads this UART.  Input is refused in
loopback (the receiver is disconnected from the line then; QEMU would mix host bytes into the
guest's loopback test).

**Timing.**  The character-timeout interrupt (IIR 0xCC) fires 4 character times after the last
byte reached or left the FIFO, as in QEMU (the character time comes from the divisor, LCR and
the 399193 Hz base, computed in single precision as QEMU does).  Time comes from the injected
``clock`` (ns); the UART asks for a wake-up through :meth:`UartOutputs.set_timer` and the board
calls :meth:`Uart.timer_expired` when that time has come.  Under qtest QEMU 7.2 (Debian's build
has no qtest accelerator, so no ``clock_step``) its virtual clock stands still while ``-S``
holds the VM, so the differential test runs this model with a clock that stands still too.

Simplified: no break input (LSR[BI], a chardev event the machine console cannot send); no
parity or framing errors; the modem inputs are what :meth:`set_modem_lines` says (CTS, DSR and
DCD asserted, like QEMU's reset value 0xB0), and QEMU's own quirk of not resetting FCR on a
system reset is not copied (FCR and the trigger level return to 0/1 here, as on hardware).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

# --- Register offsets (reg-shift 0) ---------------------------------------------------------

RBR: Final = 0  # read, DLAB = 0 (THR on write; DLL with DLAB = 1)
IER: Final = 1  # DLAB = 0 (DLM with DLAB = 1)
IIR: Final = 2  # read (FCR on write)
LCR: Final = 3
MCR: Final = 4
LSR: Final = 5
MSR: Final = 6
SCR: Final = 7
THR: Final = RBR
FCR: Final = IIR
NUM_REGS: Final = 8

LCR_DLAB: Final = 0x80

IER_RDI: Final = 0x01
IER_THRI: Final = 0x02
IER_RLSI: Final = 0x04
IER_MSI: Final = 0x08

IIR_NO_INT: Final = 0x01
IIR_ID: Final = 0x06
IIR_MSI: Final = 0x00
IIR_THRI: Final = 0x02
IIR_RDI: Final = 0x04
IIR_RLSI: Final = 0x06
IIR_CTI: Final = 0x0C
IIR_FE: Final = 0xC0

FCR_FE: Final = 0x01
FCR_RFR: Final = 0x02
FCR_XFR: Final = 0x04
#: The FCR bits that stick (trigger level, DMA mode, enable), as QEMU keeps them.
FCR_STICKY: Final = 0xC9
#: FCR[7:6] -> receive trigger level of a 16550A.
FCR_TRIGGER_LEVELS: Final = {0x00: 1, 0x40: 4, 0x80: 8, 0xC0: 14}

MCR_DTR: Final = 0x01
MCR_RTS: Final = 0x02
MCR_OUT1: Final = 0x04
MCR_OUT2: Final = 0x08
MCR_LOOP: Final = 0x10

LSR_DR: Final = 0x01
LSR_OE: Final = 0x02
LSR_BI: Final = 0x10
LSR_THRE: Final = 0x20
LSR_TEMT: Final = 0x40
#: The LSR bits that raise the line status interrupt (OE, PE, FE, BI).
LSR_INT_ANY: Final = 0x1E

MSR_DCTS: Final = 0x01
MSR_DDSR: Final = 0x02
MSR_TERI: Final = 0x04
MSR_DDCD: Final = 0x08
MSR_CTS: Final = 0x10
MSR_DSR: Final = 0x20
MSR_RI: Final = 0x40
MSR_DCD: Final = 0x80
MSR_ANY_DELTA: Final = 0x0F

FIFO_SIZE: Final = 16
#: The UART's input clock as QEMU's ppce500 gives it (``baudbase`` of serial_mm_init): the
#: divisor divides this to the bit rate.  A local fact of this UART, not in PLATFORM.md's table.
BAUDBASE: Final = 399193
#: QEMU's reset divisor (9600 baud at a 1.8432 MHz base) and character time (9600 8N1, ns).
RESET_DIVISOR: Final = 0x0C
RESET_CHAR_TIME_NS: Final = (1_000_000_000 // 9600) * 10
#: The character timeout, in character times (QEMU: ``char_transmit_time * 4``).
TIMEOUT_CHARS: Final = 4


class UartOutputs(Protocol):
    """What the UART drives.  All are called from inside ``read``/``write``/``receive``."""

    def set_irq(self, level: bool) -> None:
        """The interrupt line to the MPIC (level; called only when it changes)."""

    def transmit(self, data: bytes) -> None:
        """Bytes the guest sent (the machine console)."""

    def rx_space(self) -> None:
        """The guest is reading and the receiver has room: offer held input to ``receive``."""

    def set_timer(self, deadline_ns: int | None) -> None:
        """Call :meth:`Uart.timer_expired` once ``clock() >= deadline_ns`` (None: cancel)."""


@dataclass(frozen=True, slots=True)
class UartState:
    """Every piece of state (for save/restore and inspection)."""

    rbr: int
    ier: int
    iir: int
    lcr: int
    mcr: int
    lsr: int
    msr: int
    scr: int
    fcr: int
    divider: int
    rx_fifo: bytes
    trigger_level: int
    thr_ipending: bool
    timeout_ipending: bool
    timer_deadline: int | None
    char_time_ns: int
    modem_inputs: int


def _f32(value: float) -> float:
    """Round to IEEE single precision, as QEMU's ``float speed`` arithmetic does."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


class Uart:
    """The 16550A register file: ``read``/``write`` take offsets from the UART's base."""

    def __init__(self, outputs: UartOutputs, clock: Callable[[], int], *,
                 baudbase: int = BAUDBASE) -> None:
        self._outputs = outputs
        self._clock = clock
        self._baudbase = baudbase
        self._irq = False
        self._rx: deque[int] = deque()
        self._modem_inputs = MSR_DCD | MSR_DSR | MSR_CTS
        self._set_reset_values()

    # --- lifecycle ------------------------------------------------------------------------

    def _set_reset_values(self) -> None:
        self._rbr = 0
        self._ier = 0
        self._iir = IIR_NO_INT
        self._lcr = 0
        self._mcr = MCR_OUT2
        self._lsr = LSR_TEMT | LSR_THRE
        self._msr = self._modem_inputs
        self._scr = 0
        self._fcr = 0
        self._divider = RESET_DIVISOR
        self._rx.clear()
        self._itl = 1
        self._thr_ipending = False
        self._timeout_ipending = False
        self._deadline: int | None = None
        self._char_time = RESET_CHAR_TIME_NS

    def reset(self) -> None:
        """Power-on values; the FIFOs are emptied, the timer cancelled, the line lowered."""
        had_timer = self._deadline is not None
        self._set_reset_values()
        if had_timer:
            self._outputs.set_timer(None)
        self._set_irq(False)

    def snapshot(self) -> UartState:
        return UartState(
            rbr=self._rbr, ier=self._ier, iir=self._iir, lcr=self._lcr, mcr=self._mcr,
            lsr=self._lsr, msr=self._msr, scr=self._scr, fcr=self._fcr, divider=self._divider,
            rx_fifo=bytes(self._rx), trigger_level=self._itl,
            thr_ipending=self._thr_ipending, timeout_ipending=self._timeout_ipending,
            timer_deadline=self._deadline, char_time_ns=self._char_time,
            modem_inputs=self._modem_inputs,
        )

    def restore(self, state: UartState) -> None:
        self._rbr, self._ier, self._iir = state.rbr, state.ier, state.iir
        self._lcr, self._mcr, self._lsr = state.lcr, state.mcr, state.lsr
        self._msr, self._scr, self._fcr = state.msr, state.scr, state.fcr
        self._divider = state.divider
        self._rx = deque(state.rx_fifo)
        self._itl = state.trigger_level
        self._thr_ipending = state.thr_ipending
        self._timeout_ipending = state.timeout_ipending
        self._char_time = state.char_time_ns
        self._modem_inputs = state.modem_inputs
        self._arm_timer(state.timer_deadline)
        self._update_irq()

    # --- observation ------------------------------------------------------------------------

    @property
    def irq_level(self) -> bool:
        return self._irq

    @property
    def wants_input(self) -> bool:
        """The guest reads this UART by interrupt (IER[RDI]) and there is room: input that
        arrives now should be offered to :meth:`receive` at once.  (A polling guest is offered
        input on its next RBR or LSR read, through :meth:`UartOutputs.rx_space`.)"""
        return bool(self._ier & IER_RDI) and self.can_receive() > 0

    @property
    def char_time_ns(self) -> int:
        """One character time at the programmed divisor and format (for the board's timer)."""
        return self._char_time

    # --- host side --------------------------------------------------------------------------

    def can_receive(self) -> int:
        """How many bytes :meth:`receive` would take now (QEMU's ``serial_can_receive``: it
        stops at the trigger level so the guest's interrupt comes at the level it asked for)."""
        if self._mcr & MCR_LOOP:
            return 0
        if self._fcr & FCR_FE:
            count = len(self._rx)
            if count >= FIFO_SIZE:
                return 0
            return self._itl - count if count <= self._itl else 1
        return 0 if self._lsr & LSR_DR else 1

    def receive(self, data: bytes) -> int:
        """Bytes from the host console.  Takes what fits (see :meth:`can_receive`) and returns
        how many; the caller keeps ``data[returned:]`` for later.  Never drops a byte."""
        taken = 0
        while taken < len(data):
            room = self.can_receive()
            if room == 0:
                break
            chunk = data[taken:taken + room]
            self._receive_bytes(chunk)
            taken += len(chunk)
        return taken

    def set_modem_lines(self, *, cts: bool = True, dsr: bool = True, dcd: bool = True,
                        ri: bool = False) -> None:
        """The modem inputs (QEMU reads them from a tty backend; the machine console has none,
        so they stay at their reset value unless a test drives them).  Changes set MSR's delta
        bits (TERI only for RI going away) and may raise the modem status interrupt."""
        inputs = ((MSR_CTS if cts else 0) | (MSR_DSR if dsr else 0) | (MSR_DCD if dcd else 0)
                  | (MSR_RI if ri else 0))
        self._modem_inputs = inputs
        old = self._msr
        new = (old & MSR_ANY_DELTA) | inputs
        if new != old:
            new |= (new >> 4) ^ (old >> 4)
            if new & MSR_TERI and not old & MSR_RI:
                new &= ~MSR_TERI
            self._msr = new
            self._update_irq()

    def timer_expired(self) -> None:
        """The board's timer for :meth:`UartOutputs.set_timer` went off.  Early or stale calls
        are harmless: the timeout fires only once its deadline has passed."""
        if self._deadline is None or self._clock() < self._deadline:
            return
        self._deadline = None
        if self._rx:
            self._timeout_ipending = True
            self._update_irq()

    # --- guest side -------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """A guest load of ``size`` bytes at ``offset``: the register byte, zero-extended."""
        if not self._valid(offset, size):
            return 0
        if offset == RBR:
            if self._lcr & LCR_DLAB:
                return self._divider & 0xFF
            return self._read_rbr()
        if offset == IER:
            return (self._divider >> 8) if self._lcr & LCR_DLAB else self._ier
        if offset == IIR:
            value = self._iir
            if value & IIR_ID == IIR_THRI:
                self._thr_ipending = False
                self._update_irq()
            return value
        if offset == LCR:
            return self._lcr
        if offset == MCR:
            return self._mcr
        if offset == LSR:
            value = self._lsr
            if value & (LSR_BI | LSR_OE):
                self._lsr &= ~(LSR_BI | LSR_OE)
                self._update_irq()
            self._offer()
            return value
        if offset == MSR:
            return self._read_msr()
        return self._scr

    def write(self, offset: int, size: int, value: int) -> None:
        """A guest store of ``size`` bytes at ``offset``: the register takes the low byte."""
        if not self._valid(offset, size):
            return
        value &= 0xFF
        if offset == THR:
            if self._lcr & LCR_DLAB:
                self._set_divider((self._divider & 0xFF00) | value)
            else:
                self._write_thr(value)
        elif offset == IER:
            if self._lcr & LCR_DLAB:
                self._set_divider((self._divider & 0x00FF) | (value << 8))
            else:
                self._write_ier(value)
        elif offset == FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self._lcr = value
            self._update_parameters()
        elif offset == MCR:
            self._mcr = value & 0x1F
            if self._ier & IER_RDI:
                self._offer()
        elif offset == SCR:
            self._scr = value
        # LSR and MSR are read-only.

    # --- registers ----------------------------------------------------------------------------

    @staticmethod
    def _valid(offset: int, size: int) -> bool:
        return size in (1, 2, 4, 8) and offset % size == 0 and 0 <= offset < NUM_REGS

    def _read_rbr(self) -> int:
        if self._fcr & FCR_FE:
            value = self._rx.popleft() if self._rx else 0
            if not self._rx:
                self._lsr &= ~(LSR_DR | LSR_BI)
            else:
                self._arm_timer(self._clock() + TIMEOUT_CHARS * self._char_time)
            self._timeout_ipending = False
        else:
            value = self._rbr
            self._lsr &= ~(LSR_DR | LSR_BI)
        self._update_irq()
        self._offer()
        return value

    def _read_msr(self) -> int:
        if self._mcr & MCR_LOOP:
            # In loopback the modem outputs drive the inputs: OUT2 -> DCD, OUT1 -> RI,
            # RTS -> CTS, DTR -> DSR.  QEMU reports no delta bits here.
            return (((self._mcr & (MCR_OUT1 | MCR_OUT2)) << 4) | ((self._mcr & MCR_RTS) << 3)
                    | ((self._mcr & MCR_DTR) << 5))
        value = self._msr
        if value & MSR_ANY_DELTA:
            self._msr &= 0xF0
            self._update_irq()
        return value

    def _write_thr(self, value: int) -> None:
        self._thr_ipending = False
        self._lsr &= ~(LSR_THRE | LSR_TEMT)
        self._update_irq()
        # The transmitter takes the byte at once (the FIFO, if enabled, never holds more than
        # this byte): THRE comes back, and with it the THR-empty interrupt.
        self._lsr |= LSR_THRE
        if not self._thr_ipending:
            self._thr_ipending = True
            self._update_irq()
        if self._mcr & MCR_LOOP:
            self._receive_bytes(bytes((value,)))
        else:
            self._outputs.transmit(bytes((value,)))
        self._lsr |= LSR_TEMT

    def _write_ier(self, value: int) -> None:
        changed = (self._ier ^ value) & 0x0F
        self._ier = value & 0x0F
        if changed & IER_THRI:
            # Enabling THRI while THR is empty raises it again even after an IIR read cleared
            # it (QEMU, Bochs; Windows relies on it).
            self._thr_ipending = bool(self._ier & IER_THRI and self._lsr & LSR_THRE)
        if changed:
            self._update_irq()
        if self._ier & IER_RDI:
            self._offer()

    def _write_fcr(self, value: int) -> None:
        if (value ^ self._fcr) & FCR_FE:
            value |= FCR_XFR | FCR_RFR  # toggling the enable flushes both FIFOs
        if value & FCR_RFR:
            self._lsr &= ~(LSR_DR | LSR_BI)
            self._arm_timer(None)
            self._timeout_ipending = False
            self._rx.clear()
        if value & FCR_XFR:
            self._lsr |= LSR_THRE
            self._thr_ipending = True
        self._fcr = value & FCR_STICKY
        if self._fcr & FCR_FE:
            self._iir |= IIR_FE
            self._itl = FCR_TRIGGER_LEVELS[self._fcr & 0xC0]
        else:
            self._iir &= ~IIR_FE
        self._update_irq()
        if self._ier & IER_RDI:
            self._offer()

    def _set_divider(self, divider: int) -> None:
        self._divider = divider
        self._update_parameters()

    def _update_parameters(self) -> None:
        """The character time (start + data + parity + stop bits at baudbase / divisor), in
        single precision like QEMU.  A zero divisor keeps the previous time."""
        if self._divider == 0:
            return
        frame = 1 + (self._lcr & 0x03) + 5 + (2 if self._lcr & 0x04 else 1)
        if self._lcr & 0x08:
            frame += 1
        speed = _f32(self._baudbase / self._divider)
        self._char_time = int(_f32(_f32(1e9 / speed) * frame))

    # --- receiver, timer, interrupt --------------------------------------------------------

    def _receive_bytes(self, data: bytes) -> None:
        """QEMU's ``serial_receive1``: the line delivered ``data`` (host input or loopback)."""
        if self._fcr & FCR_FE:
            for byte in data:
                if len(self._rx) < FIFO_SIZE:
                    self._rx.append(byte)
                else:
                    self._lsr |= LSR_OE  # overruns never overwrite the FIFO
            self._lsr |= LSR_DR
            self._arm_timer(self._clock() + TIMEOUT_CHARS * self._char_time)
        else:
            if self._lsr & LSR_DR:
                self._lsr |= LSR_OE
            self._rbr = data[0]
            self._lsr |= LSR_DR
        self._update_irq()

    def _offer(self) -> None:
        if self.can_receive() > 0:
            self._outputs.rx_space()

    def _arm_timer(self, deadline: int | None) -> None:
        if deadline != self._deadline:
            self._deadline = deadline
            self._outputs.set_timer(deadline)

    def _update_irq(self) -> None:
        """Recompute IIR's interrupt id by priority and drive the line (QEMU's order)."""
        ier, lsr = self._ier, self._lsr
        if ier & IER_RLSI and lsr & LSR_INT_ANY:
            ident = IIR_RLSI
        elif ier & IER_RDI and self._timeout_ipending:
            ident = IIR_CTI  # masked by RDI, as on real parts (QEMU notes it)
        elif ier & IER_RDI and lsr & LSR_DR and (
                not self._fcr & FCR_FE or len(self._rx) >= self._itl):
            ident = IIR_RDI
        elif ier & IER_THRI and self._thr_ipending:
            ident = IIR_THRI
        elif ier & IER_MSI and self._msr & MSR_ANY_DELTA:
            ident = IIR_MSI
        else:
            ident = IIR_NO_INT
        self._iir = ident | (self._iir & 0xF0)
        self._set_irq(ident != IIR_NO_INT)

    def _set_irq(self, level: bool) -> None:
        if level != self._irq:
            self._irq = level
            self._outputs.set_irq(level)
