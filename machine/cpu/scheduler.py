"""The vCPU scheduler: one worker thread runs a machine's runnable vCPUs in its one engine.

The trio side of each vCPU asks for a *slice* with ``await cpu.run(pc)`` and gets back an
:class:`~machine.cpu.vcpu.Exit` once something needs trio (power-off, a fault, a debugger
stop, a park it must handle, a kick).  Between those, the worker thread round-robins the
vCPUs that have a slice, each for at most :data:`QUANTUM_S`, swapping their contexts in and
out of the engine; a quantum that ends is invisible to trio.

* **Parking is "not runnable".**  A vCPU parked inside its slice (FW_WAIT_STORE) leaves the run
  queue; the store, release or input that concerns it puts it back (:meth:`Scheduler.wake`).
  With no runnable vCPU the worker sleeps on a condition: zero host CPU, nothing polls.
* **A wake-up on the worker thread is a switch, not a thread hand-off.**  A guest store that
  releases a parked vCPU (a hook on the worker thread) puts it at the head of the queue and ends
  the storing vCPU's quantum at its next block boundary, so the released vCPU runs next.
* **Preemption**: while other vCPUs are runnable, a POSIX timer stops the engine from C every
  quantum (:mod:`machine.cpu.quantum`: no Python thread wakes, the worker keeps the GIL), at
  a block boundary (:mod:`machine.cpu.engine`).  A stop from another thread (a kick, a host
  wake-up) arms the same periodic timer: a stop issued just before the engine entered its
  loop would be forgotten by unicorn, and the next period issues it again.
* **Cancellation**: ``run`` parks its task with ``wait_task_rescheduled``; the abort kicks the
  vCPU, and the Cancelled is delivered once its slice has really ended, so a cancelled
  machine never leaves a vCPU running behind trio's back.

Several machines in one process each have their own worker, so they run in parallel.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import outcome
import trio

from machine.cpu.engine import Engine
from machine.cpu.quantum import QuantumTimer
from machine.cpu.vcpu import Exit, ExitKind, VCpu

#: Slices in a row without another runnable vCPU after which the quantum timer is disarmed.
_ALONE_SLICES = 2
#: How long a vCPU runs while others are runnable (Linux's call-in timeouts, RCU and
#: watchdogs expect every CPU to progress within a few milliseconds, even at -smp 8).
QUANTUM_S = 0.001


@dataclass(eq=False)
class Wait:
    """A vCPU parked inside its slice.  ``on_kick`` gives the Exit its trio task gets when
    the machine stops it instead (then the task parks it the slow way)."""

    resume_pc: int
    on_kick: Callable[[VCpu], Exit]


class _Slot:
    __slots__ = ("action", "kicked", "pc", "queued", "task", "token", "waiting")

    def __init__(self) -> None:
        self.task: Any = None  # the trio task awaiting this vCPU's slice
        self.token: trio.lowlevel.TrioToken | None = None
        self.pc = 0
        self.queued = False
        self.kicked = False
        self.waiting: Wait | None = None
        #: Run on the worker just before the vCPU resumes after a wake-up; may return a PC.
        self.action: Callable[[VCpu], int | None] | None = None


class Scheduler:
    def __init__(self, engine: Engine, cpus: list[VCpu], name: str = "fwcfg-e500") -> None:
        self.engine = engine
        self.cpus = cpus
        self._slots = {cpu: _Slot() for cpu in cpus}
        self._cv = threading.Condition(threading.Lock())
        #: Exits to hand to trio, sent once the worker has let go of the lock (a wake-up
        #: write to trio's socket gives up the GIL; the lock must not be held across it).
        self._outbox: list[tuple[trio.lowlevel.TrioToken, Any, Exit]] = []
        self._runq: deque[VCpu] = deque()
        self._current: VCpu | None = None
        self._slice = 0
        self._closed = False
        self._quantum = QuantumTimer(engine.handle, QUANTUM_S)
        #: Stops the engine when a timer is due (one-shot, re-armed as deadlines change).
        self._deadline = QuantumTimer(engine.handle, QUANTUM_S)
        self._armed_for: int | None = None
        self._alone_since = 0  # the slice since which the running vCPUs had no company
        #: Called by the worker between slices (timers): returns when the engine must next
        #: stop (CLOCK_MONOTONIC ns) or None.
        self.on_boundary: Callable[[], int | None] = lambda: None
        #: When the engine must next stop for a timer (CLOCK_MONOTONIC ns) or None, without
        #: serving anything: for re-timing inside a slice (:meth:`retime`).
        self.next_deadline: Callable[[], int | None] = lambda: None
        #: Called with a vCPU whose device input went up (any thread, lock not held): the
        #: machine wakes it if it dozes or idles and now has work.
        self.on_input_raised: Callable[[VCpu], None] = lambda cpu: None
        engine.on_retime = self.retime
        #: Called (worker, lock not held, the vCPU still loaded) after a slice that a stop
        #: ended, with whether other vCPUs were waiting to run: it may park the vCPU
        #: (spin-waits, machine/devices/spin_waits.py).
        self.on_slice_end: Callable[[VCpu, bool], None] = lambda cpu, company: None
        #: vCPU switches, and the worker's time between two slices of different vCPUs
        #: (bookkeeping and the context swap; time asleep with nothing runnable excluded).
        self.switches = 0
        self.switch_ns = 0
        self.slices = 0
        self.run_ns = 0
        for cpu in cpus:
            self._bind(cpu)
        self._thread = threading.Thread(target=self._loop, name=f"vcpus of {name}", daemon=True)
        self._thread.start()
        self._worker_id = self._thread.ident

    def _bind(self, cpu: VCpu) -> None:
        ref = weakref.ref(self)

        async def run(pc: int) -> Exit:
            me = ref()
            if me is None:
                raise RuntimeError("the machine is closed")
            return await me.run(cpu, pc)

        def kick() -> None:
            me = ref()
            if me is not None:
                me.kick(cpu)

        cpu.run = run  # type: ignore[method-assign]
        cpu.kick = kick  # type: ignore[method-assign]

    # --- the trio side ---------------------------------------------------------------------

    async def run(self, cpu: VCpu, pc: int) -> Exit:
        """Give ``cpu`` a slice from ``pc``; its Exit once something needs trio."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise RuntimeError(f"cpu {cpu.index} is closed: its machine was closed")
        slot = self._slots[cpu]
        with self._cv:
            slot.task = trio.lowlevel.current_task()
            slot.token = trio.lowlevel.current_trio_token()
            slot.pc = pc
            slot.kicked = False
            cpu._in_slice = True
            self._enqueue(cpu, front=False)

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            self.kick(cpu)
            return trio.lowlevel.Abort.FAILED

        result: Exit = await trio.lowlevel.wait_task_rescheduled(abort)
        cpu.pc = result.pc
        cpu.slices += 1
        return result

    def kick(self, cpu: VCpu) -> None:
        """End ``cpu``'s slice as soon as possible, with ExitKind.KICKED (any thread)."""
        slot = self._slots[cpu]
        with self._cv:
            if slot.task is None or slot.kicked:
                return
            slot.kicked = True
            if self._current is cpu:
                self._stop_current()
                return
            # Only the worker moves contexts: it hands the vCPU back without running it.
            if slot.queued:
                self._runq.remove(cpu)
                slot.queued = False
            self._enqueue(cpu, front=True)

    # --- parking and waking (hooks on the worker thread, or any thread) ---------------------

    def park(self, cpu: VCpu, wait: Wait) -> None:
        """From ``cpu``'s own hook: it is not runnable until :meth:`wake` (or a kick)."""
        slot = self._slots[cpu]
        with self._cv:
            slot.waiting = wait
            slot.pc = wait.resume_pc
        self.engine.stop()

    def wake(self, cpu: VCpu, wait: Wait, action: Callable[[VCpu], int | None]) -> bool:
        """Make ``cpu`` runnable again if it is still parked in ``wait``; ``action`` runs on
        the worker just before it resumes.  False if that wait is over already."""
        slot = self._slots[cpu]
        with self._cv:
            if slot.waiting is not wait:
                return False
            slot.waiting = None
            slot.action = action
            current = self._current
            if current is not cpu:  # else the end of its slice queues it
                self._enqueue(cpu, front=True, arm=False)
            if current is not None and current is not cpu:
                # The woken vCPU runs next.  From a hook on the worker (a guest store) the
                # engine is running, so the stop cannot be lost and needs no re-issue.
                if threading.get_ident() == self._worker_id:
                    self.engine.stop()
                else:
                    self._stop_current()
            return True

    def set_input(self, cpu: VCpu, line: int, level: bool) -> None:
        """Drive one of ``cpu``'s device interrupt inputs (QEMU input number ``line``) from
        any thread: the interrupt controller's outputs land here.

        The loaded vCPU gets it at once from a hook of its own slice (QEMU takes it at the
        next block boundary), or by a stop of its slice from another thread; a switched-out
        vCPU gets it when it is next loaded.  A dozing or idle vCPU that now has work wakes."""
        bit = 1 << line
        with self._cv:
            now = cpu.input_levels | bit if level else cpu.input_levels & ~bit
            if now == cpu.input_levels:
                return
            cpu.input_levels = now
            if self.engine.current is cpu:
                if self._current is cpu and threading.get_ident() == self._worker_id:
                    self.engine.set_input(line, level)  # in its own slice: a hook
                else:
                    cpu.inputs_dirty = True  # applied as it is next prepared
                    if self._current is cpu and level:
                        self._stop_current()
        if level:
            self.on_input_raised(cpu)

    def retime(self) -> None:
        """A running vCPU moved a timer's expiry (worker, from a hook): re-arm the stop."""
        due = self.next_deadline()
        if self.engine.debug_mode:
            if due is not None and (not self.engine.block_deadline_ns
                                    or due < self.engine.block_deadline_ns):
                self.engine.block_deadline_ns = due
            return
        if due != self._armed_for:
            self._armed_for = due
            if due is None:
                self._deadline.disarm()
            else:
                self._deadline.arm_at(due)

    def pc_of(self, cpu: VCpu) -> int:
        """Where ``cpu`` is (for messages): its PC if it runs, where it resumes if not."""
        slot = self._slots[cpu]
        if slot.task is None:
            return cpu.pc
        return cpu.nip if self._current is cpu else slot.pc

    def preempt_now(self) -> None:
        """End the running slice at its next block boundary (any thread)."""
        with self._cv:
            if self._current is not None:
                self._stop_current()

    def waiting(self, cpu: VCpu) -> Wait | None:
        return self._slots[cpu].waiting

    @property
    def busy(self) -> bool:
        """Some vCPU is running or runnable."""
        return self._current is not None or bool(self._runq)

    def reset(self) -> None:
        """Every vCPU back to its power-on context (trio thread, between runs: no vCPU has a
        slice, so the worker is asleep and the engine is free)."""
        with self._cv:
            assert self._current is None and not self._runq, "reset while vCPUs run"
            self.engine.save()
            for cpu in self.cpus:
                self.engine.reset_context(cpu)
                self._slots[cpu].waiting = None
                self._slots[cpu].action = None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._quantum.close()
            self._deadline.close()

    @property
    def worker_id(self) -> int | None:
        """The worker thread's identifier (hooks run on it)."""
        return self._worker_id

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def statistics(self) -> dict[str, float]:
        """Slices and switches so far, the mean cost of a switch (us), and the share of the
        worker's busy time spent switching rather than running guest code."""
        n = self.switches
        busy = self.run_ns + self.switch_ns
        return {"slices": self.slices, "switches": n,
                "switch_us": self.switch_ns / n / 1000 if n else 0.0,
                "switch_share": self.switch_ns / busy if busy else 0.0}

    # --- internals (the condition's lock held) ---------------------------------------------

    def _enqueue(self, cpu: VCpu, *, front: bool, arm: bool = True) -> None:
        """Queue ``cpu`` (lock held); a running slice gets a quantum now that it has company."""
        slot = self._slots[cpu]
        if slot.queued:
            return
        slot.queued = True
        if front:
            self._runq.appendleft(cpu)
        else:
            self._runq.append(cpu)
        if arm and self._current is not None:
            if self.engine.debug_mode:  # the block hook preempts
                self.engine.block_deadline_ns = time.monotonic_ns() + int(QUANTUM_S * 1e9)
            else:
                self._quantum.arm()
        if threading.get_ident() != self._worker_id:
            self._cv.notify()

    def _set_timers(self, slot: _Slot, company: bool, due: int | None) -> None:
        """Before a slice (worker, lock held): what stops it -- the quantum if others are
        runnable, a timer's deadline, and a kick that came before the engine started."""
        engine = self.engine
        if engine.debug_mode:
            # No stop from outside while exact stops are on: the engine's block hook
            # preempts at block boundaries instead (machine/cpu/debugging.py).
            self._quantum.disarm()
            self._deadline.disarm()
            self._armed_for = None
            quantum = time.monotonic_ns() + int(QUANTUM_S * 1e9) if company else 0
            engine.block_deadline_ns = min((t for t in (quantum, due or 0) if t), default=0)
            engine.stop_requested = slot.kicked  # (an older request concerned another slice)
            return
        if company or slot.kicked:  # (a kick's stop may be lost: the quantum repeats it)
            self._quantum.arm()
            self._alone_since = 0
        elif self._alone_since == 0:
            self._alone_since = self._slice
        elif self._slice - self._alone_since >= _ALONE_SLICES:
            # Alone for a while: stop ticking (its expiries would cost a thread each and stop
            # the slice for nothing).  Not at once: a ping-pong of two CPUs would pay two
            # syscalls a round.
            self._quantum.disarm()
        if due != self._armed_for:
            self._armed_for = due
            if due is None:
                self._deadline.disarm()
            else:
                self._deadline.arm_at(due)

    def _stop_current(self) -> None:
        """Stop the running slice from another thread, and again every quantum until it has
        ended (a stop just before the engine entered its loop is forgotten)."""
        self.engine.stop()
        if not self.engine.debug_mode:
            self._quantum.arm()

    def _deliver(self, cpu: VCpu, exit_: Exit) -> None:
        slot = self._slots[cpu]
        task, token = slot.task, slot.token
        slot.task = slot.token = None
        slot.kicked = False
        cpu._in_slice = False
        assert token is not None
        self._outbox.append((token, task, exit_))

    def _flush(self) -> None:
        """Send the exits :meth:`_deliver` queued (worker, lock not held)."""
        while self._outbox:
            token, task, exit_ = self._outbox.pop(0)
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.Value(exit_))
            except trio.RunFinishedError:
                pass

    # --- the worker thread -----------------------------------------------------------------

    def _loop(self) -> None:
        engine = self.engine
        clock = time.perf_counter_ns
        ended = clock()  # when the last slice ended
        last: VCpu | None = None
        while True:
            self._flush()
            due = self.on_boundary()
            with self._cv:
                if not self._runq:
                    # The timer stays armed from one slice to the next (two syscalls a slice
                    # cost more than a spurious stop now and then); idle, it must not tick,
                    # and the deadline is this thread's own wait (a timer's expiry would wake
                    # a notification thread for nothing).
                    self._quantum.disarm()
                    if self._armed_for is not None:
                        self._armed_for = None
                        self._deadline.disarm()
                    while not self._runq and not self._closed:
                        if due is None:
                            self._cv.wait()
                            continue
                        wait = (due - time.monotonic_ns()) / 1e9
                        if wait <= 0 or not self._cv.wait(wait):
                            break  # a timer is due: serve it (the loop comes back here)
                    ended = clock()  # time asleep is not switching
                if self._closed:
                    break
                if not self._runq:
                    continue  # woken for a timer: serve it first
                cpu = self._runq.popleft()
                slot = self._slots[cpu]
                slot.queued = False
                if slot.kicked:  # kicked while queued or parked: handed back unrun
                    self._hand_back(cpu, None)
                    continue
                self._current = cpu
                self._slice += 1
                company = bool(self._runq)
                action, slot.action = slot.action, None
            engine.load(cpu)
            if action is not None and (pc := action(cpu)) is not None:
                slot.pc = pc
            engine.prepare(cpu, slot.pc)
            with self._cv:  # kicks decide under this lock too: none is undone here
                self._set_timers(slot, company, due)
            started = clock()
            if cpu is not last:
                self.switches += 1
                self.switch_ns += started - ended
                last = cpu
            exit_ = engine.run(cpu, slot.pc)
            ended = clock()
            self.slices += 1
            self.run_ns += ended - started
            if exit_ is None and slot.waiting is None and not slot.kicked:
                self.on_slice_end(cpu, company or bool(self._runq))
            with self._cv:
                self._current = None
                if exit_ is not None:
                    waited, slot.waiting = slot.waiting, None
                    if waited is not None:  # the slice also parked: its trio task parks it
                        parked = waited.on_kick(cpu)
                        if exit_.kind is ExitKind.STEP:  # a debugger stepped into the park
                            exit_ = parked
                    slot.pc = exit_.pc
                    self._hand_back(cpu, exit_)
                    continue
                if slot.waiting is None and slot.action is None:
                    slot.pc = cpu.nip  # else park() set it (parked, maybe woken already)
                if slot.kicked:
                    self._hand_back(cpu, None)
                elif slot.waiting is None:
                    self._enqueue(cpu, front=slot.action is not None)
        engine.save()
        self._flush()

    def _hand_back(self, cpu: VCpu, exit_: Exit | None) -> None:
        """Give ``cpu`` back to its trio task (worker, lock held).  Its context leaves the
        engine first: the trio side may then read and write its registers from its thread
        while the worker runs other vCPUs."""
        slot = self._slots[cpu]
        if self.engine.current is cpu:
            self.engine.save()
        action, slot.action = slot.action, None
        if action is not None and exit_ is None:  # woken, and kicked before it resumed
            pc = action(cpu)
            slot.pc = slot.pc if pc is None else pc
        if exit_ is None:
            wait, slot.waiting = slot.waiting, None
            exit_ = wait.on_kick(cpu) if wait is not None else Exit(ExitKind.KICKED, slot.pc)
        self._deliver(cpu, exit_)
