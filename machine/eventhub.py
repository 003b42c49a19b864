"""Fan-out of machine events to whoever listens (trace printer, trace file, API streams).

Events are produced on worker threads (hooks) and on the trio thread.  They are queued under a
lock and delivered on the trio thread in order, in batches: one ``run_sync_soon`` per batch.
When nobody listens, :attr:`EventHub.active` is False and producers skip building events at all,
so an untraced machine pays nothing for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import trio

from machine.events import Event

Listener = Callable[[Event], None]


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Event] = []
        self._scheduled = False
        self._listeners: list[Listener] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self.active = False

    def attach(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
        self.active = True

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        self.active = bool(self._listeners)

    def emit(self, event: Event) -> None:
        if not self.active:
            return
        with self._lock:
            self._queue.append(event)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule and self._token is not None:
            try:
                self._token.run_sync_soon(self.flush)
            except trio.RunFinishedError:
                pass

    def flush(self) -> None:
        """Deliver everything queued (trio thread)."""
        with self._lock:
            batch, self._queue = self._queue, []
            self._scheduled = False
        for event in batch:
            for listener in list(self._listeners):
                listener(event)
