"""The MPIC: the e500's interrupt controller, as QEMU 7.2's ``ppce500`` models it, sans I/O.

Linux's qemu-e500 platform cannot run without it: it BUG_ONs when there is no MPIC, takes every
IPI through it (e500v2 has no doorbells) and, in core-int mode, expects the vector of each external
interrupt in EPR.  Guests written for QEMU see QEMU's behaviour, so that is what this models
(hw/intc/openpic.c as a Freescale MPIC 4.2), quirks included; the register map is in
:mod:`machine.devices.mpic_regs` and tests/devices/test_mpic_differential.py holds the model to
``qemu-system-ppc -M ppce500`` register for register.

**Sans I/O.**  The model is a state machine: the board hands it MMIO accesses (:meth:`Mpic.read`,
:meth:`Mpic.write`, with the accessing CPU), device input lines (:meth:`Mpic.set_source`) and the
core's interrupt acknowledge in core-int mode (:meth:`Mpic.iack`, what the core loads into EPR);
the model drives each CPU's INT and CINT inputs through the :class:`InterruptOutputs` it was
given, and reads the time from the clock it was given.  It has no threads and no timers of its
own: the board asks :meth:`Mpic.next_deadline_ns` when the next global timer expires and calls
:meth:`Mpic.service` then (every access also brings the timers up to date first, so a late
``service`` never shows a stale count).  Callers serialise calls (one lock in the board).

**Output calls are level sets, not edges.**  Like QEMU's ``qemu_irq_raise``, the model may
raise an input that is already high (every delivery re-evaluates the CPU); the board's
``set_int``/``set_cint`` must be idempotent.

**The quirks kept on purpose** (each is what QEMU 7.2 does, so a guest sees the same thing):

* IPI dispatch ORs the whole written value into the IPI's destination set, CPUs that do not
  exist included; IACK of an IPI or timer removes only the acknowledging CPU, and re-raises it
  for the others (IPIs and timers are multicast).
* Masking, CTPR and EOI decisions use the priorities cached at the last queue scan (QEMU's
  ``IRQQueue.priority``), so the INT line can stay up or come up in the same cases as QEMU's.
* IACK of a source that cannot be delivered returns the spurious vector; IACK lowers INT.
* ILR (INT/CINT/MCP) changes the route of later deliveries only; an active source keeps its
  count on the old output.  Unknown INTTGT values select INT.
* GCR[RST] resets the registers but not the sources' latched state, the ILR routes, the MSI
  registers or core-int mode (QEMU keeps ``mpic_proxy``); only GCR writes without RST set or
  clear core-int mode.
* The global timers count at 25 MHz whatever TFRR says; a base count of 0 never fires
  (:mod:`machine.devices.mpic_timers`).

**One deliberate difference:** :meth:`Mpic.reset` is the machine's reset (FW_RESET and power-on)
and returns everything to the power-on state, including what GCR[RST] keeps (QEMU's system
reset keeps it too, which leaves MSIs and ILR routes of the previous run behind).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from machine.devices import mpic_regs as r
from machine.devices.mpic_regs import Inttgt, Window
from machine.devices.mpic_state import (
    DestState,
    InterruptOutputs,
    IrqQueue,
    SourceKind,
    SourceState,
    source_kind,
)
from machine.devices.mpic_timers import GlobalTimers

_U32: Final = 0xFFFF_FFFF
#: What QEMU's decoders return for a register that is not there (their ``retval = -1``).
_NOTHING: Final = 0xFFFF_FFFF

Clock = Callable[[], int]
Reader = Callable[[int, int], int]
Writer = Callable[[int, int, int], None]


class Mpic:
    """The MPIC of a machine with ``n_cpus`` CPUs (1..32)."""

    def __init__(self, n_cpus: int, outputs: InterruptOutputs, clock: Clock) -> None:
        if not 1 <= n_cpus <= r.MAX_CPUS:
            raise ValueError(f"the MPIC serves 1 to {r.MAX_CPUS} CPUs, not {n_cpus}")
        self.n_cpus: Final = n_cpus
        self._outputs = outputs
        frr = r.Frr.build({"nirq": r.FRR_NIRQ - 1, "ncpu": n_cpus - 1, "vid": r.VID})
        self._frr_value: Final = int.from_bytes(frr, "big")
        self._windows: Final[tuple[tuple[int, int, Reader, Writer], ...]] = tuple(
            (start, start + size, *self._handlers(window)) for window, start, size in r.WINDOWS
        )
        self._sources = [SourceState(source_kind(i)) for i in range(r.N_IRQS)]
        self._dests = [DestState() for _ in range(n_cpus)]
        self._timers = GlobalTimers(clock)
        self._msir = [0] * r.N_MSI_REGS
        self.gcr = 0
        self.pir = 0
        self.spvr = r.VECTOR_MASK
        self.tfrr = 0
        #: Core-int mode (QEMU's ``env->mpic_proxy``): when set, a CPU taking an external
        #: interrupt calls :meth:`iack` and puts the result in EPR.
        self.coreint = False
        self.reset()

    def _handlers(self, window: Window) -> tuple[Reader, Writer]:
        return {
            Window.GLOBAL: (self._global_read, self._global_write),
            Window.TIMER: (self._timer_read, self._timer_write),
            Window.MSI: (self._msi_read, self._msi_write),
            Window.SUMMARY: (self._summary_read, self._summary_write),
            Window.SOURCE: (self._source_read, self._source_write),
            Window.CPU: (self._cpu_window_read, self._cpu_window_write),
        }[window]

    # --- the board's interface -----------------------------------------------------------

    def reset(self) -> None:
        """Power-on state (the machine's reset): GCR[RST], plus what GCR[RST] leaves alone."""
        self._msir = [0] * r.N_MSI_REGS
        for irq, src in enumerate(self._sources):
            src.output = Inttgt.INT
            if r.IRQ_MSI0 <= irq < r.IRQ_MSI0 + r.N_MSI_REGS:
                src.line = False
            src.pending = src.line and src.kind is SourceKind.INTERNAL
        for dst in self._dests:
            dst.outputs_active = [0, 0, 0]
        self.coreint = False
        self._reset_registers()
        for cpu in range(self.n_cpus):
            self._outputs.set_int(cpu, False)
            self._outputs.set_cint(cpu, False)

    def read(self, offset: int, size: int, cpu: int | None) -> int:
        """A load of ``size`` (1, 2, 4 or 8) bytes at ``offset`` in the block, by CPU ``cpu``.

        ``cpu`` is the index of the CPU that loads (it selects the current-CPU window at
        0x40..0xB0), or None for an access with no current CPU (qtest, the host): then that
        window reads 0xFFFFFFFF, as in QEMU.  Registers are 32-bit big-endian.  As QEMU's
        memory core does for this device: a 1- or 2-byte load returns the high-order bytes of
        the register read at that exact offset (so only offsets a register decodes give
        anything but 0xFF..), an 8-byte load is two 4-byte loads, a misaligned load reads 0,
        and holes between the windows read 0.
        """
        self.service()
        found = self._decode(offset, size)
        if found is None:
            return 0
        read, _write, rel = found
        current = -1 if cpu is None else cpu
        if size == 8:
            return (read(rel, current) << 32) | read(rel + 4, current)
        value = read(rel, current)
        return value >> (8 * (4 - size)) if size < 4 else value

    def write(self, offset: int, size: int, value: int, cpu: int | None) -> None:
        """A store of ``size`` bytes; the counterpart of :meth:`read`.  A 1- or 2-byte store
        writes its value into the high-order bytes of the register and zeros below it."""
        self.service()
        found = self._decode(offset, size)
        if found is None:
            return
        _read, write, rel = found
        current = -1 if cpu is None else cpu
        value &= (1 << (8 * size)) - 1
        if size == 8:
            write(rel, value >> 32, current)
            write(rel + 4, value & _U32, current)
        else:
            write(rel, (value << (8 * (4 - size))) & _U32, current)

    def set_source(self, irq: int, level: bool) -> None:
        """Drive input ``irq`` (the device tree's interrupt number; 256..263 are the IPIs and
        timers, which only the MPIC itself drives on hardware)."""
        if not 0 <= irq < r.N_IRQS:
            raise ValueError(f"MPIC source {irq} does not exist (0..{r.N_IRQS - 1})")
        self.service()
        self._set_irq(irq, bool(level))

    def iack(self, cpu: int) -> int:
        """The core-int acknowledge of CPU ``cpu``: what its core loads into EPR when it takes
        an external interrupt in core-int mode (a read of its IACK register)."""
        if not 0 <= cpu < self.n_cpus:
            raise ValueError(f"CPU {cpu} does not exist (0..{self.n_cpus - 1})")
        self.service()
        return self._iack(cpu)

    def next_deadline_ns(self) -> int | None:
        """When the next global timer expires (the clock's ns), or None if none runs."""
        return self._timers.next_deadline()

    def service(self) -> None:
        """Fire every timer that has expired by now, each at its own deadline, in order (a
        timer that expired several times since the last call fires once; see
        :meth:`GlobalTimers.expire`)."""
        for idx in self._timers.expire():
            # An expiry goes to every CPU in GTDR again, whoever acknowledged the last one.
            irq = r.IRQ_TIMER0 + idx
            self._sources[irq].destmask = self._sources[irq].idr
            self._pulse(irq)

    # --- sources and delivery (QEMU's openpic_set_irq/update_irq/IRQ_local_pipe) -----------

    def _priority(self, irq: int) -> int:
        return (self._sources[irq].ivpr & r.IVPR_PRIORITY) >> r.IVPR_PRIORITY_SHIFT

    def _scan(self, queue: IrqQueue) -> int:
        """Find the highest-priority source in ``queue`` (lowest number on ties); cache it."""
        best, best_priority = -1, -1
        bits = queue.bits
        while bits:
            low = bits & -bits
            irq = low.bit_length() - 1
            priority = self._priority(irq)
            if priority > best_priority:
                best, best_priority = irq, priority
            bits ^= low
        queue.next, queue.priority = best, best_priority
        return best

    def _drive(self, cpu: int, output: Inttgt, level: bool) -> None:
        if output is Inttgt.INT:
            self._outputs.set_int(cpu, level)
        elif output is Inttgt.CINT:
            self._outputs.set_cint(cpu, level)
        # MCP: QEMU's ppce500 leaves the machine-check output unconnected.

    def _deliver(self, cpu: int, irq: int, active: bool, was_active: bool) -> None:
        """One CPU's part of a change of source ``irq``."""
        src = self._sources[irq]
        dst = self._dests[cpu]
        if src.output is not Inttgt.INT:
            # Critical and machine-check routes ignore priority, IACK and EOI: the output is
            # up while any active source drives it.
            counts = dst.outputs_active
            if active and not was_active:
                counts[src.output] = (counts[src.output] + 1) & _U32
                if counts[src.output] == 1:
                    self._drive(cpu, src.output, True)
            elif not active and was_active:
                counts[src.output] = (counts[src.output] - 1) & _U32
                if counts[src.output] == 0:
                    self._drive(cpu, src.output, False)
            return
        priority = self._priority(irq)
        # Raised even below the task priority, in case CTPR is lowered later.
        if active:
            dst.raised.bits |= 1 << irq
        else:
            dst.raised.bits &= ~(1 << irq)
        self._scan(dst.raised)
        if active and priority <= dst.ctpr:
            active = False
        if active:
            if self._scan(dst.servicing) < 0 or priority > dst.servicing.priority:
                self._drive(cpu, Inttgt.INT, True)
        else:
            self._scan(dst.servicing)
            if not (dst.raised.priority > dst.ctpr
                    and dst.raised.priority > dst.servicing.priority):
                self._drive(cpu, Inttgt.INT, False)

    def _update(self, irq: int) -> None:
        """Re-evaluate source ``irq`` after its request, mask or route changed."""
        src = self._sources[irq]
        active = src.pending and not src.ivpr & r.IVPR_MASK
        was_active = bool(src.ivpr & r.IVPR_ACTIVITY)
        if not active and not was_active:
            return
        if active:
            src.ivpr |= r.IVPR_ACTIVITY
        else:
            src.ivpr &= ~r.IVPR_ACTIVITY
        # Directed delivery to every CPU in the set (IVPR[MODE], distributed delivery, cannot
        # be set on this model).  Bits of CPUs that do not exist are kept and ignored.
        for cpu in range(self.n_cpus):
            if src.destmask >> cpu & 1:
                self._deliver(cpu, irq, active, was_active)

    def _set_irq(self, irq: int, level: bool) -> None:
        src = self._sources[irq]
        src.line = level
        if src.level:
            src.pending = level
            self._update(irq)
            return
        if level:
            src.pending = True
            self._update(irq)
        if src.output is not Inttgt.INT:
            # An edge on a critical route is a pulse, not a latched request.
            src.pending = False
            self._update(irq)

    def _pulse(self, irq: int) -> None:
        self._set_irq(irq, True)
        self._set_irq(irq, False)

    def _write_ivpr(self, irq: int, value: int) -> None:
        src = self._sources[irq]
        src.ivpr = (src.ivpr & r.IVPR_ACTIVITY) | (value & r.IVPR_WRITABLE)
        if src.kind is SourceKind.EXTERNAL:
            src.level = bool(src.ivpr & r.IVPR_SENSE)
        elif src.kind is SourceKind.INTERNAL:
            src.ivpr &= ~r.IVPR_SENSE
        else:
            src.ivpr &= ~(r.IVPR_POLARITY | r.IVPR_SENSE)
        self._update(irq)

    def _write_idr(self, irq: int, value: int) -> None:
        src = self._sources[irq]
        src.idr = value & ((1 << self.n_cpus) - 1)
        src.destmask = src.idr

    def _write_ilr(self, irq: int, value: int) -> None:
        inttgt = value & 0xFF
        known = inttgt in {int(t) for t in Inttgt}
        self._sources[irq].output = Inttgt(inttgt) if known else Inttgt.INT

    def _reset_registers(self) -> None:
        """QEMU's openpic_reset: what GCR[RST] does."""
        self.pir = 0
        self.spvr = r.VECTOR_MASK
        self.tfrr = 0
        for irq, src in enumerate(self._sources):
            src.ivpr = r.IVPR_MASK
            if src.kind is SourceKind.EXTERNAL:
                src.level = False
            elif src.kind is SourceKind.INTERNAL:
                src.level = True
                src.ivpr |= r.IVPR_POLARITY
            # Every source goes to CPU 0, except the IPIs, which go nowhere until dispatched
            # (QEMU since 6.2, as Freescale's MPICs reset IPIDR).
            self._write_idr(irq, 0 if r.IRQ_IPI0 <= irq < r.IRQ_TIMER0 else 1)
        for dst in self._dests:
            dst.ctpr = 15
            dst.raised = IrqQueue()
            dst.servicing = IrqQueue()
        self._timers.reset()
        self.gcr = 0

    # --- per-CPU registers (the current-CPU window and each CPU's own) ---------------------

    def _iack(self, cpu: int) -> int:
        dst = self._dests[cpu]
        self._drive(cpu, Inttgt.INT, False)
        irq = self._scan(dst.raised)
        if irq < 0:
            return self.spvr
        src = self._sources[irq]
        if not src.ivpr & r.IVPR_ACTIVITY or self._priority(irq) <= dst.ctpr:
            self._update(irq)
            vector = self.spvr
        else:
            dst.servicing.bits |= 1 << irq
            vector = src.ivpr & r.VECTOR_MASK
        if not src.level:
            src.ivpr &= ~r.IVPR_ACTIVITY
            src.pending = False
            dst.raised.bits &= ~(1 << irq)
        if irq >= r.IRQ_IPI0:  # IPIs and timers are multicast: deliver to the others still
            src.destmask &= ~(1 << cpu)
            if src.destmask and not src.level:
                self._pulse(irq)
                src.ivpr |= r.IVPR_ACTIVITY
        return vector

    def _eoi(self, cpu: int) -> None:
        dst = self._dests[cpu]
        done = self._scan(dst.servicing)
        if done < 0:
            return
        dst.servicing.bits &= ~(1 << done)
        still = self._scan(dst.servicing)
        nxt = self._scan(dst.raised)
        if nxt >= 0 and (still < 0 or self._priority(nxt) > dst.servicing.priority):
            self._drive(cpu, Inttgt.INT, True)

    def _write_ctpr(self, cpu: int, value: int) -> None:
        dst = self._dests[cpu]
        dst.ctpr = value & r.CTPR_MASK
        if dst.raised.priority <= dst.ctpr:
            self._drive(cpu, Inttgt.INT, False)
        elif dst.raised.priority > dst.servicing.priority:
            self._drive(cpu, Inttgt.INT, True)

    def _cpu_read(self, addr: int, cpu: int) -> int:
        if not 0 <= cpu < self.n_cpus or addr & 0xF:
            return _NOTHING
        addr &= 0xFF0
        if addr == r.CTPR:
            return self._dests[cpu].ctpr
        if addr == r.WHOAMI:
            return cpu
        if addr == r.IACK:
            return self._iack(cpu)
        if addr == r.EOI:
            return 0
        return _NOTHING

    def _cpu_write(self, addr: int, value: int, cpu: int) -> None:
        if not 0 <= cpu < self.n_cpus or addr & 0xF:
            return
        addr &= 0xFF0
        if r.IPIDR0 <= addr < r.IPIDR0 + 0x10 * r.N_IPIS:
            irq = r.IRQ_IPI0 + (addr - r.IPIDR0) // 0x10
            self._sources[irq].destmask |= value
            self._pulse(irq)
        elif addr == r.CTPR:
            self._write_ctpr(cpu, value)
        elif addr == r.EOI:
            self._eoi(cpu)

    def _cpu_window_read(self, rel: int, cpu: int) -> int:
        return self._cpu_read(rel, (rel & 0x1F000) >> 12)

    def _cpu_window_write(self, rel: int, value: int, cpu: int) -> None:
        self._cpu_write(rel, value, (rel & 0x1F000) >> 12)

    # --- the other windows -----------------------------------------------------------------

    def _decode(self, offset: int, size: int) -> tuple[Reader, Writer, int] | None:
        """The handler and window-relative offset of an access; None for a hole, an odd size or
        a misaligned access (QEMU's memory core rejects those for this device: read 0, write
        nothing)."""
        if size not in (1, 2, 4, 8) or offset % size:
            return None
        for start, end, _read, _write in self._windows:
            if start <= offset and offset + size <= end:
                return _read, _write, offset - start
        return None

    def _global_read(self, addr: int, cpu: int) -> int:
        if addr & 0xF:
            return _NOTHING
        if r.CURRENT_CPU_FIRST <= addr <= r.CURRENT_CPU_LAST:
            return self._cpu_read(addr, cpu)
        if r.IPI_IVPR0 <= addr < r.IPI_IVPR0 + 0x10 * r.N_IPIS:
            return self._sources[r.IRQ_IPI0 + (addr - r.IPI_IVPR0) // 0x10].ivpr
        return {
            r.BRR1: r.BRR1_VALUE,
            r.FRR: self._frr_value,
            r.GCR: self.gcr,
            r.VIR: r.VIR_VALUE,
            r.PIR: 0,
            r.SPVR: self.spvr,
        }.get(addr, _NOTHING)

    def _global_write(self, addr: int, value: int, cpu: int) -> None:
        if addr & 0xF:
            return
        if r.CURRENT_CPU_FIRST <= addr <= r.CURRENT_CPU_LAST:
            self._cpu_write(addr, value, cpu)
        elif r.IPI_IVPR0 <= addr < r.IPI_IVPR0 + 0x10 * r.N_IPIS:
            self._write_ivpr(r.IRQ_IPI0 + (addr - r.IPI_IVPR0) // 0x10, value)
        elif addr == r.GCR:
            self._write_gcr(value)
        elif addr == r.PIR:
            self.pir = value  # QEMU's ppce500 leaves the core-reset outputs unconnected
        elif addr == r.SPVR:
            self.spvr = value & r.VECTOR_MASK

    def _write_gcr(self, value: int) -> None:
        if value & r.GCR_RESET:
            self._reset_registers()
            return
        self.gcr = (self.gcr & ~r.GCR_MODE) | (value & r.GCR_MODE)
        self.coreint = (value & r.GCR_MODE) == r.GCR_MODE_PROXY

    def _timer_decode(self, addr: int) -> tuple[int, int]:
        """(timer, register) of a timer-window offset past TFRR.  Offsets past the four
        timers wrap around onto them, as QEMU's decoder does."""
        addr -= 0x10
        return (addr >> 6) & (r.N_TIMERS - 1), addr & 0x30

    def _timer_read(self, addr: int, cpu: int) -> int:
        if addr & 0xF:
            return _NOTHING
        if addr == 0:
            return self.tfrr
        idx, reg = self._timer_decode(addr)
        if reg == r.GTCCR:
            return self._timers.tccr(idx)
        if reg == r.GTBCR:
            return self._timers.tbcr(idx)
        if reg == r.GTVPR:
            return self._sources[r.IRQ_TIMER0 + idx].ivpr
        return self._sources[r.IRQ_TIMER0 + idx].idr

    def _timer_write(self, addr: int, value: int, cpu: int) -> None:
        if addr & 0xF:
            return
        if addr == 0:
            self.tfrr = value
            return
        idx, reg = self._timer_decode(addr)
        if reg == r.GTBCR:
            self._timers.write_tbcr(idx, value)
        elif reg == r.GTVPR:
            self._write_ivpr(r.IRQ_TIMER0 + idx, value)
        elif reg == r.GTDR:
            self._write_idr(r.IRQ_TIMER0 + idx, value)

    def _msi_read(self, addr: int, cpu: int) -> int:
        if addr & 0xF:
            return _NOTHING
        if addr < r.MSIR0 + 0x10 * r.N_MSI_REGS:
            srs = addr >> 4
            value = self._msir[srs]
            self._msir[srs] = 0  # read to clear, which drops the source's request
            self._set_irq(r.IRQ_MSI0 + srs, False)
            return value
        if addr == r.MSISR:
            return sum(1 << i for i, msir in enumerate(self._msir) if msir)
        return 0

    def _msi_write(self, addr: int, value: int, cpu: int) -> None:
        if addr != r.MSIIR:
            return
        srs, ibs = value >> 29, (value >> 24) & 0x1F
        self._msir[srs] |= 1 << ibs
        self._set_irq(r.IRQ_MSI0 + srs, True)

    def _summary_read(self, addr: int, cpu: int) -> int:
        return 0  # QEMU does not model the summary registers (EISR/EIMR): all read 0

    def _summary_write(self, addr: int, value: int, cpu: int) -> None:
        return None

    # --- per-source registers --------------------------------------------------------------

    def _source_read(self, addr: int, cpu: int) -> int:
        irq, reg = addr // r.SOURCE_STRIDE, addr % r.SOURCE_STRIDE
        src = self._sources[irq]
        if reg == r.IVPR:
            return src.ivpr
        if reg == r.IDR:
            return src.idr
        if reg == r.ILR:
            return int(src.output)
        return _NOTHING

    def _source_write(self, addr: int, value: int, cpu: int) -> None:
        irq, reg = addr // r.SOURCE_STRIDE, addr % r.SOURCE_STRIDE
        if reg == r.IVPR:
            self._write_ivpr(irq, value)
        elif reg == r.IDR:
            self._write_idr(irq, value)
        elif reg == r.ILR:
            self._write_ilr(irq, value)


__all__ = ["Clock", "InterruptOutputs", "Mpic", "SourceKind", "source_kind"]
