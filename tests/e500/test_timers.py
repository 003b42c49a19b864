"""The timebase and the decrementer: exact when read, per CPU, and interrupting on time."""

from __future__ import annotations

import struct

import pytest

from machine.events import CpuParked, ParkReason

from .guests import boot

pytestmark = pytest.mark.cross

HZ = 400_000_000
RESULTS = 0x0010_0000

#: The decrementer at 250 Hz (auto-reload) for one second of guest time, the CPU idling with
#: EV_IDLE between ticks; the handler counts in r20.  Powers off with the count.
DEC_250HZ = f"""
_start:
    lis 3, 0xFFF0
    mtspr 63, 3                 /* IVPR */
    li 3, h_dec@l
    mtspr 410, 3                /* IVOR10: decrementer */
    li32 3, {HZ // 250}
    mtspr 54, 3                 /* DECAR */
    mtspr 22, 3                 /* DEC */
    lis 3, 0x0440
    mtspr 340, 3                /* TCR = DIE | ARE */
    li 20, 0
    mftb 21                     /* start */
    wrteei 1
1:  {{idle}}
    mftb 22
    subf 22, 21, 22
    li32 23, {HZ}
    cmplw 22, 23
    blt 1b
    mr 3, 20
    hcall HC_FW_POWEROFF
    .balign 16
h_dec:
    addi 20, 20, 1
    lis 3, 0x0800
    mtspr 336, 3                /* TSR: clear DIS (write 1 to clear) */
    rfi
"""
EV_IDLE = "hcall HC_EV_IDLE"
#: Linux's e500_idle without its exception-prologue trick: HID0[DOZE], then MSR[WE] | MSR[EE]
#: (the interrupt that ends the doze returns after the mtmsr: rfi never sets MSR[WE]).
DOZE = """lis 3, 0x0080
    mtspr 1008, 3               /* HID0 = DOZE */
    mfmsr 3
    oris 3, 3, 0x0004           /* MSR[WE] */
    ori 3, 3, 0x8000            /* MSR[EE] */
    isync
    mtmsr 3
    isync"""


async def test_the_decrementer_at_250_hz_interrupts_an_idle_cpu_250_times_a_second() -> None:
    b = await boot(DEC_250HZ.format(idle=EV_IDLE), timeout=10)
    assert 225 <= b.result.code <= 275, b.result.reason


async def test_a_cpu_dozing_in_msr_we_wakes_for_each_of_250_ticks_a_second() -> None:
    b = await boot(DEC_250HZ.format(idle=DOZE), timeout=10, record_events=True)
    assert 225 <= b.result.code <= 275, b.result.reason
    dozes = [e for e in b.of(CpuParked) if e.reason is ParkReason.DOZE]
    assert 225 <= len(dozes) <= 280, "each tick ends one doze, and nothing else does"


#: CPU 1 sets its timebase to 2^40 + 5 (mttbu, mttbl); each CPU then reads its timebase and
#: decrementer twice, 1,000 loop turns apart, each DEC read bracketed by two timebase reads
#: (so the check below holds even if the CPU is switched out between two reads), and stores
#: what it saw: TBU, TBL, DEC, TBL after; TBL, DEC, TBL after.
TIMEBASES = f"""
_start:
    cmpwi 3, 1
    bne 1f
    li 4, 0x100
    mttbu 4
    li 4, 5
    mttbl 4
1:  li32 4, 100000000
    mtspr 22, 4                 /* DEC */
    mftbu 5
    mftb 6
    mfspr 7, 22
    mftb 8
    li 9, 1000
    mtctr 9
2:  bdnz 2b
    mftb 9
    mfspr 10, 22
    mftb 11
    li32 12, {RESULTS}
    slwi 13, 3, 5
    add 12, 12, 13
    stmw 5, 0(12)               /* r5..r11 */
    li 13, 1
    stw 13, 28(12)
    cmpwi 3, 0
    bne 4f
3:  lwz 4, 32+28(12)            /* wait for CPU 1's results */
    cmpwi 4, 0
    beq 3b
    li 3, 0
    hcall HC_FW_POWEROFF
4:  hcall HC_EV_IDLE
    b 4b
"""


async def test_each_cpu_has_its_own_timebase_and_reads_are_exact() -> None:
    b = await boot(TIMEBASES, smp=2)
    assert b.result.code == 0, b.result.reason
    seen = [struct.unpack(">7I", b.machine.ram.read(RESULTS + 32 * i, 28)) for i in (0, 1)]
    for cpu, (_tbu, tbl0, dec0, after0, tbl1, dec1, after1) in enumerate(seen):
        assert (tbl1 - tbl0) & 0xFFFF_FFFF > 0, f"cpu {cpu}: the timebase moved"
        assert dec1 < dec0 <= 100_000_000, f"cpu {cpu}: the decrementer counts down"
        # Both move at the same 400 MHz clock: what DEC lost between its two reads lies
        # between the timebase gained from the inner and from the outer bracketing reads.
        lost = dec0 - dec1
        assert (tbl1 - after0) & 0xFFFF_FFFF <= lost <= (after1 - tbl0) & 0xFFFF_FFFF, \
            f"cpu {cpu}: DEC lost {lost} ticks, the timebase moved " \
            f"{(tbl1 - after0) & 0xFFFF_FFFF}..{(after1 - tbl0) & 0xFFFF_FFFF}"
    assert seen[1][0] == 0x100, "CPU 1's write set only its own timebase"
    assert seen[0][0] == 0
