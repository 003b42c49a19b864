"""fw_cfg DMA over code that already ran: the CPUs must run the new bytes, not a stale copy.

Unicorn translates guest code into blocks it caches; a store by the guest CPU invalidates the
blocks it overwrites, but the DMA engine writes guest RAM from the host, behind unicorn's back.
A firmware that loads a second stage (or a kernel, after FW_RESET, or a kexec'd one) where code
ran before would then execute the old instructions.  These guests run a routine at 0x4000,
DMA a replacement from ``opt/code`` over it, and run it again — on the same CPU, and on a
second CPU released into the new code.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fwcfg import FwCfgOption
from machine.events import CpuParked, ParkReason
from machine.platform import MiB

from .guests import boot

pytestmark = pytest.mark.cross

LI_R3 = 0x3860_0000  # li r3, imm
BLR = 0x4E80_0020
CODE = 0x4000
#: The replacement routine: ``li r3, 2; blr``.
NEW_CODE = struct.pack(">II", LI_R3 | 2, BLR)
NOP = struct.pack(">I", 0x6000_0000)
FIRST_FILE_KEY = 0x21  # opt/code sorts after etc/fdt

#: DMAs the 16 bytes of opt/code (nop, nop, the new routine) to r6 (descriptor at 0x5000),
#: then icbi + isync as the architecture asks after changing code.
DMA_NEW_CODE = f"""
    li 7, 0x5000
    li32 8, ({FIRST_FILE_KEY} << 16) | 0x0a   /* SELECT | READ */
    stw 8, 0(7)
    li 8, 16
    stw 8, 4(7)
    li 8, 0
    stw 8, 8(7)
    stw 6, 12(7)
    li32 9, FWCFG_BASE
    stw 7, 0x14(9)
    lwz 8, 0(7)
    cmpwi 8, 0
    bne dma_failed
    icbi 0, 6
    sync
    isync
"""


def options(tmp_path: Path) -> list[FwCfgOption]:
    path = tmp_path / "code"
    path.write_bytes(NOP * 2 + NEW_CODE)
    return [FwCfgOption(name="opt/code", file=str(path))]


@pytest.mark.parametrize(
    ("watched", "routine"),
    [(0x2_0000, CODE), (0x2_0000, 0x100_0000), (0x1_0000, 0x1_1000), (0x1_1000, 0x1_1000)],
    ids=["plain", "across-16-MiB-mappings", "after-a-watched-page", "in-a-watched-page"],
)
async def test_the_cpu_that_dmas_code_over_old_code_runs_the_new_code(
    tmp_path: Path, watched: int, routine: int
) -> None:
    """The DMA covers the 8 bytes before the routine too, so it starts in the page (or the
    16 MiB mapping) before the routine's; a page some CPU waits on is write-protected, which
    splits unicorn's mapping around it."""
    b = await boot(f"""
_start:
    li32 3, {watched:#x}
    li 4, 1
    hcall HC_FW_WAIT_STORE        /* returns at once (the word is 0); the page is watched */
    li32 4, {LI_R3 | 1:#x}
    li32 5, {BLR:#x}
    li32 6, {routine:#x}
    stw 4, 0(6)
    stw 5, 4(6)
    mtctr 6
    bctrl                         /* the old routine: r3 = 1 */
    mr 20, 3
    addi 6, 6, -8
{DMA_NEW_CODE}
    addi 6, 6, 8
    mtctr 6
    bctrl                         /* the new routine: r3 = 2 */
    slwi 20, 20, 4
    or 3, 3, 20
    hcall HC_FW_POWEROFF          /* 0x12 */
dma_failed:
    li 3, 0xee
    hcall HC_FW_POWEROFF
""", fw_cfg=options(tmp_path), ram_size=64 * MiB)
    assert b.machine.fwcfg.key_of("opt/code") == FIRST_FILE_KEY
    assert b.result.code == 0x12, b.result.reason


async def test_a_cpu_released_into_code_replaced_by_dma_runs_the_new_code(tmp_path: Path) -> None:
    b = await boot(f"""
_start:
    cmpwi 3, 0
    beq boot_cpu
1:  hcall HC_EV_IDLE              /* CPU 1 waits to be released */
    b 1b
boot_cpu:
    li32 4, {LI_R3 | 1:#x}
    li32 5, {BLR:#x}
    li 6, {CODE:#x}
    stw 4, 0(6)
    stw 5, 4(6)
    li 3, 1
    li32 4, secondary
    li 5, 0
    hcall HC_FW_CPU_RELEASE
2:  li 3, 0x6000                  /* wait until CPU 1 has run it */
    li 4, 0
    hcall HC_FW_WAIT_STORE
    cmpwi 4, 0
    beq 2b
    mr 20, 4
    li 6, {CODE - 8:#x}
{DMA_NEW_CODE}
    li 3, 1                       /* CPU 1 runs the routine again, now replaced */
    li32 4, secondary_again
    li 5, 0
    hcall HC_FW_CPU_RELEASE
3:  li 3, 0x6004
    li 4, 0
    hcall HC_FW_WAIT_STORE
    cmpwi 4, 0
    beq 3b
    slwi 20, 20, 4
    or 3, 4, 20
    hcall HC_FW_POWEROFF          /* 0x12 */
secondary:
    li 6, {CODE:#x}
    mtctr 6
    bctrl
    li 7, 0x6000
    stw 3, 0(7)
4:  hcall HC_EV_IDLE
    b 4b
secondary_again:
    li 6, {CODE:#x}
    mtctr 6
    bctrl
    li 7, 0x6004
    stw 3, 0(7)
5:  hcall HC_EV_IDLE
    b 5b
dma_failed:
    li 3, 0xee
    hcall HC_FW_POWEROFF
""", smp=2, fw_cfg=options(tmp_path))
    assert b.result.code == 0x12, b.result.reason


async def test_a_cpu_woken_by_a_store_after_the_dma_runs_the_new_code(tmp_path: Path) -> None:
    """CPU 1 waits with FW_WAIT_STORE on a page already watched everywhere, so it sleeps
    inside its slice (the fast path) instead of leaving it; CPU 0 replaces the routine by DMA
    and then wakes it with a store.  The wake-up must drop the stale translation too."""
    b = await boot(f"""
_start:
    cmpwi 3, 0
    beq boot_cpu
0:  hcall HC_EV_IDLE              /* CPU 1 waits to be released */
    b 0b
secondary:
    li 6, {CODE:#x}               /* CPU 1: the old routine, then wait on 0x6000 */
    mtctr 6
    bctrl
    li 7, 0x6004
    stw 3, 0(7)                   /* report the old result */
1:  li 3, 0x6000
    li 4, 0
    hcall HC_FW_WAIT_STORE
    cmpwi 4, 0
    beq 1b
    li 6, {CODE:#x}
    mtctr 6
    bctrl
    li 7, 0x6008
    stw 3, 0(7)                   /* report the new result */
2:  hcall HC_EV_IDLE
    b 2b
boot_cpu:
    li32 4, {LI_R3 | 1:#x}
    li32 5, {BLR:#x}
    li 6, {CODE:#x}
    stw 4, 0(6)
    stw 5, 4(6)
    li 3, 1
    li32 4, secondary
    li 5, 1
    hcall HC_FW_CPU_RELEASE
3:  li 3, 0x6004                  /* wait until CPU 1 ran the old routine */
    li 4, 0
    hcall HC_FW_WAIT_STORE
    cmpwi 4, 0
    beq 3b
    mr 20, 4
    li32 3, 300000                /* let CPU 1 reach its wait */
    mtctr 3
4:  bdnz 4b
    li 6, {CODE - 8:#x}
{DMA_NEW_CODE}
    li 7, 0x6000
    li 8, 1
    stw 8, 0(7)                   /* wake CPU 1 */
5:  li 3, 0x6008
    li 4, 0
    hcall HC_FW_WAIT_STORE
    cmpwi 4, 0
    beq 5b
    slwi 20, 20, 4
    or 3, 4, 20
    hcall HC_FW_POWEROFF          /* 0x12 */
dma_failed:
    li 3, 0xee
    hcall HC_FW_POWEROFF
""", smp=2, fw_cfg=options(tmp_path))
    assert b.result.code == 0x12, b.result.reason
    parked = [e for e in b.of(CpuParked) if e.cpu == 1 and e.reason is ParkReason.WAIT_STORE]
    assert parked, "CPU 1 never waited"
