"""Interrupt inputs and the timers behind them: what a guest sees when a line comes up.

The machine drives each vCPU's external and critical inputs (the interrupt controller will,
issue 13; here the host does, through ``Scheduler.set_input``), and its timers drive the
decrementer, fixed-interval and watchdog inputs; QEMU's own code takes the interrupts.
"""

from __future__ import annotations

import pytest
import trio

from machine.board import E500Machine
from machine.cpu.irq_layout import IRQ_CEXT, IRQ_EXT
from machine.events import CpuParked, CpuStarted, ParkReason, Reset

from .guests import boot

pytestmark = pytest.mark.cross

HZ = 400_000_000

#: Set up IVPR and one IVOR, then doze with MSR[EE] (and CE) until an input comes up; the
#: handler counts in r20, keeps its save/restore registers in r21/r22, masks the class it was
#: taken for in the saved MSR and returns; the guest then reports: 0x100 * count | 1 if the
#: handler's return address was the instruction after the mtmsr.
DOZE_UNTIL_INPUT = """
_start:
    lis 3, 0xFFF0
    mtspr 63, 3                 /* IVPR */
    li 3, handler@l
    mtspr {ivor}, 3
    li 20, 0
    lis 3, 0x0080
    mtspr 1008, 3               /* HID0 = DOZE */
    mfmsr 3
    oris 3, 3, 0x0006           /* MSR[WE] | MSR[CE] */
    ori 3, 3, 0x8000            /* MSR[EE] */
    isync
    mtmsr 3
woke:
    isync
    slwi 3, 20, 8
    lis 24, woke@h
    ori 24, 24, woke@l
    cmpw 21, 24
    bne 1f
    ori 3, 3, 1
1:  hcall HC_FW_POWEROFF
    .balign 16
handler:
    addi 20, 20, 1
    mfspr 21, {srr0}
    mfspr 22, {srr1}
    li32 23, {mask}
    andc 22, 22, 23
    mtspr {srr1}, 22
    {rfi}
"""
EXTERNAL = dict(ivor=404, srr0=26, srr1=27, mask=0x8000, rfi="rfi")
CRITICAL = dict(ivor=400, srr0=58, srr1=59, mask=0x20000, rfi="rfci")


async def _raise_when_dozing(m: E500Machine, cpu: int, line: int) -> None:
    await m.wait_for(lambda e: isinstance(e, CpuParked) and e.reason is ParkReason.DOZE)
    await trio.sleep(0.05)  # it stays parked: nothing else wakes it
    assert m.cpu_parked(cpu) is ParkReason.DOZE
    m.scheduler.set_input(m.cpus[cpu], line, True)


@pytest.mark.parametrize(("kind", "line"), [(EXTERNAL, IRQ_EXT), (CRITICAL, IRQ_CEXT)],
                         ids=["external", "critical"])
async def test_an_input_raised_by_the_host_wakes_a_dozing_cpu_into_its_handler(
        kind: dict, line: int) -> None:
    b = await boot(DOZE_UNTIL_INPUT.format(**kind), record_events=True,
                   during=lambda m: _raise_when_dozing(m, 0, line))
    assert b.result.code == 0x101, b.result.reason  # taken once, returning after the mtmsr


#: Every CPU enables MSR[EE] and spins; CPU n's external handler powers off with 0xE0 | n.
SPIN_WITH_EE = """
_start:
    lis 4, 0xFFF0
    mtspr 63, 4
    li 4, handler@l
    mtspr 404, 4
    wrteei 1
1:  addi 5, 5, 1
    b 1b
    .balign 16
handler:
    mfspr 3, 286                /* PIR */
    ori 3, 3, 0xE0
    hcall HC_FW_POWEROFF
"""


@pytest.mark.parametrize("target", [0, 1, 3])
async def test_an_input_reaches_a_running_cpu_and_only_that_one(target: int) -> None:
    async def raise_it(m: E500Machine) -> None:
        for _ in range(4):
            await m.wait_for(CpuStarted)
        await trio.sleep(0.05)
        m.scheduler.set_input(m.cpus[target], IRQ_EXT, True)

    b = await boot(SPIN_WITH_EE, smp=4, record_events=True, during=raise_it)
    assert b.result.code == 0xE0 | target, b.result.reason


#: The fixed-interval timer on timebase bit 20 (a 0-to-1 transition every 2^21 ticks) for one
#: second of guest time, dozing between interrupts; the handler counts in r20.
FIT_1S = f"""
_start:
    lis 3, 0xFFF0
    mtspr 63, 3
    li 3, h_fit@l
    mtspr 411, 3                /* IVOR11: fixed-interval timer */
    li32 3, {3 << 24 | 10 << 13 | 0x0080_0000}
    mtspr 340, 3                /* TCR: FP = 3, FPEXT = 10 (bit 63 - 43 = 20), FIE */
    li 20, 0
    mftb 21
    lis 3, 0x0080
    mtspr 1008, 3               /* HID0 = DOZE */
1:  mfmsr 3
    oris 3, 3, 0x0004
    ori 3, 3, 0x8000
    mtmsr 3                     /* doze until the next interrupt */
    isync
    mftb 22
    subf 22, 21, 22
    li32 23, {HZ}
    cmplw 22, 23
    blt 1b
    mr 3, 20
    hcall HC_FW_POWEROFF
    .balign 16
h_fit:
    addi 20, 20, 1
    lis 3, 0x0400
    mtspr 336, 3                /* TSR: clear FIS */
    rfi
"""


async def test_the_fixed_interval_timer_fires_on_each_transition_of_its_timebase_bit() -> None:
    b = await boot(FIT_1S, timeout=10)
    expected = HZ / (1 << 21)  # 190.7 transitions in one second
    assert expected - 3 <= b.result.code <= expected + 3, b.result.reason


#: First boot: the watchdog on timebase bit 24 (2^25 ticks, 84 ms) with TCR[WRC] = 2, never
#: serviced: ENW, then WIS, then the reset.  After the reset TSR[WRS] says why: power off
#: with 0x50 | WRS.  With ``pet``, the guest clears ENW and WIS for half a second instead and
#: powers off with 0.
WATCHDOG = f"""
_start:
    mfspr 3, 336
    rlwinm 4, 3, 4, 30, 31      /* TSR[WRS] */
    cmpwi 4, 0
    bne rebooted
    li32 3, {3 << 30 | 2 << 28 | 9 << 17}
    mtspr 340, 3                /* TCR: WP = 3, WPEXT = 9 (bit 24), WRC = 2 */
    mftb 21
1:  {{pet}}
    mftb 22
    subf 22, 21, 22
    li32 23, {HZ // 2}
    cmplw 22, 23
    blt 1b
    li 3, 0
    hcall HC_FW_POWEROFF
rebooted:
    ori 3, 4, 0x50
    hcall HC_FW_POWEROFF
"""
PET = """lis 3, 0xC000
    mtspr 336, 3                /* TSR: clear ENW and WIS */"""


async def test_a_watchdog_nobody_services_resets_the_machine_and_tsr_says_why() -> None:
    b = await boot(WATCHDOG.format(pet="nop"), record_events=True, timeout=10)
    assert b.result.code == 0x52, b.result.reason
    resets = b.of(Reset)
    assert [(r.cpu, r.by) for r in resets] == [(0, "watchdog")]


async def test_a_serviced_watchdog_never_fires() -> None:
    b = await boot(WATCHDOG.format(pet=PET), record_events=True, timeout=10)
    assert b.result.code == 0, b.result.reason
    assert not b.of(Reset)
