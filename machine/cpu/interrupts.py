"""A vCPU's interrupt inputs: which lines are up, and whether a dozing CPU has work.

QEMU's interrupt delivery runs inside the engine (``ppc_hw_interrupt`` and ``powerpc_excp``:
priorities, MSR[EE]/MSR[CE] gating, SRR0/SRR1 or CSRR0/CSRR1, EPR in core-int mode); the
machine only drives the inputs, with QEMU's ``ppc_set_irq``, and only on the loaded vCPU.  The
levels are kept here so that a switched-out vCPU gets them when it is loaded again:

* **device inputs** (external INT and critical CINT, driven by the interrupt controller):
  :attr:`VCpu.input_levels <machine.cpu.vcpu.VCpu.input_levels>`, a bit per QEMU input number;
* **timer inputs** (decrementer, fixed-interval timer, watchdog): derived from TSR and TCR, as
  QEMU's own ``booke_update_irq`` derives them (:func:`timer_levels`).

A vCPU dozing in MSR[WE] is parked by the machine (machine/cpu/engine.py, "Doze") and wakes
when it *has work*: as QEMU's ``ppc_cpu_has_work`` says, MSR[EE] set and an input up.
"""

from __future__ import annotations

from machine.cpu.irq_layout import IRQ_CEXT, IRQ_DECR, IRQ_EXT, IRQ_FIT, IRQ_WDT
from machine.cpu.vcpu import VCpu

SPR_TSR, SPR_TCR = 336, 340
TSR_ENW = 0x8000_0000
TSR_WIS = 0x4000_0000
TSR_WRS_SHIFT = 28
TSR_WRS = 0x3000_0000
TSR_DIS = 0x0800_0000
TSR_FIS = 0x0400_0000
TCR_WRC_SHIFT = 28
TCR_WRC = 0x3000_0000
TCR_WIE = 0x0800_0000
TCR_DIE = 0x0400_0000
TCR_FIE = 0x0080_0000
TCR_ARE = 0x0040_0000
MSR_EE = 0x8000
#: Every input the machine drives, device inputs first.
LINES = (IRQ_EXT, IRQ_CEXT, IRQ_DECR, IRQ_FIT, IRQ_WDT)
DEVICE_LINES = (IRQ_EXT, IRQ_CEXT)


def timer_levels(cpu: VCpu) -> int:
    """The timer inputs of ``cpu`` as a bit mask: status bit in TSR and enable bit in TCR
    (straight-line: the worker asks at every timer boundary)."""
    tsr = cpu.read_spr(SPR_TSR)
    if not tsr & (TSR_DIS | TSR_FIS | TSR_WIS):
        return 0
    tcr = cpu.read_spr(SPR_TCR)
    up = 0
    if tsr & TSR_DIS and tcr & TCR_DIE:
        up |= 1 << IRQ_DECR
    if tsr & TSR_FIS and tcr & TCR_FIE:
        up |= 1 << IRQ_FIT
    if tsr & TSR_WIS and tcr & TCR_WIE:
        up |= 1 << IRQ_WDT
    return up


def levels(cpu: VCpu) -> int:
    """Every input of ``cpu`` that is up, as a bit mask of QEMU input numbers."""
    return cpu.input_levels | timer_levels(cpu)


def has_work(cpu: VCpu) -> bool:
    """QEMU's wake-up rule for a halted e500: MSR[EE] and some input up."""
    return bool(cpu.msr & MSR_EE) and levels(cpu) != 0
