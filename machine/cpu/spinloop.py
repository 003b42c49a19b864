"""Recognising a spin-wait: a small loop whose only way out is a word another CPU will store.

The 2011 qemu-devel thread on e500 spin tables that started this project suggested spotting a
CPU that loops on one load and turning that load into a wait for a store.  This module is the
spotting half: :func:`find_loop` decodes the few instructions around a vCPU's PC and says
whether they form a *pure* polling loop --

* a backward branch closes a span of at most :data:`MAX_LOOP` instructions holding the PC;
* inside the span only loads from memory, compares, register-only arithmetic, barriers and
  priority hints (``or 1,1,1``), and branches that stay in the span or leave it;
* no store, no SPR access (so no timebase read: a loop waiting for a time is not waiting for
  memory), no system call, no ``lwarx``/``stwcx.``, no branch that counts CTR or links;
* every load's address registers are left alone by the loop, or written only by an earlier
  load of the same lap (a pointer followed: ``lwz r9,0(r6); lwz r9,32(r9)`` is how Linux reads
  ``tbsync->ack``).

Then the loop's next iteration depends only on the loaded words and on registers the loop does
not write: if those are the same at two visits of the loop head, the CPU will go round for ever
until a word changes.  :class:`SpinLoop` says which registers and words to compare; the machine
parks the CPU on the words (machine/devices/spin_waits.py).  Nothing here touches the engine:
it decodes what ``fetch`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: The longest loop recognised, in instructions (Linux's polling loops are 3 to 6).
MAX_LOOP: Final = 12


@dataclass(frozen=True, slots=True)
class Load:
    """A load in the loop, into ``rt``: ``size`` bytes at ``ra|0 + d`` (D-form) or
    ``ra|0 + rb`` (X-form); ``signed``: sign-extended (lha)."""

    size: int
    rt: int
    ra: int
    d: int = 0
    rb: int | None = None
    signed: bool = False

    def address(self, gpr: Callable[[int], int]) -> int:
        """The effective address, with register values from ``gpr``."""
        base = gpr(self.ra) if self.ra else 0
        offset = gpr(self.rb) if self.rb is not None else self.d
        return (base + offset) & 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class SpinLoop:
    """A pure polling loop: ``[start, end]`` (addresses of its first and last instruction)."""

    start: int
    end: int
    loads: tuple[Load, ...]
    #: Registers the loop reads and never writes (its iteration depends on them).
    inputs: tuple[int, ...]


_D_LOADS: Final = {32: 4, 34: 1, 40: 2, 42: 2}  # lwz, lbz, lhz, lha
_X_LOADS: Final = {23: 4, 87: 1, 279: 2, 343: 2}  # lwzx, lbzx, lhzx, lhax
_SIGNED: Final = {(42, None), (31, 343)}
_BARRIERS_31: Final = {598, 854}  # sync/lwsync, eieio
_ISYNC: Final = (19, 150)


class _Reject(Exception):
    pass


class _Regs:
    """Who writes which register in the loop, in program order."""

    def __init__(self) -> None:
        self.reads: set[int] = set()
        self.by_load: set[int] = set()  # written by a load (so far, in program order)
        self.by_other: set[int] = set()  # written by anything else
        self.loads: list[Load] = []

    def load(self, load: Load) -> None:
        for r in (load.ra, load.rb):
            if r and r not in self.by_load:
                self.reads.add(r)
        self.loads.append(load)
        self.by_load.add(load.rt)

    def write(self, r: int) -> None:
        self.by_other.add(r)


def _decode(insn: int, here: int, regs: _Regs) -> int | None:
    """Account for one instruction; its branch target if it is a branch (else None).
    Raises _Reject for anything a pure polling loop cannot contain."""
    op = insn >> 26
    rt, ra, rb = (insn >> 21) & 31, (insn >> 16) & 31, (insn >> 11) & 31
    reads = regs.reads
    if op in _D_LOADS:
        d = insn & 0xFFFF
        regs.load(Load(_D_LOADS[op], rt, ra, d - 0x10000 if d & 0x8000 else d,
                       signed=(op, None) in _SIGNED))
        return None
    if op in (10, 11):  # cmpli, cmpi
        reads.add(ra)
        return None
    if op in (28, 29, 24, 25, 26, 27, 21, 14, 15):  # andi. andis. ori oris xori xoris rlwinm
        if op in (14, 15):  # addi, addis: rt = (ra|0) + imm
            if ra:
                reads.add(ra)
            regs.write(rt)
        else:  # these write ra from rs (the rt field)
            reads.add(rt)
            regs.write(ra)
        return None
    if op == 31:
        xo = (insn >> 1) & 0x3FF
        if xo in _X_LOADS:
            regs.load(Load(_X_LOADS[xo], rt, ra, rb=rb, signed=(31, xo) in _SIGNED))
            return None
        if xo in (0, 32):  # cmp, cmpl
            reads.update((ra, rb))
            return None
        if xo in _BARRIERS_31:
            return None
        if xo in (444, 28, 316, 60, 124):  # or, and, xor, andc, nor: ra = rs op rb
            if not (xo == 444 and rt == ra == rb):  # or rX,rX,rX: a priority hint
                reads.update((rt, rb))
                regs.write(ra)
            return None
        raise _Reject
    if (op, (insn >> 1) & 0x3FF) == _ISYNC:
        return None
    if op == 16:  # bc
        bo = rt
        if insn & 1 or not bo & 0x04:  # links, or counts CTR: not a polling loop
            raise _Reject
        bd = insn & 0xFFFC
        offset = bd - 0x10000 if bd & 0x8000 else bd
        return here + offset if not insn & 2 else offset
    if op == 18:  # b
        if insn & 1:
            raise _Reject
        li = insn & 0x03FF_FFFC
        offset = li - 0x0400_0000 if li & 0x0200_0000 else li
        return here + offset if not insn & 2 else offset
    raise _Reject


def find_loop(pc: int, fetch: Callable[[int], int | None]) -> SpinLoop | None:
    """The pure polling loop holding ``pc``, or None.  ``fetch(addr)`` gives the instruction
    word the CPU would fetch there (None where it cannot be read)."""
    # Find the backward branch that closes a loop around pc, looking forward a little.
    for end in range(pc, pc + 4 * MAX_LOOP, 4):
        insn = fetch(end)
        if insn is None:
            return None
        if insn >> 26 not in (16, 18):
            continue
        target = _decode_target(insn, end)
        if target is None or not target <= pc or end - target >= 4 * MAX_LOOP:
            continue
        return _check(target, end, fetch)
    return None


def _decode_target(insn: int, here: int) -> int | None:
    try:
        return _decode(insn, here, _Regs())
    except _Reject:
        return None


def _check(start: int, end: int, fetch: Callable[[int], int | None]) -> SpinLoop | None:
    regs = _Regs()
    for here in range(start, end + 4, 4):
        insn = fetch(here)
        if insn is None:
            return None
        try:
            # A branch may leave the loop or stay in it: while the CPU stays, only the span's
            # own instructions run, so the target does not matter.
            _decode(insn, here, regs)
        except _Reject:
            return None
    if not regs.loads:
        return None
    # An address register must be fixed, or come from an earlier load of the same lap (never
    # from arithmetic, nor from the load itself or a later one: the address would move).
    for i, load in enumerate(regs.loads):
        for r in (load.ra, load.rb):
            if not r:
                continue
            if r in regs.by_other:
                return None
            earlier = any(x.rt == r for x in regs.loads[:i])
            if not earlier and any(x.rt == r for x in regs.loads[i:]):
                return None
    written = regs.by_load | regs.by_other
    return SpinLoop(start=start, end=end, loads=tuple(regs.loads),
                    inputs=tuple(sorted(regs.reads - written)))
