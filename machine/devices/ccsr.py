"""The CCSR block: the platform devices at QEMU ppce500's offsets, and the wires between them.

The device models are sans-I/O state machines (:mod:`~machine.devices.mpic`,
:mod:`~machine.devices.guts`, :mod:`~machine.devices.gpio`, :mod:`~machine.devices.uart`); this
module is the board's half: it decodes an access to the 1 MiB block into the device it falls
in, serialises every call into the models under one lock (guest accesses arrive on the vCPU
worker thread, console input and qtest on the trio thread), and connects their outputs:

* the UART, the GPIO block and the console byte channel drive MPIC sources (UART 42, GPIO 47,
  byte-channel rx 56 and tx 57, all level);
* the MPIC drives each CPU's external and critical inputs, and in core-int mode makes each
  CPU's external-interrupt entry load EPR from its IACK;
* GUTS freezes every CPU's timebase and requests resets; GPIO pin 0 powers the machine off;
* the UART's output is console output; typed input waits in the console's one queue and is
  taken from it once, by whichever of the byte channel or the UART the guest reads
  (PLATFORM.md, "Platform devices").

What the board must provide is :class:`CcsrHost`.  Time for the MPIC's timers and the UART's
character timeout comes from ``clock`` (ns): host time when running, qtest's virtual clock under
``-qtest``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from machine.devices.gpio import POWEROFF_PIN, Gpio
from machine.devices.guts import Guts
from machine.devices.mpic import Mpic
from machine.devices.mpic_regs import IVPR_MASK, SOURCE_STRIDE, WINDOWS, Window
from machine.devices.uart import Uart
from machine.platform import (
    BYTE_CHANNEL_RX_IRQ,
    BYTE_CHANNEL_TX_IRQ,
    GPIO_IRQ,
    GPIO_OFFSET,
    GPIO_SIZE,
    GUTS_OFFSET,
    GUTS_SIZE,
    MPIC_OFFSET,
    MPIC_SIZE,
    UART0_OFFSET,
    UART_IRQ,
    UART_SIZE,
)

#: A guest that reads the UART's LSR this many times with no byte-channel read in between is
#: polling the UART for input: from then on typed bytes may go to the UART on its reads.  (A
#: driver probing the UART reads it a few times -- Linux's 8250 probe did, while Linux's console
#: was the byte channel, and took the bytes typed ahead away from it.)
UART_POLLS_FOR_INPUT = 32
_UART_LSR = 5
#: Where the MPIC's per-source vector/priority registers start.
_MPIC_SOURCE0 = next(start for window, start, _ in WINDOWS if window is Window.SOURCE)


class CcsrHost(Protocol):
    """The machine as the platform devices see it."""

    def set_interrupt(self, cpu: int, critical: bool, level: bool) -> None:
        """The MPIC's INT (or CINT) output to CPU ``cpu``."""

    def set_coreint(self, on: bool) -> None:
        """Core-int mode: external interrupt entry loads EPR from the MPIC's IACK."""

    def console_write(self, cpu: int | None, data: bytes) -> None:
        """UART output, onto the machine console."""

    def console_take(self, max_count: int) -> bytes:
        """Take up to ``max_count`` typed bytes from the console's input queue."""

    def console_levels(self) -> tuple[bool, bool]:
        """(input bytes wait, transmit space is free): the byte channel's rx and tx lines."""

    def freeze_timebase(self, frozen: bool) -> None: ...

    def guest_reset(self, cpu: int | None) -> None:
        """RSTCR: reset the machine (or stop it, with -no-reboot)."""

    def guest_power_off(self, cpu: int | None) -> None:
        """GPIO pin 0 went high: power off with code 0."""

    def deadline_changed(self) -> None:
        """A device's next deadline (:meth:`Ccsr.next_deadline_ns`) may have moved."""


class _Wires:
    """The device models' output protocols, bound to one :class:`Ccsr`."""

    def __init__(self, ccsr: Ccsr) -> None:
        self._c = ccsr

    # MPIC
    def set_int(self, cpu: int, level: bool) -> None:
        self._c.host.set_interrupt(cpu, False, level)

    def set_cint(self, cpu: int, level: bool) -> None:
        self._c.host.set_interrupt(cpu, True, level)

    # GUTS
    def request_reset(self) -> None:
        self._c.host.guest_reset(self._c.accessing)

    def freeze_timebase(self, frozen: bool) -> None:
        self._c.host.freeze_timebase(frozen)


class _GpioWires:
    def __init__(self, ccsr: Ccsr) -> None:
        self._c = ccsr

    def set_irq(self, level: bool) -> None:
        self._c.mpic.set_source(GPIO_IRQ, level)

    def pin_changed(self, pin: int, level: bool) -> None:
        if pin == POWEROFF_PIN and level:
            self._c.host.guest_power_off(self._c.accessing)


class _UartWires:
    def __init__(self, ccsr: Ccsr) -> None:
        self._c = ccsr

    def set_irq(self, level: bool) -> None:
        self._c.mpic.set_source(UART_IRQ, level)

    def transmit(self, data: bytes) -> None:
        self._c.host.console_write(self._c.accessing, data)

    def rx_space(self) -> None:
        self._c.offer_input()

    def set_timer(self, deadline_ns: int | None) -> None:
        self._c.uart_deadline = deadline_ns
        self._c.deadline_moved()
        self._c.host.deadline_changed()


Access = tuple[Callable[[int, int], int], Callable[[int, int, int], None]]


class Ccsr:
    """The platform devices of a machine with ``n_cpus`` CPUs whose PVR is ``pvr``."""

    def __init__(self, n_cpus: int, pvr: int, host: CcsrHost, clock: Callable[[], int]) -> None:
        self.host = host
        self.clock = clock
        self.lock = threading.RLock()
        #: The CPU whose access is being handled (None: qtest or the host).
        self.accessing: int | None = None
        self.uart_deadline: int | None = None
        wires = _Wires(self)
        self.mpic = Mpic(n_cpus, wires, clock)
        self.guts = Guts(wires, pvr=pvr)
        self.gpio = Gpio(_GpioWires(self))
        self.uart = Uart(_UartWires(self), clock)
        self._coreint = False
        self._rx_level = self._tx_level = False
        self._lsr_polls = 0
        self._deadline: int | None = None
        self._deadline_dirty = True

    # --- accesses (guest loads and stores: worker thread; qtest: trio thread) ----------------

    def read(self, offset: int, size: int, cpu: int | None) -> int:
        with self.lock:
            self.accessing = cpu
            self._deadline_dirty = True
            if MPIC_OFFSET <= offset < MPIC_OFFSET + MPIC_SIZE:
                return self.mpic.read(offset - MPIC_OFFSET, size, cpu)
            if UART0_OFFSET <= offset < UART0_OFFSET + UART_SIZE:
                if offset - UART0_OFFSET == _UART_LSR:
                    self._lsr_polls += 1
                return self.uart.read(offset - UART0_OFFSET, size)
            if GUTS_OFFSET <= offset < GUTS_OFFSET + GUTS_SIZE:
                return self.guts.read(offset - GUTS_OFFSET, size)
            if GPIO_OFFSET <= offset < GPIO_OFFSET + GPIO_SIZE:
                return self.gpio.read(offset - GPIO_OFFSET, size)
            return 0  # nothing there: reads 0, as QEMU's unassigned CCSR space

    def write(self, offset: int, size: int, value: int, cpu: int | None) -> None:
        with self.lock:
            self.accessing = cpu
            self._deadline_dirty = True
            if MPIC_OFFSET <= offset < MPIC_OFFSET + MPIC_SIZE:
                self.mpic.write(offset - MPIC_OFFSET, size, value, cpu)
                if self.mpic.coreint != self._coreint:
                    self._coreint = self.mpic.coreint
                    self.host.set_coreint(self._coreint)
                self.host.deadline_changed()  # (a timer may have been programmed)
            elif UART0_OFFSET <= offset < UART0_OFFSET + UART_SIZE:
                self.uart.write(offset - UART0_OFFSET, size, value)
            elif GUTS_OFFSET <= offset < GUTS_OFFSET + GUTS_SIZE:
                self.guts.write(offset - GUTS_OFFSET, size, value)
            elif GPIO_OFFSET <= offset < GPIO_OFFSET + GPIO_SIZE:
                self.gpio.write(offset - GPIO_OFFSET, size, value)

    def iack(self, cpu: int) -> int:
        """The core-int acknowledge of ``cpu`` (its EPR load)."""
        with self.lock:
            self._deadline_dirty = True
            return self.mpic.iack(cpu)

    # --- time ---------------------------------------------------------------------------

    def next_deadline_ns(self) -> int | None:
        """When a device next needs :meth:`service` (the clock's ns), or None.  Worked out
        again only after an access, a service or a reset (the worker asks at every slice
        boundary; the devices are idle most of them)."""
        with self.lock:
            if self._deadline_dirty:
                self._deadline_dirty = False
                times = [t for t in (self.mpic.next_deadline_ns(), self.uart_deadline)
                         if t is not None]
                self._deadline = min(times) if times else None
            return self._deadline

    def service(self) -> None:
        """Fire what came due: MPIC timers, the UART's character timeout."""
        with self.lock:
            self._deadline_dirty = True
            self.mpic.service()
            due = self.uart_deadline
            if due is not None and self.clock() >= due:
                self.uart_deadline = None  # (the UART sets a new one if it wants one)
                self.uart.timer_expired()

    # --- the console ----------------------------------------------------------------------

    def _uart_reads_input(self) -> bool:
        """The guest reads the UART for input: by interrupt (IER's receive interrupt on and
        its MPIC source unmasked: a probe that merely tests IER does not count), or by polling
        LSR (:data:`UART_POLLS_FOR_INPUT`)."""
        if self._lsr_polls >= UART_POLLS_FOR_INPUT:
            return True
        ivpr = self.mpic.read(_MPIC_SOURCE0 + SOURCE_STRIDE * UART_IRQ, 4, None)
        return self.uart.wants_input and not ivpr & IVPR_MASK

    def deadline_moved(self) -> None:
        self._deadline_dirty = True

    def offer_input(self) -> None:
        """Move typed bytes into the UART's receiver as far as it takes them (lock held), if
        the guest reads it for input."""
        if not self._uart_reads_input():
            self.console_changed()
            return
        room = self.uart.can_receive()
        if room:
            data = self.host.console_take(room)
            if data:
                taken = self.uart.receive(data)
                assert taken == len(data), "the UART took less than it offered to"
        self.console_changed()

    def input_arrived(self) -> None:
        """Console input came (any thread): an interrupt-driven UART takes it at once; the
        byte channel's rx line comes up."""
        with self.lock:
            self.offer_input()

    def byte_channel_read(self) -> None:
        """The guest read the console byte channel (EV_BYTE_CHANNEL_RECEIVE or POLL): it is
        the console it reads, until it polls the UART again."""
        self._lsr_polls = 0
        self.console_changed()

    def console_changed(self) -> None:
        """Re-drive the byte channel's level lines from the console's state (after input
        arrived or was taken, or output was queued or delivered)."""
        with self.lock:
            rx, tx = self.host.console_levels()
            if (rx, tx) != (self._rx_level, self._tx_level):
                self._deadline_dirty = True  # (the MPIC brings its timers up to date)
            if rx != self._rx_level:
                self._rx_level = rx
                self.mpic.set_source(BYTE_CHANNEL_RX_IRQ, rx)
            if tx != self._tx_level:
                self._tx_level = tx
                self.mpic.set_source(BYTE_CHANNEL_TX_IRQ, tx)

    # --- lifecycle --------------------------------------------------------------------------

    def reset(self) -> None:
        """Every device to its power-on state (the machine's reset)."""
        with self.lock:
            self.accessing = None
            self._deadline_dirty = True
            self.mpic.reset()
            self.guts.reset()
            self.gpio.reset()
            self.uart.reset()
            self._rx_level = self._tx_level = False
            self._lsr_polls = 0
            if self._coreint:
                self._coreint = False
                self.host.set_coreint(False)
            self.console_changed()
