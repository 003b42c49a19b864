"""A GDB remote stub for the machine: QEMU's ``-s``, ``-gdb tcp::PORT`` and ``-S``.

Every vCPU is a gdb thread (thread id = CPU index + 1), in all-stop mode: when one CPU stops
(breakpoint, single step, watchpoint, fault, Ctrl-C) all of them stop, and gdb reads a quiet
machine.  A parked CPU is a thread stopped where it parked (``info threads`` says why).

Layers, each testable alone:

* :mod:`machine.debug.gdb_packets` frames bytes into packets (sans I/O);
* :class:`GdbSession` answers one packet at a time (sans I/O: payload in, :class:`Reply` out)
  against the machine and its :class:`~machine.debug.gdb_control.DebugControl`;
* :class:`GdbServer` owns the TCP listener and the trio tasks of a connection.

It runs inside the machine's trio run: no threads beyond the vCPUs' own.  Nothing a client
sends can crash the machine: every packet handler runs under one ``except Exception`` that
answers ``E01``, unknown packets get the empty reply the protocol prescribes, and a dropped
connection detaches (breakpoints removed, CPUs resumed), as QEMU does.

Cancellation: the server's tasks live in the nursery of :meth:`GdbServer.serve`; cancelling it
closes the listener and the connection (a client sees the connection close).  CPUs held at
the gate are the machine's tasks and are cancelled with the machine.  :func:`run_with_gdb`
ties both together: when the run ends it tells a waiting gdb that the "process" exited
(``W`` packet), gives that a moment to be sent, then cancels the server.

Memory is guest-physical (unicorn's e500 does no translation): RAM, and the boot ROM for
reads.  ROM writes and the MMIO window answer ``E0e`` rather than poke a device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from fwcfg import ConfigError
from machine.debug.gdb_control import DebugControl, Exited, Signal, Stop
from machine.debug.gdb_packets import (
    Ack,
    BadPacket,
    Interrupt,
    Packet,
    PacketReader,
    frame,
)
from machine.debug.gdb_session import GdbError as GdbError
from machine.debug.gdb_session import GdbSession as GdbSession
from machine.debug.gdb_session import Reply as Reply
from machine.debug.gdb_session import Then as Then
from machine.debug.gdb_session import parse_gdb_address as parse_gdb_address

if TYPE_CHECKING:
    from machine.board import E500Machine, RunResult

#: QEMU's ``-s``.
DEFAULT_GDB_ADDRESS: Final = "tcp::1234"
#: How long a finished run waits for the exit notice to reach gdb before closing.
EXIT_NOTICE_S: Final = 1.0

# --- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Received:
    item: Packet | Interrupt | Ack | BadPacket


@dataclass(frozen=True, slots=True)
class _Closed:
    """The client closed the connection (or it broke)."""


@dataclass(frozen=True, slots=True)
class _Event:
    event: Stop | Exited


_Message = _Received | _Closed | _Event


class GdbServer:
    """Serves gdb connections for ``machine``, one at a time (a second client is refused).

    Construct it before the machine powers on: it installs the machine's
    :class:`~machine.debug.gdb_control.DebugControl`, and with ``wait_for_debugger`` (``-S``) every
    CPU waits before its first instruction until gdb resumes it.
    """

    def __init__(self, machine: E500Machine, *, wait_for_debugger: bool = False) -> None:
        self.machine = machine
        self.control = DebugControl(machine.cpus, halted=wait_for_debugger)
        self.control.parked = machine.cpu_parked
        machine.debug = self.control
        self._connected = False
        self._idle = trio.Event()
        self._idle.set()

    async def serve(self, address: str = DEFAULT_GDB_ADDRESS, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``address`` (``tcp::PORT``...) until cancelled; started with the bound
        port (useful with port 0)."""
        await self.serve_listeners(await listen(address), task_status=task_status)

    async def serve_listeners(self, listeners: list[trio.SocketListener], *,
                              task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
                              ) -> None:
        """Accept connections on ``listeners`` (from :func:`listen`) until cancelled; they are
        closed on the way out."""
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept, listener, nursery)
            task_status.started(bound)

    def machine_ended(self, result: RunResult) -> None:
        """The run is over: a gdb waiting for a stop hears ``W<code>``, then is closed."""
        self.control.machine_ended(result.code)

    async def wait_idle(self) -> None:
        """Wait until no gdb is connected."""
        await self._idle.wait()

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError:
                    # Out of file descriptors and the like: the machine runs on; try later.
                    await trio.sleep(0.1)
                    continue
                if self._connected:
                    await stream.aclose()  # one debugger at a time, as in QEMU
                    continue
                self._connected = True
                self._idle = trio.Event()
                nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        session = GdbSession(self.machine, self.control)
        try:
            async with stream:
                await self._converse(session, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        finally:
            if self.control.exited is None:
                self.control.detach()  # breakpoints out, the machine runs on
            self._connected = False
            self._idle.set()

    async def _converse(self, session: GdbSession, stream: trio.SocketStream) -> None:
        control = self.control
        control.report_faults = True
        # QEMU stops the machine when a debugger attaches; gdb expects a stopped target.
        if control.stop is None:
            control.halt(Signal.TRAP)
        send, inbox = trio.open_memory_channel[_Message](math.inf)
        last: bytes = b""
        running = False

        async def write(payload: bytes) -> None:
            nonlocal last
            last = frame(payload)
            await stream.send_all(last)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, stream, send.clone())
            nursery.start_soon(self._watch_exit, send.clone())
            await control.wait_event()
            while True:
                msg = await inbox.receive()
                if isinstance(msg, _Closed):
                    break
                if isinstance(msg, _Event):
                    if isinstance(msg.event, Exited):
                        if running:
                            await write(session.stop_reply(msg.event))
                        break
                    if running:
                        running = False
                        await write(session.stop_reply(msg.event))
                    continue
                item = msg.item
                if isinstance(item, Interrupt):
                    if running:
                        control.halt(Signal.INT)
                    continue
                if isinstance(item, Ack):
                    if not item.ok and last and not session.no_ack:
                        await stream.send_all(last)
                    continue
                if isinstance(item, BadPacket):
                    if not session.no_ack:
                        await stream.send_all(b"-")
                    continue
                if not session.no_ack:
                    await stream.send_all(b"+")
                reply = session.handle(item.payload)
                if reply.payload is not None:
                    await write(reply.payload)
                if reply.then is Then.CLOSE:
                    break
                if reply.then is Then.RUN:
                    running = True
                    nursery.start_soon(self._wait_stop, send.clone())
            nursery.cancel_scope.cancel()

    async def _read(self, stream: trio.SocketStream,
                    send: trio.MemorySendChannel[_Message]) -> None:
        reader = PacketReader()
        async with send:
            while True:
                try:
                    data = await stream.receive_some(4096)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                    data = b""
                if not data:
                    await send.send(_Closed())
                    return
                for item in reader.feed(data):
                    await send.send(_Received(item))

    async def _wait_stop(self, send: trio.MemorySendChannel[_Message]) -> None:
        async with send:
            await send.send(_Event(await self.control.wait_event()))

    async def _watch_exit(self, send: trio.MemorySendChannel[_Message]) -> None:
        async with send:
            await send.send(_Event(await self.control.wait_exited()))


async def listen(address: str) -> list[trio.SocketListener]:
    """Open the TCP listeners for a ``-gdb`` address; a bad address or a port in use raises
    :class:`fwcfg.ConfigError` (before anything runs, so the CLI reports one clear line)."""
    host, port = parse_gdb_address(address)
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as err:
        raise ConfigError(f"-gdb {address!r}: cannot listen: {err.strerror}") from None


async def run_with_gdb(machine: E500Machine,
                       address: str | list[trio.SocketListener] = DEFAULT_GDB_ADDRESS, *,
                       wait_for_debugger: bool = False, timeout: float | None = None,
                       task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
                       ) -> RunResult:
    """Run ``machine`` with a gdb stub on ``address`` (``-gdb``/``-s``; ``-S`` is
    ``wait_for_debugger``), or on listeners already opened with :func:`listen` (so that a
    port in use is reported before the caller opens its own nursery).  Started (with
    ``nursery.start``) once listening, with the bound port.  Returns the run's result; a
    connected gdb is told the machine exited."""
    listeners = await listen(address) if isinstance(address, str) else address
    server = GdbServer(machine, wait_for_debugger=wait_for_debugger)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve_listeners, listeners)
        task_status.started(port)
        result = await machine.run(timeout=timeout)
        server.machine_ended(result)
        with trio.move_on_after(EXIT_NOTICE_S):
            await server.wait_idle()
        nursery.cancel_scope.cancel()
    return result
