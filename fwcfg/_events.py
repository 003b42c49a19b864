"""What a register access did, as values: the device returns these, callers trace or assert them.

Frozen, slotted and keyword-only, like h11's events, so an event cannot be half-built or changed
after the fact.  One :class:`Selected` per selector write, one :class:`DmaTransfer` per DMA
descriptor processed (including a descriptor the device could not even read).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DmaOp(enum.StrEnum):
    """The operation a descriptor asked for, after QEMU's priority READ > WRITE > SKIP."""

    READ = "read"
    WRITE = "write"
    SKIP = "skip"
    #: No READ/WRITE/SKIP bit: the transfer at most selects (length is treated as 0).
    NONE = "none"
    #: The descriptor itself was outside RAM: the device only tried to store ERROR into it.
    BAD_DESCRIPTOR = "bad-descriptor"


@dataclass(frozen=True, slots=True, kw_only=True)
class Selected:
    """A key was selected (by the selector register or by a DMA SELECT).

    ``valid`` is False when the key lies outside the device's entry space, so the device now has
    QEMU's INVALID entry selected and every read returns zeros.
    """

    key: int
    name: str | None
    valid: bool

    def __str__(self) -> str:
        label = self.name if self.name is not None else f"{self.key:#06x}"
        return f"fw_cfg select {label}" + ("" if self.valid else " (invalid)")


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaTransfer:
    """One DMA descriptor, processed.

    ``key``/``name`` are the item the transfer worked on (after any SELECT), ``offset`` the item
    offset where it started, ``control``/``length``/``address`` the descriptor as the guest wrote
    it, and ``error`` whether the device reported ERROR back.
    """

    descriptor: int
    key: int
    name: str | None
    control: int
    op: DmaOp
    offset: int
    length: int
    address: int
    error: bool

    def __str__(self) -> str:
        if self.op is DmaOp.BAD_DESCRIPTOR:
            return f"fw_cfg DMA descriptor at {self.descriptor:#x} is outside RAM"
        label = self.name if self.name is not None else f"{self.key:#06x}"
        status = " -> ERROR" if self.error else ""
        if self.op is DmaOp.NONE:
            return f"fw_cfg DMA select {label}{status}"
        return (
            f"fw_cfg DMA {self.op} {self.length} bytes of {label} at offset {self.offset}"
            f" {'to' if self.op is DmaOp.READ else 'from'} {self.address:#x}{status}"
        )


Event = Selected | DmaTransfer
