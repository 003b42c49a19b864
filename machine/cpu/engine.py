"""The machine's one CPU engine: a unicorn e500v2 instance that every vCPU runs in, in turn.

Why one engine, and not one per vCPU on threads of their own: unicorn is QEMU's TCG built
without its parallel mode, so ``stwcx.`` is a compare-then-store that is not atomic across
engines (two CPUs lost 40 % of their ``lwarx``/``stwcx.`` increments), and each engine keeps
its own translated code, which stores made by another engine never invalidate.  QEMU itself runs
32-bit PowerPC guests on one thread.  With one engine, a store by any vCPU invalidates the
code every vCPU runs, and ``stwcx.`` is atomic because only one vCPU runs at a time and it is
never preempted inside an instruction (below).

**Preemption only between blocks.**  unicorn normally checks for a stop request after every
memory access inside a translated block; a stop landing between ``stwcx.``'s store and its CR
update restarts the ``stwcx.`` (an increment counted twice), and one after an MMIO store repeats
the device write.  With ``uc_struct.no_exit_request`` set before anything is translated, the
only check is the one at the start of every block, so an asynchronous stop (the scheduler's
quantum, a kick) always lands between blocks.  What unicorn used that mid-block check for is
handled here instead:

* an access to an unmapped address is reported from its hook, where the PC and registers are
  exact (the rest of the block still runs, but the machine stops at its end);
* a store to the boot ROM is dropped by its hook and the block simply goes on;
* debugger breakpoints, watchpoints and single steps need the exact stop, so while a debugger
  has any of them set the flag is cleared (and translated code dropped).

Everything here runs on the scheduler's worker thread, except :meth:`stop`, which any thread
may call.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any, Protocol, cast

from unicorn import (
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_PROT,
    UC_ERR_WRITE_UNMAPPED,
    UC_HOOK_INTR,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_READ_UNMAPPED,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UcError,
)
from unicorn.ppc_const import UC_PPC_REG_MSR

from machine.cpu.debugging import DebugHooks
from machine.cpu.entry import GuestEntry
from machine.cpu.irq_layout import CHECK_POW
from machine.cpu.layout import (
    EngineLayoutError,
    Layout,
    enable_mmu,
    env_address,
    layout,
    new_engine,
)
from machine.cpu.native import (
    booke_timers_init,
    emu_stop,
    tlb_flush,
)
from machine.cpu.quantum import free_later
from machine.cpu.timers import TRAPPED, Timers
from machine.cpu.vcpu import Exit, ExitKind, Fault, VCpu
from machine.events import FaultKind
from machine.memory import GuestRAM
from machine.platform import (
    CCSR_BASE,
    CCSR_SIZE,
    FWCFG_BASE,
    MPIC_IACK_ADDR,
    PAGE_SIZE,
    ROM_BASE,
    ROM_SIZE,
    TIMEBASE_HZ,
)

_RAM_MAP_CHUNK = 16 * 1024 * 1024
_PPC_TIMER_E500 = 2  # QEMU's PPC_TIMER_E500 flag for ppc_booke_timers_init
#: memmove that keeps the GIL (ctypes.memmove releases it, and then the worker may wait to get
#: it back from another thread in the middle of a context switch).
_memmove: Any = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_size_t)(ctypes._memmove_addr)  # type: ignore[attr-defined]
#: stwbrx and sthbrx (primary opcode 31): stores whose bytes go to memory least significant first.
_BYTE_REVERSED_STORES = frozenset({662, 918})
#: emu_start's "until" address: odd, so no instruction fetch ever reaches it.
_RUN_FOREVER = 0xFFFF_FFFF


class Host(Protocol):
    """What the engine needs from the machine while a vCPU runs (worker thread)."""

    def mmio_read(self, cpu: VCpu, offset: int, size: int) -> int: ...

    def mmio_write(self, cpu: VCpu, offset: int, size: int, value: int) -> None: ...

    def ccsr_read(self, cpu: VCpu, offset: int, size: int) -> int:
        """A load from the platform devices' block (CCSR), ``offset`` inside it."""
        ...

    def ccsr_write(self, cpu: VCpu, offset: int, size: int, value: int) -> None: ...

    def hypercall(self, cpu: VCpu) -> Exit | None:
        """Handle ``sc 1``; return an Exit to end the slice, or None to continue."""
        ...

    def store(self, cpu: VCpu, addr: int, data: bytes) -> None:
        """Land a store into a watched page (and wake whom it concerns)."""
        ...

    def doze(self, cpu: VCpu, resume_pc: int) -> None:
        """``cpu`` halted in MSR[WE]: park it until it has work (the slice is ending)."""
        ...


class Engine(GuestEntry, DebugHooks):
    """The unicorn instance, its memory map and hooks, and the vCPU loaded in it."""

    def __init__(self, ram: GuestRAM, rom_address: int, host: Host) -> None:
        self.layout: Layout = layout()
        self.ram = ram
        self.host = host
        self.uc = uc = new_engine(mmu=True)
        # No exit address.  With one, unicorn ends every emu_start by invalidating the code
        # at exit - 1, which translates that address through the guest's MMU -- and a miss
        # there fills the loaded vCPU's DEAR, ESR and MAS registers behind its back (a guest
        # preempted inside its TLB-miss handler then wrote a garbage entry: Linux oopsed at
        # 0xfffffffe).  The run ends only by a stop.
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        handle = int(cast(Any, uc)._uch.value)
        self.handle = handle
        self._no_exit = ctypes.c_bool.from_address(handle + self.layout.no_exit_request)
        self._no_exit.value = True  # before anything is translated (module docstring)
        self.env = env_address(uc, self.layout)
        self._rom_address = rom_address
        # RAM is mapped as 16 MiB regions of the same host buffer: write-protecting a watched
        # page splits the region that holds it, and unicorn's split costs time proportional
        # to the region (150 ms for one 3 GiB region, under 1 ms for 16 MiB).
        for off in range(0, ram.size, _RAM_MAP_CHUNK):
            uc.mem_map_ptr(ram.base + off, min(_RAM_MAP_CHUNK, ram.size - off), UC_PROT_ALL,
                           ram.address + off)
        uc.mem_map_ptr(ROM_BASE, ROM_SIZE, UC_PROT_READ | UC_PROT_EXEC, rom_address)
        uc.mmio_map(FWCFG_BASE, PAGE_SIZE, self._mmio_read, None, self._mmio_write, None)
        uc.mmio_map(CCSR_BASE, CCSR_SIZE, self._ccsr_read, None, self._ccsr_write, None)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        # Range-limited to everything above RAM (RAM starts at 0, so that is all that can be
        # unmapped): an unlimited UNMAPPED hook sends every store to unicorn's slow path.
        uc.hook_add(
            UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED,
            self._on_unmapped, begin=ram.base + ram.size, end=0xFFFF_FFFF,
        )
        uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._on_rom_write, begin=ROM_BASE,
                    end=ROM_BASE + ROM_SIZE - 1)
        enable_mmu(uc, self.layout, self.env)
        self._error_code = ctypes.c_uint32.from_address(self.env + self.layout.error_code)
        #: QEMU's CPUState (for its exported functions: interrupt entry, TLB flush).
        self._cpu = ctypes.c_uint64.from_address(handle + self.layout.env_path[0]).value
        # QEMU's TCR/TSR code needs its timer state; the timebase and decrementer themselves
        # are emulated (machine/cpu/timers.py): their SPR accesses trap to the INTR hook.
        booke_timers_init(self._cpu, TIMEBASE_HZ, _PPC_TIMER_E500)
        self._trap_sprs(TRAPPED)
        #: The vCPUs' timers (set by the board once it has built them).
        self.timers: Timers | None = None
        #: Called from a hook when a trapped timer write moved an expiry (the scheduler
        #: re-arms its deadline).
        self.on_retime: Any = lambda: None
        # Doze: QEMU's power-management hook, replaced (machine/cpu/irq_layout.py); and the
        # core-int acknowledge address every CPU's EPR is loaded from (the MPIC's IACK).
        self._check_pow = CHECK_POW(self._on_doze)
        #: QEMU's pending interrupt inputs of the loaded CPU (a bit per input).
        self._pending = ctypes.c_uint32.from_address(self.env + self.layout.pending_interrupts)
        ctypes.c_uint64.from_address(self.env + self.layout.check_pow).value = \
            ctypes.cast(self._check_pow, ctypes.c_void_p).value or 0
        ctypes.c_uint64.from_address(self.env + self.layout.mpic_iack).value = MPIC_IACK_ADDR
        #: The reset state every vCPU context starts from.
        self.template = ctypes.create_string_buffer(self.layout.env_size)
        ctypes.memmove(self.template, self.env, self.layout.env_size)
        self.current: VCpu | None = None
        self._last: VCpu | None = None  # whose translations the engine caches
        self._lock = threading.Lock()
        self._watched: set[int] = set()
        self._pending_watches: set[int] = set()
        self._pending_unwatches: set[int] = set()
        self._watch_hooks: dict[int, Any] = {}
        self._stale_code: list[tuple[int, int]] = []
        self._exit: Exit | None = None
        self._rom_store = False
        DebugHooks.__init__(self)
        self.closed = False

    # --- contexts --------------------------------------------------------------------------

    def new_vcpu(self, index: int) -> VCpu:
        return VCpu(index, self.layout, ctypes.addressof(self.template))

    def _trap_sprs(self, sprs: tuple[int, ...]) -> None:
        """Make every access to ``sprs`` a privilege exception: point all six callbacks of
        their SPR table records (user/supervisor/hypervisor read and write) at QEMU's "no
        access" marker, which TBL's write callbacks already hold.  The table is not part of
        a vCPU's context, so this holds for every vCPU."""
        lo, hi = self.layout.spr_cb
        stride = (hi - lo) // 1024

        def callbacks(n: int) -> Any:
            return (ctypes.c_uint64 * 6).from_address(self.env + lo + stride * n)

        tbl = callbacks(268)
        noaccess = int(tbl[1])  # uea_write
        if not noaccess or int(tbl[3]) != noaccess:  # oea_write: the same marker
            raise EngineLayoutError("the SPR table does not have the expected layout; "
                                    "unicorn==2.1.4 is required")
        for n in sprs:
            cb = callbacks(n)
            for k in range(6):
                cb[k] = noaccess

    def reset_context(self, cpu: VCpu) -> None:
        """``cpu``'s context as at power-on (it must not be loaded)."""
        assert self.current is not cpu
        cpu.power_on(ctypes.addressof(self.template))
        self._last = None  # its TLB changed behind the engine's back

    def load(self, cpu: VCpu) -> None:
        """Make ``cpu`` the one the engine runs (saving the one loaded before)."""
        if self.current is cpu:
            if cpu.inputs_dirty:
                self.apply_inputs(cpu)
            return
        last = self.current or self._last
        if self.current is not None:
            self.save()
        for off, length in self.layout.context_ranges:
            _memmove(self.env + off, cpu.saved_base + off, length)
        cpu.move_to(self.env)
        self.current = cpu
        # The softmmu TLB and the jump cache hold the last CPU's translations: drop them unless
        # both CPUs translate alike (the same TLB contents and PIDs: a flat machine, or CPUs
        # sharing the kernel's bolted mappings before they diverge).
        if last is None or cpu.tlb_changed or not cpu.translates_like(last):
            cpu.tlb_changed = False
            tlb_flush(self._cpu)
        # Its interrupt inputs: QEMU keeps the lines in the context, the request outside it.
        self.apply_inputs(cpu, switched=True)
        self._last = cpu
        if cpu.msr_dirty:
            cpu.msr_dirty = False
            self.uc.reg_write(UC_PPC_REG_MSR, cpu.msr)  # recomputes hflags and MMU index

    def save(self) -> None:
        cpu, self.current = self.current, None
        if cpu is None:
            return
        for off, length in self.layout.context_ranges:
            _memmove(cpu.saved_base + off, self.env + off, length)
        cpu.move_to(cpu.saved_base)

    # --- running ---------------------------------------------------------------------------

    def prepare(self, cpu: VCpu, pc: int) -> None:
        """Before a slice of the loaded ``cpu`` from ``pc``: watched pages, dropped code and
        the debugger's requests take effect (and :attr:`debug_mode` is settled)."""
        self._apply_pending()
        self._apply_debug(cpu, pc)

    def run(self, cpu: VCpu, pc: int) -> Exit | None:
        """Run the loaded ``cpu`` from ``pc`` until a hook ends the slice or :meth:`stop`.

        Returns the Exit a hook asked for, or None when the slice was merely stopped (the
        scheduler's quantum, a wake-up, a kick): then ``cpu.nip`` is where it resumes."""
        assert self.current is cpu
        self._exit = None
        self._rom_store = False
        err: UcError | None = None
        try:
            self.stepping_first_block = cpu.debug.step
            self.uc.emu_start(pc, _RUN_FOREVER, 0, 1 if cpu.debug.step else 0)
        except UcError as e:
            err = e
        here = cpu.nip
        self._undo_watched_store(cpu)
        if self._exit is not None:
            return self._exit
        if err is not None and not (err.errno == UC_ERR_WRITE_PROT and self._rom_store):
            kind = {
                UC_ERR_READ_UNMAPPED: FaultKind.READ_UNMAPPED,
                UC_ERR_WRITE_UNMAPPED: FaultKind.WRITE_UNMAPPED,
                UC_ERR_FETCH_UNMAPPED: FaultKind.FETCH_UNMAPPED,
            }.get(err.errno, FaultKind.ENGINE)
            return Exit(ExitKind.FAULT, here, Fault(kind, here, None, cpu.snapshot(here)))
        if cpu.debug.step:
            return Exit(ExitKind.STEP, here)
        return None

    def stop(self) -> None:
        """End the running slice at the next block boundary (any thread; keeps the GIL).

        In debug mode a stop from outside could land inside a block (module docstring), so
        it is only requested: the block hook carries it out at the next block's start."""
        if self.debug_mode:
            self.stop_requested = True
        else:
            emu_stop(self.handle)

    def stop_with(self, exit_: Exit) -> None:
        """From a hook: end the slice with ``exit_``."""
        if self._exit is None:
            self._exit = exit_
        emu_stop(self.handle)

    # --- watched pages and code the host overwrote -----------------------------------------

    def watch_page(self, page: int) -> bool:
        """Report guest stores to ``page`` through ``Host.store`` from the next slice on;
        True if that is already so."""
        with self._lock:
            self._pending_unwatches.discard(page)
            if page in self._watched:
                return True
            self._pending_watches.add(page)
            return False

    def unwatch_page(self, page: int) -> None:
        """Give ``page`` back its fast stores from the next slice on (any thread)."""
        with self._lock:
            self._pending_watches.discard(page)
            if page in self._watched:
                self._pending_unwatches.add(page)

    def watching(self, page: int) -> bool:
        """Stores to ``page`` are reported, or will be from the next slice on."""
        with self._lock:
            return (page in self._watched and page not in self._pending_unwatches) \
                or page in self._pending_watches

    def forget_code(self, start: int, end: int) -> None:
        """Drop translated code for ``[start, end)`` before the next slice (any thread).
        fw_cfg DMA and host writes change RAM behind unicorn's back; a guest store does not
        need this (unicorn catches stores over translated code itself)."""
        if end > start:
            with self._lock:
                self._stale_code.append((start, end))
                if len(self._stale_code) > 64:
                    lo = min(s for s, _ in self._stale_code)
                    hi = max(e for _, e in self._stale_code)
                    self._stale_code = [(lo, hi)]

    def drop_code(self, start: int, end: int) -> None:
        """``ctl_remove_cache`` now (worker thread), piece by piece: unicorn translates only
        the start of the range and assumes the rest follows it in its RAM-block space, which
        is not so across the 16 MiB mappings' edges nor around a watched page."""
        if end <= start:
            return
        with self._lock:
            watched = [p for p in self._watched if start < p + PAGE_SIZE and p < end]
        cuts = set(range((start // _RAM_MAP_CHUNK + 1) * _RAM_MAP_CHUNK, end, _RAM_MAP_CHUNK))
        cuts.update(edge for p in watched for edge in (p, p + PAGE_SIZE))
        points = sorted({start, end} | {c for c in cuts if start < c < end})
        for lo, hi in itertools.pairwise(points):
            self.drop_translated(lo, hi)

    def _apply_pending(self) -> None:
        if not self._pending_watches and not self._stale_code and not self._pending_unwatches:
            return  # (read without the lock: a request made meanwhile waits for the next slice)
        with self._lock:
            pages, self._pending_watches = self._pending_watches, set()
            stale, self._stale_code = self._stale_code, []
            gone, self._pending_unwatches = self._pending_unwatches, set()
        with self.registers_kept():  # (splitting a region drops code through the MMU)
            self._apply(pages, stale, gone)

    def _apply(self, pages: set[int], stale: list[tuple[int, int]], gone: set[int]) -> None:
        for page in sorted(gone):
            self.uc.hook_del(self._watch_hooks.pop(page))
            self.uc.mem_protect(page, PAGE_SIZE, UC_PROT_ALL)
            with self._lock:
                self._watched.discard(page)
        for page in sorted(pages):
            # Read-only in the engine's view: the store faults into _on_watched_write, which
            # completes it.  Only this page is slowed; the hook is limited to its range.
            self.uc.mem_protect(page, PAGE_SIZE, UC_PROT_READ | UC_PROT_EXEC)
            self._watch_hooks[page] = self.uc.hook_add(
                UC_HOOK_MEM_WRITE_PROT, self._on_watched_write, begin=page,
                end=page + PAGE_SIZE - 1)
            with self._lock:
                self._watched.add(page)
        for start, end in stale:
            self.drop_code(start, end)

    # --- hooks (worker thread) -------------------------------------------------------------

    def _mmio_read(self, uc: Any, offset: int, size: int, _ud: Any) -> int:
        assert self.current is not None
        return self.host.mmio_read(self.current, offset, size)

    def _mmio_write(self, uc: Any, offset: int, size: int, value: int, _ud: Any) -> None:
        assert self.current is not None
        self.host.mmio_write(self.current, offset, size, value)

    def _ccsr_read(self, uc: Any, offset: int, size: int, _ud: Any) -> int:
        assert self.current is not None
        return self.host.ccsr_read(self.current, offset, size)

    def _ccsr_write(self, uc: Any, offset: int, size: int, value: int, _ud: Any) -> None:
        assert self.current is not None
        self.host.ccsr_write(self.current, offset, size, value)

    def _on_unmapped(self, uc: Any, access: int, address: int, size: int, value: int,
                     _ud: Any) -> bool:
        # The PC and registers are exact here (unicorn syncs them before calling the hook);
        # the block runs on to its end (module docstring), so the report is taken now.
        cpu = self.current
        assert cpu is not None
        pc = cpu.nip
        kind = {
            UC_MEM_READ_UNMAPPED: FaultKind.READ_UNMAPPED,
            UC_MEM_FETCH_UNMAPPED: FaultKind.FETCH_UNMAPPED,
        }.get(access, FaultKind.WRITE_UNMAPPED)
        self.stop_with(Exit(ExitKind.FAULT, pc, Fault(kind, pc, address, cpu.snapshot(pc))))
        return False

    def _on_rom_write(self, uc: Any, access: int, address: int, size: int, value: int,
                      _ud: Any) -> bool:
        # Returning False drops the store, as QEMU ignores writes to a ROM region; unicorn
        # then ends the slice at the end of the block, and the CPU resumes where it stopped.
        self._rom_store = True
        return False

    def _on_watched_write(self, uc: Any, access: int, address: int, size: int, value: int,
                          _ud: Any) -> bool:
        # unicorn hands over the value, not the bytes, and leaves the store to this hook: a
        # byte-reversed store (stwbrx, sthbrx: Linux's le32/le16 writes) lands reversed.  The
        # PC is exact here (unicorn syncs it before calling a memory hook).
        cpu = self.current
        assert cpu is not None
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
        if size in (2, 4):
            insn = self.fetch_insn(cpu.nip, mapped=True)
            if insn >> 26 == 31 and (insn >> 1) & 0x3FF in _BYTE_REVERSED_STORES:
                data = data[::-1]
        self.host.store(cpu, address, data)
        return True

    def close(self, cpus: list[VCpu]) -> None:
        """Free the engine (its translation buffers are megabytes; unicorn's hook callbacks
        make it a reference cycle the collector would free only later).  Register access
        on ``cpus`` fails loudly afterwards instead of reading freed memory."""
        if self.closed:
            return
        self.save()
        # unicorn frees the TLB array its CPU state points to: give it back its own (every
        # vCPU's context points to one the vCPU owns).
        ctypes.memmove(self.env, ctypes.addressof(self.template), self.layout.env_size)
        self.closed = True
        for cpu in cpus:
            cpu.closed = True
        engine: Any = self.uc
        engine._callbacks.clear()
        engine._mmio_callbacks.clear()
        free_later(engine)  # not at once: machine/cpu/quantum.py, QuantumTimer.close

