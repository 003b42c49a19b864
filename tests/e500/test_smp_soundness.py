"""SMP is sound: atomics are exact across vCPUs, and code one CPU rewrites is what another runs.

Both used to fail when every vCPU had an engine of its own (docs/DESIGN.md, "One engine"): two
CPUs lost 40 % of their ``lwarx``/``stwcx.`` increments, and a CPU kept running the old copy of
a routine another CPU had rewritten with the architected sequence.
"""

from __future__ import annotations

import pytest
import trio

from machine.board import E500Machine
from tests.e500.guests import boot

pytestmark = pytest.mark.cross

COUNTER = 0x0010_0000
DONE = 0x0010_0004

#: Every CPU adds 1 to COUNTER ``n`` times with lwarx/stwcx., then counts itself in DONE;
#: CPU 0 waits (FW_WAIT_STORE) until DONE = ``cpus`` and powers off.
ATOMICS = """
    .globl _start
_start:
    li32 9, {counter}
    li32 25, {n}
    mtctr 25
1:  lwarx 5, 0, 9
    addi 5, 5, 1
    stwcx. 5, 0, 9
    bne- 1b
    bdnz 1b
    li32 9, {done}
2:  lwarx 5, 0, 9
    addi 5, 5, 1
    stwcx. 5, 0, 9
    bne- 2b
    cmpwi 3, 0
    bne idle
3:  lwz 4, 0(9)
    cmpwi 4, {cpus}
    beq 4f
    mr 3, 9
    hcall HC_FW_WAIT_STORE
    b 3b
4:  li 3, 0
    hcall HC_FW_POWEROFF
idle:
    hcall HC_EV_IDLE
    b idle
"""


async def _count(cpus: int, per_cpu: int) -> int:
    """Run the ATOMICS guest; the final counter."""
    b = await boot(ATOMICS.format(counter=COUNTER, done=DONE, n=per_cpu, cpus=cpus), smp=cpus,
                   timeout=120)
    assert b.result.code == 0, b.result.reason
    return b.machine.ram.read_u32(COUNTER)


@pytest.mark.parametrize("cpus", [2, 4, 8])
async def test_lwarx_stwcx_increments_are_exact_on_n_cpus(cpus: int) -> None:
    per_cpu = 1_000_000 // cpus
    assert await _count(cpus, per_cpu) == cpus * per_cpu


STOP = 0x0010_0008  # the host sets it once it has stopped the CPUs often enough
MINE = 0x0010_0100  # CPU i's own count of its increments at MINE + 4 * i

#: Every CPU increments COUNTER with lwarx/stwcx. and counts its own increments in r20 until
#: the host sets STOP (looked at every 256 increments), then stores r20 at MINE + 4 * index and
#: counts itself in DONE; CPU 0 waits for all and powers off.
UNTIL_STOPPED = """
    .globl _start
_start:
    li32 9, {counter}
    li32 10, {stop}
    li 20, 0
1:  li 25, 256
    mtctr 25
2:  lwarx 5, 0, 9
    addi 5, 5, 1
    stwcx. 5, 0, 9
    bne- 2b
    addi 20, 20, 1
    bdnz 2b
    lwz 6, 0(10)
    cmpwi 6, 0
    beq 1b
    li32 11, {mine}
    slwi 12, 3, 2
    stwx 20, 11, 12
    li32 9, {done}
3:  lwarx 5, 0, 9
    addi 5, 5, 1
    stwcx. 5, 0, 9
    bne- 3b
    cmpwi 3, 0
    bne idle
4:  lwz 4, 0(9)
    cmpwi 4, {cpus}
    beq 5f
    mr 3, 9
    hcall HC_FW_WAIT_STORE
    b 4b
5:  li 3, 0
    hcall HC_FW_POWEROFF
idle:
    hcall HC_EV_IDLE
    b idle
"""


async def test_increments_stay_exact_while_the_host_stops_cpus_thousands_of_times() -> None:
    cpus, rounds = 4, 1500

    async def kick_then_stop(m: E500Machine) -> None:
        # The host stops every CPU again and again (as a debugger's interrupts and the
        # machine's own kicks do); each stop ends a slice, and the CPU's task resumes it.
        for _ in range(rounds):
            for cpu in m.cpus:
                cpu.kick()
            await trio.sleep(0.0002)
        m.ram.write_u32(STOP, 1)

    source = UNTIL_STOPPED.format(counter=COUNTER, stop=STOP, mine=MINE, done=DONE, cpus=cpus)
    b = await boot(source, smp=cpus, timeout=120, during=kick_then_stop)
    assert b.result.code == 0, b.result.reason
    ram = b.machine.ram
    mine = [ram.read_u32(MINE + 4 * i) for i in range(cpus)]
    assert all(mine), mine
    assert ram.read_u32(COUNTER) == sum(mine)
    slices = sum(cpu.slices for cpu in b.machine.cpus)
    assert slices > rounds, f"only {slices} slices: the stops did not land"


ROUTINE = 0x0020_0000
FLAG_A = 0x0010_0100  # CPU 0 ran the old routine
FLAG_B = 0x0010_0200  # CPU 1 rewrote it

#: CPU 0 writes ``li r3,1; blr`` at ROUTINE, calls it (so it is translated), and waits for CPU
#: 1, which rewrites the first word to ``li r3,2`` with the architected sequence (dcbst, sync,
#: icbi, sync, isync) and raises a flag.  CPU 0 executes ``isync`` and calls it again; it
#: powers off with 10 * second result + first result: 21 when it ran the new code.
CROSS_CPU_CODE = f"""
    .globl _start
_start:
    li32 9, {ROUTINE}
    cmpwi 3, 0
    beq cpu0
    cmpwi 3, 1
    bne idle
cpu1:
    li32 3, {FLAG_A}
    li 4, 0
    hcall HC_FW_WAIT_STORE
    li32 5, 0x38600002
    stw 5, 0(9)
    dcbst 0, 9
    sync
    icbi 0, 9
    sync
    isync
    li32 10, {FLAG_B}
    li 5, 1
    stw 5, 0(10)
idle:
    hcall HC_EV_IDLE
    b idle
cpu0:
    li32 5, 0x38600001
    stw 5, 0(9)
    li32 5, 0x4e800020
    stw 5, 4(9)
    dcbst 0, 9
    sync
    icbi 0, 9
    sync
    isync
    mtctr 9
    bctrl
    mr 20, 3
    li32 10, {FLAG_A}
    li 5, 1
    stw 5, 0(10)
1:  li32 3, {FLAG_B}
    lwz 4, 0(3)
    cmpwi 4, 0
    bne 2f
    hcall HC_FW_WAIT_STORE
    b 1b
2:  isync
    mtctr 9
    bctrl
    mulli 3, 3, 10
    add 3, 3, 20
    hcall HC_FW_POWEROFF
"""


@pytest.mark.parametrize("cpus", [2, 4, 8])
async def test_code_rewritten_by_one_cpu_is_what_another_runs(cpus: int) -> None:
    b = await boot(CROSS_CPU_CODE, smp=cpus)
    assert b.result.code == 21, b.result.reason


async def test_increments_stay_exact_while_a_debugger_has_a_breakpoint_set() -> None:
    """With a breakpoint set, stops are exact (mid-block), so preemption must come from the
    block hook at block boundaries, never from outside: a stwcx. is never repeated."""
    from tests.test_gdb_stub import debugged

    cpus, per_cpu = 4, 250_000
    source = ATOMICS.format(counter=COUNTER, done=DONE, n=per_cpu, cpus=cpus) + "never:\n    nop\n"
    async with debugged(source, smp=cpus, timeout=120) as d:
        assert await d.gdb.ask(f"Z0,{d.sym['never']:x},4") == "OK"
        assert await d.gdb.ask("c") == "W00"
    assert d.machine.ram.read_u32(COUNTER) == cpus * per_cpu
