"""Direct access to the special-purpose registers of a unicorn PowerPC CPU.

unicorn 2.1.4 exposes no register id for most Book E SPRs (PIR, TBL/TBU, SRR0/1, IVPR, IVORs).
They live in ``CPUPPCState.spr[1024]`` inside the engine.  We find that array once per CPU and
then read and write it with ctypes: ~70 ns per access instead of ~6 us through
``context_save``/``context_restore``, and safe while the CPU runs on another thread (aligned
32-bit stores; the timebase pair is one aligned 64-bit store).

How the array is found (no offsets are hard-coded, so a different build fails loudly instead of
corrupting memory):

1. Plant a pattern in the 32 GPRs with ``reg_write``; ``gpr[32]`` is the first field of
   ``CPUPPCState``, so the pattern's address is the live ``env``.  We look for it behind the
   pointers held in the first bytes of the engine's ``uc_struct``.
2. Run a tiny guest program on a private scratch CPU that writes SPRG0..7 with ``mtspr``; the
   distance from ``env`` to that pattern, minus 272 words, is the offset of ``spr[]``.  This is
   done once per process.
3. Every :class:`SprAccess` is verified by writing PIR through ctypes and reading it back with a
   guest ``mfspr``.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from typing import Any, cast

from unicorn import UC_ARCH_PPC, UC_MODE_BIG_ENDIAN, UC_MODE_PPC32, UC_TLB_VIRTUAL, Uc
from unicorn.ppc_const import (
    UC_CPU_PPC32_E500V2_V22,
    UC_PPC_REG_0,
    UC_PPC_REG_MSR,
    UC_PPC_REG_PC,
)

from machine.platform import SPR_PIR, SPR_TBL_READ


class EngineLayoutError(RuntimeError):
    """The unicorn build does not have the layout this module expects."""


_SPRG0 = 272
_SPR_COUNT = 1024
_lock = threading.Lock()
_spr_offset: int | None = None


def new_e500(ram: tuple[int, int] | None = None) -> Uc:
    """A fresh e500v2 unicorn instance in the only safe TLB mode (see reference/unicorn.md)."""
    uc: Any = Uc(UC_ARCH_PPC, UC_MODE_PPC32 | UC_MODE_BIG_ENDIAN)
    uc.ctl_set_cpu_model(UC_CPU_PPC32_E500V2_V22)
    uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)  # not in unicorn's type stubs, present in 2.1.4
    return uc


def _readable_ranges() -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            if perms.startswith("rw"):
                lo, hi = (int(x, 16) for x in span.split("-"))
                out.append((lo, hi))
    return out


#: (offset of the pointer slot in uc_struct, offset of the state behind that pointer).
_env_path: tuple[int, int] | None = None


def _remember_env_path(k: int, j: int) -> None:
    global _env_path
    _env_path = (k, j)  # one reference store: atomic, and _lock may already be held here


def _find_env(uc: Uc) -> int:
    """Address of the live ``CPUPPCState`` of ``uc`` (step 1 of the module docstring)."""
    saved = [uc.reg_read(UC_PPC_REG_0 + i) for i in range(32)]
    # A fresh pattern each time: an old one may linger in freed memory or in another CPU's
    # saved context, and would be found first.
    nonce = int.from_bytes(os.urandom(4), "little")
    words = [(nonce + i * 0x9E37_79B9) & 0xFFFF_FFFF for i in range(32)]
    for i, w in enumerate(words):
        uc.reg_write(UC_PPC_REG_0 + i, w)
    pattern = b"".join(struct.pack("=I", w) for w in words)
    try:
        handle = int(cast(Any, uc)._uch.value)
        # Fast path: the layout found for the first CPU (which pointer slot of the engine
        # structure leads to the state, and where the state sits behind it) holds for every
        # instance of this build.  Checked against the pattern, so a miss only costs the scan.
        if _env_path is not None:
            k, j = _env_path
            p = ctypes.c_uint64.from_address(handle + k).value
            if p and ctypes.string_at(p + j, len(pattern)) == pattern:
                return p + j
        ranges = _readable_ranges()

        def window(p: int) -> int:
            for lo, hi in ranges:
                if lo <= p < hi:
                    return min(0x40000, hi - p)
            return 0

        span = window(handle)
        if span < 8:
            raise EngineLayoutError("cannot read the unicorn engine structure")
        head = ctypes.string_at(handle, min(span, 0x4000))
        for k in range(0, len(head) - 8, 8):
            (p,) = struct.unpack_from("=Q", head, k)
            n = window(p)
            if n < len(pattern):
                continue
            j = ctypes.string_at(p, n).find(pattern)
            if j >= 0:
                _remember_env_path(k, j)
                return p + j
        raise EngineLayoutError("could not locate the CPU state inside unicorn")
    finally:
        for i, v in enumerate(saved):
            uc.reg_write(UC_PPC_REG_0 + i, v)


def _assemble_mtspr_sprg() -> bytes:
    """``lis r3,0xA5A5; ori r3,r3,i; mtspr 272+i,r3`` for i in 0..7, then ``sc 1``."""
    out = bytearray()
    for i in range(8):
        out += struct.pack(">I", (15 << 26) | (3 << 21) | 0xA5A5)  # lis r3, 0xA5A5
        out += struct.pack(">I", (24 << 26) | (3 << 21) | (3 << 16) | (0x0100 + i))  # ori
        spr = _SPRG0 + i
        sprf = ((spr & 0x1F) << 5) | (spr >> 5)
        out += struct.pack(">I", (31 << 26) | (3 << 21) | (sprf << 11) | (467 << 1))  # mtspr
    out += struct.pack(">I", 0x4400_0022)
    return bytes(out)


def _mfspr(rt: int, spr: int) -> int:
    sprf = ((spr & 0x1F) << 5) | (spr >> 5)
    return (31 << 26) | (rt << 21) | (sprf << 11) | (339 << 1)


def _discover_spr_offset() -> int:
    """Offset of ``spr[]`` inside ``CPUPPCState`` (step 2), found with a scratch CPU."""
    from unicorn import UC_HOOK_INTR

    uc = new_e500()
    uc.mem_map(0, 0x10000)
    code = _assemble_mtspr_sprg()
    uc.mem_write(0x1000, code)
    uc.hook_add(UC_HOOK_INTR, lambda u, intno, ud: u.emu_stop())
    uc.emu_start(0x1000, 0x1000 + len(code))
    env = _find_env(uc)
    pattern = b"".join(struct.pack("=I", 0xA5A5_0100 + i) for i in range(8))
    blob = ctypes.string_at(env, 0x4000)
    j = blob.find(pattern)
    if j < 0:
        raise EngineLayoutError("could not locate the SPR array inside unicorn's CPU state")
    return j - _SPRG0 * 4


def spr_offset() -> int:
    global _spr_offset
    with _lock:
        if _spr_offset is None:
            _spr_offset = _discover_spr_offset()
        return _spr_offset


_field_offsets: dict[int, int] = {}
#: The registers whose fields SprAccess reaches directly; found together, on one scratch CPU.
_FIELDS = (UC_PPC_REG_MSR, UC_PPC_REG_PC)


def _discover_field_offsets(regs: tuple[int, ...]) -> dict[int, int]:
    """Offset inside ``CPUPPCState`` of the 32-bit field each unicorn register in ``regs``
    lives in: the one place that follows three different values written with ``reg_write``."""
    uc = new_e500()
    env = _find_env(uc)
    offsets = {}
    for reg in regs:
        found: set[int] | None = None
        for value in (0x0002_1200, 0x0000_1000, 0x0002_9000):  # MSR-legal, unlikely elsewhere
            uc.reg_write(reg, value)
            blob = ctypes.string_at(env, 0x4000)
            here = {i for i in range(0, len(blob), 4)
                    if blob[i : i + 4] == struct.pack("=I", value)}
            found = here if found is None else found & here
        if not found or len(found) != 1:
            raise EngineLayoutError(f"could not locate register {reg} inside unicorn's CPU state")
        offsets[reg] = found.pop()
    return offsets


def field_offset(reg: int) -> int:
    with _lock:
        if not _field_offsets:
            _field_offsets.update(_discover_field_offsets(_FIELDS))
        return _field_offsets[reg]


class SprAccess:
    """Read/write the live SPRs of one unicorn CPU; verified at construction (step 3)."""

    def __init__(self, uc: Uc) -> None:
        self._uc = uc
        self.env = _find_env(uc)
        self._base = self.env + spr_offset()
        self.spr: Any = (ctypes.c_uint32 * _SPR_COUNT).from_address(self._base)
        self._tb = ctypes.c_uint64.from_address(self._base + SPR_TBL_READ * 4)
        #: The MSR and the PC (``nip``), read and written without a call into the engine, which
        #: would give up the GIL.  Writing ``nip`` redirects the CPU only from its own hooks.
        self.msr = ctypes.c_uint32.from_address(self.env + field_offset(UC_PPC_REG_MSR))
        self.nip = ctypes.c_uint32.from_address(self.env + field_offset(UC_PPC_REG_PC))
        self._verify()

    def _verify(self) -> None:
        """Write PIR with ctypes, read it back with a guest ``mfspr`` on a scratch page."""
        uc = self._uc
        from unicorn import UC_HOOK_INTR

        probe = 0x0BAD_F00D
        old = self.spr[SPR_PIR]
        self.spr[SPR_PIR] = probe
        scratch = 0xC000_0000  # a page nothing else uses, mapped only for this check
        uc.mem_map(scratch, 0x1000)
        try:
            uc.mem_write(scratch, struct.pack(">II", _mfspr(4, SPR_PIR), 0x4400_0022))
            saved_r4 = uc.reg_read(UC_PPC_REG_0 + 4)
            saved_pc = uc.reg_read(UC_PPC_REG_PC)
            h = uc.hook_add(UC_HOOK_INTR, lambda u, intno, ud: u.emu_stop())
            try:
                uc.emu_start(scratch, scratch + 8)
            finally:
                uc.hook_del(h)
            seen = uc.reg_read(UC_PPC_REG_0 + 4)
            uc.reg_write(UC_PPC_REG_0 + 4, saved_r4)
            uc.reg_write(UC_PPC_REG_PC, saved_pc)
        finally:
            uc.mem_unmap(scratch, 0x1000)
            self.spr[SPR_PIR] = old
        checks = (("MSR", self.msr, UC_PPC_REG_MSR), ("PC", self.nip, UC_PPC_REG_PC))
        for name, field, reg in checks:
            engine = uc.reg_read(reg)
            if field.value != engine:
                raise EngineLayoutError(
                    f"{name} access check failed (state holds {field.value:#x}, the engine "
                    f"reports {engine:#x}); this unicorn build is not the one fwcfg-e500 "
                    "supports (unicorn==2.1.4)")
        if seen != probe:
            raise EngineLayoutError(
                f"SPR access check failed (guest read PIR {seen:#x}, expected {probe:#x}); "
                "this unicorn build is not the one fwcfg-e500 supports (unicorn==2.1.4)"
            )

    def read(self, n: int) -> int:
        return int(self.spr[n])

    def write(self, n: int, value: int) -> None:
        self.spr[n] = value & 0xFFFF_FFFF

    def set_timebase(self, ticks: int) -> None:
        """TBU:TBL as one aligned 64-bit store, so a guest never sees a torn pair."""
        self._tb.value = ticks & 0xFFFF_FFFF_FFFF_FFFF
