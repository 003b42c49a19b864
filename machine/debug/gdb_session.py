"""One gdb connection's packet handlers: registers, memory (through the selected CPU's
MMU), breakpoints and watchpoints, run control, queries.  :mod:`machine.debug.gdbstub`
serves them over a socket and turns machine stops into stop replies."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from fwcfg import ConfigError
from machine.cpu.vcpu import VCpu, Watch
from machine.debug.gdb_control import Action, DebugControl, Exited, Signal, Stop
from machine.debug.gdb_packets import (
    MAX_PACKET,
    escape,
    unescape,
)
from machine.debug.gdb_target import FEATURE_FILES, N_REGS, REG_BYTES, Reg
from machine.platform import ROM_BASE, ROM_SIZE

if TYPE_CHECKING:
    from machine.board import E500Machine

#: The other registers, read and written in the vCPU's context (wherever it lives now).
_GETTERS: Final[dict[Reg, Callable[[VCpu], int]]] = {
    Reg.MSR: lambda c: c.msr,
    Reg.CR: lambda c: c.cr,
    Reg.LR: lambda c: c.lr,
    Reg.CTR: lambda c: c.ctr,
    Reg.XER: lambda c: c.xer,
}
_SETTERS: Final[dict[Reg, Callable[[VCpu, int], None]]] = {
    Reg.MSR: VCpu.set_msr,
    Reg.CR: VCpu.set_cr,
    Reg.LR: VCpu.set_lr,
    Reg.CTR: VCpu.set_ctr,
    Reg.XER: VCpu.set_xer,
}

# errno-style codes, as gdbserver uses them
_EPERM: Final = 0x01
_EFAULT: Final = 0x0E
_EINVAL: Final = 0x16
_PAGE: Final = 4096


class GdbError(Exception):
    """A request the stub refuses; answered ``Exx``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Then(enum.Enum):
    """What the connection does after sending a reply."""

    WAIT = "wait"  # nothing: the next packet
    RUN = "run"  # the machine was resumed: the stop reply comes when it stops
    CLOSE = "close"  # detach or kill: close the connection


@dataclass(frozen=True, slots=True)
class Reply:
    payload: bytes | None  # None: send nothing
    then: Then = Then.WAIT


def parse_gdb_address(spec: str) -> tuple[str | None, int]:
    """``-gdb`` device: ``tcp::PORT``, ``tcp:HOST:PORT``, ``:PORT`` or ``PORT`` (QEMU's
    spellings).  No host means every interface, as in QEMU."""
    text = spec.strip()
    rest = text[4:] if text.startswith("tcp:") else text
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = "", rest
    host = host.strip("[]")
    try:
        port = int(port_text, 10)
    except ValueError:
        raise ConfigError(f"-gdb {spec!r}: expected tcp::PORT or tcp:HOST:PORT") from None
    if not 0 <= port <= 0xFFFF:
        raise ConfigError(f"-gdb {spec!r}: port {port} is not a TCP port")
    return (host or None), port


# --- one connection, sans I/O -------------------------------------------------------------------


class GdbSession:
    """The remote protocol for one gdb connection.  :meth:`handle` never raises."""

    def __init__(self, machine: E500Machine, control: DebugControl) -> None:
        self.machine = machine
        self.control = control
        self.no_ack = False
        self._g_thread: int | None = None  # CPU index for g/G/p/P; None: the current one
        self._c_thread: int | None = None  # CPU index for legacy s; None: the current one
        self._handlers: dict[str, Callable[[bytes], Reply]] = {
            "?": self._why,
            "g": self._read_all,
            "G": self._write_all,
            "p": self._read_one,
            "P": self._write_one,
            "m": self._read_mem,
            "M": self._write_mem_hex,
            "X": self._write_mem_bin,
            "Z": self._insert,
            "z": self._remove,
            "c": self._continue,
            "C": self._continue,
            "s": self._step,
            "S": self._step,
            "H": self._select_thread,
            "T": self._thread_alive,
            "k": self._kill,
            "D": self._detach,
        }
        self._queries: dict[str, Callable[[bytes], Reply]] = {
            "qSupported": self._supported,
            "qXfer": self._xfer,
            "qfThreadInfo": lambda _: _ok(self._thread_list()),
            "qsThreadInfo": lambda _: _ok(b"l"),
            "qC": lambda _: _ok(b"QC%x" % (self._current() + 1)),
            "qAttached": lambda _: _ok(b"1"),
            "qThreadExtraInfo": self._extra_info,
            "qSymbol": lambda _: _ok(b"OK"),
            "QStartNoAckMode": self._no_ack,
            "vCont?": lambda _: _ok(b"vCont;c;C;s;S;t"),
            "vCont": self._vcont,
            "vKill": self._vkill,
        }

    # --- dispatch --------------------------------------------------------------------------

    def handle(self, payload: bytes) -> Reply:
        """Answer one packet.  Errors become ``Exx``; unknown packets the empty reply."""
        try:
            handler = self._lookup(payload)
            if handler is None:
                return _ok(b"")
            return handler(payload)
        except GdbError as e:
            return _ok(b"E%02x" % e.code)
        except Exception:
            return _ok(b"E%02x" % _EPERM)

    def _lookup(self, payload: bytes) -> Callable[[bytes], Reply] | None:
        if not payload:
            return None
        if payload[:1] in b"qQv":
            name = payload.split(b":", 1)[0].split(b";", 1)[0].split(b",", 1)[0]
            return self._queries.get(name.decode("ascii", "replace"))
        return self._handlers.get(chr(payload[0]))

    def stop_reply(self, event: Stop | Exited) -> bytes:
        """``T`` (a stopped thread) or ``W`` (the machine powered off with this code).

        gdb takes a ``T`` reply to mean that the stub's selected thread is now the stopped
        one (``record_currthread`` in gdb's remote.c, QEMU does the same), so it is."""
        if isinstance(event, Exited):
            return b"W%02x" % (event.code & 0xFF)
        self._g_thread = self._c_thread = event.cpu
        out = b"T%02xthread:%x;" % (int(event.signal), event.cpu + 1)
        if event.watch is not None:
            w = event.watch.watch
            kind = b"awatch" if w.read and w.write else b"watch" if w.write else b"rwatch"
            out += b"%s:%x;" % (kind, event.watch.address)
        return out

    # --- threads ---------------------------------------------------------------------------

    def _current(self) -> int:
        stop = self.control.stop
        return stop.cpu if stop is not None else 0

    def _cpu(self, tid: int | None) -> int:
        return self._current() if tid is None else tid

    def _parse_tid(self, text: bytes) -> int | None:
        """A thread id: None for 0 (any) and -1 (all), else the CPU index."""
        value = int(text, 16)
        if value in (0, -1):
            return None
        if not 1 <= value <= self.control.n_cpus:
            raise GdbError(_EINVAL)
        return value - 1

    def _thread_list(self) -> bytes:
        return b"m" + b",".join(b"%x" % (i + 1) for i in range(self.control.n_cpus))

    def _select_thread(self, p: bytes) -> Reply:
        op, tid = p[1:2], self._parse_tid(p[2:])
        if op == b"g":
            self._g_thread = tid
        elif op == b"c":
            self._c_thread = tid
        else:
            raise GdbError(_EINVAL)
        return _ok(b"OK")

    def _thread_alive(self, p: bytes) -> Reply:
        self._parse_tid(p[1:])
        return _ok(b"OK")

    def _extra_info(self, p: bytes) -> Reply:
        i = self._cpu(self._parse_tid(p.split(b",", 1)[1]))
        parked = self.machine.cpu_parked(i)
        if self.control.in_slice(i):
            state = "running"
        elif parked is not None:
            state = f"parked: {parked.value}"
        else:
            state = "stopped"
        return _ok(f"CPU {i} [{state}]".encode().hex().encode())

    # --- registers -------------------------------------------------------------------------

    def _quiet_cpu(self, i: int) -> int:
        if self.control.in_slice(i):
            raise GdbError(_EPERM)  # a running CPU's registers are its worker thread's
        return i

    def _get(self, i: int, n: int) -> int:
        cpu = self.machine.cpus[i]
        if n < 32:
            return cpu.gpr(n)
        if n == Reg.PC:
            return self.control.pc(i)
        return _GETTERS[Reg(n)](cpu) & 0xFFFF_FFFF

    def _set(self, i: int, n: int, value: int) -> None:
        cpu = self.machine.cpus[i]
        if n < 32:
            cpu.set_gpr(n, value)
        elif n == Reg.PC:
            self.control.set_pc(i, value)
        else:
            _SETTERS[Reg(n)](cpu, value & 0xFFFF_FFFF)

    def _read_all(self, p: bytes) -> Reply:
        i = self._quiet_cpu(self._cpu(self._g_thread))
        return _ok(b"".join(b"%08x" % self._get(i, n) for n in range(N_REGS)))

    def _write_all(self, p: bytes) -> Reply:
        i = self._quiet_cpu(self._cpu(self._g_thread))
        data = bytes.fromhex(p[1:].decode("ascii"))
        if len(data) != N_REGS * REG_BYTES:
            raise GdbError(_EINVAL)
        for n in range(N_REGS):
            self._set(i, n, int.from_bytes(data[4 * n : 4 * n + 4], "big"))
        return _ok(b"OK")

    def _read_one(self, p: bytes) -> Reply:
        i = self._quiet_cpu(self._cpu(self._g_thread))
        n = int(p[1:], 16)
        if not 0 <= n < N_REGS:
            raise GdbError(_EINVAL)
        return _ok(b"%08x" % self._get(i, n))

    def _write_one(self, p: bytes) -> Reply:
        i = self._quiet_cpu(self._cpu(self._g_thread))
        num, _, val = p[1:].partition(b"=")
        n = int(num, 16)
        data = bytes.fromhex(val.decode("ascii"))
        if not 0 <= n < N_REGS or len(data) != REG_BYTES:
            raise GdbError(_EINVAL)
        self._set(i, n, int.from_bytes(data, "big"))
        return _ok(b"OK")

    # --- memory ----------------------------------------------------------------------------

    def read_memory(self, addr: int, length: int) -> bytes:
        """The readable prefix of ``[addr, addr + length)`` as the current thread's CPU sees
        it (through its MMU, as QEMU's gdbstub does): RAM and the boot ROM."""
        ram, rom = self.machine.ram, self.machine.images.rom
        out = bytearray()
        while len(out) < length:
            ea, want = (addr + len(out)) & 0xFFFF_FFFF, length - len(out)
            a = self._physical(ea)
            if a is None:
                break
            want = min(want, _PAGE - (ea & (_PAGE - 1)))  # translate page by page
            if ram.contains(a, 1):
                n = min(want, ram.base + ram.size - a)
                out += ram.read(a, n)
            elif ROM_BASE <= a < ROM_BASE + ROM_SIZE:
                n = min(want, ROM_BASE + ROM_SIZE - a)
                out += rom[a - ROM_BASE : a - ROM_BASE + n]
            else:
                break
        return bytes(out)

    def write_memory(self, addr: int, data: bytes) -> None:
        """Store into RAM through the current thread's CPU's MMU (a watched word wakes its
        CPU, as a device store would)."""
        done = 0
        while done < len(data):
            ea = (addr + done) & 0xFFFF_FFFF
            n = min(len(data) - done, _PAGE - (ea & (_PAGE - 1)))
            a = self._physical(ea)
            if a is None or not self.machine.ram.contains(a, n):
                raise GdbError(_EFAULT)
            self.machine.ram.write(a, data[done : done + n])
            done += n

    def _physical(self, ea: int) -> int | None:
        cpu = self.machine.cpus[self._cpu(self._g_thread)]
        return cpu.translate(ea)

    def _addr_len(self, text: bytes) -> tuple[int, int]:
        a, _, n = text.partition(b",")
        addr, length = int(a, 16), int(n, 16)
        if addr < 0 or length < 0:
            raise GdbError(_EINVAL)
        return addr, length

    def _read_mem(self, p: bytes) -> Reply:
        addr, length = self._addr_len(p[1:])
        data = self.read_memory(addr, min(length, MAX_PACKET // 2))
        if length and not data:
            raise GdbError(_EFAULT)
        return _ok(data.hex().encode())

    def _write_mem_hex(self, p: bytes) -> Reply:
        head, _, hexdata = p[1:].partition(b":")
        addr, length = self._addr_len(head)
        data = bytes.fromhex(hexdata.decode("ascii"))
        if len(data) != length:
            raise GdbError(_EINVAL)
        self.write_memory(addr, data)
        return _ok(b"OK")

    def _write_mem_bin(self, p: bytes) -> Reply:
        head, _, raw = p[1:].partition(b":")
        addr, length = self._addr_len(head)
        data = unescape(raw)
        if len(data) != length:
            raise GdbError(_EINVAL)
        if length:
            self.write_memory(addr, data)
        return _ok(b"OK")

    # --- breakpoints and watchpoints -------------------------------------------------------

    def _point(self, p: bytes) -> tuple[int, int, int]:
        kind, addr, size = p[1:].split(b";", 1)[0].split(b",")
        return int(kind, 16), int(addr, 16), int(size, 16)

    def _watch(self, kind: int, addr: int, size: int) -> Watch:
        if size <= 0 or addr + size > 1 << 32:
            raise GdbError(_EINVAL)
        return Watch(addr, size, read=kind in (3, 4), write=kind in (2, 4))

    def _insert(self, p: bytes) -> Reply:
        kind, addr, size = self._point(p)
        if kind in (0, 1):  # software and hardware breakpoints are the same code hook
            self.control.add_breakpoint(addr & 0xFFFF_FFFF)
        elif kind in (2, 3, 4):
            self.control.add_watchpoint(self._watch(kind, addr, size))
        else:
            return _ok(b"")
        return _ok(b"OK")

    def _remove(self, p: bytes) -> Reply:
        kind, addr, size = self._point(p)
        if kind in (0, 1):
            self.control.remove_breakpoint(addr & 0xFFFF_FFFF)
        elif kind in (2, 3, 4):
            self.control.remove_watchpoint(self._watch(kind, addr, size))
        else:
            return _ok(b"")
        return _ok(b"OK")

    # --- running ---------------------------------------------------------------------------

    def _resume(self, actions: list[Action]) -> Reply:
        if all(a is Action.STOP for a in actions):
            raise GdbError(_EINVAL)
        self.control.resume(actions)
        return Reply(None, Then.RUN)

    def _legacy_addr(self, p: bytes, cpu: int) -> None:
        rest = p[1:]
        if p[:1] in b"CS":
            rest = rest.partition(b";")[2]
        if rest:
            self.control.set_pc(cpu, int(rest, 16))

    def _continue(self, p: bytes) -> Reply:
        self._legacy_addr(p, self._current())
        return self._resume([Action.CONTINUE] * self.control.n_cpus)

    def _step(self, p: bytes) -> Reply:
        cpu = self._cpu(self._c_thread)
        self._legacy_addr(p, cpu)
        actions = [Action.STOP] * self.control.n_cpus
        actions[cpu] = Action.STEP
        return self._resume(actions)

    def _vcont(self, p: bytes) -> Reply:
        """``vCont;ACTION[:TID];...``: for each CPU the leftmost action naming it applies."""
        n = self.control.n_cpus
        chosen: list[Action | None] = [None] * n
        for part in p.split(b";")[1:]:
            what, _, tid_text = part.partition(b":")
            verb = what[:1]
            action = {b"c": Action.CONTINUE, b"C": Action.CONTINUE, b"s": Action.STEP,
                      b"S": Action.STEP, b"t": Action.STOP}.get(verb)
            if action is None:
                raise GdbError(_EINVAL)
            targets = range(n) if not tid_text else self._tid_range(tid_text)
            for i in targets:
                if chosen[i] is None:
                    chosen[i] = action
        return self._resume([a if a is not None else Action.STOP for a in chosen])

    def _tid_range(self, text: bytes) -> range:
        tid = self._parse_tid(text)
        return range(self.control.n_cpus) if tid is None else range(tid, tid + 1)

    def _why(self, p: bytes) -> Reply:
        stop = self.control.stop
        return _ok(self.stop_reply(stop if stop is not None else Stop(0, Signal.TRAP)))

    def _kill(self, p: bytes) -> Reply:
        self.machine.stop(code=0, reason="killed by the debugger")
        return Reply(None, Then.CLOSE)

    def _vkill(self, p: bytes) -> Reply:
        self.machine.stop(code=0, reason="killed by the debugger")
        return Reply(b"OK", Then.CLOSE)

    def _detach(self, p: bytes) -> Reply:
        return Reply(b"OK", Then.CLOSE)

    # --- queries ---------------------------------------------------------------------------

    def _supported(self, p: bytes) -> Reply:
        return _ok(b"PacketSize=%x;qXfer:features:read+;QStartNoAckMode+" % MAX_PACKET)

    def _no_ack(self, p: bytes) -> Reply:
        self.no_ack = True
        return _ok(b"OK")

    def _xfer(self, p: bytes) -> Reply:
        """``qXfer:features:read:ANNEX:OFFSET,LENGTH``."""
        fields = p.split(b":")
        if len(fields) != 5 or fields[1] != b"features" or fields[2] != b"read":
            return _ok(b"")
        doc = FEATURE_FILES.get(fields[3].decode("ascii", "replace"))
        if doc is None:
            raise GdbError(0)
        offset, length = self._addr_len(fields[4])
        chunk = doc[offset : offset + min(length, MAX_PACKET // 2)]
        more = offset + len(chunk) < len(doc)
        return _ok((b"m" if more else b"l") + escape(chunk))


def _ok(payload: bytes) -> Reply:
    return Reply(payload)
