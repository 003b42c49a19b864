"""The machine console: ePAPR byte channel 0.

Guest CPUs write from their worker threads; readers live in trio.  Output is queued under a
lock and handed to trio in batches (one ``run_sync_soon`` per batch, not per hypercall), so a
guest printing 16 bytes per call does not pay a trio round trip per call.  Order is preserved:
one queue, appended under the lock in the order the CPUs' stores happened.

Back-pressure is what ePAPR specifies: when more than ``CONSOLE_TX_SPACE`` bytes wait for trio,
EV_BYTE_CHANNEL_SEND answers EV_EAGAIN and the guest retries.

Input (the CLI's stdin, ``Console.feed`` from the API) is buffered for
EV_BYTE_CHANNEL_RECEIVE and wakes CPUs idling in EV_IDLE.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import trio

from machine.platform import CONSOLE_TX_SPACE

Listener = Callable[[int, bytes], None]


class Console:
    def __init__(self) -> None:
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

    # --- wiring (trio thread) --------------------------------------------------------------

    def attach(self, token: trio.lowlevel.TrioToken, input_waker: Callable[[], None]) -> None:
        self._token = token
        self._input_waker = input_waker

    def add_listener(self, listener: Listener) -> None:
        """``listener(cpu, data)`` runs on the trio thread for every batch of output."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    # --- guest side (worker threads) -------------------------------------------------------

    def send(self, cpu: int, data: bytes) -> bool:
        with self._lock:
            if self._pending_bytes + len(data) > CONSOLE_TX_SPACE:
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

    def _schedule(self) -> None:
        if self._token is None:
            return
        try:
            self._token.run_sync_soon(self._deliver)
        except trio.RunFinishedError:
            pass

    def receive(self, max_count: int) -> bytes:
        with self._lock:
            data = bytes(self._rx[:max_count])
            del self._rx[:max_count]
            return data

    def poll(self) -> tuple[int, int]:
        with self._lock:
            return len(self._rx), max(0, CONSOLE_TX_SPACE - self._pending_bytes)

    # --- host side (trio thread) -----------------------------------------------------------

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._pending_bytes = 0
            self._scheduled = False
        # Merge consecutive chunks of one CPU so listeners see whole runs of text.
        merged: list[tuple[int, bytearray]] = []
        for cpu, data in batch:
            if merged and merged[-1][0] == cpu:
                merged[-1][1].extend(data)
            else:
                merged.append((cpu, bytearray(data)))
        for cpu, data in merged:
            self.bytes_out += len(data)
            chunk = bytes(data)
            for listener in list(self._listeners):
                listener(cpu, chunk)

    def flush(self) -> None:
        """Deliver anything still queued (the machine calls this when it stops)."""
        self._deliver()

    def feed(self, data: bytes) -> None:
        """Console input: becomes readable by EV_BYTE_CHANNEL_RECEIVE and wakes idle CPUs."""
        with self._lock:
            self._rx.extend(data)
        if self._input_waker is not None:
            self._input_waker()
