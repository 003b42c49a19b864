"""Where unicorn keeps a CPU's interrupt state: found on scratch engines, checked by effect.

The second half of :mod:`machine.cpu.layout` (same rules: nothing hard-coded, each fact
checked by what it does, :class:`~machine.cpu.layout.EngineLayoutError` if the build differs).
These fields of QEMU's ``CPUPPCState`` follow the exception detail (``error_code``):

* ``pending_interrupts``: the word after ``error_code``; QEMU's ``ppc_set_irq`` sets and clears
  one bit per interrupt input in it.  It travels with a vCPU's context, so a switched-out CPU
  keeps the decrementer, FIT and watchdog levels QEMU's own TSR/TCR code gave it.
* ``excp_prefix`` (IVPR as QEMU applies it), then ``ivor_mask``, ``ivpr_mask``,
  ``hreset_vector``, ``mpic_iack`` (64-bit) and ``mpic_proxy`` (a bool): with the proxy on,
  QEMU's external-interrupt entry loads EPR from a 32-bit physical read of ``mpic_iack`` --
  the interrupt controller's core-int acknowledge (Linux's qemu-e500 platform uses it).
* ``check_pow``: QEMU's power-management hook, a function pointer that ``mtmsr`` calls when
  it sets MSR[WE] with no interrupt pending (e500: "HID0[DOZE|NAP|SLEEP] set?").  A true
  answer halts the CPU, and unicorn's loop then spins on the halted CPU at 100 % host CPU,
  never returning: the machine replaces the hook with its own, which also ends the slice so
  the scheduler can park the vCPU (machine/cpu/engine.py, "Doze").
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from typing import Any

from unicorn import UC_HOOK_INTR

from machine.cpu.native import emu_stop, set_irq

REQUIRED = "this unicorn build is not the one fwcfg-e500 supports (pip install unicorn==2.1.4)"

#: QEMU's PPC_INTERRUPT_* input numbers (target/ppc/cpu.h).
IRQ_EXT = 3
IRQ_CEXT = 5
IRQ_DECR = 8
IRQ_FIT = 11
IRQ_WDT = 12
#: The C type of ``check_pow``: ``int (*)(CPUPPCState *env)``.
CHECK_POW = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
SPR_IVPR, SPR_HID0 = 63, 1008
HID0_DOZE = 0x0080_0000
MSR_WE = 0x0004_0000
_IVPR_MASK = 0xFFFF_0000


class IrqLayoutError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class IrqLayout:
    pending_interrupts: int
    mpic_iack: int
    mpic_proxy: int
    check_pow: int


def _u32(addr: int) -> int:
    return ctypes.c_uint32.from_address(addr).value


def _executable_ranges() -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[1].startswith("r-x") and "unicorn" in fields[5]:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                out.append((lo, hi))
    return out


def discover(uc: Any, env: int, cpu: int, error_code: int, env_size: int,
             run_stub: Any, mtspr: Any) -> IrqLayout:
    """Find the fields on ``uc``, a scratch engine (flat, RAM at 0) whose CPU state is at
    ``env`` and whose QEMU CPUState is ``cpu``; ``run_stub(uc, words)`` runs guest code."""
    # pending_interrupts: the EXT input's bit, right after error_code.
    pending = error_code + 4
    set_irq(cpu, IRQ_EXT, 1)
    raised = _u32(env + pending)
    set_irq(cpu, IRQ_EXT, 0)
    if raised != 1 << IRQ_EXT or _u32(env + pending) != 0:
        raise IrqLayoutError(f"could not locate the pending interrupts in unicorn; {REQUIRED}")
    # excp_prefix: the IVPR a guest mtspr wrote, followed by ivpr_mask two words on.
    ivpr = 0x5A5A_0000
    run_stub(uc, [(15 << 26) | (3 << 21) | (ivpr >> 16), mtspr(SPR_IVPR, 3), 0x4400_0022])
    blob = ctypes.string_at(env + pending, 0x1000)
    prefixes = [pending + i for i in range(0, len(blob) - 12, 4)
                if struct.unpack_from("=3I", blob, i)[::2] == (ivpr, _IVPR_MASK)]
    if len(prefixes) != 1:
        raise IrqLayoutError(f"could not locate the exception prefix in unicorn; {REQUIRED}")
    iack = (prefixes[0] + 16 + 7) & ~7  # after ivor_mask, ivpr_mask, hreset_vector
    proxy = iack + 8
    if ctypes.c_uint64.from_address(env + iack).value != 0 or \
            ctypes.c_uint8.from_address(env + proxy).value not in (0, 1):
        raise IrqLayoutError(f"the MPIC proxy fields are not where expected; {REQUIRED}")
    # check_pow: the first pointer into unicorn's code after the proxy flags (hflags,
    # hflags_nmsr and the two MMU indexes lie between), checked by calling it through mtmsr.
    code = _executable_ranges()
    candidates = [off for off in range(proxy + 8, proxy + 64, 8)
                  if any(lo <= ctypes.c_uint64.from_address(env + off).value < hi
                         for lo, hi in code)]
    if not candidates or candidates[0] + 8 > env_size:
        raise IrqLayoutError(f"could not locate the power-management hook; {REQUIRED}")
    check_pow = candidates[0]
    _check_doze(uc, env, check_pow, run_stub, mtspr)
    return IrqLayout(pending_interrupts=pending, mpic_iack=iack, mpic_proxy=proxy,
                     check_pow=check_pow)


def _check_doze(uc: Any, env: int, check_pow: int, run_stub: Any, mtspr: Any) -> None:
    """Behaviour: with HID0[DOZE] set, ``mtmsr`` of MSR[WE] calls the hook with ``env``."""
    slot = ctypes.c_uint64.from_address(env + check_pow)
    original = slot.value
    calls: list[int] = []
    handle = int(uc._uch.value)

    def hook(arg: int) -> int:
        calls.append(arg)
        emu_stop(handle)
        return 1

    fn = CHECK_POW(hook)
    slot.value = ctypes.cast(fn, ctypes.c_void_p).value or 0
    words = [(15 << 26) | (3 << 21) | (HID0_DOZE >> 16), mtspr(SPR_HID0, 3),  # HID0 = DOZE
             (15 << 26) | (4 << 21) | (MSR_WE >> 16), 0x7C80_0124,  # lis r4, WE; mtmsr r4
             0x4400_0022]
    stopped = uc.hook_add(UC_HOOK_INTR, lambda u, intno, ud: u.emu_stop())
    try:
        uc.mem_write(0x1000, struct.pack(f">{len(words)}I", *words))
        uc.emu_start(0x1000, 0x1000 + 4 * len(words))
    finally:
        uc.hook_del(stopped)
        slot.value = original
    if calls != [env]:
        raise IrqLayoutError(f"the power-management hook check failed; {REQUIRED}")
