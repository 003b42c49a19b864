"""GUTS, GPIO and UART against QEMU 7.2's ``qemu-system-ppc -M ppce500``, over qtest.

Seeded random register sequences run on one QEMU and on fresh models; every value either side
reads is compared, and a sequence passes only with no difference.  Offsets inside CCSR are the
same on both; only the bases differ (QEMU's CCSR is at 0xF_E000_0000, ours below 4 GiB).  One
QEMU serves every sequence (a restart costs seconds): a prologue of register writes brings its
devices back to their reset state first, and the same prologue runs on the fresh model, so any
state the prologue fails to restore shows up as a difference, never as a silent pass.

QEMU's UART exists only with a serial backend (hw/ppc/e500.c maps serial0 only if
``serial_hd(0)``), and ``-nodefaults`` removes the default one: this test passes ``-serial null``.
Under ``-S`` QEMU's virtual clock stands still (and Debian's 7.2 has no qtest accelerator, so
there is no ``clock_step``): the UART model runs on a clock that stands still too, so the
character timeout never fires on either side.

Excluded, because QEMU cannot show it under qtest or differs on purpose (docs/PLATFORM.md):

* GUTS PVR and SVR: QEMU 7.2 reads them from ``current_cpu``, which qtest leaves NULL (crash).
* GUTS DEVDISR and PORPLLSR: QEMU reads 0 and ignores writes; ours are a real register and the
  platform's clocks.  Other GUTS registers are compared (all read 0, writes ignored).
* GUTS RSTCR writes with HRESET_REQ (bit 0x2): they reset QEMU.  Other RSTCR writes compared.
* GPIO pin 0 driven high: it powers QEMU off.  GPDAT writes keep bit 0 (pin 0) clear.
* GPIO input pins: qtest cannot drive them without the device's QOM path; unit-tested.
* 8-byte accesses (the peer has no readq/writeq) and unaligned UART accesses: qtest's memory
  core splits an unaligned access into aligned pieces before the UART sees it, which a CPU
  load does not; what a device does with the pieces is compared through aligned accesses.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import pytest

from machine.devices import gpio as g
from machine.devices import guts as gu
from machine.devices import uart as u
from machine.platform import GPIO_OFFSET, GUTS_OFFSET, UART0_OFFSET, UART_SIZE

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which("qemu-system-ppc") is None,
                       reason="qemu-system-ppc not installed"),
]

from tests.devices.qemu_peer import QemuPeer  # noqa: E402  (after the skip: it needs QEMU)

#: Sequences per device: 300 in all, at least 150 as the issue asks for these three.
SEQUENCES: dict[str, int] = {"guts": 60, "gpio": 90, "uart": 150}
OPS_PER_SEQUENCE = 48

Op = tuple[Literal["r", "w"], int, int, int]  # kind, offset in the block, size, value


class Device(Protocol):
    def read(self, offset: int, size: int) -> int: ...
    def write(self, offset: int, size: int, value: int) -> None: ...


class Sink:
    """Outputs for every model: the differential test compares reads, not these calls, but it
    records them so a call that should never happen (reset, power-off) fails loudly."""

    def __init__(self) -> None:
        self.forbidden: list[str] = []

    def request_reset(self) -> None:
        self.forbidden.append("reset")

    def freeze_timebase(self, frozen: bool) -> None:
        pass

    def set_irq(self, level: bool) -> None:
        pass

    def pin_changed(self, pin: int, level: bool) -> None:
        if pin == g.POWEROFF_PIN and level:
            self.forbidden.append("power-off")

    def transmit(self, data: bytes) -> None:
        pass

    def rx_space(self) -> None:
        pass

    def set_timer(self, deadline_ns: int | None) -> None:
        pass


FROZEN_CLOCK: Callable[[], int] = lambda: 0  # noqa: E731  (QEMU's clock under -S)


# --- sequences ---------------------------------------------------------------------------------

def _size_offset(rng: random.Random, registers: list[int], span: int,
                 aligned: bool) -> tuple[int, int]:
    size = rng.choice((4, 4, 4, 4, 2, 1))
    if rng.random() < 0.85:
        offset = rng.choice(registers) + (0 if size == 4 else rng.randrange(4 // size) * size)
    else:
        offset = rng.randrange(0, span, size if aligned else 1)
    if not aligned and rng.random() < 0.1:
        offset += rng.randrange(1, 4)
    return size, min(offset, span - size)


GUTS_REGS = [0x04, 0x08, 0x0C, 0x10, 0x14, 0x20, 0x30, 0x40, 0x50, 0x60, 0x80, 0x90, 0x94,
             gu.RSTCR, 0xC0, 0xB20, 0xB24, 0xB28, 0xE00, 0xF04, 0xF10, 0xF18]
GUTS_EXCLUDED = {gu.PVR, gu.SVR, gu.DEVDISR, gu.PORPLLSR}


def guts_sequence(rng: random.Random) -> list[Op]:
    ops: list[Op] = []
    while len(ops) < OPS_PER_SEQUENCE:
        size, offset = _size_offset(rng, GUTS_REGS, 0x1000, aligned=False)
        if offset & ~3 in GUTS_EXCLUDED:
            continue
        if rng.random() < 0.5:
            ops.append(("r", offset, size, 0))
        else:
            value = rng.getrandbits(32)
            if offset & ~3 == gu.RSTCR:
                value &= ~gu.RSTCR_HRESET_REQ
            ops.append(("w", offset, size, value))
    return ops


GPIO_REGS = [g.GPDIR, g.GPODR, g.GPDAT, g.GPIER, g.GPIMR, g.GPICR]
GPIO_PROLOGUE: list[Op] = [("w", g.GPDIR, 4, 0), ("w", g.GPDAT, 4, 0), ("w", g.GPODR, 4, 0),
                           ("w", g.GPIMR, 4, 0), ("w", g.GPICR, 4, 0),
                           ("w", g.GPIER, 4, 0xFFFF_FFFF)]


def gpio_sequence(rng: random.Random) -> list[Op]:
    ops: list[Op] = [("r", reg, 4, 0) for reg in GPIO_REGS]
    while len(ops) < OPS_PER_SEQUENCE:
        size, offset = _size_offset(rng, GPIO_REGS, 0x40, aligned=False)
        if rng.random() < 0.5:
            ops.append(("r", offset, size, 0))
            continue
        value = rng.choice((rng.getrandbits(32), rng.getrandbits(32) & rng.getrandbits(32),
                            0, 0xFFFF_FFFF, 1 << rng.randrange(32)))
        if offset <= g.GPDAT < offset + size:
            value &= 0x7FFF_FFFF  # pin 0 never goes high: that powers QEMU off
        ops.append(("w", offset, size, value))
    return ops


UART_PROLOGUE: list[Op] = [
    ("w", u.IER, 1, 0), ("w", u.LCR, 1, 0x80), ("w", u.RBR, 1, u.RESET_DIVISOR),
    ("w", u.IER, 1, 0), ("w", u.LCR, 1, 0),
    # RBR := 0 without FIFO, through loopback, then drain it and clear OE/BI.
    ("w", u.FCR, 1, 0x07), ("w", u.FCR, 1, 0x00), ("w", u.MCR, 1, u.MCR_LOOP),
    ("w", u.THR, 1, 0), ("r", u.RBR, 1, 0), ("r", u.LSR, 1, 0),
    # FCR's XFR left THRI pending: toggling IER[THRI] with IER ending at 0 clears it.
    ("w", u.IER, 1, u.IER_THRI), ("w", u.IER, 1, 0),
    ("w", u.MCR, 1, u.MCR_OUT2), ("w", u.SCR, 1, 0),
]


def uart_sequence(rng: random.Random) -> list[Op]:
    ops: list[Op] = [("r", reg, 1, 0) for reg in range(u.NUM_REGS)]
    # Most sequences start in loopback with interrupts on, so that received data, overruns,
    # trigger levels and every IIR priority come up within a few dozen operations.
    if rng.random() < 0.75:
        ops.append(("w", u.MCR, 1, u.MCR_LOOP | rng.getrandbits(4)))
    if rng.random() < 0.6:
        ops.append(("w", u.FCR, 1, rng.choice((0x01, 0x41, 0x81, 0xC1))))
    if rng.random() < 0.8:
        ops.append(("w", u.IER, 1, rng.getrandbits(4)))
    weights = {u.RBR: 6, u.IER: 3, u.IIR: 4, u.LCR: 1, u.MCR: 2, u.LSR: 4, u.MSR: 2, u.SCR: 1}
    regs = list(weights)
    while len(ops) < OPS_PER_SEQUENCE:
        reg = rng.choices(regs, [weights[r] for r in regs])[0]
        size = rng.choice((1, 1, 1, 1, 1, 1, 2, 4))
        offset = reg - reg % size
        if rng.random() < 0.03:
            offset = rng.randrange(u.NUM_REGS, UART_SIZE, size)  # nothing there on either side
        if rng.random() < 0.5:
            ops.append(("r", offset, size, 0))
            continue
        byte = {
            u.LCR: rng.choice((0x03, 0x83, 0x80, 0x1B, rng.getrandbits(8))),
            u.MCR: rng.choice((u.MCR_LOOP, u.MCR_LOOP | 0x0F, 0x08, rng.getrandbits(8))),
            u.FCR: rng.choice((0x01, 0x41, 0x81, 0xC1, 0x03, 0x07, 0x00, rng.getrandbits(8))),
            u.IER: rng.choice((0x01, 0x02, 0x05, 0x07, 0x0F, 0x00, rng.getrandbits(8))),
        }.get(offset, rng.getrandbits(8))
        # A wide store carries the byte in its low bits, random bits above.
        value = (rng.getrandbits(8 * size) & ~0xFF) | byte
        ops.append(("w", offset, size, value))
        if offset == u.THR and rng.random() < 0.5:  # bursts, to fill the FIFO
            ops.extend(("w", u.THR, 1, rng.getrandbits(8)) for _ in range(rng.randrange(1, 18)))
    return ops


# --- the two sides ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    base: int
    prologue: list[Op]
    sequence: Callable[[random.Random], list[Op]]
    model: Callable[[Sink], Device]


CASES = {
    "guts": Case("guts", GUTS_OFFSET, [], guts_sequence,
                 lambda sink: gu.Guts(sink, pvr=0x8021_0030)),
    "gpio": Case("gpio", GPIO_OFFSET, GPIO_PROLOGUE, gpio_sequence, lambda sink: g.Gpio(sink)),
    "uart": Case("uart", UART0_OFFSET, UART_PROLOGUE, uart_sequence,
                 lambda sink: u.Uart(sink, FROZEN_CLOCK)),
}


@pytest.fixture(scope="module")
def qemu() -> Iterator[QemuPeer]:
    with QemuPeer(extra_args=["-serial", "null"]) as peer:
        yield peer


def run_on_qemu(peer: QemuPeer, base: int, ops: list[Op]) -> list[int]:
    reads = {1: peer.readb, 2: peer.readw, 4: peer.readl}
    writes = {1: peer.writeb, 2: peer.writew, 4: peer.writel}
    got = []
    for kind, offset, size, value in ops:
        address = peer.CCSR + base + offset
        if kind == "r":
            got.append(reads[size](address))
        else:
            writes[size](address, value)
    return got


def run_on_model(device: Device, ops: list[Op]) -> list[int]:
    got = []
    for kind, offset, size, value in ops:
        if kind == "r":
            got.append(device.read(offset, size))
        else:
            device.write(offset, size, value)
    return got


def differences(peer: QemuPeer, case: Case, seed: int,
                model: Callable[[Sink], Device] | None = None) -> list[str]:
    """Run sequence ``seed`` of ``case`` on both; describe every read that differs."""
    ops = case.sequence(random.Random(f"{case.name}-{seed}"))
    sink = Sink()
    device = (model or case.model)(sink)
    run_on_qemu(peer, case.base, case.prologue)
    run_on_model(device, case.prologue)
    theirs = run_on_qemu(peer, case.base, ops)
    ours = run_on_model(device, ops)
    assert sink.forbidden == [], f"the sequence did what QEMU must not: {sink.forbidden}"
    read_ops = [op for op in ops if op[0] == "r"]
    return [f"{case.name} seed {seed}, read #{i} {op[1]:#x}/{op[2]}: qemu {a:#x}, ours {b:#x}"
            for i, (op, a, b) in enumerate(zip(read_ops, theirs, ours, strict=True)) if a != b]


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_no_differences(qemu: QemuPeer, name: str) -> None:
    case = CASES[name]
    started = time.monotonic()
    found: list[str] = []
    reads = 0
    for seed in range(SEQUENCES[name]):
        found += differences(qemu, case, seed)
        reads += sum(op[0] == "r" for op in case.sequence(random.Random(f"{name}-{seed}")))
    elapsed = time.monotonic() - started
    print(f"{name}: {SEQUENCES[name]} sequences, {reads} reads compared, "
          f"{len(found)} differences, {elapsed:.2f} s")
    assert found == [], "\n".join(found[:20])


class LsrKeepsOverrun(u.Uart):
    """A planted fault: reading LSR forgets to clear OE (a one-line slip in a 16550 model)."""

    def read(self, offset: int, size: int) -> int:
        if offset == u.LSR and not self._lcr & u.LCR_DLAB:
            value = self._lsr
            self._offer()
            return value
        return super().read(offset, size)


class ThrEmptyOutranksData(u.Uart):
    """A planted fault: IIR ranks THR empty above received data (two lines swapped)."""

    def _update_irq(self) -> None:
        super()._update_irq()
        if self._iir & 0x0F == u.IIR_RDI and self._ier & u.IER_THRI and self._thr_ipending:
            self._iir = (self._iir & 0xF0) | u.IIR_THRI


class IerNotWriteOneToClear(g.Gpio):
    """A planted fault: GPIER written like a plain register instead of write-1-to-clear."""

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == g.GPIER and size == 4:
            self._s = g.GpioState(self._s.dir, self._s.odr, self._s.dat, value & 0xFFFF_FFFF,
                                  self._s.imr, self._s.icr)
            self._update_irq()
            return
        super().write(offset, size, value)


@pytest.mark.parametrize(("name", "mutant"), [
    ("uart", lambda sink: LsrKeepsOverrun(sink, FROZEN_CLOCK)),
    ("uart", lambda sink: ThrEmptyOutranksData(sink, FROZEN_CLOCK)),
    ("gpio", lambda sink: IerNotWriteOneToClear(sink)),
])
def test_a_planted_fault_is_caught(qemu: QemuPeer, name: str,
                                   mutant: Callable[[Sink], Device]) -> None:
    """The same sequences against a model with one planted fault must show differences, so
    "0 differences" above means the comparison looks at what the fault changes."""
    case = CASES[name]
    caught = [seed for seed in range(SEQUENCES[name])
              if differences(qemu, case, seed, model=mutant)]
    print(f"{name} mutant: caught by {len(caught)} of {SEQUENCES[name]} sequences")
    assert caught, f"the planted fault in {name} went unnoticed"
