"""Fan-out of machine events to whoever listens (trace printer, trace file, API streams).

Events are produced on worker threads (hooks) and on the trio thread.  They are queued under a
lock and delivered on the trio thread in order, in batches: one ``run_sync_soon`` per batch.
:class:`~machine.events.PowerOff` is always the last event of a run: what CPUs report while
they are being stopped after it is dropped, so every listener sees the same ending.
When nobody listens, :attr:`EventHub.active` is False and producers skip building events at all,
so an untraced machine pays nothing for them.

Three ways to listen, all on the trio thread:

* :meth:`EventHub.subscribe` a callback: sees every event as it is delivered.
* :meth:`EventHub.stream` (or ``async for ev in hub``): a buffer the consumer drains at its own
  pace.  The buffer is bounded and *never* blocks the machine: when it is full, events are
  dropped and an :class:`~machine.events.EventsLost` marker takes their place, so a slow
  consumer sees exactly where the gap is.  A stream ends after the run's
  :class:`~machine.events.PowerOff` (or when the run ends without one, e.g. cancelled).
* :meth:`EventHub.wait_for`: the next event matching a predicate, tested as events are delivered
  (nothing buffered, nothing lost).

With :meth:`EventHub.record` (``MachineConfig(record_events=True)``), the hub keeps the events
from power-on: :attr:`history` lists them, streams replay them first, and ``wait_for`` searches
them from a cursor exactly as ``Console.expect`` searches the output, so a test that subscribes
after the machine started misses nothing.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final, TypeVar, overload

import trio

from machine.events import Event, EventsLost, PowerOff

Listener = Callable[[Event], None]
E = TypeVar("E", bound=Event)

#: Events a stream holds for a consumer that has fallen behind.
DEFAULT_STREAM_BUFFER: Final = 10_000
#: Events a recording hub keeps (the oldest go first); a demo boot makes a few hundred.
DEFAULT_HISTORY: Final = 200_000
#: Seconds ``wait_for`` waits unless told otherwise.
DEFAULT_WAIT_TIMEOUT: Final = 10.0
#: Events quoted by a wait error.
_QUOTE_EVENTS: Final = 20


class EventWaitError(Exception):
    """``wait_for`` did not see a matching event; the message lists the last events (of the
    record, when the hub records; else those the wait saw)."""

    def __init__(self, message: str, *, recent: list[Event]) -> None:
        super().__init__(message)
        self.recent = recent


class EventTimeout(EventWaitError, TimeoutError):
    """No matching event within the timeout."""


class EventsEnded(EventWaitError):
    """The machine stopped before a matching event happened."""


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Event] = []
        self._scheduled = False
        self._listeners: list[Listener] = []
        self._streams: list[weakref.ref[EventStream]] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._history: deque[Event] | None = None
        self._history_base = 0  # absolute index of history[0]
        self._cursor = 0  # absolute index where the next recorded wait_for starts
        self._arrived: trio.Event | None = None
        self._ended = False
        self._ended_event: trio.Event | None = None
        self._end_callbacks: list[Callable[[], None]] = []
        self._powered_off = False  # PowerOff is the last event of a run
        self.active = False

    # --- wiring ----------------------------------------------------------------------------

    def attach(self, token: trio.lowlevel.TrioToken) -> None:
        """The machine powers on: deliver on ``token``'s trio thread from now on."""
        self._token = token
        self._ended = False
        with self._lock:
            self._powered_off = False

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
        self._update_active()

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        self._update_active()

    def record(self, limit: int = DEFAULT_HISTORY) -> None:
        """Keep (the last ``limit``) events from now on, for :attr:`history` and replays.

        Call before the machine powers on to capture the whole boot."""
        if self._history is None:
            self._history = deque(maxlen=limit)
        self._update_active()

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (trio thread) when the run ends, after the last event."""
        self._end_callbacks.append(callback)

    def _update_active(self) -> None:
        self._streams = [r for r in self._streams if r() is not None]
        self.active = bool(self._listeners or self._streams or self._history is not None)

    # --- producers (any thread) ------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if not self.active:
            return
        with self._lock:
            if self._powered_off:
                return  # teardown noise: CPUs stopping after the machine said it stopped
            self._powered_off = isinstance(event, PowerOff)
            self._queue.append(event)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule and self._token is not None:
            try:
                self._token.run_sync_soon(self._deliver)
            except trio.RunFinishedError:
                pass

    # --- delivery (trio thread) ------------------------------------------------------------

    def _deliver(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
            self._scheduled = False
        if not batch:
            return
        history = self._history
        streams = [s for r in self._streams if (s := r()) is not None]
        for event in batch:
            if history is not None:
                if len(history) == history.maxlen:
                    self._history_base += 1
                history.append(event)
            for listener in list(self._listeners):
                listener(event)
            for stream in streams:
                stream._put(event)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    def flush(self) -> None:
        """The run ended: deliver everything queued, end the streams, wake the waiters."""
        self._deliver()
        self._ended = True
        for ref in self._streams:
            stream = ref()
            if stream is not None:
                stream._end()
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None
        if self._ended_event is not None:
            self._ended_event.set()
        for callback in self._end_callbacks:
            callback()

    # --- consumers (trio) ------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """True once a run has ended (until the next one starts)."""
        return self._ended

    async def wait_ended(self) -> None:
        """Return once the run has ended and every event has been delivered."""
        if self._ended:
            await trio.lowlevel.checkpoint()
            return
        if self._ended_event is None or self._ended_event.is_set():
            self._ended_event = trio.Event()
        await self._ended_event.wait()

    @property
    def history(self) -> list[Event]:
        """The recorded events, oldest first (empty unless :meth:`record` was called)."""
        return list(self._history) if self._history is not None else []

    def stream(self, *types: type[Event], bufsize: int = DEFAULT_STREAM_BUFFER,
               replay: bool = True) -> EventStream:
        """A new subscription: iterate it with ``async for``.

        ``types`` keeps only events of those classes (the stream still ends at power-off).
        With a recording hub and ``replay``, the stream first yields the recorded events, so
        nothing from power-on is missed; otherwise it starts with the next event.
        Dropping the stream (or :meth:`EventStream.close`) unsubscribes it.
        """
        stream = EventStream(types, bufsize)
        if replay and self._history is not None:
            for event in self._history:
                stream._put(event, force=True)
        if self._ended:
            stream._end()
        else:
            self._streams.append(weakref.ref(stream, lambda _r: self._update_active()))
        self._update_active()
        return stream

    def __aiter__(self) -> EventStream:
        return self.stream()

    @overload
    async def wait_for(self, predicate: type[E], *,
                       timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> E: ...

    @overload
    async def wait_for(self, predicate: Callable[[Event], bool], *,
                       timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Event: ...

    async def wait_for(self, predicate: type[Event] | Callable[[Event], bool], *,
                       timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Event:
        """The next event that is an instance of ``predicate`` (a class) or satisfies it.

        A recording hub searches its history from where the previous ``wait_for`` matched
        (so events that happened before the call count, and successive waits check order; a
        wait that fails leaves that position alone);
        otherwise only events delivered after the call count.  Raises :class:`EventsEnded` when
        the run ends first and :class:`EventTimeout` after ``timeout`` seconds (None: no limit).
        """
        test = _as_test(predicate)
        recent: deque[Event] = deque(maxlen=_QUOTE_EVENTS)
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        with trio.move_on_at(deadline):
            if self._history is not None:
                return await self._wait_recorded(test, predicate, recent)
            return await self._wait_live(test, predicate, recent)
        if self._history is not None:  # the record's tail says more than the unmatched part
            recent = deque(self._history, maxlen=_QUOTE_EVENTS)
        raise EventTimeout(
            _explain(f"no event matching {_name(predicate)} within {timeout:g} s", recent),
            recent=list(recent),
        )

    async def _wait_recorded(self, test: Callable[[Event], bool], predicate: object,
                             recent: deque[Event]) -> Event:
        position = self._cursor  # absolute; the cursor itself moves only on a match
        while True:
            history = self._history
            assert history is not None
            start = max(position, self._history_base)
            for index in range(start - self._history_base, len(history)):
                event = history[index]
                if test(event):
                    self._cursor = self._history_base + index + 1
                    return event
                recent.append(event)
            position = self._history_base + len(history)
            if self._ended:
                recent = deque(history, maxlen=_QUOTE_EVENTS)
                raise EventsEnded(
                    _explain(f"the run ended without an event matching {_name(predicate)}",
                             recent),
                    recent=list(recent),
                )
            if self._arrived is None:
                self._arrived = trio.Event()
            await self._arrived.wait()

    async def _wait_live(self, test: Callable[[Event], bool], predicate: object,
                         recent: deque[Event]) -> Event:
        found: list[Event] = []
        failed: list[BaseException] = []
        done = trio.Event()

        def listener(event: Event) -> None:
            # Runs inside delivery: an exception here would escape into trio's run loop.
            if found or failed:
                return
            try:
                hit = test(event)
            except Exception as err:
                failed.append(err)
                done.set()
                return
            if hit:
                found.append(event)
                done.set()
            else:
                recent.append(event)

        self.on_end(done.set)
        self.subscribe(listener)
        try:
            if not self._ended:
                await done.wait()
        finally:
            self.unsubscribe(listener)
            self._end_callbacks.remove(done.set)
        if failed:
            raise failed[0]
        if found:
            return found[0]
        raise EventsEnded(
            _explain(f"the run ended without an event matching {_name(predicate)}", recent),
            recent=list(recent),
        )


class EventStream:
    """One subscriber's bounded queue of events; ``async for`` drains it.

    Filled on the trio thread by the hub, so putting never waits: a full buffer drops the
    event and counts it, and the count comes out as one :class:`EventsLost` in its place.
    """

    def __init__(self, types: tuple[type[Event], ...], bufsize: int) -> None:
        if bufsize < 1:
            raise ValueError(f"bufsize {bufsize}: a stream must hold at least one event")
        self._types = types
        self._bufsize = bufsize
        self._buffer: deque[Event] = deque()
        self._lost = 0
        self._lost_since = 0.0
        self._ended = False
        self._wakeup: trio.Event | None = None
        #: Events this stream dropped because its consumer fell behind.
        self.lost = 0

    def _put(self, event: Event, force: bool = False) -> None:
        if self._ended:
            return
        ending = isinstance(event, PowerOff)
        if not self._types or isinstance(event, self._types):
            if len(self._buffer) >= self._bufsize and not (force or ending):
                if not self._lost:
                    self._lost_since = event.time
                self._lost += 1
                self.lost += 1
            else:
                self._flush_lost()
                self._buffer.append(event)
        if ending:
            self._end()
        self._wake()

    def _flush_lost(self) -> None:
        if self._lost:
            self._buffer.append(EventsLost(time=self._lost_since, count=self._lost))
            self._lost = 0

    def _end(self) -> None:
        self._flush_lost()
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def close(self) -> None:
        """Stop receiving; iteration ends once the buffered events are consumed."""
        self._ended = True
        self._wake()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._ended:
                raise StopAsyncIteration
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        await trio.lowlevel.checkpoint()
        return self._buffer.popleft()

    def drain(self) -> list[Event]:
        """Everything buffered now, without waiting."""
        events = list(self._buffer)
        self._buffer.clear()
        return events


def _as_test(predicate: type[Event] | Callable[[Event], bool]) -> Callable[[Event], bool]:
    if isinstance(predicate, type):
        cls = predicate
        return lambda event: isinstance(event, cls)
    return predicate


def _name(predicate: object) -> str:
    if isinstance(predicate, type):
        return predicate.__name__
    return getattr(predicate, "__name__", repr(predicate))


def _explain(headline: str, recent: deque[Event]) -> str:
    lines = [headline + "."]
    if recent:
        lines.append(f"The last {len(recent)} events seen:")
        lines.extend(f"  {event.time * 1000:9.3f} ms  {event.describe()}" for event in recent)
    else:
        lines.append("No other events were seen.")
    return "\n".join(lines)
