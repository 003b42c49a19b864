"""A synchronous facade for plain scripts: no ``async``, no trio in sight.

    from machine.sync import SyncMachine
    from machine.api import DEMO_ELF

    with SyncMachine(kernel=DEMO_ELF, smp=4) as m:
        m.console.expect("all 4 cpus up")
        print(m.wait().code)

Why a thread: the machine *is* a trio program (one task per CPU, event delivery), so
something must run trio while the script blocks.  :class:`SyncMachine` runs ``trio.run`` on a
private thread and forwards each blocking call with :func:`trio.from_thread.run`; exceptions
(timeouts, :class:`~machine.devices.console.ConsoleFailure`, …) come back to the caller's thread
unchanged.  Leaving the ``with`` block stops the machine and joins the thread, so a script that
fails half-way leaves nothing running.

Events are recorded from power-on by default (``record_events=True``): a script that looks at
events after the fact sees all of them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from machine.api import DEFAULT_RUN_TIMEOUT, MachineRun
from machine.api import run_machine as _run_machine_async
from machine.board import E500Machine, MachineConfig, RunResult
from machine.devices.console import DEFAULT_EXPECT_TIMEOUT, Pattern
from machine.eventhub import DEFAULT_WAIT_TIMEOUT
from machine.events import Event

T = TypeVar("T")


class SyncMachine:
    """An :class:`~machine.board.E500Machine` driven from ordinary (non-async) code.

    Built in the constructor (bad host input raises :class:`fwcfg.ConfigError` there); powered
    on by :meth:`start` or ``with``; stopped by :meth:`close` or the end of the ``with``.
    """

    def __init__(self, config: MachineConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            kwargs.setdefault("record_events", True)
        #: The machine itself (its methods must be called on the trio thread: use :meth:`call`).
        self.machine = E500Machine(config, **kwargs)
        self.console = SyncConsole(self)
        self._token: trio.lowlevel.TrioToken | None = None
        self._quit: trio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # --- lifetime --------------------------------------------------------------------------

    def start(self) -> SyncMachine:
        """Power the machine on (returns once every CPU task runs)."""
        if self._thread is not None:
            raise RuntimeError("this SyncMachine was already started")
        self._thread = threading.Thread(target=self._thread_main, name="fwcfg-e500-trio",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as err:  # reported to start() or close()
            self._error = err
        finally:
            self._ready.set()

    async def _trio_main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._quit = trio.Event()
        async with self.machine:
            self._ready.set()
            await self._quit.wait()

    def close(self) -> None:
        """Stop the machine (if it still runs), release its threads, re-raise a crash."""
        thread = self._thread
        if thread is None:
            self.machine.close()
            return
        if thread.is_alive() and self._token is not None and self._quit is not None:
            try:
                trio.from_thread.run_sync(self._quit.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> SyncMachine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- calls into trio -------------------------------------------------------------------

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the machine's trio thread and return its result."""
        if self._token is None:
            raise RuntimeError("the machine is not running: call start() or use `with`")
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise RuntimeError("the machine's trio thread has ended") from None

    def wait_for(self, predicate: type[Event] | Callable[[Event], bool], *,
                 timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Event:
        """The next matching event (see :meth:`machine.eventhub.EventHub.wait_for`)."""

        async def go() -> Event:
            return await self.machine.events.wait_for(predicate, timeout=timeout)

        return self.call(go)

    def wait(self, *, timeout: float | None = DEFAULT_RUN_TIMEOUT) -> RunResult:
        """Block until the machine stops on its own (power-off, fault); its result."""

        async def go() -> RunResult:
            return await self.machine.wait(timeout=timeout)

        if self.machine.result is not None and self.machine.events.ended:
            return self.machine.result
        return self.call(go)

    def stop(self, code: int = 0, reason: str = "stopped by the script") -> RunResult:
        """Power the machine off now; its result."""

        async def go() -> RunResult:
            self.machine.stop(code, reason)
            return await self.machine.wait()

        return self.call(go)

    @property
    def events(self) -> list[Event]:
        """The events recorded so far (all of them with ``record_events``, the default)."""
        return self.machine.events.history

    @property
    def result(self) -> RunResult | None:
        return self.machine.result


class SyncConsole:
    """The console of a :class:`SyncMachine`: the same calls as
    :class:`~machine.devices.console.Console`,
    blocking."""

    def __init__(self, owner: SyncMachine) -> None:
        self._owner = owner

    def expect(self, pattern: Pattern, *, timeout: float | None = DEFAULT_EXPECT_TIMEOUT,
               fail: Pattern | Sequence[Pattern] = ()) -> re.Match[Any]:
        """Block until the guest printed ``pattern`` (see
        :meth:`machine.devices.console.Console.expect`)."""
        console = self._owner.machine.console

        async def go() -> re.Match[Any]:
            return await console.expect(pattern, timeout=timeout, fail=fail)

        return self._owner.call(go)

    def send(self, data: bytes | str) -> None:
        """Console input for the guest."""
        console = self._owner.machine.console

        async def go() -> None:
            await console.send(data)

        self._owner.call(go)

    @property
    def output(self) -> bytes:
        return self._owner.machine.console.output

    @property
    def text(self) -> str:
        return self._owner.machine.console.text


def run_machine(config: MachineConfig | None = None, *,
                timeout: float | None = DEFAULT_RUN_TIMEOUT, **kwargs: Any) -> MachineRun:
    """Boot, run to the end, return the record: :func:`machine.api.run_machine` for scripts."""

    async def go() -> MachineRun:
        return await _run_machine_async(config, timeout=timeout, **kwargs)

    return trio.run(go)


__all__ = ["MachineRun", "SyncConsole", "SyncMachine", "run_machine"]
