"""The MPIC model, scenario by scenario: what a guest does and what its CPUs see.

The register-level agreement with QEMU is test_mpic_differential.py's job; these tests check
what qtest cannot show: the output lines, the current-CPU window with a CPU behind it, core-int
mode, and the global timers running on a clock.
"""

from __future__ import annotations

import random

import pytest

from machine.devices import mpic_regs as r
from machine.devices.mpic import Mpic, SourceKind, source_kind
from machine.platform import BYTE_CHANNEL_RX_IRQ, GPIO_IRQ, UART_IRQ


class Lines:
    """The CPUs' INT and CINT inputs, as the board would hold them."""

    def __init__(self) -> None:
        self.int: dict[int, bool] = {}
        self.cint: dict[int, bool] = {}

    def set_int(self, cpu: int, level: bool) -> None:
        self.int[cpu] = level

    def set_cint(self, cpu: int, level: bool) -> None:
        self.cint[cpu] = level

    def raised(self) -> set[int]:
        return {cpu for cpu, level in self.int.items() if level}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def make(n_cpus: int = 1) -> tuple[Mpic, Lines, FakeClock]:
    lines, clock = Lines(), FakeClock()
    return Mpic(n_cpus, lines, clock), lines, clock


def src(irq: int, reg: int = r.IVPR) -> int:
    return 0x1_0000 + irq * r.SOURCE_STRIDE + reg


def own(cpu: int, reg: int) -> int:
    return 0x2_0000 + cpu * r.CPU_STRIDE + reg


def ivpr(vector: int, priority: int, *, masked: bool = False, level: bool = False) -> int:
    return (r.IVPR_MASK * masked) | (r.IVPR_SENSE * level) | priority << 16 | vector


def setup(mpic: Mpic, irq: int, vector: int, priority: int = 8, cpus: int = 1,
          level: bool = False) -> None:
    mpic.write(src(irq), 4, ivpr(vector, priority, level=level), None)
    mpic.write(src(irq, r.IDR), 4, cpus, None)


def open_all(mpic: Mpic) -> None:
    for cpu in range(mpic.n_cpus):
        mpic.write(own(cpu, r.CTPR), 4, 0, None)


# --- reset values -----------------------------------------------------------------------------


@pytest.mark.parametrize("n_cpus", [1, 2, 4, 32])
def test_reset_values(n_cpus: int) -> None:
    mpic, lines, _ = make(n_cpus)
    read = lambda off: mpic.read(off, 4, None)  # noqa: E731
    frr = r.Frr.parse(read(r.FRR).to_bytes(4, "big"))
    assert (frr.nirq, frr.ncpu, frr.vid) == (195, n_cpus - 1, 2)
    assert read(r.BRR1) == 0x0040_0402
    assert (read(r.GCR), read(r.VIR), read(r.PIR), read(r.SPVR)) == (0, 0, 0, 0xFFFF)
    assert [read(r.IPI_IVPR0 + 0x10 * i) for i in range(4)] == [0x8000_0000] * 4
    for t in range(r.N_TIMERS):
        base = r.TIMER0 + r.TIMER_STRIDE * t
        assert [read(base + reg) for reg in (0, 0x10, 0x20, 0x30)] == [
            0, r.TBCR_CI, 0x8000_0000, 1]
    assert read(src(0)) == read(src(15)) == 0x8000_0000  # external: edge, masked
    assert read(src(UART_IRQ)) == read(src(255)) == 0x8080_0000  # internal: polarity set
    assert read(src(UART_IRQ, r.IDR)) == 1 and read(src(UART_IRQ, r.ILR)) == 0
    for cpu in range(n_cpus):
        assert read(own(cpu, r.CTPR)) == 15
        assert read(own(cpu, r.WHOAMI)) == cpu
    if n_cpus < 32:
        assert read(own(n_cpus, r.WHOAMI)) == 0xFFFF_FFFF  # a CPU that does not exist
    assert not lines.raised() and not any(lines.cint.values())
    assert not mpic.coreint and mpic.next_deadline_ns() is None


def test_source_kinds() -> None:
    assert source_kind(0) is source_kind(15) is SourceKind.EXTERNAL
    assert source_kind(16) is source_kind(UART_IRQ) is source_kind(255) is SourceKind.INTERNAL
    assert source_kind(r.IRQ_IPI0) is source_kind(r.N_IRQS - 1) is SourceKind.SPECIAL
    mpic, _, _ = make()
    for irq, expect in ((3, 0x00CF_0001), (GPIO_IRQ, 0x008F_0001)):
        mpic.write(src(irq), 4, 0xFFFF_FFFF & ~r.IVPR_MASK & ~0xFFFE, None)
        assert mpic.read(src(irq), 4, None) == expect  # internal: sense reads 0
    mpic.write(r.IPI_IVPR0, 4, 0x00C5_0001, None)
    assert mpic.read(r.IPI_IVPR0, 4, None) == 0x0005_0001  # IPIs: no sense, no polarity


# --- IPIs ---------------------------------------------------------------------------------------


def test_an_ipi_from_each_cpu_reaches_each_cpu() -> None:
    mpic, lines, _ = make(4)
    open_all(mpic)
    for ipi in range(r.N_IPIS):
        mpic.write(r.IPI_IVPR0 + 0x10 * ipi, 4, ivpr(0x40 + ipi, 5), None)
    for sender in range(4):
        for target in range(4):
            ipi = (sender + target) % r.N_IPIS
            mpic.write(own(sender, r.IPIDR0 + 0x10 * ipi), 4, 1 << target, None)
            assert lines.raised() == {target}
            assert mpic.iack(target) == 0x40 + ipi
            assert not lines.raised()
            assert mpic.read(own(target, r.IACK), 4, None) == 0xFFFF  # delivered once
            mpic.write(own(target, r.EOI), 4, 0, None)


def test_a_multicast_ipi_reaches_every_cpu_once() -> None:
    mpic, lines, _ = make(4)
    open_all(mpic)
    mpic.write(r.IPI_IVPR0 + 0x10, 4, ivpr(0x99, 3), None)
    mpic.write(own(2, r.IPIDR0 + 0x10), 4, 0b1011, None)
    assert lines.raised() == {0, 1, 3}
    for cpu in (3, 0, 1):
        assert mpic.read(own(cpu, r.IACK), 4, None) == 0x99
        assert mpic.read(own(cpu, r.IACK), 4, None) == 0xFFFF
    assert mpic.read(own(2, r.IACK), 4, None) == 0xFFFF
    assert not mpic.read(r.IPI_IVPR0 + 0x10, 4, None) & r.IVPR_ACTIVITY


def test_the_current_cpu_window_is_the_accessing_cpus_own() -> None:
    mpic, lines, _ = make(2)
    for cpu in range(2):
        assert mpic.read(r.CURRENT_CPU_FIRST + 0x50, 4, cpu) == cpu  # WHOAMI
        mpic.write(0x80, 4, 3 + cpu, cpu)  # CTPR
        assert mpic.read(own(cpu, r.CTPR), 4, None) == 3 + cpu
    assert mpic.read(0x90, 4, None) == 0xFFFF_FFFF  # no current CPU (qtest, the host)
    mpic.write(0x80, 4, 0, None)
    assert mpic.read(own(0, r.CTPR), 4, None) == 3
    open_all(mpic)
    mpic.write(r.IPI_IVPR0, 4, ivpr(0x21, 9), None)
    mpic.write(0x40, 4, 0b10, 0)  # CPU 0 sends IPI 0 to CPU 1 through its current window
    assert lines.raised() == {1}
    assert mpic.read(0xA0, 4, 1) == 0x21
    mpic.write(0xB0, 4, 0, 1)
    assert mpic.read(0xA0, 4, 1) == 0xFFFF


# --- priorities, masking, in-service, EOI ----------------------------------------------------


def test_priority_and_ties() -> None:
    mpic, _, _ = make()
    open_all(mpic)
    setup(mpic, 3, 0x3, priority=4)  # edge sources: IACK takes them off the raised set
    setup(mpic, 9, 0x9, priority=9)
    setup(mpic, 5, 0x5, priority=9)
    for irq in (3, 9, 5):
        mpic.set_source(irq, True)
    # Highest priority first; equal priorities go to the lowest source number.  (IACK does
    # not look at what is in service: only the INT line does.)
    assert [mpic.iack(0) for _ in range(4)] == [0x5, 0x9, 0x3, 0xFFFF]


def test_mask_and_task_priority() -> None:
    mpic, lines, _ = make()
    mpic.write(src(UART_IRQ), 4, ivpr(0x42, 6, masked=True), None)
    mpic.set_source(UART_IRQ, True)
    assert not lines.raised() and not mpic.read(src(UART_IRQ), 4, None) & r.IVPR_ACTIVITY
    mpic.write(src(UART_IRQ), 4, ivpr(0x42, 6), None)  # unmasked, but CTPR is 15
    assert mpic.read(src(UART_IRQ), 4, None) & r.IVPR_ACTIVITY and not lines.raised()
    mpic.write(own(0, r.CTPR), 4, 6, None)
    assert not lines.raised()  # priority must be above CTPR
    mpic.write(own(0, r.CTPR), 4, 5, None)
    assert lines.raised() == {0}
    mpic.write(own(0, r.CTPR), 4, 6, None)
    assert not lines.raised()
    assert mpic.iack(0) == 0xFFFF  # not deliverable: the spurious vector


def test_in_service_hides_lower_priorities_until_eoi() -> None:
    mpic, lines, _ = make()
    open_all(mpic)
    setup(mpic, 40, 0x40, priority=9)
    setup(mpic, 41, 0x41, priority=3)
    mpic.set_source(40, True)
    assert mpic.iack(0) == 0x40 and not lines.raised()
    mpic.set_source(41, True)
    assert not lines.raised()  # 3 is not above the in-service 9
    mpic.write(own(0, r.EOI), 4, 0, None)
    assert lines.raised() == {0}  # EOI of 40: 41 comes through (40 is still asserted too)
    assert mpic.iack(0) == 0x40  # level: 40 is still asserted, and higher
    mpic.set_source(40, False)
    mpic.write(own(0, r.EOI), 4, 0, None)
    assert mpic.iack(0) == 0x41


def test_level_and_edge() -> None:
    mpic, lines, _ = make()
    open_all(mpic)
    setup(mpic, 3, 0x3, level=False)
    mpic.set_source(3, True)
    mpic.set_source(3, False)
    assert lines.raised() == {0}  # an edge is latched
    assert mpic.iack(0) == 0x3
    mpic.write(own(0, r.EOI), 4, 0, None)
    assert mpic.iack(0) == 0xFFFF  # and delivered once
    setup(mpic, 3, 0x3, level=True)
    mpic.set_source(3, True)
    assert mpic.iack(0) == 0x3
    mpic.write(own(0, r.EOI), 4, 0, None)
    assert lines.raised() == {0}  # still asserted: delivered again
    mpic.set_source(3, False)
    assert not lines.raised()
    assert not mpic.read(src(3), 4, None) & r.IVPR_ACTIVITY
    assert mpic.iack(0) == 0xFFFF


def test_critical_route() -> None:
    mpic, lines, _ = make(2)
    open_all(mpic)
    setup(mpic, BYTE_CHANNEL_RX_IRQ, 0x56, cpus=0b10)
    mpic.write(src(BYTE_CHANNEL_RX_IRQ, r.ILR), 4, r.Inttgt.CINT, None)
    assert mpic.read(src(BYTE_CHANNEL_RX_IRQ, r.ILR), 4, None) == 1
    mpic.set_source(BYTE_CHANNEL_RX_IRQ, True)
    assert lines.cint == {0: False, 1: True} and not lines.raised()
    assert mpic.iack(1) == 0xFFFF  # critical interrupts bypass IACK
    mpic.set_source(BYTE_CHANNEL_RX_IRQ, False)
    assert lines.cint[1] is False
    mpic.write(src(BYTE_CHANNEL_RX_IRQ, r.ILR), 4, 0x77, None)  # unknown INTTGT: INT
    assert mpic.read(src(BYTE_CHANNEL_RX_IRQ, r.ILR), 4, None) == 0


def test_coreint_mode() -> None:
    mpic, lines, _ = make()
    mpic.write(r.GCR, 4, r.GCR_MODE_PROXY, None)
    assert mpic.coreint and mpic.read(r.GCR, 4, None) == r.GCR_MODE_PROXY
    open_all(mpic)
    setup(mpic, UART_IRQ, 0x142)
    mpic.set_source(UART_IRQ, True)
    assert lines.raised() == {0}
    assert mpic.iack(0) == 0x142  # the core's EPR
    assert not lines.raised()
    mpic.write(r.GCR, 4, r.GCR_RESET, None)  # QEMU keeps core-int mode across GCR[RST]
    assert mpic.coreint and mpic.read(r.GCR, 4, None) == 0
    assert mpic.read(own(0, r.CTPR), 4, None) == 15
    mpic.write(r.GCR, 4, r.GCR_MODE_MIXED, None)
    assert not mpic.coreint
    mpic.write(r.GCR, 4, r.GCR_MODE_PROXY, None)
    mpic.reset()  # the machine's reset is power-on
    assert not mpic.coreint


def test_msi() -> None:
    mpic, lines, _ = make()
    open_all(mpic)
    setup(mpic, r.IRQ_MSI0 + 5, 0xE5)
    mpic.write(r.MSI_WINDOW + r.MSIIR, 4, 5 << 29 | 17 << 24, None)
    mpic.write(r.MSI_WINDOW + r.MSIIR, 4, 5 << 29 | 3 << 24, None)
    assert mpic.read(r.MSI_WINDOW + r.MSISR, 4, None) == 1 << 5
    assert lines.raised() == {0} and mpic.iack(0) == 0xE5
    assert mpic.read(r.MSI_WINDOW + 0x50, 4, None) == 1 << 17 | 1 << 3  # read clears
    assert mpic.read(r.MSI_WINDOW + 0x50, 4, None) == 0
    assert mpic.read(r.MSI_WINDOW + r.MSISR, 4, None) == 0
    mpic.write(own(0, r.EOI), 4, 0, None)
    assert not lines.raised()


# --- timers -----------------------------------------------------------------------------------


def test_a_timer_counts_fires_and_reloads() -> None:
    mpic, lines, clock = make(2)
    open_all(mpic)
    base = r.TIMER0 + r.TIMER_STRIDE * 2
    mpic.write(base + r.GTVPR, 4, ivpr(0x77, 7), None)
    mpic.write(base + r.GTDR, 4, 0b11, None)
    clock.now = 1000
    mpic.write(base + r.GTBCR, 4, 100, None)  # 100 ticks of 40 ns, counting
    assert mpic.next_deadline_ns() == 1000 + 4000
    clock.now += 400
    assert mpic.read(base + r.GTCCR, 4, None) == 90
    clock.now = 4999
    mpic.service()
    assert not lines.raised() and mpic.read(base + r.GTCCR, 4, None) == 1
    clock.now = 5000
    mpic.service()
    assert lines.raised() == {0, 1}  # multicast, like IPIs
    assert mpic.read(base + r.GTCCR, 4, None) == r.TCCR_TOG | 100
    assert mpic.iack(0) == 0x77 and mpic.iack(1) == 0x77
    assert mpic.next_deadline_ns() == 9000
    clock.now = 9000 + 2 * 4000 + 10  # three more expiries: the toggle bit is back to 0
    assert mpic.read(base + r.GTCCR, 4, None) == 100  # reads bring the timers up to date
    assert mpic.next_deadline_ns() == 21000
    mpic.write(base + r.GTBCR, 4, r.TBCR_CI | 100, None)  # inhibit: the count is cleared
    assert mpic.read(base + r.GTCCR, 4, None) == 0 and mpic.next_deadline_ns() is None


def test_a_timer_with_count_zero_never_fires() -> None:
    mpic, _, clock = make()
    mpic.write(r.TIMER0 + r.GTBCR, 4, 0, None)
    assert mpic.next_deadline_ns() is None
    mpic.write(r.TIMER0 + r.GTBCR, 4, 50, None)  # CI unchanged: only the next reload sees it
    assert mpic.next_deadline_ns() is None and mpic.read(r.TIMER0, 4, None) == 0
    mpic.write(r.TIMER0 + r.GTBCR, 4, r.TBCR_CI, None)
    mpic.write(r.TIMER0 + r.GTBCR, 4, 50, None)
    assert mpic.next_deadline_ns() == 2000
    clock.now = 10**9  # a host that was late by a second fires once, not 500000 times
    mpic.service()
    assert mpic.next_deadline_ns() == 10**9 + 2000


# --- bus shapes and robustness -----------------------------------------------------------------


def test_access_sizes() -> None:
    mpic, _, _ = make(2)
    assert mpic.read(r.FRR, 1, None) == 0x00
    assert mpic.read(r.FRR + 1, 1, None) == 0xFF  # only the register's own offset decodes
    assert mpic.read(r.FRR, 2, None) == 0x00C3
    assert mpic.read(r.FRR, 8, None) == 0x00C3_0102_FFFF_FFFF
    assert mpic.read(r.FRR + 2, 4, None) == 0  # misaligned: rejected
    assert mpic.read(0x2100, 4, None) == 0 and mpic.read(0x3800, 4, None) == 0  # hole, summary
    mpic.write(r.SPVR, 1, 0x12, None)
    assert mpic.read(r.SPVR, 4, None) == 0x0000  # the byte lands in bits 31..24: masked off
    mpic.write(r.TFRR, 2, 0xABCD, None)
    assert mpic.read(r.TFRR, 4, None) == 0xABCD_0000
    mpic.write(r.TFRR, 8, 0x1111_2222_3333_4444, None)
    assert mpic.read(r.TFRR, 4, None) == 0x1111_2222


def test_host_mistakes_raise_guest_mistakes_do_not() -> None:
    with pytest.raises(ValueError, match="1 to 32 CPUs, not 0"):
        make(0)
    mpic, _, _ = make(2)
    with pytest.raises(ValueError, match="source 264"):
        mpic.set_source(264, True)
    with pytest.raises(ValueError, match="CPU 2"):
        mpic.iack(2)
    rng = random.Random(13)
    for _ in range(20000):
        size = rng.choice([1, 2, 4, 8, 3])
        offset = rng.choice([rng.randrange(0x40000), rng.randrange(0x10000, 0x12000),
                             rng.randrange(0x1000, 0x1800), rng.randrange(0x20000, 0x22000)])
        cpu = rng.choice([None, 0, 1, 2, 31])
        if rng.random() < 0.5:
            mpic.write(offset, size, rng.getrandbits(64), cpu)
        else:
            assert 0 <= mpic.read(offset, size, cpu) < 1 << 64
