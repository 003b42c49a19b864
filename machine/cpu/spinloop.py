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
* every load's address registers are left alone by the loop.

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
    """A load in the loop: ``size`` bytes at ``ra|0 + d`` (D-form) or ``ra|0 + rb`` (X-form)."""

    size: int
    ra: int
    d: int = 0
    rb: int | None = None

    def address(self, gpr: Callable[[int], int]) -> int:
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
_X_LOADS: Final = {23: 4, 87: 1, 279: 2, 343: 2, 534: 4, 790: 2}  # lwzx lbzx lhzx lhax lwbrx lhbrx
_BARRIERS_31: Final = {598, 854}  # sync/lwsync, eieio
_ISYNC: Final = (19, 150)


class _Reject(Exception):
    pass


def _decode(insn: int, here: int, reads: set[int], writes: set[int],
            loads: list[Load]) -> int | None:
    """Account for one instruction; its branch target if it is a branch (else None).
    Raises _Reject for anything a pure polling loop cannot contain."""
    op = insn >> 26
    rt, ra, rb = (insn >> 21) & 31, (insn >> 16) & 31, (insn >> 11) & 31
    if op in _D_LOADS:
        d = insn & 0xFFFF
        loads.append(Load(_D_LOADS[op], ra, d - 0x10000 if d & 0x8000 else d))
        if ra:
            reads.add(ra)
        writes.add(rt)
        return None
    if op in (10, 11):  # cmpli, cmpi
        reads.add(ra)
        return None
    if op in (28, 29, 24, 25, 26, 27, 21, 14, 15):  # andi. andis. ori oris xori xoris rlwinm
        if op in (14, 15):  # addi, addis: rt = (ra|0) + imm
            if ra:
                reads.add(ra)
            writes.add(rt)
        else:  # these write ra from rs (the rt field)
            reads.add(rt)
            writes.add(ra)
        return None
    if op == 31:
        xo = (insn >> 1) & 0x3FF
        if xo in _X_LOADS:
            loads.append(Load(_X_LOADS[xo], ra, rb=rb))
            reads.update(r for r in (ra, rb) if r)
            writes.add(rt)
            return None
        if xo in (0, 32):  # cmp, cmpl
            reads.update((ra, rb))
            return None
        if xo in _BARRIERS_31:
            return None
        if xo in (444, 28, 316, 60, 124):  # or, and, xor, andc, nor: ra = rs op rb
            if not (xo == 444 and rt == ra == rb):  # or rX,rX,rX: a priority hint
                reads.update((rt, rb))
                writes.add(ra)
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
        return _decode(insn, here, set(), set(), [])
    except _Reject:
        return None


def _check(start: int, end: int, fetch: Callable[[int], int | None]) -> SpinLoop | None:
    reads: set[int] = set()
    writes: set[int] = set()
    loads: list[Load] = []
    for here in range(start, end + 4, 4):
        insn = fetch(here)
        if insn is None:
            return None
        try:
            target = _decode(insn, here, reads, writes, loads)
        except _Reject:
            return None
        # A branch may leave the loop or stay in it; a backward branch to before the start or
        # a forward one into the middle of another loop is fine either way: only the span's
        # own instructions run while the CPU stays in it.
        _ = target
    if not loads:
        return None
    for load in loads:  # the addresses must not move while the loop runs
        if load.ra in writes or (load.rb is not None and load.rb in writes):
            return None
    return SpinLoop(start=start, end=end, loads=tuple(loads),
                    inputs=tuple(sorted(reads - writes)))
