"""The engine's debugger support: breakpoints, watchpoints, single steps, and the block hook
that preempts while they are set.  A mixin of :class:`machine.cpu.engine.Engine`.

Breakpoints and watchpoints are the same for every vCPU (gdb sets them per process); hooks are
limited to their address ranges, so a machine without them pays nothing.  They need exact
stops, i.e. unicorn's mid-block exit check, which the engine otherwise translates without
(machine/cpu/engine.py, "Preemption only between blocks"): while any is set the engine is in
*debug mode*, and a block hook carries out stops from outside at block boundaries instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Iterator
from typing import Any

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE

from machine.cpu.native import emu_stop
from machine.cpu.vcpu import DebugState, Exit, ExitKind, VCpu, Watch, WatchHit
from machine.memory import GuestRAM


class DebugHooks:
    """Debugger state and hooks of the engine."""

    uc: Any
    ram: GuestRAM
    handle: int
    current: VCpu | None
    _exit: Exit | None
    _no_exit: ctypes.c_bool

    def __init__(self) -> None:
        #: While a debugger has breakpoints, watchpoints or a step set: exact stops are on, so
        #: stops from outside go through the block hook (see ``Engine.stop``).
        self.debug_mode = False
        self.stop_requested = False
        #: Debug mode: when the block hook stops the slice (CLOCK_MONOTONIC ns; 0 = never).
        self.block_deadline_ns = 0
        #: The slice is a single step that has not reached its first block yet.
        self.stepping_first_block = False
        self._block_hook: int | None = None
        self._bp_hooks: dict[int, int] = {}
        self._wp_hooks: dict[Watch, int] = {}

    def stop_with(self, exit_: Exit) -> None:  # pragma: no cover - the engine's
        raise NotImplementedError

    def _on_block(self, uc: Any, address: int, size: int, _ud: Any) -> None:
        """Debug mode only: at a block's start, before any of its instructions, carry out a
        requested stop or a due deadline (the quantum, a timer) -- the boundary-only
        preemption that no_exit_request gives otherwise."""
        if self.stepping_first_block:
            # A single step always runs its one instruction: a stop or deadline waits for the
            # next slice (stopping here reported a step that had not moved).
            self.stepping_first_block = False
            return
        deadline = self.block_deadline_ns
        if self.stop_requested or (deadline and time.monotonic_ns() >= deadline):
            self.stop_requested = False
            emu_stop(self.handle)

    # Breakpoints and watchpoints are the same for every vCPU (gdb sets them per process);
    # hooks are limited to their address ranges, so a machine without them pays nothing.


    @contextlib.contextmanager
    def registers_kept(self) -> Iterator[None]:  # (machine/cpu/entry.py has the real one)
        yield

    def _apply_hooks(self, d: DebugState) -> None:
        uc: Any = self.uc
        for addr in set(self._bp_hooks) - d.breakpoints:
            uc.hook_del(self._bp_hooks.pop(addr))
            uc.ctl_remove_cache(addr, addr + 4)
        for addr in d.breakpoints - set(self._bp_hooks):
            self._bp_hooks[addr] = uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, begin=addr,
                                               end=addr)
            uc.ctl_remove_cache(addr, addr + 4)
        for w in set(self._wp_hooks) - d.watchpoints:
            uc.hook_del(self._wp_hooks.pop(w))
            uc.ctl_flush_tb()
        for w in d.watchpoints - set(self._wp_hooks):
            kinds = (UC_HOOK_MEM_WRITE if w.write else 0) | (UC_HOOK_MEM_READ if w.read else 0)
            self._wp_hooks[w] = uc.hook_add(kinds, self._on_watch, user_data=w,
                                            begin=w.address, end=w.address + w.length - 1)
            uc.ctl_flush_tb()
        # Exact stops need unicorn's mid-block check (module docstring): translate with it
        # while a debugger has anything set, without it otherwise.
        debug_mode = bool(self._bp_hooks or self._wp_hooks or d.step)
        if debug_mode != self.debug_mode:
            self.debug_mode = debug_mode
            self._no_exit.value = not debug_mode
            if debug_mode:
                self._block_hook = uc.hook_add(UC_HOOK_BLOCK, self._on_block)
            elif self._block_hook is not None:
                uc.hook_del(self._block_hook)
                self._block_hook = None
            uc.ctl_flush_tb()
        elif d.step:
            uc.ctl_flush_tb()  # a step is counted by instrumentation added at translation

    def _apply_debug(self, cpu: VCpu, pc: int) -> None:
        d = cpu.debug
        if not (d.breakpoints or d.watchpoints or d.step or self._bp_hooks or self._wp_hooks
                or self.debug_mode or d.watch_pc != -1):
            d.start_pc = d.skip_watch_pc = -1
            return  # no debugger, or one with nothing set: the common case, kept cheap
        with self.registers_kept():  # (hooks and flushes drop code through the MMU)
            self._apply_hooks(d)
        d.start_pc = pc if d.step else -1
        # A watchpoint stops the slice after the store reached memory but before the
        # instruction finished; resuming re-executes it, and that first access must not
        # report the same hit again.
        d.skip_watch_pc, d.watch_pc = (pc if d.watch_pc == pc else -1), -1

    def _on_breakpoint(self, uc: Any, address: int, size: int, _ud: Any) -> None:
        cpu = self.current
        assert cpu is not None
        if address == cpu.debug.start_pc:
            cpu.debug.start_pc = -1
            return  # a step always executes the instruction it starts on
        if address in cpu.debug.breakpoints:
            self.stop_with(Exit(ExitKind.BREAKPOINT, address))

    def _on_watch(self, uc: Any, access: int, address: int, size: int, value: int,
                  w: Watch) -> None:
        cpu = self.current
        assert cpu is not None
        pc = cpu.nip  # precise in memory hooks: the accessing instruction
        d = cpu.debug
        if pc == d.skip_watch_pc:
            d.skip_watch_pc = -1
            return
        if self._exit is None:
            d.watch_pc = pc
            if access == UC_MEM_WRITE and self.ram.contains(address, size):
                d.undo = (address, self.ram.read(address, size))
            self.stop_with(Exit(ExitKind.WATCHPOINT, pc, WatchHit(w, address)))

    def _undo_watched_store(self, cpu: VCpu) -> None:
        """The engine stops right after the watched store reached memory, with the rest of
        the instruction not done.  Putting the old bytes back makes the instruction "not
        executed yet", which is what gdb expects of PowerPC watchpoints."""
        undo, cpu.debug.undo = cpu.debug.undo, None
        if undo is not None:
            addr, old = undo
            off = addr - self.ram.base
            self.ram.view[off : off + len(old)] = old
