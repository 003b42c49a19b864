"""The mpc8xxx GPIO block ("fsl,qoriq-gpio"), sans I/O, as QEMU 7.2's hw/gpio/mpc8xxx.c has it.

QEMU's ppce500 maps it at CCSR + 0xF_F000 with MPIC source 47, and wires output pin 0 to a
``gpio-poweroff`` node: when the guest drives pin 0 high, QEMU shuts down.  Linux's
gpio-poweroff driver does exactly that when the guest powers off.

Registers (32-bit, big-endian on the bus; pin *n* is bit ``0x8000_0000 >> n``, the Power
Architecture bit numbering):

====== ======= =======================================================================
offset name    behaviour
====== ======= =======================================================================
0x00   GPDIR   direction, 1 = output
0x04   GPODR   open drain (stored; no electrical effect)
0x08   GPDAT   data: stores every bit written; an *output* pin whose bit changes drives its
               line (:meth:`GpioOutputs.pin_changed`); input pins' bits follow the inputs
0x0C   GPIER   interrupt events, latched by input edges, write 1 to clear
0x10   GPIMR   interrupt mask
0x14   GPICR   interrupt control: 1 = only falling edges latch an event, 0 = any change
====== ======= =======================================================================

The interrupt output is the level ``GPIER & GPIMR != 0``.  Accesses of 1 or 2 bytes, or not
aligned, read 0 and are ignored (QEMU returns 0 for size != 4); an aligned 8-byte access is two
word accesses, high word first, as QEMU's memory core splits it.  Other offsets read 0.

One deliberate difference, invisible to qtest (which cannot drive input pins): QEMU's
``mpc8xxx_gpio_set_irq`` tests ``icr & pin_number`` where it means the pin's mask, and latches
an event on every call, even when the level did not change.  Here an event is latched on an
actual edge, by the pin's own GPICR bit: the behaviour Linux's gpio-mpc8xxx driver expects.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Protocol

from machine.platform import GPIO_SIZE

GPDIR: Final = 0x00
GPODR: Final = 0x04
GPDAT: Final = 0x08
GPIER: Final = 0x0C
GPIMR: Final = 0x10
GPICR: Final = 0x14

NUM_PINS: Final = 32
#: The output pin QEMU's ppce500 wires to its ``gpio-poweroff`` node (hw/ppc/e500.c): driving
#: it high powers the machine off.  A board-wiring fact kept here, next to the pins it names.
POWEROFF_PIN: Final = 0


def pin_mask(pin: int) -> int:
    """The register bit of ``pin``: pin 0 is the most significant bit."""
    return 0x8000_0000 >> pin


class GpioOutputs(Protocol):
    """What the GPIO block drives."""

    def set_irq(self, level: bool) -> None:
        """The interrupt line to the MPIC (level; called only when it changes)."""

    def pin_changed(self, pin: int, level: bool) -> None:
        """An output pin's level changed.  The board powers off on ``POWEROFF_PIN`` high."""


@dataclass(frozen=True, slots=True)
class GpioState:
    """Every register (for save/restore and inspection)."""

    dir: int = 0
    odr: int = 0
    dat: int = 0
    ier: int = 0
    imr: int = 0
    icr: int = 0


class Gpio:
    """The GPIO register block: ``read``/``write`` take offsets from the block's base."""

    def __init__(self, outputs: GpioOutputs) -> None:
        self._outputs = outputs
        self._s = GpioState()
        self._irq = False

    @property
    def irq_level(self) -> bool:
        return self._irq

    def reset(self) -> None:
        """Power-on: every register 0 (all pins inputs).  Output lines are not driven on reset,
        as in QEMU: the pins become inputs, nothing changes level."""
        self._s = GpioState()
        self._update_irq()

    def snapshot(self) -> GpioState:
        return self._s

    def restore(self, state: GpioState) -> None:
        self._s = state
        self._update_irq()

    def read(self, offset: int, size: int) -> int:
        if size == 8 and offset % 8 == 0:
            # QEMU's memory core splits it into two word accesses (the ops' impl size is 4).
            return (self.read(offset, 4) << 32) | self.read(offset + 4, 4)
        if size != 4 or offset % 4 or not 0 <= offset < GPIO_SIZE:
            return 0
        s = self._s
        return {GPDIR: s.dir, GPODR: s.odr, GPDAT: s.dat, GPIER: s.ier, GPIMR: s.imr,
                GPICR: s.icr}.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 8 and offset % 8 == 0:
            self.write(offset, 4, value >> 32)  # big-endian: the high word is the first
            self.write(offset + 4, 4, value)
            return
        if size != 4 or offset % 4 or not 0 <= offset < GPIO_SIZE:
            return
        value &= 0xFFFF_FFFF
        s = self._s
        if offset == GPDIR:
            self._s = replace(s, dir=value)
        elif offset == GPODR:
            self._s = replace(s, odr=value)
        elif offset == GPDAT:
            self._write_data(value)
        elif offset == GPIER:
            self._s = replace(s, ier=s.ier & ~value)
        elif offset == GPIMR:
            self._s = replace(s, imr=value)
        elif offset == GPICR:
            self._s = replace(s, icr=value)
        self._update_irq()

    def set_input(self, pin: int, level: bool) -> None:
        """Drive input ``pin`` from outside (the board, a test).  Ignored while the pin is an
        output, as in QEMU.  An edge latches an event in GPIER unless GPICR asks for falling
        edges only and this one rises."""
        if not 0 <= pin < NUM_PINS:
            raise ValueError(f"GPIO pin {pin} out of range 0..{NUM_PINS - 1}")
        mask = pin_mask(pin)
        s = self._s
        if s.dir & mask:
            return
        old = bool(s.dat & mask)
        dat = (s.dat | mask) if level else (s.dat & ~mask)
        ier = s.ier
        if old != level and (not s.icr & mask or not level):
            ier |= mask
        self._s = replace(s, dat=dat, ier=ier)
        self._update_irq()

    def _write_data(self, new: int) -> None:
        s = self._s
        changed = (s.dat ^ new) & s.dir
        self._s = replace(s, dat=new)
        for pin in range(NUM_PINS):
            mask = pin_mask(pin)
            if changed & mask:
                self._outputs.pin_changed(pin, bool(new & mask))

    def _update_irq(self) -> None:
        level = bool(self._s.ier & self._s.imr)
        if level != self._irq:
            self._irq = level
            self._outputs.set_irq(level)

