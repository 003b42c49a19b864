"""Many CPUs at once: a console flood, 32 CPUs hammering fw_cfg DMA, a guest that never stops.

The flood checks the byte channel's promise per CPU: every record a CPU sent arrives, once, in
the order that CPU sent it, however the CPUs' calls interleave and however often back-pressure
(EV_EAGAIN) makes them retry.  The DMA hammer checks that a SELECT|READ descriptor is one atomic
transfer: with 32 CPUs selecting different files at once, each CPU's buffer holds exactly its
file, then zeros.  The issue asks for a 100 MB flood; the suite floods ``FLOOD_BYTES`` and
``bench/bench_fuzz.py`` runs the full 100 MB and reports how long it took.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from fwcfg import FwCfgOption
from machine.asm import assemble
from machine.board import E500Machine
from machine.events import GuestFault
from machine.platform import MiB

from .guests import PUTS, boot

pytestmark = pytest.mark.cross


def symbols(source: str, *names: str) -> list[int]:
    """Addresses of ``names`` in the guest ``source`` (assembled as :func:`boot` does)."""
    with assemble(source).open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(table, SymbolTableSection)
        found = [table.get_symbol_by_name(name) for name in names]
        return [int(sym[0]["st_value"]) for sym in found if sym]

#: Bytes the suite's flood prints in all (the bench prints 100 MB).
FLOOD_BYTES = 1 * MiB
RECORD = 16  # one EV_BYTE_CHANNEL_SEND: r5 = cpu, r6 = n, r7 = ~n, r8 = "\n\n\n\n"
FLOOD_DONE = 0x10_0000
EAGAIN = 4

FLOOD = """
_start:
    mr 20, 3                      /* this CPU's index */
    li 21, 0                      /* record number */
    li32 22, RECORDS
    li 29, 0                      /* EV_EAGAIN answers seen */
next:
    cmpw 21, 22
    beq finished
send:
    li 3, 0
    li 4, 16
    mr 5, 20
    mr 6, 21
    not 7, 21
    li32 8, 0x0a0a0a0a
    hcall HC_EV_BYTE_CHANNEL_SEND
    cmpwi 3, EAGAIN_STATUS
    bne 1f
    addi 29, 29, 1
    b send                        /* the host has not drained the channel yet: retry */
1:
    cmpwi 3, 0
    bne failed
    cmpwi 4, 16
    bne failed
    addi 21, 21, 1
    b next
finished:
    slwi 23, 20, 2
    li32 24, DONE + 0x100
    stwx 29, 24, 23
    li32 24, DONE
    li 25, 1
    stwx 25, 24, 23               /* this CPU is done */
    cmpwi 20, 0
    bne idle
    li 26, 1                      /* CPU 0 waits for everyone's flag, then powers off */
wait:
    cmpwi 26, NCPUS
    beq all_done
    slwi 23, 26, 2
    add 3, 24, 23
    lwz 4, 0(3)
    cmpwi 4, 0
    bne 1f
    hcall HC_FW_WAIT_STORE        /* r3 = the flag, r4 = 0: sleep until it is written */
    b wait
1:  addi 26, 26, 1
    b wait
all_done:
    li 3, 0
    hcall HC_FW_POWEROFF
failed:
    li 3, 99
    hcall HC_FW_POWEROFF
idle:
    hcall HC_EV_IDLE
    b idle
"""


@dataclass
class Flood:
    code: int
    reason: str
    seconds: float
    per_cpu: dict[int, bytearray]
    order_chunks: int
    eagain: list[int]


def flood_source(cpus: int, records: int) -> str:
    return (f"    .set RECORDS, {records}\n    .set NCPUS, {cpus}\n"
            f"    .set DONE, {FLOOD_DONE:#x}\n    .set EAGAIN_STATUS, {EAGAIN}\n" + FLOOD)


def expected_stream(cpu: int, records: int) -> bytes:
    return b"".join(struct.pack(">IIII", cpu, n, ~n & 0xFFFF_FFFF, 0x0A0A0A0A)
                    for n in range(records))


async def run_flood(cpus: int, total_bytes: int, *, stall: bool = False,
                    timeout: float = 600) -> Flood:
    """Every CPU prints ``total_bytes / cpus`` bytes of numbered records at once.

    With ``stall`` the host stops reading at the first delivery until the channel is full, so
    the guests see EV_EAGAIN and retry.  No event subscriber is attached: at millions of hypercalls,
    recording an event per call would measure the event hub, not the console."""
    records = total_bytes // cpus // RECORD
    m = E500Machine(bios=Path(assemble(flood_source(cpus, records))), smp=cpus)
    per_cpu: dict[int, bytearray] = {i: bytearray() for i in range(cpus)}
    chunks = 0

    def on_output(cpu: int, data: bytes) -> None:
        nonlocal chunks
        per_cpu[cpu].extend(data)
        chunks += 1
        if stall and chunks == 1:
            # Stop reading until the channel has been full for 50 ms, so the guests surely
            # try to send into it (a stall that ends the instant it fills can be emptied by
            # the next delivery before any guest runs: the test was flaky that way).
            deadline = time.monotonic() + 10
            full_since: float | None = None
            while time.monotonic() < deadline:
                if m.console.poll()[1] < RECORD:
                    full_since = full_since or time.monotonic()
                    if time.monotonic() - full_since > 0.05:
                        break
                time.sleep(0.001)

    m.console.add_listener(on_output)
    start = time.monotonic()
    try:
        result = await m.run(timeout=timeout)
        seconds = time.monotonic() - start
        eagain = list(struct.unpack(f">{cpus}I", m.ram.read(FLOOD_DONE + 0x100, 4 * cpus)))
    finally:
        m.close()
    return Flood(result.code, result.reason, seconds, per_cpu, chunks, eagain)


def check_flood(f: Flood, cpus: int, total_bytes: int) -> None:
    records = total_bytes // cpus // RECORD
    assert f.code == 0, f.reason
    for cpu in range(cpus):
        got = bytes(f.per_cpu[cpu])
        want = expected_stream(cpu, records)
        if got != want:
            n = next((i for i in range(0, min(len(got), len(want)), RECORD)
                      if got[i : i + RECORD] != want[i : i + RECORD]), min(len(got), len(want)))
            raise AssertionError(
                f"cpu {cpu}: {len(got)} bytes, expected {len(want)}; first difference at record"
                f" {n // RECORD}: {got[n : n + RECORD].hex()} vs {want[n : n + RECORD].hex()}")


async def test_console_flood_from_several_cpus_loses_and_reorders_nothing_per_cpu() -> None:
    cpus = 4
    f = await run_flood(cpus, FLOOD_BYTES, stall=True)
    check_flood(f, cpus, FLOOD_BYTES)
    assert f.order_chunks > cpus  # the CPUs' output did interleave
    assert sum(f.eagain) > 0  # and the channel filled up: back-pressure was exercised


#: Files the DMA hammer reads: word j of file f is (f + 1) << 24 | j.
PATTERN_FILES = 4
PATTERN_WORDS = [256 * (f + 1) + 3 for f in range(PATTERN_FILES)]
TAIL = 64  # bytes read past each file's end: they must be zeros
DESC, BUF, RESULT = 0x10_0000, 0x20_0000, 0x30_0000
BUF_STRIDE = 0x2000
ROUNDS = 60

HAMMER = """
_start:
    mr 20, 3                      /* CPU index */
    andi. 21, 20, 3               /* file number f = index % 4 */
    slwi 22, 20, 6
    li32 23, DESC
    add 23, 23, 22                /* this CPU's descriptor */
    mulli 22, 20, BUF_STRIDE
    li32 24, BUF
    add 24, 24, 22                /* this CPU's buffer */
    li32 25, FILE_WORDS_TABLE
    slwi 22, 21, 2
    lwzx 26, 25, 22               /* words in file f */
    li 27, 0                      /* round */
    li 28, 0                      /* bad rounds */
    cmpwi 20, NOISE_FROM
    blt round
noise:                            /* the other CPUs select and read through the registers */
    li32 6, FWCFG_BASE
    addi 3, 21, FIRST_KEY
    sth 3, 8(6)                   /* the selector (big-endian) */
    li 11, 64
    mtctr 11
1:  lwz 10, 0(6)                  /* the data register, 4 bytes at a time */
    bdnz 1b
    addi 27, 27, 1
    cmpwi 27, ROUNDS
    blt noise
    b report
round:
    addi 3, 21, FIRST_KEY         /* control: (key << 16) | SELECT | READ */
    slwi 3, 3, 16
    ori 3, 3, 0x0a
    stw 3, 0(23)
    slwi 4, 26, 2
    addi 4, 4, TAIL_BYTES
    stw 4, 4(23)                  /* length: the file and TAIL_BYTES past it */
    li 5, 0
    stw 5, 8(23)
    stw 24, 12(23)
    li32 6, FWCFG_BASE
    stw 23, 0x14(6)               /* start the transfer (the high half stays 0) */
    lwz 7, 0(23)
    cmpwi 7, 0                    /* the status word: 0, not ERROR */
    bne bad
    addi 8, 21, 1
    slwi 8, 8, 24                 /* expected word: (f + 1) << 24 | j */
    mtctr 26
    mr 9, 24
1:  lwz 10, 0(9)
    cmpw 10, 8
    bne bad
    addi 8, 8, 1
    addi 9, 9, 4
    bdnz 1b
    li 11, TAIL_BYTES / 4
    mtctr 11
2:  lwz 10, 0(9)
    cmpwi 10, 0
    bne bad
    addi 9, 9, 4
    bdnz 2b
    b good
bad:
    addi 28, 28, 1
good:
    li32 11, 0x55555555           /* scribble the buffer so the next round is fresh */
    stw 11, 0(24)
    addi 27, 27, 1
    cmpwi 27, ROUNDS
    blt round
report:
    li32 12, RESULT
    slwi 22, 20, 3
    add 12, 12, 22
    stw 28, 0(12)                 /* bad rounds */
    li 13, 1
    stw 13, 4(12)                 /* done flag, written last */
    cmpwi 20, 0
    bne idle
    li 26, 1
wait:
    cmpwi 26, NCPUS
    beq all_done
    slwi 22, 26, 3
    add 3, 12, 22
    addi 3, 3, 4
    lwz 4, 0(3)
    cmpwi 4, 0
    bne 3f
    hcall HC_FW_WAIT_STORE
    b wait
3:  addi 26, 26, 1
    b wait
all_done:
    li 3, 0
    hcall HC_FW_POWEROFF
idle:
    hcall HC_EV_IDLE
    b idle
    .balign 4
FILE_WORDS_TABLE:
"""


def pattern(f: int) -> bytes:
    return b"".join(struct.pack(">I", (f + 1) << 24 | j) for j in range(PATTERN_WORDS[f]))


async def test_32_cpus_hammering_fw_cfg_dma_each_see_their_own_file(tmp_path: Path) -> None:
    """CPUs 0..15 read their file with SELECT|READ descriptors and check every byte; CPUs
    16..31 keep changing the selector and reading the data register meanwhile.  A descriptor
    is one atomic transfer, so none of that may leak into a DMA'd buffer."""
    cpus, noise_from = 32, 16
    options = []
    for f in range(PATTERN_FILES):
        path = tmp_path / f"p{f}"
        path.write_bytes(pattern(f))
        options.append(FwCfgOption(name=f"opt/p{f}", file=str(path)))
    first_key = 0x21  # after etc/fdt, in name order
    symbols = dict(DESC=DESC, BUF=BUF, RESULT=RESULT, BUF_STRIDE=BUF_STRIDE, ROUNDS=ROUNDS,
                   NCPUS=cpus, TAIL_BYTES=TAIL, FIRST_KEY=first_key, NOISE_FROM=noise_from)
    source = ("".join(f"    .set {k}, {v:#x}\n" for k, v in symbols.items()) + HAMMER
              + "    .long " + ", ".join(str(w) for w in PATTERN_WORDS) + "\n")
    b = await boot(source, smp=cpus, fw_cfg=options, timeout=60)
    assert [b.machine.fwcfg.key_of(f"opt/p{f}") for f in range(PATTERN_FILES)] == [
        first_key + f for f in range(PATTERN_FILES)]
    assert b.result.code == 0, b.result.reason
    assert not b.of(GuestFault)
    ram = b.machine.ram
    for cpu in range(cpus):
        bad, done = struct.unpack(">II", ram.read(RESULT + 8 * cpu, 8))
        assert (bad, done) == (0, 1), f"cpu {cpu}: {bad} of {ROUNDS} rounds saw wrong bytes"
        if cpu >= noise_from:
            continue
        f = cpu % PATTERN_FILES
        buf = ram.read(BUF + BUF_STRIDE * cpu + 4, 4 * PATTERN_WORDS[f] - 4 + TAIL)
        assert buf == pattern(f)[4:] + bytes(TAIL)
    stats = b.machine.fwcfg.statistics()
    assert stats.dma_transfers == noise_from * ROUNDS  # each trigger store acts once
    assert stats.data_reads >= (cpus - noise_from) * ROUNDS * 64
    assert stats.dma_errors == 0


async def test_a_timeout_says_where_every_cpu_was() -> None:
    """One CPU loops in RAM, one loops in ROM, the others are parked: the message names each
    CPU and its program counter."""
    source = """
_start:
    cmpwi 3, 1
    beq rom_loop
    cmpwi 3, 0
    bne parked
    li32 4, 0x48000000            /* "b ." copied to RAM at 0x4000, then jumped to */
    li 5, 0x4000
    stw 4, 0(5)
    mtctr 5
    bctr
rom_loop:
    b rom_loop
parked:
    hcall HC_EV_IDLE
    b parked
"""
    b = await boot(source, smp=3, timeout=0.5)
    assert b.result.code == 124
    reason = b.result.reason
    assert reason.startswith("timeout after 0.5 s: ")
    rom_loop, parked = symbols(PUTS + source, "rom_loop", "parked")
    assert "cpu 0 at pc 0x00004000" in reason
    assert f"cpu 1 at pc {rom_loop:#010x}" in reason
    assert f"cpu 2 parked in EV_IDLE at pc {parked + 12:#010x}" in reason  # after its sc 1
