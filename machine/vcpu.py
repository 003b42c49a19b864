"""One e500v2 CPU: a unicorn instance, the worker thread that runs it, and its trio face.

Why a dedicated worker thread per CPU, and not ``trio.to_thread.run_sync``: a slice of guest code
runs until something needs trio (a hypercall that parks, power-off, a fault, a debugger), which
may be never.  Cancelling such a call needs ``emu_stop`` from outside, and the answer must come
back to the exact task that asked.  :meth:`VCpu.run` hands the slice to the worker and parks the
task with :func:`trio.lowlevel.wait_task_rescheduled`; its abort function stops the engine and
lets the worker finish, so a cancelled machine never leaves a CPU running (the cancellation is
delivered once the slice has really ended).

Everything that happens *inside* a slice runs on the worker thread, in unicorn hooks: MMIO,
non-blocking hypercalls (console output, time), stores to watched pages.  Those paths take the
GIL briefly and never touch trio except through ``TrioToken.run_sync_soon``.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import mmap
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import outcome
import trio
from unicorn import (
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_UNMAPPED,
    UC_HOOK_CODE,
    UC_HOOK_INTR,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_READ_UNMAPPED,
    UC_MEM_WRITE,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UcError,
)
from unicorn.ppc_const import (
    UC_PPC_REG_0,
    UC_PPC_REG_CR,
    UC_PPC_REG_CTR,
    UC_PPC_REG_LR,
    UC_PPC_REG_MSR,
    UC_PPC_REG_PC,
    UC_PPC_REG_XER,
)

from machine.events import CpuState, FaultKind
from machine.memory import GuestRAM
from machine.platform import (
    FWCFG_BASE,
    HCALL_INSN,
    PAGE_SIZE,
    POLL_CODE_BASE,
    POLL_DATA_BASE,
    ROM_BASE,
    ROM_SIZE,
    SC_LEV0_INSN,
    SPR_PIR,
    SPR_SRR0,
    SPR_SRR1,
)
from machine.pollwait import POLL_PROGRAM, PollData
from machine.ucenv import EngineLayoutError, SprAccess, new_e500

_RAM_MAP_CHUNK = 16 * 1024 * 1024
#: emu_start's "until" address: odd, so no instruction fetch ever reaches it.
_RUN_FOREVER = 0xFFFF_FFFF
_SPR_IVPR = 63
_SPR_IVOR8 = 408
_MSR_PR = 0x0000_4000  # problem (user) state
_MSR_KEEP_ON_INTERRUPT = 0x0002_1200  # CE | ME | DE survive interrupt entry (Book E)
_INTNO_SC = 8
_INTNO_PROGRAM = 6
_INTNO_ILLEGAL = 96


def _in_poll_page(addr: int) -> bool:
    """``addr`` is in FW_WAIT_STORE's poll code page (machine/pollwait.py)."""
    return POLL_CODE_BASE <= addr < POLL_CODE_BASE + PAGE_SIZE


class ExitKind(enum.Enum):
    """Why a slice of guest execution ended."""

    KICKED = "kicked"  # the machine stopped the CPU (pause, shutdown, debugger)
    PARK = "park"  # a hypercall asked to park the CPU
    POWEROFF = "poweroff"
    RESET = "reset"
    FAULT = "fault"
    # --- debugger support (issue 6) ---
    BREAKPOINT = "breakpoint"  # a debugger breakpoint, before the instruction at ``pc`` runs
    WATCHPOINT = "watchpoint"  # a debugger watchpoint; ``request`` is the WatchHit
    STEP = "step"  # a debugger single-step executed one instruction


@dataclass(frozen=True, slots=True)
class Exit:
    """The end of one :meth:`VCpu.run` slice; ``pc`` is where execution resumes."""

    kind: ExitKind
    pc: int
    request: Any = None  # the hypercall's park request, the power-off code, or the fault


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    pc: int
    address: int | None


class Host(Protocol):
    """What a CPU needs from the machine while it runs (all called on the worker thread)."""

    def mmio_read(self, cpu: VCpu, offset: int, size: int) -> int: ...

    def mmio_write(self, cpu: VCpu, offset: int, size: int, value: int) -> None: ...

    def hypercall(self, cpu: VCpu) -> Exit | None:
        """Handle ``sc 1``; return an Exit to end the slice, or None to continue."""
        ...

    def store(self, cpu: VCpu, addr: int, data: bytes) -> None:
        """Land a store into a watched page (and wake whom it concerns)."""
        ...


class _Worker:
    """A thread that runs one job at a time and reports the outcome through a callback."""

    def __init__(self, name: str) -> None:
        self._cv = threading.Condition()
        self._job: tuple[Callable[[], Any], Callable[[outcome.Outcome], None]] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], done: Callable[[outcome.Outcome], None]) -> None:
        with self._cv:
            assert self._job is None, "a vCPU runs one slice at a time"
            self._job = (fn, done)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._job is None:
                    return
                fn, done = self._job
                self._job = None
            done(outcome.capture(fn))


@dataclass
class _Watched:
    pages: set[int] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)


class VCpu:
    """One e500v2 core sharing the machine's RAM.

    Construction maps RAM (shared host pages), the boot ROM (read-only, writes ignored), the
    fw_cfg MMIO window and the hooks; it does not run anything.  The trio side calls
    :meth:`run`; other tasks may call :meth:`kick` to make a running slice end.
    """

    def __init__(self, index: int, ram: GuestRAM, rom_address: int, host: Host) -> None:
        self.index = index
        self.ram = ram
        self.host = host
        self.uc = uc = new_e500()
        self.sprs = SprAccess(uc)
        self.sprs.write(SPR_PIR, index)
        self._gprs: Any = None
        self._bind_gprs()
        self._rom_address = rom_address
        self.hcall_pc = 0
        # RAM is mapped as 16 MiB regions of the same host buffer: write-protecting a watched
        # page splits the region that holds it, and unicorn's split costs time proportional to
        # the region (150 ms per CPU for one 3 GiB region, under 1 ms for 16 MiB).
        for off in range(0, ram.size, _RAM_MAP_CHUNK):
            uc.mem_map_ptr(ram.base + off, min(_RAM_MAP_CHUNK, ram.size - off), UC_PROT_ALL,
                           ram.address + off)
        uc.mem_map_ptr(ROM_BASE, ROM_SIZE, UC_PROT_READ | UC_PROT_EXEC, rom_address)
        uc.mmio_map(FWCFG_BASE, PAGE_SIZE, self._mmio_read, None, self._mmio_write, None)
        # FW_WAIT_STORE's poll (machine/pollwait.py): the code, and this CPU's data page.
        uc.mem_map(POLL_CODE_BASE, PAGE_SIZE, UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_write(POLL_CODE_BASE, struct.pack(f">{len(POLL_PROGRAM)}I", *POLL_PROGRAM))
        self._poll_page = mmap.mmap(-1, PAGE_SIZE)
        self._poll = PollData.from_buffer(self._poll_page)
        uc.mem_map_ptr(POLL_DATA_BASE, PAGE_SIZE, UC_PROT_READ | UC_PROT_WRITE,
                       ctypes.addressof(self._poll))
        #: When the poll that is under way began (time.monotonic_ns), for fitting its rounds.
        self.poll_started = 0
        #: Set by :meth:`begin_poll` for the hypercall that started it (tracing reads it).
        self.poll_begun = False
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        # Range-limited to everything above RAM (RAM starts at 0, so that is all that can be
        # unmapped): an unlimited UNMAPPED hook sends every store to unicorn's slow path,
        # measured 15x slower (bench/bench_machine.py, item 3).
        uc.hook_add(
            UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED,
            self._on_unmapped, begin=ram.base + ram.size, end=0xFFFF_FFFF,
        )
        # A store to ROM is ignored, as on a real flash/ROM part; range-limited so RAM stores
        # stay on unicorn's fast path.
        uc.hook_add(
            UC_HOOK_MEM_WRITE_PROT, self._on_rom_write, begin=ROM_BASE,
            end=ROM_BASE + ROM_SIZE - 1,
        )
        self._watched = _Watched()
        self._stale_code: list[tuple[int, int]] = []  # see forget_code
        self._lock = threading.Lock()
        self._running = False
        self._kicked = False
        self._exit: Exit | None = None
        self._worker = _Worker(f"vcpu{index}")
        self._nudge = threading.Event()
        self._closed = False
        self._debug = _DebugState()  # debugger support (issue 6)
        self.pc = 0
        #: Instructions are counted only by the benchmarks; this is the slice count.
        self.slices = 0

    # --- watched pages ---------------------------------------------------------------------

    def watch_page(self, page: int) -> bool:
        """Ask for stores to ``page`` to be reported.  Applied before the next slice starts;
        returns True if it is already in force."""
        with self._lock:
            if page in self._watched.pages:
                return True
            self._watched.pending.add(page)
            return False

    def _apply_watches(self) -> None:
        with self._lock:
            pending, self._watched.pending = self._watched.pending, set()
        for page in sorted(pending):
            if page in self._watched.pages:
                continue
            # Read-only in this CPU's view: the store faults into _on_watched_write, which
            # completes it.  Only this page is slowed; the hook is limited to its range.
            self.uc.mem_protect(page, PAGE_SIZE, UC_PROT_READ | UC_PROT_EXEC)
            self.uc.hook_add(
                UC_HOOK_MEM_WRITE_PROT, self._on_watched_write, begin=page,
                end=page + PAGE_SIZE - 1,
            )
            with self._lock:
                self._watched.pages.add(page)

    # --- code the host overwrote ----------------------------------------------------------

    def forget_code(self, start: int, end: int, *, now: bool = False) -> None:
        """Drop translated code for guest-physical ``[start, end)``.

        Unicorn invalidates its translation blocks when the guest stores over them, but fw_cfg
        DMA writes RAM from the host, behind its back: without this, a CPU jumping to code a
        DMA just replaced runs the old instructions.  ``now`` is for this CPU's own worker
        thread (inside its MMIO hook, the DMA's caller): the next fetch sees the new bytes.
        Otherwise the range is queued and dropped before this CPU's next slice; a CPU in the
        middle of a slice keeps its translations until the slice ends.
        """
        if end <= start:
            return
        if now:
            self._drop_code(start, end)
            return
        with self._lock:
            self._stale_code.append((start, end))
            if len(self._stale_code) > 64:  # a long-parked CPU: one covering range is enough
                lo = min(s for s, _ in self._stale_code)
                hi = max(e for _, e in self._stale_code)
                self._stale_code = [(lo, hi)]

    def apply_forgotten_code(self) -> None:
        """Drop what :meth:`forget_code` queued (between slices, or from this CPU's own
        hypercall hook, where no translated block is executing)."""
        with self._lock:
            stale, self._stale_code = self._stale_code, []
        for start, end in stale:
            self._drop_code(start, end)

    def _drop_code(self, start: int, end: int) -> None:
        """``ctl_remove_cache`` piece by piece.  Unicorn translates only the start of the range
        and assumes the rest follows it in its RAM-block space: true inside one mapping, not
        across the 16 MiB mappings' edges nor around a watched page (write-protecting a page
        splits it off into a mapping of its own), where stale code used to survive."""
        with self._lock:
            watched = [p for p in self._watched.pages if start < p + PAGE_SIZE and p < end]
        cuts = set(range((start // _RAM_MAP_CHUNK + 1) * _RAM_MAP_CHUNK, end, _RAM_MAP_CHUNK))
        cuts.update(edge for p in watched for edge in (p, p + PAGE_SIZE))
        points = sorted({start, end} | {c for c in cuts if start < c < end})
        for lo, hi in itertools.pairwise(points):
            self.uc.ctl_remove_cache(lo, hi)

    # --- running ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    async def run(self, pc: int) -> Exit:
        """Run guest code from ``pc`` on the worker thread until something ends the slice.

        Cancellation stops the engine and waits for the worker to return (it always does,
        within microseconds), then raises Cancelled: no CPU keeps running behind trio's back.
        """
        # A slice that ended because of a cancellation returns normally (Abort.FAILED); the
        # Cancelled is delivered here, before another slice could start.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._apply_watches()
        self.apply_forgotten_code()
        self._apply_debug(pc)  # debugger support (issue 6)
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def done(result: outcome.Outcome) -> None:
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self._worker.submit(lambda: self._run_blocking(pc), done)

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            self.kick()
            return trio.lowlevel.Abort.FAILED

        result: Exit = await trio.lowlevel.wait_task_rescheduled(abort)
        self.pc = result.pc
        self.slices += 1
        return result

    def kick(self) -> None:
        """End the current slice as soon as possible (thread-safe, idempotent).

        A stop issued in the instant before the engine enters its loop would be forgotten by
        unicorn, so the worker re-checks ``_kicked`` and a helper thread re-issues the stop
        until the slice has ended.
        """
        with self._lock:
            self._kicked = True
            running = self._running
        self._nudge.set()  # a CPU parked inside its slice (wait_nudge) must notice too
        if running:
            self.uc.emu_stop()
            threading.Thread(target=self._rekick, daemon=True).start()

    def _rekick(self) -> None:
        for _ in range(1000):
            with self._lock:
                if not self._running or not self._kicked:
                    return
            self.uc.emu_stop()
            threading.Event().wait(0.002)

    def _run_blocking(self, pc: int) -> Exit:
        with self._lock:
            if self._kicked:
                self._kicked = False
                return Exit(ExitKind.KICKED, pc)
            self._running = True
            self._exit = None
        err: UcError | None = None
        try:
            self.uc.emu_start(pc, _RUN_FOREVER, 0, 1 if self._debug.step else 0)
        except UcError as e:
            err = e
        finally:
            with self._lock:
                self._running = False
                kicked, self._kicked = self._kicked, False
        here = self.uc.reg_read(UC_PPC_REG_PC)
        self._undo_watched_store()  # debugger support (issue 6)
        if self._exit is not None:
            return self._exit
        if err is not None:
            kind = {
                UC_ERR_READ_UNMAPPED: FaultKind.READ_UNMAPPED,
                UC_ERR_WRITE_UNMAPPED: FaultKind.WRITE_UNMAPPED,
                UC_ERR_FETCH_UNMAPPED: FaultKind.FETCH_UNMAPPED,
            }.get(err.errno, FaultKind.ENGINE)
            return Exit(ExitKind.FAULT, here, Fault(kind, here, None))
        if self._debug.step and not kicked:  # debugger support (issue 6)
            return Exit(ExitKind.STEP, here)
        return Exit(ExitKind.KICKED, here)

    # --- parking inside a slice (the fast path of FW_WAIT_STORE) ------------------------
    # The worker thread blocks inside the hypercall hook; the trio task is still awaiting
    # run(), so parking remains an await.  A store that fires the waiter, a release, or a
    # kick (cancellation, a page to protect, a debugger) sets the nudge.  Waking this way
    # costs one thread hand-off instead of a trip through the trio loop and back.

    def prepare_wait(self) -> bool:
        """Arm the nudge; False if a kick is already pending (then do not block)."""
        self._nudge.clear()
        with self._lock:
            return not self._kicked

    def wait_nudge(self) -> None:
        """Block the worker thread (GIL released) until :meth:`nudge` or :meth:`kick`."""
        self._nudge.wait()

    def nudge(self) -> None:
        """Wake the CPU from a wait inside its slice: a poll (machine/pollwait.py) or a
        blocked :meth:`wait_nudge` (any thread)."""
        self._poll.wake = 1
        self._nudge.set()

    # --- polling before parking (machine/pollwait.py) --------------------------------------

    def arm_poll(self) -> None:
        """Clear the wake flag (before the caller's last look for a release)."""
        self._poll.wake = 0

    def may_poll(self) -> int | None:
        """The MSR, if the CPU may run the poll code (it returns with ``rfi``, a supervisor
        instruction); None in user mode, or while a debugger single-steps this CPU."""
        if self._debug.step:  # a debugger stepping over the call expects the next insn
            return None
        msr = int(self.sprs.msr.value)
        return None if msr & _MSR_PR else msr

    def begin_poll(self, rounds: int, msr: int) -> None:
        """From the FW_WAIT_STORE hook: continue in the poll code instead of returning.

        r3 and r4 stay the guest's (word, expected).  r5 and r6 are saved in the data page
        (the poll code saves CTR and CR itself: reading them through unicorn would give up the
        GIL, and cost 5-25 us); SRR0/SRR1 get the return address and ``msr``, as ``sc`` sets
        them."""
        g, data = self._gprs, self._poll
        data.r5, data.r6, data.rounds = g[5], g[6], rounds
        self.sprs.write(SPR_SRR0, self.hcall_pc)
        self.sprs.write(SPR_SRR1, msr)
        g[6] = POLL_DATA_BASE
        self.sprs.nip.value = POLL_CODE_BASE
        data.busy = 1
        self.poll_started = time.monotonic_ns()
        self.poll_begun = True

    @property
    def called_from_poll(self) -> bool:
        """The hypercall being handled is the poll code's own (it ran out, or was woken)."""
        return _in_poll_page(self.hcall_pc - 4)  # the ``sc 1`` itself

    @property
    def in_poll_code(self) -> bool:
        """The slice ended inside FW_WAIT_STORE's poll code (or a park taken from it)."""
        return _in_poll_page(self.pc)

    @property
    def guest_pc(self) -> int:
        """:attr:`pc`, or inside FW_WAIT_STORE's poll code the guest's own place: the
        instruction after its ``sc 1``, where the call returns (for messages)."""
        return self.sprs.read(SPR_SRR0) if self.in_poll_code else self.pc

    @property
    def poll_woken(self) -> bool:
        return bool(self._poll.wake)

    @property
    def polling(self) -> bool:
        """A poll is under way (readable from any thread: the poll code ends it itself)."""
        return bool(self._poll.busy)

    def end_poll(self) -> None:
        """The poll code made its hypercall again: it polls no more."""
        self._poll.busy = 0

    def stop_with(self, exit_: Exit) -> None:
        """From a hook: end the slice with ``exit_``."""
        self._exit = exit_
        self.uc.emu_stop()

    def close(self) -> None:
        """Stop the worker thread and free the engine (idempotent).

        The engine is freed here rather than left to the garbage collector: unicorn's hook
        callbacks make every instance a reference cycle, so a closed machine would otherwise
        keep its translation buffers (megabytes per CPU) until a collection happens.  Register
        access after close raises instead of touching freed memory."""
        if self._closed:
            return
        self._worker.close()
        if self._worker.alive:
            return  # never free an engine a stuck thread may still be inside
        self._closed = True
        self._gprs = _Closed(self.index)
        engine: Any = self.uc
        engine._callbacks.clear()
        engine._mmio_callbacks.clear()
        finalize = getattr(engine, "_Uc__finalizer", None)
        if finalize is not None:
            finalize()

    # --- debugger support (issue 6) --------------------------------------------------------
    # The debugger (machine/gdb_control.py) states what it wants with set_breakpoints,
    # set_watchpoints and set_step from the trio thread; run() applies it before the slice
    # starts, while the engine is idle (unicorn is not thread-safe).  Every hook is limited to
    # its address range, so a machine with no breakpoints pays nothing, and the translation
    # cache is dropped for the range: unicorn does not re-instrument code it already translated.

    def set_breakpoints(self, addresses: frozenset[int]) -> None:
        """Stop before executing any of ``addresses`` (applied at the next slice)."""
        self._debug.breakpoints = addresses

    def set_watchpoints(self, watches: frozenset[Watch]) -> None:
        """Stop before an access that touches one of ``watches`` (applied at the next slice)."""
        self._debug.watchpoints = watches

    def set_step(self, step: bool) -> None:
        """Make the next slice execute exactly one instruction and end with ExitKind.STEP."""
        self._debug.step = step

    def _apply_debug(self, pc: int) -> None:
        d = self._debug
        uc: Any = self.uc  # ctl_flush_tb is missing from unicorn's type hints
        for addr in set(d.bp_hooks) - d.breakpoints:
            uc.hook_del(d.bp_hooks.pop(addr))
            uc.ctl_remove_cache(addr, addr + 4)
        for addr in d.breakpoints - set(d.bp_hooks):
            d.bp_hooks[addr] = uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, begin=addr,
                                           end=addr)
            uc.ctl_remove_cache(addr, addr + 4)
        for w in set(d.wp_hooks) - d.watchpoints:
            uc.hook_del(d.wp_hooks.pop(w))
            uc.ctl_flush_tb()
        for w in d.watchpoints - set(d.wp_hooks):
            kinds = (UC_HOOK_MEM_WRITE if w.write else 0) | (UC_HOOK_MEM_READ if w.read else 0)
            d.wp_hooks[w] = uc.hook_add(kinds, self._on_watch, user_data=w, begin=w.address,
                                        end=w.address + w.length - 1)
            uc.ctl_flush_tb()
        # A step is counted by instrumentation added when code is translated, so the cache is
        # dropped before a step, and once more before running freely again.
        if d.step or d.stepped:
            uc.ctl_flush_tb()
        d.stepped = d.step
        d.start_pc = pc if d.step else -1
        # A watchpoint stops the slice after the store reached memory but before the
        # instruction finished (registers, PC); resuming re-executes it, and that first
        # access must not report the same hit again.
        d.skip_watch_pc, d.watch_pc = (pc if d.watch_pc == pc else -1), -1

    def _on_breakpoint(self, uc: Any, address: int, size: int, _ud: Any) -> None:
        d = self._debug
        if address == d.start_pc:
            d.start_pc = -1
            return  # a step always executes the instruction it starts on
        self.stop_with(Exit(ExitKind.BREAKPOINT, address))

    def _on_watch(self, uc: Any, access: int, address: int, size: int, value: int,
                  w: Watch) -> None:
        pc = uc.reg_read(UC_PPC_REG_PC)  # precise in memory hooks: the accessing instruction
        d = self._debug
        if pc == d.skip_watch_pc:
            d.skip_watch_pc = -1
            return
        if self._exit is None:
            d.watch_pc = pc
            if access == UC_MEM_WRITE and self.ram.contains(address, size):
                d.undo = (address, self.ram.read(address, size))
            self.stop_with(Exit(ExitKind.WATCHPOINT, pc, WatchHit(w, address)))

    def _undo_watched_store(self) -> None:
        """The engine stops a slice right after the watched store reached memory, with the
        rest of the instruction (register updates, PC, a stwcx.'s CR0) not done.  Putting
        the old bytes back makes the instruction "not executed yet", which is what gdb
        expects of PowerPC watchpoints: it steps the instruction itself."""
        undo, self._debug.undo = self._debug.undo, None
        if undo is not None:
            addr, old = undo
            off = addr - self.ram.base
            self.ram.view[off : off + len(old)] = old

    # --- hooks (worker thread) -------------------------------------------------------------

    def _mmio_read(self, uc: Any, offset: int, size: int, _ud: Any) -> int:
        return self.host.mmio_read(self, offset, size)

    def _mmio_write(self, uc: Any, offset: int, size: int, value: int, _ud: Any) -> None:
        self.host.mmio_write(self, offset, size, value)

    def _on_interrupt(self, uc: Any, intno: int, _ud: Any) -> None:
        pc = int(self.sprs.nip.value)  # the instruction after the one that trapped
        #: Where a hypercall returns to (read by the handlers instead of another reg_read).
        self.hcall_pc = pc
        self.poll_begun = False
        insn = self._fetch_word(pc - 4)
        if intno == _INTNO_SC and insn == HCALL_INSN:
            result = self.host.hypercall(self)
            if result is not None:
                self.stop_with(result)
            return
        if intno == _INTNO_SC and insn == SC_LEV0_INSN:
            if self._deliver(pc, ivor=_SPR_IVOR8):
                return
            self.stop_with(Exit(ExitKind.FAULT, pc - 4, Fault(FaultKind.SYSTEM_CALL, pc - 4, None)))
            return
        kind = {
            _INTNO_ILLEGAL: FaultKind.ILLEGAL_INSTRUCTION,
            _INTNO_PROGRAM: FaultKind.PROGRAM,
        }.get(intno, FaultKind.EXCEPTION)
        self.stop_with(Exit(ExitKind.FAULT, pc - 4, Fault(kind, pc - 4, None)))

    def _deliver(self, return_pc: int, ivor: int) -> bool:
        """Enter the guest's own interrupt handler, as the hardware would: SRR0/SRR1 saved,
        MSR cleared except CE/ME/DE, PC = IVPR | IVORn.  False when no handler is installed."""
        ivpr = self.sprs.read(_SPR_IVPR)
        offset = self.sprs.read(ivor)
        if ivpr == 0 and offset == 0:
            return False
        msr = self.uc.reg_read(UC_PPC_REG_MSR)
        self.sprs.write(SPR_SRR0, return_pc)
        self.sprs.write(SPR_SRR1, msr)
        self.uc.reg_write(UC_PPC_REG_MSR, msr & _MSR_KEEP_ON_INTERRUPT)
        self.uc.reg_write(UC_PPC_REG_PC, (ivpr & 0xFFFF_0000) | (offset & 0xFFF0))
        return True

    def _on_unmapped(self, uc: Any, access: int, address: int, size: int, value: int,
                     _ud: Any) -> bool:
        pc = uc.reg_read(UC_PPC_REG_PC)
        kind = {
            UC_MEM_READ_UNMAPPED: FaultKind.READ_UNMAPPED,
            UC_MEM_FETCH_UNMAPPED: FaultKind.FETCH_UNMAPPED,
        }.get(access, FaultKind.WRITE_UNMAPPED)
        self._exit = Exit(ExitKind.FAULT, pc, Fault(kind, pc, address))
        return False

    def _on_rom_write(self, uc: Any, access: int, address: int, size: int, value: int,
                      _ud: Any) -> bool:
        # Returning True would let unicorn perform the store; returning False aborts it.  The
        # slice then ends and the CPU resumes after the store: the write is ignored, as QEMU
        # ignores writes to a ROM region.
        pc = uc.reg_read(UC_PPC_REG_PC)
        self._exit = Exit(ExitKind.KICKED, pc + 4)
        return False

    def _on_watched_write(self, uc: Any, access: int, address: int, size: int, value: int,
                          _ud: Any) -> bool:
        self.host.store(self, address, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "big"))
        return True

    def _fetch_word(self, addr: int) -> int:
        """The instruction word at ``addr``: straight from RAM or ROM (no engine call)."""
        if self.ram.contains(addr, 4):
            off = addr - self.ram.base
            return int.from_bytes(self.ram.view[off : off + 4], "big")
        if ROM_BASE <= addr <= ROM_BASE + ROM_SIZE - 4:
            return int.from_bytes(ctypes.string_at(self._rom_address + addr - ROM_BASE, 4), "big")
        if POLL_CODE_BASE <= addr <= POLL_CODE_BASE + 4 * (len(POLL_PROGRAM) - 1):
            return POLL_PROGRAM[(addr - POLL_CODE_BASE) // 4]
        return 0

    # --- registers -------------------------------------------------------------------------
    # GPRs are read and written in the engine's CPU state through ctypes (~0.1 us instead of
    # ~1 us per reg_read/reg_write).  Valid whenever the CPU is stopped or inside one of its own
    # hooks, which is the only time the machine touches registers; checked at construction.

    def _bind_gprs(self) -> None:
        self._gprs = (ctypes.c_uint32 * 32).from_address(self.sprs.env)
        probe = 0x6A09_E667
        self.uc.reg_write(UC_PPC_REG_0 + 7, probe)
        if self._gprs[7] != probe:
            raise EngineLayoutError("GPR access check failed; unicorn==2.1.4 is required")
        self._gprs[7] = 0
        if self.uc.reg_read(UC_PPC_REG_0 + 7) != 0:
            raise EngineLayoutError("GPR access check failed; unicorn==2.1.4 is required")

    def gpr(self, n: int) -> int:
        return int(self._gprs[n])

    def set_gpr(self, n: int, value: int) -> None:
        self._gprs[n] = value & 0xFFFF_FFFF

    def set_gprs(self, values: dict[int, int]) -> None:
        g = self._gprs
        for n, v in values.items():
            g[n] = v & 0xFFFF_FFFF

    def set_msr(self, value: int) -> None:
        self.uc.reg_write(UC_PPC_REG_MSR, value)

    def set_timebase(self, ticks: int) -> None:
        self.sprs.set_timebase(ticks)

    def snapshot(self) -> CpuState:
        """GPRs, PC, MSR, LR, CTR, CR and XER (only while the CPU is not running)."""
        if self._closed:
            raise RuntimeError(f"cpu {self.index} is closed: its machine was closed")
        uc = self.uc
        return CpuState(
            cpu=self.index,
            pc=self.pc if self._running else uc.reg_read(UC_PPC_REG_PC),
            msr=uc.reg_read(UC_PPC_REG_MSR),
            lr=uc.reg_read(UC_PPC_REG_LR),
            ctr=uc.reg_read(UC_PPC_REG_CTR),
            cr=uc.reg_read(UC_PPC_REG_CR),
            xer=uc.reg_read(UC_PPC_REG_XER),
            gpr=tuple(uc.reg_read(UC_PPC_REG_0 + i) for i in range(32)),
        )


# --- debugger support (issue 6) ---


@dataclass(frozen=True, slots=True)
class Watch:
    """A debugger watchpoint: accesses to ``[address, address + length)``."""

    address: int
    length: int
    read: bool
    write: bool


@dataclass(frozen=True, slots=True)
class WatchHit:
    watch: Watch
    address: int  # the accessed address


@dataclass
class _DebugState:
    breakpoints: frozenset[int] = frozenset()
    watchpoints: frozenset[Watch] = frozenset()
    step: bool = False
    stepped: bool = False
    start_pc: int = -1
    watch_pc: int = -1  # where the last watchpoint hit stopped the slice
    skip_watch_pc: int = -1
    undo: tuple[int, bytes] | None = None  # a watched store to take back
    bp_hooks: dict[int, int] = field(default_factory=dict)
    wp_hooks: dict[Watch, int] = field(default_factory=dict)


class _Closed:
    """Stands in for the register array of a closed CPU: fails loudly, never reads freed
    engine memory."""

    def __init__(self, index: int) -> None:
        self._index = index

    def __getitem__(self, n: int) -> int:
        raise RuntimeError(f"cpu {self._index} is closed: its machine was closed")

    def __setitem__(self, n: int, value: int) -> None:
        self.__getitem__(n)


def pack_bytes_be(data: bytes, words: int = 4) -> list[int]:
    """Byte-channel packing: byte 0 is the most significant byte of the first register."""
    padded = data.ljust(words * 4, b"\0")
    return list(struct.unpack(f">{words}I", padded[: words * 4]))


def unpack_bytes_be(regs: list[int], count: int) -> bytes:
    return struct.pack(f">{len(regs)}I", *(r & 0xFFFF_FFFF for r in regs))[:count]
