"""Wake-on-store: CPUs parked on a word of guest RAM, woken by the store that changes it.

This replaces QEMU's MMIO spin device and every guest polling loop.  The mechanism has two
halves:

* *Seeing the store.*  The page that holds a watched word is made read-only in the machine's
  engine (``Engine.watch_page``, from the next slice on).  A guest store into it lands in a
  write-protection hook limited to that page, which hands the store to
  :meth:`StoreWatch.store`: that wakes the waiters and lands the bytes in shared RAM, under
  the watch lock.  Stores anywhere else stay
  on unicorn's fast path, which is why the hook is range-limited (an unlimited hook slows
  every store ~12x; see reference/unicorn.md).
  Host-side writes (fw_cfg DMA, loaders) report through ``GuestRAM.write_observer``.
* *Not losing the wake-up.*  A waiter is armed *before* the parking CPU re-reads the word, and
  no other CPU runs before the page is protected (one engine: the next slice).  A store that lands
  before the watch is armed is caught by the re-read; one that lands after is caught by the
  hook.  There is no window in between: arming, re-reading and a guest store each hold the
  watch lock.

The watch table is touched from worker threads (hooks) and the trio thread, so it has a lock.
Wake callbacks must be thread-safe and must not call back into the watch: a guest store runs
them with the lock held (the machine passes scheduler wake-ups, ``TrioToken.run_sync_soon``
closures and event emitters).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from machine.memory import GuestRAM


@dataclass(eq=False, slots=True)
class Waiter:
    """One armed watch: fires once, when the word at ``address`` differs from ``expected``."""

    address: int
    expected: int
    wake: Callable[[int], None]
    fired: bool = False
    value: int | None = None


class StoreWatch:
    def __init__(self, ram: GuestRAM) -> None:
        self._ram = ram
        self._lock = threading.Lock()
        self._by_word: dict[int, list[Waiter]] = {}
        ram.write_observer = self.stored

    def arm(self, address: int, expected: int, wake: Callable[[int], None]) -> Waiter:
        with self._lock:
            return self._arm(address, expected & 0xFFFF_FFFF, wake)

    def _arm(self, address: int, expected: int, wake: Callable[[int], None]) -> Waiter:
        waiter = Waiter(address, expected, wake)
        self._by_word.setdefault(address, []).append(waiter)
        return waiter

    def arm_unless_changed(self, address: int, expected: int,
                           wake: Callable[[int], None]) -> Waiter | int:
        """:meth:`arm` and :meth:`recheck` at once: the word's value if it already differs
        from ``expected`` (then nothing is armed and ``wake`` is not called), else the
        armed waiter."""
        expected &= 0xFFFF_FFFF
        with self._lock:
            value = self._ram.read_u32(address)
            if value != expected:
                return value
            return self._arm(address, expected, wake)

    def disarm(self, waiter: Waiter) -> None:
        with self._lock:
            lst = self._by_word.get(waiter.address)
            if lst is not None and waiter in lst:
                lst.remove(waiter)
                if not lst:
                    del self._by_word[waiter.address]

    def recheck(self, waiter: Waiter) -> int | None:
        """Fire ``waiter`` now if its word already differs; returns the value if it fired."""
        with self._lock:
            fired = self._collect([waiter.address])
        self._wake(fired)
        return waiter.value if waiter.fired else None

    def stored(self, address: int, size: int) -> None:
        """Bytes ``[address, address+size)`` of RAM changed (a host-side write, already
        done: a waiter armed since then re-reads the new bytes)."""
        if self._by_word:
            with self._lock:
                fired = self._collect(self._words_in(address, address + size))
            self._wake(fired)

    def store(self, address: int, data: bytes) -> None:
        """Land a guest store into a watched page, and wake the waiters it concerns.

        All of it happens under the lock that :meth:`arm` and :meth:`recheck` take, so a waiter
        armed concurrently either is seen here or re-reads the new bytes.  (The wake callbacks
        may give up the GIL: a trio wake-up writes to a socket.  A store made visible outside
        the lock lost wake-ups that way.)  The bytes land last, so a woken waiter takes the
        new value from :attr:`Waiter.value` (the value this store leaves), or reads RAM
        through :meth:`read_u32`."""
        off = address - self._ram.base
        with self._lock:
            if self._by_word:
                fired = self._collect(self._words_in(address, address + len(data)),
                                      (address, data))
                self._wake(fired)
            self._ram.view[off : off + len(data)] = data

    def read_u32(self, address: int) -> int:
        """A word of RAM, with any guest store under way landed."""
        with self._lock:
            return self._ram.read_u32(address)

    def _words_in(self, start: int, end: int) -> list[int]:
        return [w for w in self._by_word if w < end and start < w + 4]

    def _collect(self, words: list[int],
                 pending: tuple[int, bytes] | None = None) -> list[Waiter]:
        """Waiters on ``words`` whose word now differs, marked fired (lock held).  With
        ``pending``, as if that store (address, bytes) had landed."""
        fired: list[Waiter] = []
        for word in words:
            lst = self._by_word.get(word)
            if not lst:
                continue
            value = self._value(word, pending)
            keep = []
            for w in lst:
                if value != w.expected and not w.fired:
                    w.fired = True
                    w.value = value
                    fired.append(w)
                else:
                    keep.append(w)
            if keep:
                self._by_word[word] = keep
            else:
                del self._by_word[word]
        return fired

    def _value(self, word: int, pending: tuple[int, bytes] | None) -> int:
        if pending is None:
            return self._ram.read_u32(word)
        address, data = pending
        now = bytearray(self._ram.read(word, 4))
        lo, hi = max(word, address), min(word + 4, address + len(data))
        now[lo - word : hi - word] = data[lo - address : hi - address]
        return int.from_bytes(now, "big")

    @staticmethod
    def _wake(fired: list[Waiter]) -> None:
        for w in fired:
            assert w.value is not None
            w.wake(w.value)

    def statistics(self) -> dict[str, int]:
        with self._lock:
            return {"words": len(self._by_word),
                    "waiters": sum(len(v) for v in self._by_word.values())}
