"""Spin-waits cost nothing: a CPU polling a word another CPU will write is parked until the store.

The detector (machine/cpu/spinloop.py) is checked on loops as compilers write them, and the
machine on two CPUs handing a word back and forth: each hand-off is a park and a wake by the
store, not a quantum of spinning.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from machine.asm import assemble
from machine.cpu.spinloop import Load, find_loop

from .guests import boot

pytestmark = pytest.mark.cross

BASE = 0x1000


def _words(source: str, tmp_path: Path) -> dict[int, int]:
    elf = Path(assemble(source, base=BASE, workdir=tmp_path))
    with elf.open("rb") as f:
        text = ELFFile(f).get_section_by_name(".text").data()
    return {BASE + 4 * i: w for i, (w,) in enumerate(struct.iter_unpack(">I", text))}


def _loop(source: str, tmp_path: Path, pc: int) -> object:
    words = _words("_start:\n" + source, tmp_path)
    return find_loop(pc, words.get)


def test_a_load_compare_branch_loop_is_a_spin(tmp_path: Path) -> None:
    loop = _loop("""
    1:  lwz 9, 20(3)
        cmpwi 9, 0
        beq 1b
    """, tmp_path, BASE + 4)
    assert loop is not None
    assert (loop.start, loop.end) == (BASE, BASE + 8)
    assert loop.loads == (Load(4, 9, 3, 20),)
    assert loop.inputs == (3,)


def test_a_pointer_followed_in_the_loop_is_a_spin(tmp_path: Path) -> None:
    # Linux's `while (tbsync->ack)`: the pointer is reloaded every lap.
    loop = _loop("""
    1:  lwz 9, 0(6)
        lwz 9, 32(9)
        or 1, 1, 1
        cmpwi 9, 0
        bne 1b
    """, tmp_path, BASE + 12)
    assert loop is not None
    assert [ld.ra for ld in loop.loads] == [6, 9]
    assert loop.inputs == (6,)


@pytest.mark.parametrize(("why", "body"), [
    ("it stores", "1: lwz 9, 0(3)\n stw 9, 4(3)\n cmpwi 9, 0\n beq 1b"),
    ("it reads the timebase", "1: mftb 9\n cmplw 9, 4\n blt 1b"),
    ("it counts down CTR", "1: lwz 9, 0(3)\n cmpwi 9, 0\n bdnzt 2, 1b"),
    ("its address moves", "1: lwzu 9, 4(3)\n cmpwi 9, 0\n beq 1b"),
    ("its address is computed in the loop", "1: addi 3, 3, 4\n lwz 9, 0(3)\n cmpwi 9, 0\n beq 1b"),
    ("it follows a list", "1: lwz 3, 0(3)\n cmpwi 3, 0\n bne 1b"),
    ("it calls", "1: lwz 9, 0(3)\n cmpwi 9, 0\n beql 1b"),
    ("it makes a system call", "1: lwz 9, 0(3)\n sc\n cmpwi 9, 0\n beq 1b"),
])
def test_loops_that_do_more_than_poll_are_not_spins(why: str, body: str, tmp_path: Path) -> None:
    assert _loop(body, tmp_path, BASE) is None, why


FLAG = 0x0010_0000
HANDOFFS = 10_000

#: Two CPUs hand a word back and forth: CPU 0 waits for even values, CPU 1 for odd ones, each
#: storing the next; CPU 0 powers off with 0 when the word reaches 2 * HANDOFFS.
PING_PONG = f"""
_start:
    li32 9, {FLAG}
    li32 10, {2 * HANDOFFS}
    mr 5, 3                     /* CPU n waits for values of its parity, starting at n */
1:  lwz 4, 0(9)
    cmpw 4, 5
    bne 1b
    cmpw 5, 10
    bge 2f
    addi 5, 5, 1
    stw 5, 0(9)
    addi 5, 5, 1
    b 1b
2:  li 3, 0
    hcall HC_FW_POWEROFF
"""


async def test_two_cpus_hand_a_word_back_and_forth_by_parking_not_spinning() -> None:
    b = await boot(PING_PONG, smp=2, timeout=60)
    assert b.result.code == 0, b.result.reason
    stats = b.machine.spins.statistics()
    # Nearly every hand-off parks the waiting CPU and wakes it with the other's store.
    assert stats["parks"] >= HANDOFFS, stats
    assert stats["store"] >= HANDOFFS, stats
    assert stats["timeout"] == 0, stats
    assert b.machine.ram.read_u32(FLAG) == 2 * HANDOFFS
