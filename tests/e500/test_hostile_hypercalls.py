"""A hostile guest: every hypercall with garbage arguments, unknown tokens, impossible releases.

The guest is a generic interpreter: a table of rows (r3..r11) in its ROM, one ``sc 1`` per row,
r3..r11 stored back to RAM after each call.  The test writes the table (edge values and seeded
random garbage), and an oracle written from PLATFORM.md says what every row must return: the
documented status, the documented outputs, and every other register unchanged.  Nothing may
fault, hang or raise on the host.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import trio

from machine.board import E500Machine
from machine.cpu.vcpu import unpack_bytes_be
from machine.events import CpuReleased, GuestFault, Hypercall, ParkReason
from machine.platform import (
    BYTE_CHANNEL_MAX,
    CONSOLE_TX_SPACE,
    FWCFG_BASE,
    ROM_BASE,
    EvStatus,
    Hcall,
    MiB,
)

from .guests import Boot, boot

RAM = 64 * MiB
SMP = 2
#: Where the guest stores each row's r3..r11 after the call.
RESULTS = 0x0010_0000
#: A RAM range nobody writes: FW_WAIT_STORE rows point here, with a non-zero expected value,
#: so they return at once (a parking row would hang the interpreter).
QUIET = 0x0200_0000
ROW_WORDS = 9  # r3..r11
U32 = 0xFFFF_FFFF
POWEROFF_CODE = 0xDEAD_BEEF
#: Rows that park the CPU; the host wakes each with console input.
IDLE_ROWS = 3

#: Tokens the garbage table calls: everything except the ones that park or stop the machine.
CALLED = [Hcall.EV_BYTE_CHANNEL_SEND, Hcall.EV_BYTE_CHANNEL_RECEIVE, Hcall.EV_BYTE_CHANNEL_POLL,
          Hcall.FW_CPU_RELEASE, Hcall.FW_WAIT_STORE, Hcall.FW_GET_TIME]
KNOWN = {int(h) for h in Hcall}
#: Tokens next to real ones: other numbers of both vendors, vendor 0, swapped halves, all ones.
NEAR_TOKENS = sorted(
    ({(v << 16) | n for v in (0, 1, 2, 0x4657, 0x4658, 0x5746, 0xFFFF) for n in range(0, 20)}
     | {(int(h) & 0xFFFF) << 16 | int(h) >> 16 for h in Hcall}
     | {int(h) | 0x8000_0000 for h in Hcall} | {U32, 0x8000_0000, 0x0001_0000})
    - KNOWN
)

INTERPRETER = f"""
_start:
    cmpwi 3, 0
    bne idle_forever
    bl 1f
1:  mflr 30
    addi 30, 30, table - 1b
    li32 31, {RESULTS:#x}
    li32 29, nrows
row:
    cmpwi 29, 0
    beq done
    lwz 3, 0(30)
    lwz 4, 4(30)
    lwz 5, 8(30)
    lwz 6, 12(30)
    lwz 7, 16(30)
    lwz 8, 20(30)
    lwz 9, 24(30)
    lwz 10, 28(30)
    lwz 11, 32(30)
    sc 1
    stw 3, 0(31)
    stw 4, 4(31)
    stw 5, 8(31)
    stw 6, 12(31)
    stw 7, 16(31)
    stw 8, 20(31)
    stw 9, 24(31)
    stw 10, 28(31)
    stw 11, 32(31)
    addi 30, 30, 36
    addi 31, 31, 36
    addi 29, 29, -1
    b row
done:
    li32 3, {POWEROFF_CODE:#x}
    li32 4, 0x44444444
    hcall HC_FW_POWEROFF
idle_forever:
    hcall HC_EV_IDLE
    b idle_forever
    .balign 4
table:
"""


@dataclass(frozen=True)
class Row:
    regs: tuple[int, ...]  # r3..r11 going in

    @property
    def token(self) -> int:
        return self.regs[8]


def _garbage(rng: random.Random) -> int:
    return rng.choice([0, 1, 2, 3, 4, 15, 16, 17, 0x7FFF_FFFF, 0x8000_0000, U32, U32 - 3,
                       rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(8)])


def garbage_rows(seed: int, n: int) -> list[Row]:
    """``n`` random rows plus every edge the platform documents, in a seeded shuffle."""
    rng = random.Random(seed)
    rows: list[list[int]] = []
    send, recv, poll = (Hcall.EV_BYTE_CHANNEL_SEND, Hcall.EV_BYTE_CHANNEL_RECEIVE,
                        Hcall.EV_BYTE_CHANNEL_POLL)
    for handle in (0, 1, 2, U32, 0x8000_0000):
        for count in (0, 1, 4, 15, 16, 17, 0x7FFF_FFFF, U32):
            rows.append([handle, count, *(rng.getrandbits(32) for _ in range(6)), send])
            rows.append([handle, count, *(rng.getrandbits(32) for _ in range(6)), recv])
        rows.append([handle, *(rng.getrandbits(32) for _ in range(7)), poll])
    for target in (0, SMP, SMP + 1, 31, 32, 33, 0x7FFF_FFFF, 0x8000_0000, U32):
        rows.append([target, rng.getrandbits(32), rng.getrandbits(32),
                     *(rng.getrandbits(32) for _ in range(5)), Hcall.FW_CPU_RELEASE])
    for addr in (0, 2, 4, RAM - 4, RAM - 2, RAM, RAM + 4, QUIET, QUIET + 1, QUIET + 3,
                 FWCFG_BASE, FWCFG_BASE + 0x10, ROM_BASE, ROM_BASE + 0x100, U32 - 3, U32,
                 0x8000_0000, 0xE000_0000):
        rows.append([addr, rng.getrandbits(32) | 1, *(rng.getrandbits(32) for _ in range(6)),
                     Hcall.FW_WAIT_STORE])
    for token in NEAR_TOKENS:
        rows.append([_garbage(rng) for _ in range(8)] + [token])
    for _ in range(n):
        if rng.random() < 0.5:
            token = rng.getrandbits(32)
            while token in KNOWN:
                token = rng.getrandbits(32)
        else:
            token = rng.choice(CALLED)
        regs = [_garbage(rng) for _ in range(8)]
        if token == Hcall.FW_CPU_RELEASE and 0 < regs[0] < SMP:
            regs[0] = SMP  # releasing the real CPU 1 is the release-storm test's business
        if token == Hcall.FW_WAIT_STORE:
            regs[1] |= 1  # never equal to the (zero) word it names: no row parks
            if rng.random() < 0.4:
                regs[0] = QUIET + rng.randrange(0, MiB)
        rows.append([*regs, token])
    rng.shuffle(rows)
    return [Row(tuple(r & U32 for r in regs)) for regs in rows]


def table_source(rows: list[Row]) -> str:
    lines = [f"    .long {', '.join(f'{v:#x}' for v in row.regs)}" for row in rows]
    return INTERPRETER + "\n".join(lines) + f"\n    .set nrows, {len(rows)}\n"


@dataclass
class Expected:
    regs: list[int | None]  # None: not specified (time, tx space)
    printed: bytes = b""


def expected(row: Row) -> Expected:
    """What PLATFORM.md and DESIGN.md say the row returns (r3..r11)."""
    r = list(row.regs)
    out: list[int | None] = list(r)
    token, handle = row.token, r[0]
    printed = b""

    def status(s: EvStatus) -> None:
        out[0] = int(s)

    if token == Hcall.EV_BYTE_CHANNEL_SEND:
        if handle != 0 or r[1] > BYTE_CHANNEL_MAX:
            status(EvStatus.EINVAL)
            out[1] = 0
        else:
            status(EvStatus.SUCCESS)
            printed = unpack_bytes_be(r[2:6], r[1])
    elif token == Hcall.EV_BYTE_CHANNEL_RECEIVE:
        if handle != 0:
            status(EvStatus.EINVAL)
            out[1] = 0
        else:  # no input has been typed: nothing comes back
            status(EvStatus.SUCCESS)
            out[1:6] = [0, 0, 0, 0, 0]
    elif token == Hcall.EV_BYTE_CHANNEL_POLL:
        if handle != 0:
            status(EvStatus.EINVAL)
        else:
            status(EvStatus.SUCCESS)
            out[1], out[2] = 0, None
    elif token == Hcall.FW_CPU_RELEASE:
        status(EvStatus.EINVAL)  # the caller itself, or a CPU that does not exist
    elif token == Hcall.FW_WAIT_STORE:
        if handle % 4:
            status(EvStatus.EINVAL)
        elif not handle + 4 <= RAM:
            status(EvStatus.EFAULT)
        else:
            status(EvStatus.SUCCESS)
            out[1] = 0  # the word, which differs from the expected value
    elif token == Hcall.FW_GET_TIME:
        status(EvStatus.SUCCESS)
        out[1], out[2] = None, None
    else:
        status(EvStatus.UNIMPLEMENTED)
    return Expected(out, printed)


async def run_garbage(rows: list[Row]) -> tuple[Boot, list[list[int]]]:
    """Boot the interpreter over ``rows`` (then IDLE rows, then power-off); the results."""
    idle = [Row((0x1111 * i, *(0x2222_2222 + i for _ in range(7)), Hcall.EV_IDLE))
            for i in range(IDLE_ROWS)]

    async def wake_idle(m: E500Machine) -> None:
        while m.result is None:  # console input is what ends an EV_IDLE
            if m.cpu_parked(0) is ParkReason.IDLE:
                m.console.feed(b"!")
            await trio.sleep(0.005)

    b = await boot(table_source(rows + idle), smp=SMP, ram_size=RAM, timeout=60,
                   during=wake_idle)
    raw = b.machine.ram.read(RESULTS, 4 * ROW_WORDS * (len(rows) + IDLE_ROWS))
    words = list(struct.unpack(f">{len(raw) // 4}I", raw))
    results = [words[i : i + ROW_WORDS] for i in range(0, len(words), ROW_WORDS)]
    return b, results


def check_garbage(b: Boot, rows: list[Row], results: list[list[int]]) -> int:
    """Assert every row's outcome; returns how many rows were checked."""
    assert not b.of(GuestFault), b.result.reason
    assert b.result.code == POWEROFF_CODE, b.result.reason
    printed = b""
    last_time = 0
    assert len(results) == len(rows) + IDLE_ROWS
    for i, (row, got) in enumerate(zip(rows, results, strict=False)):
        want = expected(row)
        for reg, (g, w) in enumerate(zip(got, want.regs, strict=True), start=3):
            assert w is None or g == w, (
                f"row {i} token {row.token:#010x} args {[hex(v) for v in row.regs]}:"
                f" r{reg} = {g:#x}, expected {w:#x}")
        printed += want.printed
        if row.token == Hcall.EV_BYTE_CHANNEL_POLL and got[0] == 0:
            assert got[2] <= CONSOLE_TX_SPACE
        if row.token == Hcall.FW_GET_TIME:
            now = got[1] << 32 | got[2]
            assert now >= last_time, f"row {i}: FW_GET_TIME went backwards"
            last_time = now
    for i, got in enumerate(results[len(rows):]):  # EV_IDLE: SUCCESS, nothing else touched
        assert got == [0, *(0x2222_2222 + i for _ in range(7)), Hcall.EV_IDLE]
    assert b.per_cpu.get(0, b"") == printed
    assert printed, "no row printed anything: the table misses the success path"
    seen = {got[0] for got in results[: len(rows)]}
    assert {EvStatus.SUCCESS, EvStatus.EINVAL, EvStatus.EFAULT, EvStatus.UNIMPLEMENTED} <= seen
    calls = [e for e in b.of(Hypercall) if e.cpu == 0]
    assert len(calls) == len(rows) + IDLE_ROWS + 1
    assert not b.of(CpuReleased)
    return len(rows)


async def test_every_hypercall_with_garbage_returns_the_documented_status() -> None:
    rows = garbage_rows(seed=7, n=1500)
    b, results = await run_garbage(rows)
    assert check_garbage(b, rows, results) > 1500


RELEASE_STORM = """
_start:
    cmpwi 3, 0
    bne idle
    li 20, 1
release_all:                      /* every CPU 1..N-1, twice in a row */
    mr 3, 20
    li32 4, entry
    mr 5, 20
    hcall HC_FW_CPU_RELEASE
    mr 21, 3
    mr 3, 20
    li32 4, entry
    mr 5, 20
    hcall HC_FW_CPU_RELEASE
    slwi 24, 20, 3
    li32 25, STATUS
    add 25, 25, 24
    stw 21, 0(25)
    stw 3, 4(25)
    addi 20, 20, 1
    cmpwi 20, NCPUS
    blt release_all
    li 26, 0                      /* then CPUs that do not exist, and itself */
    li32 27, BOGUS
bogus:
    slwi 24, 26, 2
    lwzx 3, 27, 24
    li32 4, entry
    li 5, 0
    hcall HC_FW_CPU_RELEASE
    li32 25, BOGUS_STATUS
    stwx 3, 25, 24
    addi 26, 26, 1
    cmpwi 26, NBOGUS
    blt bogus
    li 20, 1
wait_all:                         /* each CPU enters once per successful release */
    slwi 24, 20, 3
    li32 25, STATUS
    add 25, 25, 24
    li 23, 0
    lwz 21, 0(25)
    cmpwi 21, 0
    bne 1f
    addi 23, 23, 1
1:  lwz 21, 4(25)
    cmpwi 21, 0
    bne 2f
    addi 23, 23, 1
2:  slwi 24, 20, 2
    li32 25, COUNTERS
    add 3, 25, 24
3:  lwz 4, 0(3)
    cmpw 4, 23
    beq 4f
    hcall HC_FW_WAIT_STORE
    slwi 24, 20, 2
    li32 25, COUNTERS
    add 3, 25, 24
    b 3b
4:  addi 20, 20, 1
    cmpwi 20, NCPUS
    blt wait_all
    li 3, 0
    hcall HC_FW_POWEROFF
entry:                            /* r3 = the CPU's index (the release's r5) */
    slwi 4, 3, 2
    li32 5, COUNTERS
    lwzx 6, 5, 4
    addi 6, 6, 1
    stwx 6, 5, 4
idle:
    hcall HC_EV_IDLE
    b idle
"""

STATUS, COUNTERS, BOGUS, BOGUS_STATUS = 0x20_0000, 0x21_0000, 0xFFF8_0000, 0x22_0000
BOGUS_TARGETS = [0, 32, 33, 100, 0x7FFF_FFFF, 0x8000_0000, U32 - 1, U32]


async def test_releasing_every_cpu_twice_and_cpus_that_do_not_exist() -> None:
    """Two releases back to back race the target taking the first: the second is SUCCESS
    (taken after the first) or EV_INVALID_STATE (still latched), never lost — each CPU enters
    exactly once per SUCCESS.  Targets that do not exist, and the caller, get EV_EINVAL."""
    n = 32
    symbols = dict(NCPUS=n, STATUS=STATUS, COUNTERS=COUNTERS, BOGUS=BOGUS,
                   BOGUS_STATUS=BOGUS_STATUS, NBOGUS=len(BOGUS_TARGETS))
    consts = "".join(f"    .set {name}, {value:#x}\n" for name, value in symbols.items())
    table = ("\n    .org 0x80000\n    .long " + ", ".join(f"{t:#x}" for t in BOGUS_TARGETS) + "\n")
    b = await boot(consts + RELEASE_STORM + table, smp=n, timeout=30)
    assert b.result.code == 0, b.result.reason
    ram = b.machine.ram
    released = [e.cpu for e in b.of(CpuReleased)]
    for cpu in range(1, n):
        first, second = struct.unpack(">II", ram.read(STATUS + 8 * cpu, 8))
        assert first == EvStatus.SUCCESS
        assert second in (EvStatus.SUCCESS, EvStatus.INVALID_STATE)
        entries = ram.read_u32(COUNTERS + 4 * cpu)
        assert entries == (first == 0) + (second == 0) == released.count(cpu)
    bogus = struct.unpack(f">{len(BOGUS_TARGETS)}I",
                          ram.read(BOGUS_STATUS, 4 * len(BOGUS_TARGETS)))
    assert bogus == (EvStatus.EINVAL,) * len(BOGUS_TARGETS)
    assert not b.of(GuestFault)
