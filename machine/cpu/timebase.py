"""The timebase: one trio task per run advances every running CPU's TBU:TBL.

unicorn's timebase does not tick, and PLATFORM.md promises 400 MHz, refreshed at least every
millisecond.  A ticker task per *machine* costs each machine 1000 wake-ups a second; fifty
machines in one process spent the event loop on timers (a 50-machine boot went from 2 s to
30 s).  So all machines of one trio run share one ticker.  It is a system task: it lives as
long as the run, sleeps while no CPU of any machine runs, and trio cancels it with the run.
"""

from __future__ import annotations

from typing import Protocol

import trio

from machine.platform import TIMEBASE_TICK_S


class Client(Protocol):
    """A machine, as the ticker sees it (trio thread only)."""

    def wants_ticks(self) -> bool: ...

    def tick(self) -> None: ...


class Ticker:
    def __init__(self) -> None:
        self._clients: set[Client] = set()
        self._wakeup = trio.Event()

    def add(self, client: Client) -> None:
        self._clients.add(client)
        self._wakeup.set()

    def remove(self, client: Client) -> None:
        self._clients.discard(client)

    def poke(self) -> None:
        """A client now wants ticks (trio thread)."""
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            active = [c for c in self._clients if c.wants_ticks()]
            if not active:
                # No await between the check and the new event: a poke cannot slip between.
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            for client in active:
                client.tick()
            await trio.sleep(TIMEBASE_TICK_S)


_TICKER: trio.lowlevel.RunVar[Ticker] = trio.lowlevel.RunVar("fwcfg_e500_timebase")


def ticker() -> Ticker:
    """This trio run's ticker, started on first use."""
    try:
        return _TICKER.get()
    except LookupError:
        t = Ticker()
        _TICKER.set(t)
        trio.lowlevel.spawn_system_task(t._run, name="fwcfg-e500 timebase")
        return t
