"""The GDB stub, driven packet by packet over TCP against tiny multi-CPU guests.

Each scenario boots an assembled guest behind :func:`machine.debug.gdbstub.run_with_gdb` and talks
the remote protocol to it the way gdb does (``tests/test_gdb_multiarch.py`` runs gdb itself).
Addresses come from the guest's own symbols.
"""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from elftools.elf.elffile import ELFFile

from fwcfg import ConfigError
from machine.asm import assemble, have_cross_tools
from machine.board import E500Machine, RunResult
from machine.debug.gdb_packets import Packet, PacketReader, frame
from machine.debug.gdb_target import REG_NAMES, Reg
from machine.debug.gdbstub import parse_gdb_address, run_with_gdb
from machine.platform import ROM_BASE

pytestmark = pytest.mark.skipif(not have_cross_tools(), reason="needs powerpc-linux-gnu-as")

DATA = 0x10000

#: CPU 0 counts a while (so CPU 1 is surely parked), stores 0x55 at DATA, releases CPU 1 to
#: `secondary` with r3 = 0x77, waits for CPU 1 to store its r3 at DATA+4 and powers off
#: with that value as the code.  CPU 1 idles until released.
RELEASE_GUEST = f"""
_start:
    cmpwi 3, 0
    bne idle
    li32 29, 20000
count:
    addi 29, 29, -1
    cmpwi 29, 0
    bne count
    li32 30, {DATA:#x}
    li 31, 0x55
store:
    stw 31, 0(30)
    li 3, 1
    li32 4, secondary
    li 5, 0x77
    hcall HC_FW_CPU_RELEASE
spin:
    lwz 6, 4(30)
    cmpwi 6, 0
    beq spin
    mr 3, 6
    hcall HC_FW_POWEROFF
idle:
    hcall HC_EV_IDLE
after_idle:
    b idle
secondary:
    li32 30, {DATA:#x}
    stw 3, 4(30)
halt:
    b halt
"""

FOREVER_GUEST = """
_start:
    li 5, 0
loop:
    addi 5, 5, 1
    b loop
"""

FAULT_GUEST = """
_start:
    lis 4, 0x8000
bad_load:
    lwz 3, 0(4)
    b _start
"""


def symbols(elf: Path) -> dict[str, int]:
    with elf.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert symtab is not None
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


class Rsp:
    """A minimal remote-protocol client: what gdb does, one packet at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._reader = PacketReader()
        self._packets: list[bytes] = []
        self.raw: bytearray = bytearray()  # every byte received, for ack checks

    async def send(self, payload: str | bytes) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        await self.stream.send_all(frame(data))

    async def receive(self) -> str:
        while not self._packets:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the stub closed the connection")
            self.raw += data
            self._packets += [i.payload for i in self._reader.feed(data) if isinstance(i, Packet)]
        return self._packets.pop(0).decode("latin-1")

    async def ask(self, payload: str | bytes) -> str:
        await self.send(payload)
        with trio.fail_after(10):
            return await self.receive()

    async def reg(self, n: int, thread: int | None = None) -> int:
        if thread is not None:
            assert await self.ask(f"Hg{thread:x}") == "OK"
        return int(await self.ask(f"p{n:x}"), 16)

    async def closed(self) -> bool:
        """True once the stub closes the connection, having sent nothing but acks."""
        with trio.fail_after(10):
            while data := await self.stream.receive_some(4096):
                if data.strip(b"+"):
                    return False
            return True


@dataclass
class Debugged:
    gdb: Rsp
    machine: E500Machine
    sym: dict[str, int]
    result: list[RunResult] = field(default_factory=list)


@asynccontextmanager
async def debugged(source: str, *, smp: int = 1, wait: bool = True,
                   timeout: float = 20) -> AsyncIterator[Debugged]:
    elf = assemble(source)
    m = E500Machine(bios=elf, smp=smp)
    box: list[RunResult] = []

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        box.append(await run_with_gdb(m, "tcp:127.0.0.1:0", wait_for_debugger=wait,
                                      timeout=timeout, task_status=task_status))

    try:
        async with trio.open_nursery() as n:
            port = await n.start(run)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                d = Debugged(Rsp(stream), m, symbols(elf), box)
                yield d
            with trio.fail_after(timeout):
                while not box:
                    await trio.sleep(0.01)
    finally:
        m.close()


async def test_gdb_sees_the_e500_core_registers_and_one_stopped_thread_per_cpu() -> None:
    async with debugged(RELEASE_GUEST, smp=2) as d:
        gdb = d.gdb
        features = await gdb.ask("qSupported:multiprocess+;swbreak+;xmlRegisters=i386")
        assert "qXfer:features:read+" in features.split(";")
        assert b"+" in gdb.raw  # acknowledged, since no-ack mode was not asked for
        assert await gdb.ask("QStartNoAckMode") == "OK"

        xml, offset = b"", 0
        while True:  # in small pieces, as gdb does with a small PacketSize
            chunk = await gdb.ask(f"qXfer:features:read:target.xml:{offset:x},80")
            xml += chunk[1:].encode("latin-1")
            offset += len(chunk) - 1
            if chunk[0] == "l":
                break
            assert chunk[0] == "m"
        target = ET.fromstring(xml)
        assert target.findtext("architecture") == "powerpc:e500"
        (feature,) = target.findall("feature")
        assert feature.get("name") == "org.gnu.gdb.power.core"
        regs = feature.findall("reg")
        assert [r.get("name") for r in regs] == list(REG_NAMES)
        assert {r.get("bitsize") for r in regs} == {"32"}
        assert [int(r.get("regnum", "-1")) for r in regs] == list(range(len(REG_NAMES)))

        # -S: both CPUs wait at the reset vector, before their first instruction.
        assert await gdb.ask("?") == "T05thread:1;"
        assert await gdb.ask("qfThreadInfo") == "m1,2"
        assert await gdb.ask("qsThreadInfo") == "l"
        assert await gdb.ask("qC") == "QC1"
        assert await gdb.ask("qAttached") == "1"
        for thread in (1, 2):
            assert await gdb.ask(f"T{thread}") == "OK"
            assert await gdb.reg(Reg.PC, thread) == ROM_BASE
            assert await gdb.reg(3) == thread - 1  # the firmware's r3 = CPU index
            info = bytes.fromhex(await gdb.ask(f"qThreadExtraInfo,{thread:x}")).decode()
            assert info == f"CPU {thread - 1} [stopped]"
            everything = await gdb.ask("g")
            assert len(everything) == len(REG_NAMES) * 8
            assert int(everything[8 * Reg.PC : 8 * Reg.PC + 8], 16) == ROM_BASE
        assert await gdb.ask("T3") == "E16"
        assert await gdb.ask("D") == "OK"
    assert d.result[0].code == 0x77


async def test_breakpoint_on_the_released_cpu_then_step_memory_and_power_off() -> None:
    async with debugged(RELEASE_GUEST, smp=2) as d:
        gdb, sym = d.gdb, d.sym
        assert await gdb.ask(f"Z0,{sym['secondary']:x},4") == "OK"
        assert await gdb.ask("vCont?") == "vCont;c;C;s;S;t"
        assert await gdb.ask("vCont;c") == "T05thread:2;"
        assert await gdb.ask("qC") == "QC2"  # the stub follows the stopped thread
        assert await gdb.reg(Reg.PC) == sym["secondary"]
        assert await gdb.reg(3) == 0x77  # FW_CPU_RELEASE's r5
        # CPU 0 is stopped in its wait loop, all-stop.
        assert sym["spin"] <= await gdb.reg(Reg.PC, 1) <= sym["spin"] + 8
        assert await gdb.ask(f"m{DATA:x},4") == "00000055"

        # Step CPU 1 alone, twice: li32 is two instructions.
        assert await gdb.ask("Hg2") == "OK"
        for n in (1, 2):
            assert await gdb.ask("vCont;s:2") == "T05thread:2;"
            assert await gdb.reg(Reg.PC) == sym["secondary"] + 4 * n
        assert await gdb.reg(30) == DATA

        # Memory and register writes take effect: CPU 1 will store 0x42 instead of 0x77.
        assert await gdb.ask("P3=00000042") == "OK"
        assert await gdb.ask(f"X{DATA + 8:x},3:a}}\x03b") == "OK"  # binary, with an escape
        assert await gdb.ask(f"m{DATA + 8:x},3") == "612362"
        assert await gdb.ask(f"M{DATA + 12:x},2:beef") == "OK"
        assert await gdb.ask(f"m{DATA + 12:x},2") == "beef"
        assert await gdb.ask(f"z0,{sym['secondary']:x},4") == "OK"
        assert await gdb.ask("c") == "W42"
        assert await gdb.closed()
    assert d.result[0].code == 0x42


async def test_a_parked_cpu_is_a_thread_stopped_where_it_parked() -> None:
    async with debugged(RELEASE_GUEST, smp=2) as d:
        gdb, sym = d.gdb, d.sym
        await gdb.send("vCont;c:2")  # CPU 1 alone: it goes idle, which is no stop
        with trio.fail_after(10):
            while d.machine.cpu_parked(1) is None:
                await trio.sleep(0.001)
        await gdb.stream.send_all(b"\x03")
        with trio.fail_after(10):
            assert await gdb.receive() == "T02thread:1;"
        info = bytes.fromhex(await gdb.ask("qThreadExtraInfo,2")).decode()
        assert info == "CPU 1 [parked: idle]"
        assert await gdb.reg(Reg.PC, 2) == sym["after_idle"]  # just past its `sc 1`
        assert await gdb.reg(Reg.PC, 1) == ROM_BASE  # CPU 0 never ran
        # Stepping the parked CPU while CPU 0 runs: it steps once CPU 0 releases it.
        assert await gdb.ask("vCont;s:2;c") == "T05thread:2;"
        assert await gdb.reg(Reg.PC) == sym["secondary"] + 4
        assert await gdb.ask("D") == "OK"
    assert d.result[0].code == 0x77


async def test_single_steps_go_through_hypercalls_including_one_that_parks() -> None:
    async with debugged(RELEASE_GUEST, smp=2) as d:
        gdb, sym = d.gdb, d.sym
        # CPU 1 alone: cmpwi, bne, then `hcall HC_EV_IDLE` (lis, ori, sc 1) which parks it.
        for _ in range(5):
            assert await gdb.ask("vCont;s:2") == "T05thread:2;"
        assert await gdb.reg(Reg.PC) == sym["after_idle"]
        info = bytes.fromhex(await gdb.ask("qThreadExtraInfo,2")).decode()
        assert info == "CPU 1 [parked: idle]"
        # CPU 0 from `store` to past its FW_CPU_RELEASE: stw, li, lis, ori, li, lis, ori, sc.
        assert await gdb.ask(f"Z0,{sym['store']:x},4") == "OK"
        assert await gdb.ask("vCont;c:1") == "T05thread:1;"
        assert await gdb.ask(f"z0,{sym['store']:x},4") == "OK"
        for _ in range(8):
            assert await gdb.ask("vCont;s:1") == "T05thread:1;"
        assert await gdb.reg(Reg.PC) == sym["spin"]
        assert await gdb.reg(3) == 0  # EV_SUCCESS: CPU 1 is released...
        with trio.fail_after(10):  # (its task takes the release when trio next runs it)
            while d.machine.cpu_parked(1) is not None:
                await trio.sleep(0.001)
        assert await gdb.reg(Reg.PC, 2) == sym["secondary"]  # ...and held at its entry
        assert await gdb.reg(3) == 0x77
        info = bytes.fromhex(await gdb.ask("qThreadExtraInfo,2")).decode()
        assert info == "CPU 1 [stopped]"
        assert await gdb.ask("c") == "W77"
    assert d.result[0].code == 0x77


async def test_a_write_watchpoint_stops_before_the_store_and_the_step_completes_it() -> None:
    async with debugged(RELEASE_GUEST, smp=2) as d:
        gdb, sym = d.gdb, d.sym
        assert await gdb.ask(f"Z2,{DATA:x},4") == "OK"
        assert await gdb.ask("vCont;c") == f"T05thread:1;watch:{DATA:x};"
        assert await gdb.reg(Reg.PC) == sym["store"]
        assert await gdb.ask(f"m{DATA:x},4") == "00000000"  # not stored yet
        assert await gdb.ask(f"z2,{DATA:x},4") == "OK"
        assert await gdb.ask("vCont;s:1") == "T05thread:1;"
        assert await gdb.reg(Reg.PC) == sym["store"] + 4
        assert await gdb.ask(f"m{DATA:x},4") == "00000055"
        # A read watchpoint on the word CPU 0 polls: it stops there, in its wait loop.
        assert await gdb.ask(f"Z3,{DATA + 4:x},4") == "OK"
        assert await gdb.ask("vCont;c") == f"T05thread:1;rwatch:{DATA + 4:x};"
        assert await gdb.reg(Reg.PC) == sym["spin"]
        assert await gdb.ask("D") == "OK"
    assert d.result[0].code == 0x77


async def test_ctrl_c_stops_a_running_machine_and_kill_powers_it_off() -> None:
    async with debugged(FOREVER_GUEST, wait=False) as d:
        gdb, sym = d.gdb, d.sym
        # Attaching stops a running machine, as QEMU does.
        assert await gdb.ask("?") == "T05thread:1;"
        first = await gdb.reg(5)
        await gdb.send("vCont;c")
        await trio.sleep(0.05)
        await gdb.stream.send_all(b"\x03")
        with trio.fail_after(10):
            assert await gdb.receive() == "T02thread:1;"
        assert sym["loop"] <= await gdb.reg(Reg.PC) <= sym["loop"] + 4
        assert await gdb.reg(5) > first  # it ran in between
        await gdb.send("k")
        assert await gdb.closed()
    assert d.result[0].reason == "killed by the debugger"


async def test_a_guest_fault_stops_for_the_debugger_instead_of_ending_the_run() -> None:
    async with debugged(FAULT_GUEST) as d:
        gdb, sym = d.gdb, d.sym
        assert await gdb.ask("c") == "T0bthread:1;"  # SIGSEGV
        assert await gdb.reg(Reg.PC) == sym["bad_load"]
        assert await gdb.reg(4) == 0x8000_0000
        # Continuing re-executes the load: the same fault, reported again.
        assert await gdb.ask("c") == "T0bthread:1;"
        assert await gdb.ask("D") == "OK"  # detached: the fault now ends the run
    assert d.result[0].code == 125
    assert d.result[0].fault is not None and d.result[0].fault.pc == d.sym["bad_load"]


@pytest.mark.parametrize(("packet", "reply"), [
    ("Hg9", "E16"),  # no such thread
    ("p99", "E16"),  # no such register
    ("P0=12", "E16"),  # a register is 4 bytes
    ("G00", "E16"),
    ("mzz,4", "E01"),  # not hex
    ("m80000000,4", "E0e"),  # nothing there
    ("M10000,4:00", "E16"),  # length mismatch
    ("X80000000,1:a", "E0e"),
    (f"M{ROM_BASE:x},4:00000000", "E0e"),  # the ROM is read-only for the debugger too
    ("Z9,0,0", ""),  # unknown breakpoint type: unsupported
    ("Z2,0,0", "E16"),
    ("vCont;x", "E16"),
    ("vCont;t", "E16"),  # resuming nobody
    ("qXfer:features:read:nope.xml:0,10", "E00"),
    ("qXfer:libraries:read::0,10", ""),
    ("qFoo", ""),
    ("!", ""),
    ("Hx1", "E16"),
])
async def test_bad_packets_get_error_replies_and_the_machine_runs_on(packet: str,
                                                                     reply: str) -> None:
    async with debugged(RELEASE_GUEST, smp=2) as d:
        gdb = d.gdb
        assert await gdb.ask(packet) == reply
        assert await gdb.ask("qC") == "QC1"  # still talking
        assert await gdb.ask("c") == "W77"
    assert d.result[0].code == 0x77


async def test_hundreds_of_malformed_packets_leave_the_machine_and_the_stub_working() -> None:
    """Packets gdb never sends, built from every query prefix plus junk, correctly framed;
    plus raw noise between them.  Resuming, killing and writing packets are left out: they
    are meant to change the machine."""
    rng = random.Random(6)
    prefixes = ["?", "g", "p", "m", "Z", "z", "H", "T", "qSupported", "qXfer:features:read:",
                "qfThreadInfo", "qsThreadInfo", "qC", "qAttached", "qThreadExtraInfo,",
                "qSymbol:", "vCont?", "qRcmd,", "vFile:", "QNonStop:", "qTStatus", "x", "!"]
    junk = "0123456789abcdefABCDEF,:;=-xyz}*\x7f\xff"
    async with debugged(RELEASE_GUEST, smp=2) as d:
        gdb = d.gdb
        assert await gdb.ask("QStartNoAckMode") == "OK"
        for _ in range(400):
            body = "".join(rng.choice(junk) for _ in range(rng.randrange(12)))
            payload = (rng.choice(prefixes) + body).encode("latin-1")
            if rng.random() < 0.2:
                # Noise outside packets (a '$' would start one and swallow the next).
                noise = bytes(rng.choice([b for b in range(256) if b != ord("$")])
                              for _ in range(8))
                await gdb.stream.send_all(noise)
            reply = await gdb.ask(payload)
            assert reply == "" or reply == "OK" or re.fullmatch(r"E[0-9a-f]{2}|[^E].*", reply)
        assert await gdb.ask("qC") == "QC1"
        for n in range(32):  # registers intact
            assert await gdb.reg(n, 1) == 0  # CPU 0 never ran; its r3 is its index, 0
        assert await gdb.ask("z0,0,4") == "OK"
        assert await gdb.ask("c") == "W77"
    assert d.result[0].code == 0x77


async def test_a_corrupt_packet_is_nacked_and_interrupts_while_stopped_are_ignored() -> None:
    async with debugged(RELEASE_GUEST, smp=2) as d:
        gdb = d.gdb
        await gdb.stream.send_all(b"$g#00\x03")
        with trio.fail_after(10):
            while b"-" not in gdb.raw:
                gdb.raw += await gdb.stream.receive_some(100)
        assert await gdb.ask("qC") == "QC1"
        assert await gdb.ask("c") == "W77"


async def test_a_dropped_connection_removes_the_breakpoints_and_the_machine_runs_on() -> None:
    async with debugged(RELEASE_GUEST, smp=2) as d:
        assert await d.gdb.ask(f"Z0,{d.sym['secondary']:x},4") == "OK"
        assert await d.gdb.ask(f"Z2,{DATA:x},4") == "OK"
        # the connection closes here, with the machine still held
    assert d.result[0].code == 0x77


async def test_one_debugger_at_a_time() -> None:
    elf = assemble(RELEASE_GUEST)
    m = E500Machine(bios=elf, smp=2)
    try:
        async with trio.open_nursery() as n:
            port = await n.start(_run, m)
            first = Rsp(await trio.open_tcp_stream("127.0.0.1", port))
            assert await first.ask("?") == "T05thread:1;"
            second = Rsp(await trio.open_tcp_stream("127.0.0.1", port))
            assert await second.closed()
            assert await first.ask("qC") == "QC1"
            assert await first.ask("c") == "W77"
    finally:
        m.close()
    assert m.result is not None and m.result.code == 0x77


async def test_a_run_that_times_out_tells_the_waiting_debugger_it_exited() -> None:
    async with debugged(FOREVER_GUEST, timeout=0.5) as d:
        assert await d.gdb.ask("c") == "W7c"  # 124, the timeout's exit status
        assert await d.gdb.closed()
    assert d.result[0].code == 124


async def test_a_port_in_use_is_a_config_error_before_anything_runs() -> None:
    (taken,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = taken.socket.getsockname()[1]
    m = E500Machine(bios=assemble(FOREVER_GUEST))
    try:
        with pytest.raises(ConfigError, match=f"-gdb 'tcp:127.0.0.1:{port}': cannot listen"):
            await run_with_gdb(m, f"tcp:127.0.0.1:{port}", timeout=5)
        assert m.result is None  # never powered on
    finally:
        m.close()
        await taken.aclose()


async def _run(m: E500Machine, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    await run_with_gdb(m, "tcp:127.0.0.1:0", wait_for_debugger=True, timeout=20,
                       task_status=task_status)


@pytest.mark.parametrize(("spec", "expected"), [
    ("tcp::1234", (None, 1234)),
    ("tcp:127.0.0.1:4321", ("127.0.0.1", 4321)),
    ("tcp:[::1]:1", ("::1", 1)),
    (":77", (None, 77)),
    ("1234", (None, 1234)),
])
def test_gdb_addresses_are_spelled_as_in_qemu(spec: str, expected: tuple[str | None, int]) -> None:
    assert parse_gdb_address(spec) == expected


@pytest.mark.parametrize("spec", ["tcp::http", "tcp::70000", "unix:/tmp/x", ""])
def test_a_bad_gdb_address_is_a_config_error_naming_it(spec: str) -> None:
    with pytest.raises(ConfigError, match="-gdb"):
        parse_gdb_address(spec)
