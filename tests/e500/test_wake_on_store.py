"""Wake-on-store: parked CPUs are woken by the store that changes their word, never lost."""

from __future__ import annotations

import pytest

from machine.events import CpuParked, CpuWoken, ParkReason

from .guests import boot

pytestmark = pytest.mark.cross

# Two CPUs take turns on a counter at 0x3000: CPU i may increment it when counter % 2 == i, and
# otherwise parks with FW_WAIT_STORE until it changes.  A single lost wake-up hangs the pair,
# which the timeout turns into a failure.  ROUNDS increments in all.
PING_PONG = """
    .set ROUNDS, {rounds}
_start:
    mr 20, 3                 /* my index */
    li 21, 0x3000
again:
    lwz 4, 0(21)
    cmpwi 4, ROUNDS
    bge done
    andi. 5, 4, 1
    cmpw 5, 20
    beq mine
    mr 3, 21                 /* not my turn: park until the counter moves */
    hcall HC_FW_WAIT_STORE
    b again
mine:
    addi 4, 4, 1
    {store}
    b again
done:
    cmpwi 20, 0
    bne idle
    lwz 3, 0(21)
    hcall HC_FW_POWEROFF
idle:
    hcall HC_EV_IDLE
    b idle
"""


@pytest.mark.parametrize(
    "store",
    [
        "stw 4, 0(21)",
        "sth 4, 2(21)",
        # a multiple store across a page edge: r30 to 0x2ffc (unwatched page), r31 = the new
        # counter to 0x3000 (a transient value here would make the protocol itself livelock)
        "mr 31, 4\n    li 30, 0x55\n    stmw 30, -4(21)",
    ],
    ids=["stw", "sth-low-half", "stmw-across-pages"],
)
async def test_ping_pong_between_two_cpus_never_loses_a_wakeup(store: str) -> None:
    rounds = 2000
    b = await boot(PING_PONG.format(rounds=rounds, store=store), smp=2, timeout=60)
    assert b.result.code == rounds, b.result.reason
    woken = [e for e in b.of(CpuWoken) if e.by == "store"]
    assert len(woken) > rounds // 4  # they really parked and were woken by stores


async def test_a_store_elsewhere_in_the_page_does_not_wake_the_waiter() -> None:
    # CPU 1 parks on 0x3000; CPU 0 stores to 0x3004 many times (same page), then to 0x3000.
    b = await boot("""
_start:
    cmpwi 3, 0
    beq boot_cpu
    li 3, 0x3000
    li 4, 0
    hcall HC_FW_WAIT_STORE
    mr 3, 4
    hcall HC_FW_POWEROFF
boot_cpu:
    lis 6, 0x100
    mtctr 6
1:  bdnz 1b                  /* let CPU 1 park */
    li 7, 0x3000
    li 8, 1000
    mtctr 8
2:  stw 8, 4(7)
    bdnz 2b
    li 8, 0x5a
    stw 8, 0(7)
3:  hcall HC_EV_IDLE
    b 3b
""", smp=2)
    assert b.result.code == 0x5A
    parks = [e for e in b.of(CpuParked) if e.cpu == 1 and e.reason is ParkReason.WAIT_STORE]
    assert len(parks) == 1
    assert [e.by for e in b.of(CpuWoken) if e.cpu == 1] == ["store"]


async def test_a_fw_cfg_dma_into_the_watched_word_wakes_the_cpu() -> None:
    # CPU 0 parks on 0x4000.  CPU 1 DMAs the command line ("wxyz") to 0x4000 through fw_cfg.
    b = await boot("""
_start:
    cmpwi 3, 0
    bne dma_cpu
    li 3, 0x4000
    li 4, 0
    hcall HC_FW_WAIT_STORE
    mr 3, 4
    hcall HC_FW_POWEROFF
dma_cpu:
    lis 6, 0x100
    mtctr 6
1:  bdnz 1b
    li 7, 0x5000             /* descriptor: SELECT|READ of CMDLINE_DATA, 4 bytes to 0x4000 */
    li32 8, 0x0015000a
    stw 8, 0(7)
    li 8, 4
    stw 8, 4(7)
    li 8, 0
    stw 8, 8(7)
    li 8, 0x4000
    stw 8, 12(7)
    li32 9, FWCFG_BASE
    li 8, 0
    stw 8, 0x10(9)
    stw 7, 0x14(9)          /* the low half starts the transfer */
2:  hcall HC_EV_IDLE
    b 2b
""", smp=2, append="wxyz")
    assert b.result.code == int.from_bytes(b"wxyz", "big")


#: Stores of every shape into a watched page (the spin-table page, always watched), compared
#: with the same stores into an ordinary page: byte-reversed (Linux's le32/le16 writes),
#: store-multiple, reservation, byte and halfword stores.
STORE_SHAPES = """
_start:
    li32 9, {base}
    li32 20, 0x01020304
    li32 21, 0x05060708
    li32 22, 0x090A0B0C
    stmw 20, 0(9)
    li32 4, 0x11223344
    stwbrx 4, 0, 9
    li32 4, 0xAABB
    addi 10, 9, 4
    sthbrx 4, 0, 10
    addi 11, 9, 16
    lwarx 5, 0, 11
    li32 4, 0xCAFEBABE
    stwcx. 4, 0, 11
    li 4, 0x7E
    stb 4, 21(9)
    sth 4, 22(9)
    li 3, 0
    hcall HC_FW_POWEROFF
"""


async def test_every_kind_of_store_lands_in_a_watched_page_as_anywhere_else() -> None:
    ram = 256 * 1024 * 1024
    watched, plain = ram - 4096 + 0x800, 0x0010_0000
    seen = []
    for base in (watched, plain):
        b = await boot(STORE_SHAPES.format(base=base))
        assert b.result.code == 0, b.result.reason
        seen.append(b.machine.ram.read(base, 24))
    assert seen[0] == seen[1]
    assert seen[0][:8] == bytes.fromhex("44332211bbaa0708")  # reversed bytes stay reversed
