"""unicorn's exported C functions the machine calls directly, through ctypes.

Loaded with ``PyDLL``: a call keeps the GIL.  These are short calls on the worker's hot paths
(stopping the engine from a hook, dropping cached translations on a vCPU switch, entering an
exception, raising an interrupt line); through ``CDLL`` each would give up the GIL, and getting
it back from another thread costs a thread wake-up.  Every one takes the engine handle or
QEMU's CPUState, both found at start-up (machine/cpu/layout.py).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import unicorn

_lib: Any = ctypes.PyDLL(os.path.join(os.path.dirname(unicorn.__file__), "lib",
                                      "libunicorn.so.2"))


def _bind(name: str, *argtypes: Any, restype: Any = None) -> Any:
    fn = getattr(_lib, name)
    fn.argtypes = list(argtypes)
    fn.restype = restype
    return fn


_p, _i = ctypes.c_void_p, ctypes.c_int
#: ``uc_emu_stop(handle)``: end the running slice at the next block boundary.
emu_stop: Any = _bind("uc_emu_stop", _p, restype=_i)
#: ``uc_vmem_translate(handle, address, prot, &physical)``: the loaded CPU's translation.
vmem_translate: Any = _bind("uc_vmem_translate", _p, ctypes.c_uint64, _i,
                            ctypes.POINTER(ctypes.c_uint64), restype=_i)
#: QEMU's ``tlb_flush(cpu)``: drop cached translations and the jump cache.
tlb_flush: Any = _bind("tlb_flush_ppc", _p)
#: QEMU's ``ppc_cpu_do_interrupt(cpu)``: enter the guest's handler for the pending exception.
do_interrupt: Any = _bind("ppc_cpu_do_interrupt_ppc", _p)
#: QEMU's ``ppc_set_irq(cpu, line, level)``: an interrupt input of the loaded CPU.
set_irq: Any = _bind("ppc_set_irq_ppc", _p, _i, _i)
#: QEMU's ``ppc_booke_timers_init(cpu, freq, flags)``: the timer state its TCR/TSR code needs.
booke_timers_init: Any = _bind("ppc_booke_timers_init_ppc", _p, ctypes.c_uint32, ctypes.c_uint32)
