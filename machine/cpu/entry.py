"""How the guest reaches the machine through the engine: exceptions, interrupts, doze.

A mixin of :class:`machine.cpu.engine.Engine` (split out so each module stays readable): the
INTR hook that answers trapped timer accesses and hypercalls and enters the guest's exception
handlers through QEMU's own code; QEMU's power-management hook (MSR[WE] doze); the interrupt
inputs of the loaded vCPU; and side-effect-free translation for the machine's own look at
guest code (QEMU's translation probe writes the exception registers a real miss would).
Everything here runs on the scheduler's worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from typing import Any

from unicorn import UC_HOOK_CODE, UC_PROT_EXEC, UC_PROT_READ
from unicorn.ppc_const import UC_PPC_REG_MSR

from machine.cpu import exceptions
from machine.cpu.interrupts import LINES, levels
from machine.cpu.irq_layout import HID0_DOZE, SPR_HID0
from machine.cpu.layout import Layout
from machine.cpu.native import do_interrupt, emu_stop, set_irq, vmem_translate
from machine.cpu.timers import Timers
from machine.cpu.vcpu import Exit, ExitKind, Fault, VCpu
from machine.events import FaultKind
from machine.memory import GuestRAM
from machine.platform import ROM_BASE, ROM_SIZE

#: HID0[DOZE], [NAP] and [SLEEP]: with any of them, MSR[WE] halts an e500 (QEMU's check_pow).
_HID0_POWER_SAVE = HID0_DOZE | 0x0060_0000
#: What QEMU's MMU writes on a miss: DEAR, ESR, MAS0-3, MAS6, MAS7.
MISS_SPRS = (61, 62, 624, 625, 626, 627, 630, 944)


class GuestEntry:
    """The guest-facing hooks of the engine (see the module docstring)."""

    current: VCpu | None
    uc: Any
    handle: int
    layout: Layout
    ram: GuestRAM
    host: Any
    timers: Timers | None
    on_retime: Any
    _cpu: int
    _pending: ctypes.c_uint32
    _error_code: ctypes.c_uint32
    _rom_address: int

    def stop_with(self, exit_: Exit) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    # --- interrupt inputs of the loaded vCPU -------------------------------------------------

    def apply_inputs(self, cpu: VCpu, *, switched: bool = False) -> None:
        """Give the loaded ``cpu``'s interrupt inputs to QEMU (worker thread): the device
        inputs it was given, the timer inputs its TSR and TCR make.  Only the lines whose
        pending bit differs; after a switch (QEMU's interrupt request is not part of a
        context) one more call sets or clears the request for this CPU.  QEMU clears a
        decrementer's pending bit when it delivers it; one whose TSR[DIS] is still set is
        raised again here, as the level input of the hardware would be."""
        assert self.current is cpu
        cpu.inputs_dirty = False
        up = levels(cpu)
        changed = up ^ self._pending.value
        called = False
        for line in LINES:
            if changed >> line & 1:
                set_irq(self._cpu, line, (up >> line) & 1)
                called = True  # (and the request is now this CPU's)
        if switched and not called:
            # Nothing changed, but the request belongs to the CPU loaded before.
            line = next((n for n in LINES if up >> n & 1), LINES[0])
            set_irq(self._cpu, line, (up >> line) & 1)

    def set_input(self, line: int, level: bool) -> None:
        """One input of the loaded CPU, from a hook: QEMU takes the interrupt at the next
        block boundary (the slice ends there, which is what makes it look)."""
        set_irq(self._cpu, line, int(level))
        if level:
            self.stop()  # (under a debugger, at the next block: never inside an instruction)

    def set_epr_proxy(self, cpu: VCpu, on: bool) -> None:
        """Core-int mode for ``cpu`` (the MPIC's GCR sets it): its external interrupt entry
        loads EPR from the MPIC's interrupt acknowledge."""
        ctypes.c_uint8.from_address(cpu.base + self.layout.mpic_proxy).value = int(on)

    # --- hooks ---------------------------------------------------------------------------

    def _on_interrupt(self, uc: Any, intno: int, _ud: Any) -> None:
        cpu = self.current
        assert cpu is not None
        pc = cpu.nip - 4  # unicorn advanced the PC past the instruction that trapped
        timers = self.timers
        if intno in exceptions.PRIVILEGED and timers is not None \
                and timers.emulate(cpu, self.fetch_insn(pc, mapped=True)):
            # A timer access, answered (the PC is past it).  A write that moved an expiry
            # re-times the scheduler's deadline; a TCR write may raise or drop an input.
            if timers.retime:
                timers.retime = False
                self.apply_inputs(cpu)
                self.on_retime()
            return
        if intno == exceptions.SYSCALL and self._error_code.value == 1:  # sc 1: a hypercall
            cpu.hcall_pc = pc + 4
            result = self.host.hypercall(cpu)
            if result is not None:
                self.stop_with(result)
            return
        if intno == exceptions.ALIGNMENT:  # QEMU 5 does not set DEAR: work it out
            insn = self.fetch_insn(pc)
            ea = exceptions.effective_address(insn, cpu.gpr)
            if ea is not None:
                cpu.write_spr(exceptions.SPR_DEAR, ea)
        handler = exceptions.vector(cpu, intno)
        if handler is None or handler == pc:  # no handler, or it faults on its own entry
            kind = exceptions.KIND.get(intno, FaultKind.EXCEPTION)
            address = exceptions.fault_address(cpu, intno, pc)
            self.stop_with(Exit(ExitKind.FAULT, pc, Fault(kind, pc, address, cpu.snapshot(pc))))
            return
        interrupted = cpu.msr
        cpu.set_nip(pc)
        do_interrupt(self._cpu)  # QEMU's powerpc_excp: SRR0/1, ESR, DEAR, MAS, MSR, vector
        # Where QEMU's entry differs from e500v2's (exceptions.entry_fixes): SRR1 is exactly
        # the MSR interrupted, and a non-critical interrupt keeps MSR[CE] and MSR[DE].
        fixed = exceptions.entry_fixes(intno, interrupted, cpu.msr)
        if fixed is not None:
            save_reg, msr = fixed
            cpu.write_spr(save_reg, interrupted)
            if msr != cpu.msr:
                self.uc.reg_write(UC_PPC_REG_MSR, msr)

    def _on_doze(self, env: int) -> int:
        """QEMU's check_pow, from ``mtmsr`` setting MSR[WE] with no input up (worker).

        With HID0[DOZE|NAP|SLEEP] the CPU halts, as QEMU's e500 does; unicorn would then
        spin on it, so the slice ends here and the machine parks the vCPU until it has work
        (machine/cpu/interrupts.py).  It resumes after the ``mtmsr`` with the interrupt
        pending, so the interrupt is taken before anything else runs."""
        cpu = self.current
        if cpu is None or not cpu.read_spr(SPR_HID0) & _HID0_POWER_SAVE:
            return 0
        self.host.doze(cpu, cpu.nip)
        emu_stop(self.handle)  # (in debug mode too: a halted CPU runs no block to stop at)
        return 1

    # --- looking at guest code -------------------------------------------------------------

    def translate(self, addr: int, prot: int = UC_PROT_READ, *,
                  mapped: bool = False) -> int | None:
        """The physical address the loaded CPU's MMU gives ``addr`` (worker thread), with no
        effect on the CPU.  QEMU's translation probe fills DEAR, ESR and the MAS registers as
        a real miss would, even when it only probes: on a miss they are put back.  ``mapped``:
        the CPU has just used this translation (the instruction that trapped, a word its last
        load read), so it cannot miss and nothing needs saving."""
        out = ctypes.c_uint64()
        if mapped:
            failed = vmem_translate(self.handle, addr, prot, ctypes.byref(out)) != 0
        else:
            with self.registers_kept():
                failed = vmem_translate(self.handle, addr, prot, ctypes.byref(out)) != 0
        return None if failed else int(out.value)

    def fetch_insn(self, addr: int, *, mapped: bool = False) -> int:
        """The instruction word at ``addr`` as the loaded CPU fetches it (through its MMU):
        straight from RAM or ROM; 0 where there is neither."""
        word = self.fetch(addr, mapped=mapped)
        return 0 if word is None else word

    def fetch(self, addr: int, *, mapped: bool = False) -> int | None:
        """Like :meth:`fetch_insn`, None where nothing can be fetched."""
        phys = self.translate(addr, UC_PROT_EXEC, mapped=mapped)
        if phys is None:
            return None
        if self.ram.contains(phys, 4):
            off = phys - self.ram.base
            return int.from_bytes(self.ram.view[off : off + 4], "big")
        if ROM_BASE <= phys <= ROM_BASE + ROM_SIZE - 4:
            return int.from_bytes(ctypes.string_at(self._rom_address + phys - ROM_BASE, 4), "big")
        return None

    def hook_code_at(self, address: int, callback: Callable[[VCpu], None]) -> Any:
        """Call ``callback(cpu)`` each time a vCPU is about to execute the instruction at
        ``address`` (worker thread, between slices; the loaded CPU must map ``address``).
        Only that instruction pays for it; code already translated there is dropped."""
        def hook(uc: Any, pc: int, size: int, _ud: Any) -> None:
            if self.current is not None:
                callback(self.current)

        with self.registers_kept():
            handle = self.uc.hook_add(UC_HOOK_CODE, hook, begin=address, end=address)
            self.uc.ctl_remove_cache(address, address + 4)
        return handle

    def unhook(self, handle: Any) -> None:
        with self.registers_kept():
            self.uc.hook_del(handle)

    def drop_translated(self, start: int, end: int) -> None:
        """Drop translated code for the effective addresses ``[start, end)`` as the loaded
        CPU maps them."""
        with self.registers_kept():
            self.uc.ctl_remove_cache(start, end)

    @contextlib.contextmanager
    def registers_kept(self) -> Iterator[None]:
        """Around an engine call that may drop translated code: unicorn finds the code to
        drop by translating an address through the loaded CPU's MMU as if fetching it -- a
        hook's range, a region's *physical* address when ``mem_protect`` splits it -- and a
        miss writes DEAR, ESR, the MAS registers and the exception detail, as a real miss
        would.  A vCPU stopped inside its own TLB-miss handler then read a stranger's DEAR
        (SMP Linux oopsed at 0x0f000000, a watched page's physical address).  They are put
        back."""
        cpu = self.current
        saved = [cpu.read_spr(n) for n in MISS_SPRS] if cpu is not None else None
        error = self._error_code.value
        try:
            yield
        finally:
            if cpu is not None and saved is not None:
                for n, value in zip(MISS_SPRS, saved, strict=True):
                    cpu.write_spr(n, value)
            self._error_code.value = error
