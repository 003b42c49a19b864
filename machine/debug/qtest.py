"""QEMU's qtest text protocol, served over the machine's physical address map.

qtest is how QEMU's own tests poke a machine without running guest code: one command per line
(``readl 0xf0000000``, ``b64write ADDR SIZE DATA``), one answer per line (``OK``,
``OK 0x...``, ``FAIL reason``).  Speaking it with QEMU's option spelling (``-qtest stdio``,
``-qtest unix:PATH``) lets one script drive this machine and a real QEMU; the differential test
does exactly that.

Multi-byte values are composed big-endian, as ``qemu-system-ppc`` does for the e500.  Each
``readX``/``writeX`` is one bus access, exactly what a guest load or store of that width does:
an access shape a register rejects reads 0 and writes nothing.  (QEMU's qtest splits accesses
that a region rejects into smaller ones; a guest never sees that, so neither does this port.)
``read``/``write``/``memset`` and their base64 forms move byte strings and split them into
naturally aligned accesses of at most 8 bytes, as QEMU's address space does.

**Time.**  Under qtest QEMU's virtual clock starts at 0 and moves only through ``clock_step``
and ``clock_set``; so does this machine's device clock when the server is given a
:class:`QtestClock` (:class:`VirtualClock` is the one the CLI uses).  Both commands answer
``OK <ns>``, the clock's new value in decimal.  ``clock_step NS`` moves it by NS (a negative
NS moves nothing), ``clock_step`` alone to the next device deadline (nowhere when no timer
runs: QEMU's deadline is then -1), and ``clock_set NS`` to NS unless it is already past.  On
the way the clock stops at every deadline and fires it, as QEMU's ``qtest_clock_warp`` does.
A server without a clock answers them as QEMU does when qtest is not the accelerator:
``FAIL Unknown command 'clock_step'``.

**Interrupt inputs.**  ``set_irq_in PATH unnamed-gpio-in NUM LEVEL`` drives input NUM of the
device at the QOM-style PATH (the CLI offers ``/machine/pic``, the MPIC's sources 0..263, as
QEMU's ppce500 does); a partial path such as ``pic`` works when it names one device.  QEMU's
``irq_intercept_in``/``irq_intercept_out`` (asynchronous ``IRQ raise N`` lines) are not
offered: they answer ``FAIL Unknown command``.  Where QEMU aborts on a malformed argument
(it fails a ``g_assert``), this port answers ``FAIL <reason>``.

:class:`QtestServer` is sans-I/O (a line in, a line out) and never raises on a bad line; the
serve functions connect it to stdio or a unix socket.  :class:`QtestClient` is the other end.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import socket
import string
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Final, Protocol, cast

from fwcfg import ConfigError, Event, GuestMemory, GuestMemoryError
from machine.bus import MMIO, RAM, AddressMap, MmioTarget, Region

#: The largest ``read``/``write``/``memset`` this port accepts in one command.
MAX_TRANSFER: Final = 64 * 1024 * 1024
_READS: Final = {"readb": 1, "readw": 2, "readl": 4, "readq": 8}
_WRITES: Final = {"writeb": 1, "writew": 2, "writel": 4, "writeq": 8}

EventSink = Callable[[Event], None]

#: How many deadlines one clock_step/clock_set fires one by one before it jumps the rest of
#: the way and fires once (see :meth:`VirtualClock._warp`): a bound on the work one line costs.
MAX_FIRINGS: Final = 10_000
INT64_MAX: Final = (1 << 63) - 1
#: The gpio-in list name QEMU gives a device's unnamed inputs.
UNNAMED_GPIO_IN: Final = "unnamed-gpio-in"


class _Fail(Exception):
    """A bad command line; becomes ``FAIL <message>``."""


def _base0(word: str) -> int:
    """``strtoull``'s base 0 without a sign: decimal, 0x hex, or 0-prefixed octal
    (ValueError if the word is not one of them, trailing characters included)."""
    if word[:2].lower() == "0x":
        base, digits, allowed = 16, word[2:], string.hexdigits
    elif len(word) > 1 and word.startswith("0"):
        base, digits, allowed = 8, word[1:], string.octdigits
    else:
        base, digits, allowed = 10, word, string.digits
    if not digits or digits.strip(allowed):
        raise ValueError(word)
    return int(digits, base)


def _number(word: str, what: str) -> int:
    """QEMU's ``strtou64(..., base 0)``: decimal, 0x hex, or 0-prefixed octal (a negative
    number is out of range here, where QEMU would wrap it)."""
    value = _signed(word, what, bits=0)
    if not 0 <= value < 1 << 64:
        raise _Fail(f"{what} {word!r} is out of range")
    return value


def _signed(word: str, what: str, bits: int = 64) -> int:
    """QEMU's ``qemu_strtoi64``/``qemu_strtoi`` (base 0): an optional sign, then a number as
    :func:`_base0` reads it, within the signed ``bits``-bit range (any, for 0)."""
    sign, digits = (-1, word[1:]) if word.startswith("-") else (1, word.removeprefix("+"))
    try:
        value = sign * _base0(digits)
    except ValueError:
        raise _Fail(f"invalid {what} {word!r}") from None
    if bits and not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise _Fail(f"{what} {word!r} is out of range")
    return value


class QtestClock(Protocol):
    """The time ``clock_step``/``clock_set`` move (QEMU's virtual clock under qtest), in ns.

    ``step(None)`` goes to the next deadline (or stays when there is none), ``step(ns)``
    forward by ``ns``, ``set(ns)`` to ``ns`` unless the clock is past it; each returns the
    clock's new value and has fired everything that came due on the way."""

    def now(self) -> int: ...

    def step(self, ns: int | None) -> int: ...

    def set(self, ns: int) -> int: ...


class VirtualClock:
    """A :class:`QtestClock` that starts at 0 and moves only when told.

    ``deadline()`` is when the devices next need servicing (this clock's ns, or None) and
    ``fire()`` services them; the clock knows nothing else about the machine.  Moving it works
    like QEMU's ``qtest_clock_warp``: stop at each deadline before the destination, fire it,
    ask again, so periodic timers fire once per period and timers fire in deadline order.
    After :data:`MAX_FIRINGS` stops in one move it jumps the rest of the way and fires once;
    the devices then catch up as a late host would (an MPIC timer keeps its toggle parity and
    period; see :meth:`machine.devices.mpic_timers.GlobalTimers.expire`).
    """

    def __init__(self, deadline: Callable[[], int | None], fire: Callable[[], None], *,
                 max_firings: int = MAX_FIRINGS) -> None:
        self._deadline = deadline
        self._fire = fire
        self._max_firings = max_firings
        self._now = 0

    def now(self) -> int:
        return self._now

    def step(self, ns: int | None) -> int:
        if ns is None:
            due = self._deadline()
            if due is None:  # QEMU: no timer, deadline -1, the clock stays
                return self._now
            ns = max(0, due - self._now)
        return self._warp(self._now + ns)

    def set(self, ns: int) -> int:
        return self._warp(ns)

    def _warp(self, dest: int) -> int:
        dest = min(dest, INT64_MAX)  # QEMU's clock is an int64_t
        firings = 0
        while self._now < dest:
            due = self._deadline()
            if due is None or due >= dest or firings >= self._max_firings:
                self._now = dest
            else:
                self._now = max(self._now, due)
            self._fire()
            firings += 1
        return self._now


@dataclass(frozen=True, slots=True)
class IrqInputs:
    """A device's unnamed gpio-in lines for ``set_irq_in``: inputs ``0..count-1``, driven by
    ``set_level(n, level)``."""

    count: int
    set_level: Callable[[int, bool], None]


def _pieces(addr: int, size: int, limit: int) -> Iterator[tuple[int, int]]:
    """Split ``[addr, addr+size)`` into naturally aligned power-of-two accesses <= ``limit``."""
    while size > 0:
        width = limit
        while width > 1 and (addr % width or width > size):
            width //= 2
        yield addr, width
        addr += width
        size -= width


class QtestServer:
    """Answers qtest command lines against ``address_map`` (RAM, ROM and MMIO regions).

    ``clock`` enables ``clock_step``/``clock_set``; ``irq_inputs`` maps absolute QOM-style
    paths (``/machine/pic``) to the inputs ``set_irq_in`` may drive."""

    def __init__(
        self,
        address_map: AddressMap[object],
        *,
        on_event: EventSink | None = None,
        clock: QtestClock | None = None,
        irq_inputs: Mapping[str, IrqInputs] | None = None,
    ) -> None:
        self.map = address_map
        self.on_event = on_event
        self.clock = clock
        self.irq_inputs = dict(irq_inputs or {})
        self.byteorder: Final = "big"

    # --- one access --------------------------------------------------------------------

    def _fits(self, addr: int, size: int) -> Region[object] | None:
        found = self.map.decode(addr)
        if found is None or not found[0].contains(addr, size):
            return None
        return found[0]

    def _emit(self, events: Sequence[Event]) -> None:
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def read_value(self, addr: int, size: int) -> int:
        """One load of ``size`` bytes, composed big-endian."""
        region = self._fits(addr, size)
        if region is None:
            return int.from_bytes(self.read_bytes(addr, size), self.byteorder)
        if region.kind == MMIO:
            return cast(MmioTarget, region.target).read(addr - region.base, size)
        assert isinstance(region.target, GuestMemory)
        return int.from_bytes(region.target.read(addr, size), self.byteorder)

    def write_value(self, addr: int, size: int, value: int) -> None:
        """One store of ``size`` bytes; ``value`` is truncated to the width, as QEMU does."""
        value &= (1 << (8 * size)) - 1
        region = self._fits(addr, size)
        if region is None:
            self.write_bytes(addr, value.to_bytes(size, self.byteorder))
        elif region.kind == MMIO:
            self._emit(cast(MmioTarget, region.target).write(addr - region.base, size, value))
        elif region.kind == RAM:
            assert isinstance(region.target, GuestMemory)
            region.target.write(addr, value.to_bytes(size, self.byteorder))

    # --- byte strings ------------------------------------------------------------------

    def _spans(self, addr: int, size: int) -> Iterator[tuple[Region[object] | None, int, int]]:
        """Cut ``[addr, addr+size)`` at region boundaries: (region or hole, start, length)."""
        end = addr + size
        while addr < end:
            found = self.map.decode(addr)
            if found is not None:
                region = found[0]
                n = min(end, region.end) - addr
            else:
                region = None
                nxt = [r.base for r in self.map.regions if r.base > addr]
                n = min([end, *nxt]) - addr
            yield region, addr, n
            addr += n

    def read_bytes(self, addr: int, size: int) -> bytes:
        out = bytearray()
        for region, start, n in self._spans(addr, size):
            if region is None:
                out += bytes(n)
            elif region.kind == MMIO:
                mmio = cast(MmioTarget, region.target)
                for a, w in _pieces(start, n, 8):
                    out += mmio.read(a - region.base, w).to_bytes(w, self.byteorder)
            else:
                assert isinstance(region.target, GuestMemory)
                out += region.target.read(start, n)
        return bytes(out)

    def write_bytes(self, addr: int, data: bytes) -> None:
        pos = 0
        for region, start, n in self._spans(addr, len(data)):
            chunk = data[pos : pos + n]
            pos += n
            if region is None:
                continue
            if region.kind == MMIO:
                mmio = cast(MmioTarget, region.target)
                for a, w in _pieces(start, n, 8):
                    piece = chunk[a - start : a - start + w]
                    value = int.from_bytes(piece, self.byteorder)
                    self._emit(mmio.write(a - region.base, w, value))
            elif region.kind == RAM:
                assert isinstance(region.target, GuestMemory)
                region.target.write(start, chunk)

    # --- the protocol ------------------------------------------------------------------

    def handle(self, line: str) -> str | None:
        """The answer to one command line (without newline); None for a blank line."""
        words = line.split()
        if not words:
            return None
        try:
            return self._command(words)
        except _Fail as fail:
            return f"FAIL {fail}"
        except GuestMemoryError as err:  # a bus target refused: report, never crash
            return f"FAIL {err}"

    def _args(self, words: list[str], count: int) -> list[str]:
        if len(words) != count + 1:
            raise _Fail(f"{words[0]} takes {count} argument{'s' if count != 1 else ''}")
        return words[1:]

    def _size(self, word: str) -> int:
        size = _number(word, "size")
        if size > MAX_TRANSFER:
            raise _Fail(f"size {size} is larger than {MAX_TRANSFER}")
        return size

    def _command(self, words: list[str]) -> str:
        cmd = words[0]
        if cmd in _READS:
            (a,) = self._args(words, 1)
            return f"OK 0x{self.read_value(_number(a, 'address'), _READS[cmd]):016x}"
        if cmd in _WRITES:
            a, v = self._args(words, 2)
            self.write_value(_number(a, "address"), _WRITES[cmd], _number(v, "value"))
            return "OK"
        if cmd in ("read", "b64read"):
            a, s = self._args(words, 2)
            data = self.read_bytes(_number(a, "address"), self._size(s))
            if cmd == "read":
                return "OK 0x" + data.hex()
            return "OK " + base64.b64encode(data).decode()
        if cmd == "write":
            a, s, d = self._args(words, 3)
            size = self._size(s)
            if not d.lower().startswith("0x"):
                raise _Fail(f"data {d!r} must start with 0x")
            digits = d[2:]
            whole = min(size, len(digits) // 2)  # QEMU drops an odd trailing nibble
            try:
                raw = bytes.fromhex(digits[: 2 * whole])
            except ValueError:
                raise _Fail(f"data {d!r} is not hexadecimal") from None
            self.write_bytes(_number(a, "address"), raw[:size].ljust(size, b"\0"))
            return "OK"
        if cmd == "b64write":
            a, s, d = self._args(words, 3)
            size = self._size(s)
            try:
                raw = base64.b64decode(d, validate=True)
            except (binascii.Error, ValueError):  # ValueError: non-ASCII text
                raise _Fail(f"data {d!r} is not base64") from None
            self.write_bytes(_number(a, "address"), raw[:size].ljust(size, b"\0"))
            return "OK"
        if cmd == "memset":
            a, s, v = self._args(words, 3)
            size = self._size(s)
            value = _number(v, "value") & 0xFF
            self.write_bytes(_number(a, "address"), bytes([value]) * size)
            return "OK"
        if cmd == "endianness":
            self._args(words, 0)
            return f"OK {self.byteorder}"
        if cmd == "clock_step" and self.clock is not None:
            if len(words) > 2:
                raise _Fail("clock_step takes at most 1 argument")
            step = _signed(words[1], "step") if len(words) == 2 else None
            return f"OK {self.clock.step(step)}"
        if cmd == "clock_set" and self.clock is not None:
            (t,) = self._args(words, 1)
            return f"OK {self.clock.set(_signed(t, 'time'))}"
        if cmd == "set_irq_in":
            path, name, n, level = self._args(words, 4)
            inputs = self._device(path)
            if name != UNNAMED_GPIO_IN:
                raise _Fail(f"no gpio-in list {name!r} on {path}")
            num = _signed(n, "irq number", 32)
            if not 0 <= num < inputs.count:
                raise _Fail(f"irq number {num} is outside 0..{inputs.count - 1}")
            inputs.set_level(num, _signed(level, "level", 32) != 0)
            return "OK"
        raise _Fail(f"Unknown command '{cmd}'")

    def _device(self, path: str) -> IrqInputs:
        """QOM's path resolution: an absolute path, or a partial one that names one device."""
        if path.startswith("/"):
            found = [path] if path in self.irq_inputs else []
        else:
            found = [p for p in self.irq_inputs if p.endswith("/" + path)]
        if len(found) != 1:
            raise _Fail("Unknown device")
        return self.irq_inputs[found[0]]


# --- transports ----------------------------------------------------------------------------


def serve(server: QtestServer, rfile: IO[str], wfile: IO[str]) -> None:
    """Answer lines from ``rfile`` on ``wfile`` until end of file."""
    for line in rfile:
        answer = server.handle(line)
        if answer is not None:
            wfile.write(answer + "\n")
            wfile.flush()


@contextlib.contextmanager
def open_chardev(spec: str) -> Iterator[tuple[IO[str], IO[str]]]:
    """QEMU's ``-qtest`` chardev spelling: ``stdio``, ``unix:PATH`` (connect to a listening
    test, as libqtest expects) or ``unix:PATH,server=on[,wait=...]`` (listen, serve the first
    connection)."""
    if spec == "stdio":
        yield sys.stdin, sys.stdout
        return
    if not spec.startswith("unix:"):
        raise ConfigError(f"-qtest {spec!r}: only 'stdio' and 'unix:PATH' are supported")
    path, *opts = spec[len("unix:") :].split(",")
    server_mode = False
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "server":
            server_mode = value in ("", "on", "yes")
        elif key != "wait":
            raise ConfigError(f"-qtest {spec!r}: unknown option {opt!r}")
    if not path:
        raise ConfigError(f"-qtest {spec!r}: the socket path is empty")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if server_mode:
            try:
                sock.bind(path)
            except OSError as err:
                raise ConfigError(f"-qtest {spec!r}: cannot listen on {path}: {err}") from None
            sock.listen(1)
            conn, _ = sock.accept()
            sock.close()
            sock = conn
        else:
            try:
                sock.connect(path)
            except OSError as err:
                raise ConfigError(f"-qtest {spec!r}: cannot connect to {path}: {err}") from None
        rfile = sock.makefile("r", encoding="ascii", errors="replace", newline="\n")
        wfile = sock.makefile("w", encoding="ascii", newline="\n")
        try:
            yield rfile, wfile
        finally:
            rfile.close()
            with contextlib.suppress(OSError):
                wfile.close()
    finally:
        sock.close()


class QtestClient:
    """Talks qtest to a child process (QEMU or ``python -m machine``) over its stdio."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )

    def command(self, line: str) -> str:
        """Send one command, return its answer line."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise ConnectionError(f"{self.argv[0]} closed the qtest connection after {line!r}")
        return answer.rstrip("\n")

    def close(self) -> int:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> QtestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
