"""FW_WAIT_STORE: a CPU parked on a word, inside its slice (the scheduler's run queue no
longer holds it), or in its trio task once the machine had to stop it.  What the guest must
see either way: r3 = EV_SUCCESS, r4 = the value the waking store left, every other register as
it was (SRR0 and SRR1 included), and no lost wake-up."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from elftools.elf.elffile import ELFFile

from machine import board
from machine.asm import assemble
from machine.events import CpuParked, CpuReleased, CpuWoken, ParkReason

from .guests import Boot, boot

WORD = 0x0FFF_F800  # in the spin-table page (last page of 256 MiB): watched from the start
FLAG = 0x0FFF_F900  # the round CPU 1 is about to wait in
GO = 0x0FFF_FA00  # the round CPU 0 may store in, when the test's host side says so
RESULTS = 0x0010_0000  # 256 bytes per round, written by CPU 1
ROUNDS = 12

# CPU 1 waits ROUNDS times on WORD (expected k-1 in round k) with every register set to a
# pattern, then records what it got back; CPU 0 stores k once the test's host side sets GO = k
# (when_cpu1_waits) and {delay} loop turns more.  (FLAG = k: CPU 1 is about to wait.)
GUEST = """
_start:
    cmpwi 3, 0
    bne cpu1
    li32 21, {word}
    li32 22, {go}
    li 20, 0
next:
    addi 20, 20, 1
1:  lwz 4, 0(22)
    cmpw 4, 20
    bne 1b
    li32 9, {delay}
    mtctr 9
2:  bdnz 2b
    {release}
    cmpwi 20, {rounds}
    blt next
3:  hcall HC_EV_IDLE
    b 3b
cpu1:
    {mode}
    li32 21, {word}
    li32 22, {flag}
    li 20, 0
round:
    addi 20, 20, 1
    slwi 23, 20, 8
    addis 23, 23, {results_hi}
    li 9, 0
    {clear_srr0}
    li32 0, 0x00000A00
    li32 2, 0x02020202
    li32 5, 0x05050505
    li32 6, 0x06060606
    li32 7, 0x07070707
    li32 8, 0x08080808
    li32 9, 0xC0FFEE00
    mtctr 9
    li32 9, 0x1A2B3C4D
    mtlr 9
    li32 9, 0x12345678
    mtcrf 0xff, 9
    li32 9, 0x09090909
    li32 10, 0x10101010
    li32 12, 0x12121212
    li32 31, 0x31313131
    stw 20, 0(22)            /* about to wait in round r20 */
    mr 3, 21
    {expected}
    hcall HC_FW_WAIT_STORE
after:
    mfcr 11
    stw 11, 0(23)
    mfctr 11
    stw 11, 4(23)
    mflr 11
    stw 11, 8(23)
    {read_srr0}
    stw 11, 12(23)
    stw 3, 16(23)
    stw 4, 20(23)
    stw 0, 24(23)
    stw 2, 28(23)
    stmw 5, 32(23)
    cmpwi 20, {rounds}
    blt round
    li 3, 0
    hcall HC_FW_POWEROFF
"""
STORE = "stw 20, 0(21)"
SUPERVISOR = "nop"


def guest(delay: int, *, release: str = STORE, mode: str = SUPERVISOR,
          clear_srr0: str = "mtsrr0 9", read_srr0: str = "mfsrr0 11",
          expected: str = "addi 4, 20, -1", go: int = GO, rounds: int = ROUNDS) -> str:
    return GUEST.format(word=WORD, flag=FLAG, go=go, delay=delay, release=release, mode=mode,
                        clear_srr0=clear_srr0, read_srr0=read_srr0, expected=expected,
                        rounds=rounds, results_hi=RESULTS >> 16)


def symbol(elf: Path, name: str) -> int:
    with elf.open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        sym = table.get_symbol_by_name(name)[0]  # type: ignore[union-attr]
        return int(sym["st_value"])


def when_cpu1_waits(rounds: int = ROUNDS) -> Callable[[board.E500Machine], Awaitable[None]]:
    """The test's host side: GO = k once CPU 1 has begun its k-th wait (not merely asked to:
    a store that lands before the wait begins is, rightly, one the wait does not see)."""
    async def feed(m: board.E500Machine) -> None:
        for k in range(1, rounds + 1):
            await m.events.wait_for(lambda e: isinstance(e, CpuParked) and e.cpu == 1
                                    and e.address == WORD)
            m.ram.write_u32(GO, k)
    return feed



def check_rounds(b: Boot, rounds: int = ROUNDS) -> None:
    ram = b.machine.ram
    for k in range(1, rounds + 1):
        base = RESULTS + 256 * k
        cr, ctr, lr, srr0, r3, r4, r0, r2 = struct.unpack(">8I", ram.read(base, 32))
        r5_31 = struct.unpack(">27I", ram.read(base + 32, 27 * 4))
        gpr = dict(zip(range(5, 32), r5_31, strict=True))
        assert (r3, r4) == (0, k), f"round {k}"
        assert (cr, ctr, lr) == (0x12345678, 0xC0FFEE00, 0x1A2B3C4D), f"round {k}"
        assert (r0, r2) == (0x0A00, 0x02020202), f"round {k}"
        assert gpr[5] == 0x05050505 and gpr[6] == 0x06060606, f"round {k}"
        assert [gpr[7], gpr[8], gpr[9], gpr[10], gpr[12], gpr[31]] == [
            0x07070707, 0x08080808, 0x09090909, 0x10101010, 0x12121212, 0x31313131]
        assert gpr[20] == k
        assert srr0 == 0, f"round {k}: SRR0 {srr0:#x}: the call must leave it as it was"


@pytest.mark.parametrize("delay", [1, 1 << 22], ids=["at once", "milliseconds later"])
async def test_a_store_wakes_the_cpu_with_every_other_register_intact(delay: int) -> None:
    b = await boot(guest(delay=delay), smp=2, timeout=60, during=when_cpu1_waits(),
                   record_events=True)
    assert b.result.code == 0, b.result.reason
    check_rounds(b)
    # Each wait is one park and one wake-up by a store.
    mine = [e for e in b.events if isinstance(e, (CpuParked, CpuWoken)) and e.cpu == 1]
    waits = [e for e in mine if isinstance(e, CpuParked) and e.reason is ParkReason.WAIT_STORE
             and e.address == WORD]
    woken = [e for e in mine if isinstance(e, CpuWoken) and e.by == "store"]
    assert len(waits) == ROUNDS and len(woken) == ROUNDS


async def test_a_release_reaches_a_cpu_parked_in_fw_wait_store() -> None:
    # CPU 0 releases CPU 1 to `entry` instead of storing; CPU 1 powers off with its r3.
    release = """
    li 3, 1
    li32 4, entry
    li 5, 0x77
    hcall HC_FW_CPU_RELEASE
    b 3f
entry:
    hcall HC_FW_POWEROFF
"""
    b = await boot(guest(delay=1, release=release, rounds=1), smp=2, timeout=30,
                   during=when_cpu1_waits(1), record_events=True)
    assert b.result.code == 0x77, b.result.reason
    assert [e.cpu for e in b.of(CpuReleased)] == [1]
    assert [e.address for e in b.of(CpuParked) if e.cpu == 1] == [WORD]
    assert [e.by for e in b.of(CpuWoken) if e.cpu == 1] == ["release"]


async def test_a_caller_in_user_mode_is_woken_the_same_way() -> None:
    user = "mfmsr 9\n    ori 9, 9, 0x4000\n    mtmsr 9"  # SRR0 is out of its reach
    src = guest(delay=1, mode=user, clear_srr0="nop", read_srr0="li 11, 0")
    b = await boot(src, smp=2, timeout=30, during=when_cpu1_waits(), record_events=True)
    assert b.result.code == 0, b.result.reason
    check_rounds(b)


async def test_a_parked_cpu_the_host_stops_again_and_again_still_wakes_intact() -> None:
    """Kicks (a debugger's interrupt, the machine stopping) move a CPU parked inside its
    slice to the slow path through its trio task; it still wakes once, with its registers."""

    async def kick_then_feed(m: board.E500Machine) -> None:
        for k in range(1, ROUNDS + 1):
            await m.events.wait_for(lambda e: isinstance(e, CpuParked) and e.cpu == 1
                                    and e.address == WORD)
            for _ in range(20):
                m.cpus[1].kick()
                await trio.sleep(0.0005)
            m.ram.write_u32(GO, k)

    b = await boot(guest(delay=1), smp=2, timeout=60, during=kick_then_feed,
                   record_events=True)
    assert b.result.code == 0, b.result.reason
    check_rounds(b)


async def test_a_timeout_names_the_guests_pc_and_the_word() -> None:
    src = f"""
_start:
    cmpwi 3, 0
    bne 1f
    hcall HC_EV_IDLE
    b _start
1:  li32 3, {WORD}
    li 4, 0
    hcall HC_FW_WAIT_STORE
after:
    b after
"""
    b = await boot(src, smp=2, timeout=0.5)
    assert b.result.code == 124
    after = symbol(assemble(src), "after")
    assert f"cpu 1 parked in FW_WAIT_STORE on {WORD:#x} at pc {after:#010x}" in b.result.reason


async def test_a_store_undone_at_once_still_ends_the_wait_with_its_value() -> None:
    # CPU 1 waits for the word to leave 0; CPU 0 stores k + 100 and then 0 again, once the
    # host has seen CPU 1 wait.  The wait ends with r4 = k + 100, the value the waking store
    # left, though the word is 0 again by the time CPU 1 runs.
    aba = "addi 9, 20, 100\n    stw 9, 0(21)\n    li 9, 0\n    stw 9, 0(21)"
    # (CPU 1 starts each wait once the word is 0 again.)
    back_to_0 = "9: lwz 4, 0(21)\n    cmpwi 4, 0\n    bne 9b"
    src = guest(delay=1, release=aba, expected=back_to_0, rounds=4)
    b = await boot(src, smp=2, timeout=30, during=when_cpu1_waits(4), record_events=True)
    assert b.result.code == 0, b.result.reason
    for k in range(1, 5):
        r3, r4 = struct.unpack(">II", b.machine.ram.read(RESULTS + 256 * k + 16, 8))
        assert (r3, r4) == (0, k + 100), f"round {k}"
