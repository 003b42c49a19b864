"""The machine console: ePAPR byte channel 0.

Guest CPUs write from their worker threads; readers live in trio.  Output is queued under a
lock and handed to trio in batches (one ``run_sync_soon`` per batch, not per hypercall), so a
guest printing 16 bytes per call does not pay a trio round trip per call.  Order is preserved:
one queue, appended under the lock in the order the CPUs' stores happened.

Back-pressure is what ePAPR specifies: when more than ``CONSOLE_TX_SPACE`` bytes wait for trio,
EV_BYTE_CHANNEL_SEND answers EV_EAGAIN and the guest retries.

Input (the CLI's stdin, ``await Console.send(data)`` from the API) is buffered for
EV_BYTE_CHANNEL_RECEIVE and wakes CPUs idling in EV_IDLE.

The host side keeps a transcript of everything delivered (the last ``history`` bytes) and a
cursor, the way ``pexpect`` does: :meth:`Console.expect` searches from the cursor through what
has *already* arrived before it waits for more, and moves the cursor past its match.  So a test
never races the guest: output printed before the ``expect`` call is found all the same, and a
sequence of ``expect`` calls checks that lines came in that order.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, overload

import trio

from machine.platform import CONSOLE_TX_SPACE

Listener = Callable[[int, bytes], None]

#: What :meth:`Console.expect` accepts: ``bytes`` and ``str`` are literal text, compiled
#: patterns are regular expressions (``str`` ones see the output decoded as UTF-8).
Pattern = bytes | str | re.Pattern[bytes] | re.Pattern[str]

#: Seconds an ``expect`` waits unless told otherwise: long for a boot on a loaded CI host,
#: short enough that a test that will never pass fails instead of hanging.
DEFAULT_EXPECT_TIMEOUT: Final = 10.0
#: Transcript bytes kept for ``expect`` and :attr:`Console.output`; older output is dropped so a
#: guest printing forever cannot grow the host without bound.
DEFAULT_HISTORY: Final = 1 << 20
#: How much of the output an error message quotes (its tail).
_QUOTE_MAX: Final = 2000


class ConsoleError(Exception):
    """``expect`` did not find its pattern; the message quotes what the guest printed."""

    def __init__(self, message: str, *, pattern: Pattern, output: bytes) -> None:
        super().__init__(message)
        self.pattern = pattern
        #: The output that was searched (from the cursor to the end).
        self.output = output


class ConsoleTimeout(ConsoleError, TimeoutError):
    """The pattern did not appear within the timeout."""


class ConsoleFailure(ConsoleError):
    """A ``fail`` pattern appeared before the expected one (e.g. ``panic``)."""

    def __init__(self, message: str, *, pattern: Pattern, output: bytes,
                 failure: re.Match[Any]) -> None:
        super().__init__(message, pattern=pattern, output=output)
        #: The match of the failure pattern.
        self.failure = failure


class ConsoleEnded(ConsoleError):
    """The machine stopped before the pattern appeared: no more output can come."""


class Console:
    """Byte channel 0: the guest side (worker threads) and the host side (trio)."""

    def __init__(self, *, history: int = DEFAULT_HISTORY) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[int, bytes]] = []
        self._pending_bytes = 0
        self._scheduled = False
        self._rx = bytearray()
        self._token: trio.lowlevel.TrioToken | None = None
        self._listeners: list[Listener] = []
        self._input_waker: Callable[[], None] | None = None
        #: Bytes the guest has sent so far (after delivery to trio).
        self.bytes_out = 0
        # Host-side transcript (trio thread only): ``_out`` holds the output from absolute
        # offset ``_out_base``; ``_cursor`` is where the next expect starts searching.
        self._history = history
        self._out = bytearray()
        self._out_base = 0
        self._cursor = 0
        self._arrived: trio.Event | None = None
        self._ended = False
        #: Set by the machine: why it stopped (quoted when output can no longer come).
        self.stop_reason: Callable[[], str | None] | None = None
        #: Set by the machine: called on the trio thread once queued output was delivered
        #: (transmit space is free again: the byte channel's tx line).
        self.on_drained: Callable[[], None] | None = None

    # --- wiring (trio thread) --------------------------------------------------------------

    def attach(self, token: trio.lowlevel.TrioToken, input_waker: Callable[[], None]) -> None:
        """The machine powers on: output will be delivered on ``token``'s trio thread."""
        self._token = token
        self._input_waker = input_waker
        self._ended = False

    def add_listener(self, listener: Listener) -> None:
        """``listener(cpu, data)`` runs on the trio thread for every batch of output."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    # --- guest side (worker threads) -------------------------------------------------------

    def guest_send(self, cpu: int, data: bytes, *, force: bool = False) -> bool:
        """EV_BYTE_CHANNEL_SEND: queue output; False when there is no room (EV_EAGAIN).
        ``force``: queue it anyway (the UART, which has no flow control to refuse with)."""
        with self._lock:
            if self._pending_bytes + len(data) > CONSOLE_TX_SPACE and not force:
                schedule = not self._scheduled
                self._scheduled = True
                ok = False
            else:
                self._pending.append((cpu, data))
                self._pending_bytes += len(data)
                schedule = not self._scheduled
                self._scheduled = True
                ok = True
        if schedule:
            self._schedule()
        return ok

    @overload
    def send(self, cpu: int, data: bytes, /) -> bool: ...

    @overload
    def send(self, data: bytes | str, /) -> Coroutine[Any, Any, None]: ...

    def send(self, *args: Any) -> bool | Coroutine[Any, Any, None]:
        """Host input ``await console.send(data)``, or guest output ``send(cpu, data)``.

        The two-argument form is :meth:`guest_send`, kept under this name because the
        machine's hypercall services call it; new code should call :meth:`guest_send`.
        """
        if len(args) == 2:
            cpu, data = args
            return self.guest_send(cpu, data)
        (data,) = args
        return self._send_input(data)

    def _schedule(self) -> None:
        if self._token is None:
            return
        try:
            self._token.run_sync_soon(self._deliver)
        except trio.RunFinishedError:
            pass

    def receive(self, max_count: int) -> bytes:
        """EV_BYTE_CHANNEL_RECEIVE: up to ``max_count`` bytes of input."""
        with self._lock:
            data = bytes(self._rx[:max_count])
            del self._rx[:max_count]
            return data

    def poll(self) -> tuple[int, int]:
        """EV_BYTE_CHANNEL_POLL: (input bytes waiting, free transmit space)."""
        with self._lock:
            return len(self._rx), max(0, CONSOLE_TX_SPACE - self._pending_bytes)

    guest_receive = receive
    guest_poll = poll

    # --- host side (trio thread) -----------------------------------------------------------

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._pending_bytes = 0
            self._scheduled = False
        if not batch:
            return
        if self.on_drained is not None:
            self.on_drained()
        # Merge consecutive chunks of one CPU so listeners see whole runs of text.
        merged: list[tuple[int, bytearray]] = []
        for cpu, piece in batch:
            if merged and merged[-1][0] == cpu:
                merged[-1][1].extend(piece)
            else:
                merged.append((cpu, bytearray(piece)))
        for cpu, run in merged:
            self.bytes_out += len(run)
            chunk = bytes(run)
            self._record(chunk)
            for listener in list(self._listeners):
                listener(cpu, chunk)
        self._wake_readers()

    def _record(self, chunk: bytes) -> None:
        self._out.extend(chunk)
        excess = len(self._out) - self._history
        if excess > 0:
            del self._out[:excess]
            self._out_base += excess
            self._cursor = max(self._cursor, self._out_base)

    def _wake_readers(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    def flush(self) -> None:
        """The machine stopped: deliver anything still queued; readers see the end."""
        self._deliver()
        self._ended = True
        self._wake_readers()

    def feed(self, data: bytes) -> None:
        """Console input: becomes readable by EV_BYTE_CHANNEL_RECEIVE and wakes idle CPUs."""
        with self._lock:
            self._rx.extend(data)
        if self._input_waker is not None:
            self._input_waker()

    async def _send_input(self, data: bytes | str) -> None:
        self.feed(data.encode() if isinstance(data, str) else bytes(data))
        await trio.lowlevel.checkpoint()

    @property
    def output(self) -> bytes:
        """Everything the guest printed so far (the last ``history`` bytes)."""
        return bytes(self._out)

    @property
    def text(self) -> str:
        """:attr:`output` decoded as UTF-8 (undecodable bytes replaced)."""
        return self._out.decode("utf-8", "replace")

    @property
    def unread(self) -> bytes:
        """The output after the last ``expect`` match: where the next one starts."""
        return bytes(self._out[self._cursor - self._out_base :])

    async def expect(
        self,
        pattern: Pattern,
        *,
        timeout: float | None = DEFAULT_EXPECT_TIMEOUT,
        fail: Pattern | Sequence[Pattern] = (),
    ) -> re.Match[Any]:
        """Wait until the guest has printed ``pattern``; return the match.

        The search starts where the previous ``expect`` matched, and covers output that
        arrived before this call.  ``bytes``/``str`` patterns are literal text, compiled ones
        regular expressions; the match's ``.string`` is the searched output (from the cursor),
        so ``m[1]`` reads a group.  The cursor moves past the match.

        Raises :class:`ConsoleFailure` as soon as one of the ``fail`` patterns appears
        earlier than ``pattern`` (or at the same place), :class:`ConsoleEnded` when the
        machine stops first, and :class:`ConsoleTimeout` after ``timeout`` seconds (None waits
        for ever); each quotes the output it searched.
        """
        want = _compile(pattern)
        fails = [(f, _compile(f)) for f in _as_patterns(fail)]
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        with trio.move_on_at(deadline):
            while True:
                found = self._search(pattern, want, fails)
                if found is not None:
                    return found
                if self._ended:
                    reason = self.stop_reason() if self.stop_reason is not None else None
                    why = f" ({reason})" if reason else ""
                    raise ConsoleEnded(
                        self._explain(f"the machine stopped{why} before {pattern!r} appeared"),
                        pattern=pattern, output=self.unread,
                    )
                if self._arrived is None:
                    self._arrived = trio.Event()
                await self._arrived.wait()
        raise ConsoleTimeout(
            self._explain(f"{pattern!r} did not appear within {timeout:g} s"),
            pattern=pattern, output=self.unread,
        )

    def _search(self, pattern: Pattern, want: re.Pattern[Any],
                fails: list[tuple[Pattern, re.Pattern[Any]]]) -> re.Match[Any] | None:
        window = bytes(self._out[self._cursor - self._out_base :])
        hit = _find(want, window)
        limit = hit[0].start() if hit is not None else len(window) + 1
        for fail_pattern, rx in fails:
            bad = _find(rx, window)
            # A tie goes to the failure: "stub: error" beats "stub: " at the same place.
            if bad is not None and bad[0].start() <= limit:
                raise ConsoleFailure(
                    self._explain(f"failure pattern {fail_pattern!r} appeared"
                                  f" while waiting for {pattern!r}"),
                    pattern=pattern, output=window, failure=bad[0],
                )
        if hit is None:
            return None
        match, end = hit
        self._cursor += end
        return match

    def _explain(self, headline: str) -> str:
        window = self.unread
        consumed = self._cursor - self._out_base
        lines = [headline + "."]
        earlier = f" ({consumed} bytes before it were matched earlier)" if consumed else ""
        if not window:
            lines.append(f"The guest printed nothing since the last match{earlier}.")
        elif not window.strip():
            lines.append(f"The guest printed only {window!r} since the last match{earlier}.")
        else:
            quoted = window[-_QUOTE_MAX:].decode("utf-8", "replace")
            cut = "" if len(window) <= _QUOTE_MAX else f" (the last {_QUOTE_MAX})"
            lines.append(f"Output searched, {len(window)} bytes{cut}:")
            lines.extend("  | " + line for line in quoted.splitlines())
        return "\n".join(lines)


def _as_patterns(fail: Pattern | Sequence[Pattern]) -> list[Pattern]:
    if isinstance(fail, bytes | str | re.Pattern):
        return [fail]
    return list(fail)


def _compile(pattern: Pattern) -> re.Pattern[Any]:
    if isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, bytes | str):
        if not pattern:
            raise ValueError("an empty pattern matches anything: expect something")
        if isinstance(pattern, bytes):
            return re.compile(re.escape(pattern))
        return re.compile(re.escape(pattern))
    raise TypeError(f"expect a bytes, str or re.Pattern, not {type(pattern).__name__}")


def _find(rx: re.Pattern[Any], window: bytes) -> tuple[re.Match[Any], int] | None:
    """Search ``window``; return the match and the byte offset just past it."""
    if isinstance(rx.pattern, bytes):
        found = rx.search(window)
        return None if found is None else (found, found.end())
    # surrogateescape round-trips every byte, so a text offset maps back to a byte offset.
    text = window.decode("utf-8", "surrogateescape")
    match = rx.search(text)
    if match is None:
        return None
    return match, len(text[: match.end()].encode("utf-8", "surrogateescape"))
