"""The scheduler's quantum: a POSIX timer that stops the engine from C, without the GIL.

When more than one vCPU is runnable, the running one must be stopped after its quantum.  A
Python thread that wakes to call ``emu_stop`` must take the GIL, and the worker thread hands
the GIL over at its next ctypes call: measured, that cost every release on a 2-core VM tens of
microseconds (the waking thread's scheduling, then the GIL hand-off back).  So the quantum is a
``timer_create(CLOCK_MONOTONIC, SIGEV_THREAD)`` timer whose notification function *is*
unicorn's ``uc_emu_stop``, with the engine handle as its argument: glibc calls it on a thread of
its own, no Python runs, and the worker never loses the GIL for it.  An expiry costs glibc a
short-lived thread, and only happens when a vCPU really used up its quantum with others waiting.

The timer is periodic while armed: a stop that lands just before the engine enters its loop is
forgotten by unicorn, and the next period issues it again.  The scheduler disarms it when the
slice ends.  The layout of ``struct sigevent`` is glibc's (x86-64 and aarch64 alike); the first
timer in a process is checked by stopping a scratch engine that loops forever.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any, cast

from machine.cpu import native
from machine.cpu.layout import EngineLayoutError, new_engine

_CLOCK_MONOTONIC = 1
_SIGEV_THREAD = 2


class _Sigevent(ctypes.Structure):
    _fields_ = [
        ("sigev_value", ctypes.c_void_p),  # union sigval: the engine handle
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("sigev_notify_function", ctypes.c_void_p),
        ("sigev_notify_attributes", ctypes.c_void_p),
        ("_pad", ctypes.c_byte * 32),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc: Any = ctypes.PyDLL(None)  # keeps the GIL across these short syscalls
_libc.timer_create.argtypes = [ctypes.c_int, ctypes.POINTER(_Sigevent),
                               ctypes.POINTER(ctypes.c_void_p)]
_libc.timer_settime.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                ctypes.c_void_p]
_libc.timer_delete.argtypes = [ctypes.c_void_p]
_UC_EMU_STOP = cast(int, ctypes.cast(native.emu_stop, ctypes.c_void_p).value)
_TIMER_ABSTIME = 1


def _spec(seconds: float) -> _Itimerspec:
    ns = int(seconds * 1e9)
    t = _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)
    return _Itimerspec(t, t)


class QuantumTimer:
    """Stops the engine with handle ``handle`` every ``period`` seconds while armed."""

    def __init__(self, handle: int, period: float) -> None:
        _check_once()
        self._handle = handle
        self._timer = ctypes.c_void_p()
        sev = _Sigevent()
        sev.sigev_value = handle
        sev.sigev_notify = _SIGEV_THREAD
        sev.sigev_notify_function = _UC_EMU_STOP
        if _libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(sev), ctypes.byref(self._timer)):
            raise OSError(ctypes.get_errno(), "timer_create failed")
        self._armed = _spec(period)
        self._off = _spec(0)
        self._at = _spec(period)
        self._at_ref = ctypes.byref(self._at)
        self.armed = False
        self._closed = False

    def arm(self) -> None:
        if not self.armed:
            self.armed = True
            _libc.timer_settime(self._timer, 0, ctypes.byref(self._armed), None)

    def arm_at(self, monotonic_ns: int) -> None:
        """Stop the engine when CLOCK_MONOTONIC reaches ``monotonic_ns``, and again every
        period after it until re-armed or disarmed (replaces any arming; a deadline timer,
        not the quantum).  The repeats matter: a stop that lands between two engine runs is
        forgotten by unicorn, and a CPU running alone has no quantum to stop it later -- its
        timer interrupt would wait for whatever stopped the engine next."""
        value = self._at.it_value  # (one struct, refilled: this runs at every timer tick)
        value.tv_sec, value.tv_nsec = divmod(monotonic_ns, 1_000_000_000)
        self.armed = True
        _libc.timer_settime(self._timer, _TIMER_ABSTIME, self._at_ref, None)

    def disarm(self) -> None:
        if self.armed:
            self.armed = False
            _libc.timer_settime(self._timer, 0, ctypes.byref(self._off), None)

    def close(self) -> None:
        """Delete the timer.  A notification already under way may still call
        ``uc_emu_stop`` on the engine afterwards (glibc runs it on a thread it creates for
        the expiry, which a loaded host may start late): free the engine with
        :func:`free_later`, never at once."""
        if not self._closed:
            self._closed = True
            _libc.timer_delete(self._timer)


#: How long an engine outlives its timer.  A notification that glibc's helper thread had
#: already taken when the timer was deleted runs within scheduling latency (milliseconds even
#: on a loaded host); half a second is ample, and bounds what the graveyard holds.
GRACE_S = 0.5
_graveyard: list[tuple[float, Any]] = []
_graveyard_lock = threading.Lock()


def free_later(engine: Any) -> None:
    """Free the unicorn engine ``engine`` (a ``unicorn.Uc``) once :data:`GRACE_S` have passed,
    keeping it alive until then (:func:`reap` frees the engines that are due; each call here
    does too).  At interpreter exit the remaining ones are left to the operating system: a late
    notification must not find them freed."""
    engine._Uc__finalizer.atexit = False  # unicorn's weakref.finalize, which calls uc_close
    with _graveyard_lock:
        _graveyard.append((time.monotonic() + GRACE_S, engine))
    reap()


def reap() -> int:
    """Free the engines whose grace has passed; how many are still waiting."""
    now = time.monotonic()
    with _graveyard_lock:
        due = [e for t, e in _graveyard if t <= now]
        _graveyard[:] = [(t, e) for t, e in _graveyard if t > now]
        left = len(_graveyard)
    for e in due:
        e._Uc__finalizer()
    return left


_checked = False
_check_lock = threading.RLock()


def _check_once() -> None:
    """A scratch engine looping forever must be stopped by the timer (glibc's layout)."""
    global _checked
    with _check_lock:
        if _checked:
            return
        _checked = True  # the check below builds a QuantumTimer itself
        uc: Any = new_engine()
        uc.mem_map(0, 0x1000)
        uc.mem_write(0, b"\x48\x00\x00\x00")  # b .
        timer = QuantumTimer(int(uc._uch.value), 0.002)
        guard = threading.Timer(2.0, uc.emu_stop)  # keeps the process alive if it never fires
        guard.start()
        t0 = time.monotonic()
        try:
            timer.arm()
            uc.emu_start(0, 0xFFFF_FFFF)
        finally:
            timer.disarm()
            timer.close()
            guard.cancel()
            free_later(uc)
        if time.monotonic() - t0 > 1.0:
            raise EngineLayoutError("the quantum timer did not stop the engine (glibc's "
                                    "timer_create with SIGEV_THREAD is required)")
