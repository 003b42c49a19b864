"""The MPIC's state records and its outputs protocol: what a snapshot of the device would hold.

Kept apart from the behaviour (:mod:`machine.devices.mpic`) so that the per-source and per-CPU
state QEMU keeps (``IRQSource``, ``IRQDest``, ``IRQQueue``) reads as one list.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from machine.devices import mpic_regs as r
from machine.devices.mpic_regs import Inttgt


class InterruptOutputs(Protocol):
    """The core inputs the MPIC drives (QEMU's OPENPIC_OUTPUT_INT and _CINT for each CPU)."""

    def set_int(self, cpu: int, level: bool) -> None:
        """The external interrupt input (Book E: EE-gated, through IVOR4)."""

    def set_cint(self, cpu: int, level: bool) -> None:
        """The critical interrupt input (CE-gated, through IVOR0)."""


class SourceKind(enum.Enum):
    """How a source's IVPR sense and polarity bits behave (QEMU's IRQType)."""

    EXTERNAL = "external"  #: 0..15: sense and polarity programmable, edge after reset
    INTERNAL = "internal"  #: 16..255: always level, sense reads 0
    SPECIAL = "special"  #: IPIs and timers: always edge, no sense or polarity


def source_kind(irq: int) -> SourceKind:
    """The kind of source ``irq`` (0..263: 256 sources, then the IPIs, then the timers)."""
    if irq < r.FIRST_INTERNAL:
        return SourceKind.EXTERNAL
    if irq < r.N_SOURCES:
        return SourceKind.INTERNAL
    return SourceKind.SPECIAL


@dataclass(slots=True)
class SourceState:
    kind: SourceKind
    ivpr: int = 0
    idr: int = 0
    #: The CPUs a delivery goes to: IDR, narrowed by IACK and widened by IPI dispatch.
    destmask: int = 0
    output: Inttgt = Inttgt.INT
    #: Latched request: the line for level sources, the last edge for edge sources.
    pending: bool = False
    level: bool = False  #: level-sensitive
    line: bool = False  #: the input as last driven (the power-on state of a level source)


@dataclass(slots=True)
class IrqQueue:
    """A set of sources and the highest-priority one at the last scan (QEMU's IRQQueue)."""

    bits: int = 0
    next: int = -1
    priority: int = 0


@dataclass(slots=True)
class DestState:
    """One CPU's view: task priority, raised and in-service sources, non-INT output counts."""

    ctpr: int = 15
    raised: IrqQueue = field(default_factory=IrqQueue)
    servicing: IrqQueue = field(default_factory=IrqQueue)
    #: Per output, how many active sources drive it (QEMU's outputs_active, a uint32).
    outputs_active: list[int] = field(default_factory=lambda: [0, 0, 0])


__all__ = ["DestState", "InterruptOutputs", "IrqQueue", "SourceKind", "SourceState", "source_kind"]
