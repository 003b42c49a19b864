"""Where unicorn 2.1.4 keeps what the machine reaches with ctypes: found and checked at start-up.

The machine swaps vCPU contexts in and out of one engine and reads registers without calling
into the engine (every engine call is a ctypes call that gives up the GIL).  That needs the
layout of unicorn's ``CPUPPCState`` (``env``) and of two fields of its ``uc_struct``.  Nothing
here is a hard-coded offset: each fact is discovered on a private scratch engine, once per
process, and checked by its effect, so another unicorn build fails with
:class:`EngineLayoutError` at start-up instead of corrupting memory.

How each fact is found:

* ``env``: a pattern planted in the 32 GPRs with ``reg_write`` (``gpr[32]`` is the first field of
  ``env``), looked for behind the pointers at the head of the engine structure.
* ``spr[1024]``: a guest program writes SPRG0..7 with ``mtspr``; the pattern's distance from
  ``env`` minus 272 words.
* MSR, NIP (the PC), LR, CTR, XER: the one 32-bit field that follows three values written with
  ``reg_write``; CR lives as ``crf[8]`` (one nibble a word), found the same way.
* ``spr_cb[1024]`` (the SPR callback table that follows ``spr[]``; the same for every CPU of a
  model, so a context swap skips its 64 KiB): the records whose name pointers point at
  "SRR0" and "SRR1" give its stride and must start where ``spr[]`` ends.
* the size of ``env``: its last field is the ``uc_struct`` pointer; unicorn also records the
  size as ``cpu_context_size`` (both must agree).
* ``no_exit_request`` in ``uc_struct`` (docs/DESIGN.md, "Preemption"): after the page-size
  fields and ``cpu_context_size``; checked by behaviour: with it set, a block runs on past a
  store to an unmapped address, without it the block stops there.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from dataclasses import dataclass
from typing import Any, cast

from unicorn import (
    UC_ARCH_PPC,
    UC_HOOK_INTR,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MODE_BIG_ENDIAN,
    UC_MODE_PPC32,
    UC_TLB_CPU,
    UC_TLB_VIRTUAL,
    Uc,
    UcError,
)
from unicorn.ppc_const import (
    UC_CPU_PPC32_E500V2_V22,
    UC_PPC_REG_0,
    UC_PPC_REG_CR,
    UC_PPC_REG_CTR,
    UC_PPC_REG_LR,
    UC_PPC_REG_MSR,
    UC_PPC_REG_PC,
    UC_PPC_REG_XER,
)

from machine.cpu import irq_layout

_REQUIRED = "this unicorn build is not the one fwcfg-e500 supports (pip install unicorn==2.1.4)"


class EngineLayoutError(RuntimeError):
    """The unicorn build does not have the layout this module expects."""


_SPRG0 = 272
_SPR_COUNT = 1024
_SPR_SRR0 = 26
_XER_SO_OV_CA = 0xE000_0000


def new_engine(*, mmu: bool = False) -> Uc:
    """A fresh e500v2 unicorn instance: flat (UC_TLB_VIRTUAL, EA = PA), or with ``mmu`` in
    UC_TLB_CPU mode, where QEMU's own MMU code translates once :func:`enable_mmu` ran."""
    uc: Any = Uc(UC_ARCH_PPC, UC_MODE_PPC32 | UC_MODE_BIG_ENDIAN)
    uc.ctl_set_cpu_model(UC_CPU_PPC32_E500V2_V22)
    # (ctl_set_tlb_mode is not in unicorn's type stubs, and present in 2.1.4)
    uc.ctl_set_tlb_mode(UC_TLB_CPU if mmu else UC_TLB_VIRTUAL)
    return uc


#: QEMU's powerpc_mmu_t values (target/ppc/cpu-qom.h).
MMU_REAL = 6
MMU_BOOKE206 = 9
#: e500v2's excp_model ... flags as unicorn sets them, after mmu_model: (bus_model, bfd_mach
#: and excp_model vary by build only in their enum numbering, flags is a plain mask).
_E500V2_FLAGS = 0x0002_0149  # POWERPC_FLAG_SPE | CE | UBLE | DE | BUS_CLK
_TLB_ENTRY = 24  # sizeof(ppcmas_tlb_t): mas8, mas1 (u32), mas2, mas7_3 (u64)
_SPR_TLB0CFG, _SPR_TLB1CFG = 688, 689


def enable_mmu(uc: Uc, layout: Layout, env: int) -> None:
    """Switch QEMU's Book E 2.06 MMU on (unicorn builds e500v2 with the "real" model) and
    recompute the MMU index from the MSR."""
    mmu = ctypes.c_uint32.from_address(env + layout.mmu_model)
    if mmu.value not in (MMU_REAL, MMU_BOOKE206):
        raise EngineLayoutError(f"unexpected MMU model {mmu.value}; {_REQUIRED}")
    mmu.value = MMU_BOOKE206
    uc.reg_write(UC_PPC_REG_MSR, uc.reg_read(UC_PPC_REG_MSR))


@dataclass(frozen=True, slots=True)
class Layout:
    """Offsets inside ``env`` (and two inside ``uc_struct``) for this unicorn build."""

    env_path: tuple[int, int]  # (pointer slot in uc_struct, offset of env behind it)
    spr: int
    msr: int
    nip: int
    lr: int
    ctr: int
    crf: int
    xer: int  # followed by so, ov, ca (one word each)
    spr_cb: tuple[int, int]  # [start, end): shared by every CPU, skipped by context swaps
    env_size: int
    no_exit_request: int  # in uc_struct
    mmu_model: int  # POWERPC_MMU_REAL as unicorn leaves e500v2; BOOKE206 switches the MMU on
    nb_tlb: int  # entries of the Book E TLB array (TLB0 + TLB1)
    tlb: int  # the pointer to the Book E TLB array (ppcmas_tlb_t[nb_tlb], 24 bytes each)
    error_code: int  # the pending exception's detail (a system call's LEV, a program check's)
    #: Interrupt state (machine/cpu/irq_layout.py): the input bits, the core-int acknowledge
    #: (EPR) fields, and the power-management hook MSR[WE] calls.
    pending_interrupts: int = 0
    mpic_iack: int = 0
    mpic_proxy: int = 0
    check_pow: int = 0

    @property
    def context_ranges(self) -> tuple[tuple[int, int], ...]:
        """The parts of ``env`` that make one vCPU's context: (offset, length) pairs."""
        lo, hi = self.spr_cb
        return ((0, lo), (hi, self.env_size - hi))


def env_address(uc: Uc, layout: Layout) -> int:
    """The live ``env`` of ``uc``, checked against a planted GPR pattern."""
    handle = int(cast(Any, uc)._uch.value)
    k, j = layout.env_path
    env = ctypes.c_uint64.from_address(handle + k).value + j
    with _planted(uc) as pattern:
        if ctypes.string_at(env, len(pattern)) != pattern:
            raise EngineLayoutError(f"cannot find the CPU state inside unicorn; {_REQUIRED}")
    return env


class _planted:
    """Plant a fresh pattern in the GPRs for the ``with`` block, then put them back."""

    def __init__(self, uc: Uc) -> None:
        self._uc = uc

    def __enter__(self) -> bytes:
        uc = self._uc
        self._saved = [uc.reg_read(UC_PPC_REG_0 + i) for i in range(32)]
        nonce = int.from_bytes(os.urandom(4), "little")
        words = [(nonce + i * 0x9E37_79B9) & 0xFFFF_FFFF for i in range(32)]
        for i, w in enumerate(words):
            uc.reg_write(UC_PPC_REG_0 + i, w)
        return b"".join(struct.pack("=I", w) for w in words)

    def __exit__(self, *exc: object) -> None:
        for i, v in enumerate(self._saved):
            self._uc.reg_write(UC_PPC_REG_0 + i, v)


def _readable_ranges() -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            if perms.startswith("r"):
                lo, hi = (int(x, 16) for x in span.split("-"))
                out.append((lo, hi))
    return out


def _window(ranges: list[tuple[int, int]], p: int, limit: int = 0x40000) -> int:
    for lo, hi in ranges:
        if lo <= p < hi:
            return min(limit, hi - p)
    return 0


def _env_paths(uc: Uc) -> set[tuple[int, int]]:
    handle = int(cast(Any, uc)._uch.value)
    ranges = _readable_ranges()
    span = _window(ranges, handle)
    if span < 8:
        raise EngineLayoutError("cannot read the unicorn engine structure")
    head = ctypes.string_at(handle, min(span, 0x4000))
    found: list[tuple[int, int]] = []
    with _planted(uc) as pattern:
        for k in range(0, len(head) - 8, 8):
            (p,) = struct.unpack_from("=Q", head, k)
            n = _window(ranges, p)
            if n < len(pattern):
                continue
            j = ctypes.string_at(p, n).find(pattern)
            if j >= 0:
                found.append((j, k))
    return {(k, j) for j, k in found}


def _find_env_path(engines: list[Uc]) -> tuple[int, int]:
    """The pointer slot that leads to the CPU state in every engine (other slots may lead
    there by chance: an allocator arena the CPU happens to live in)."""
    common = set.intersection(*(_env_paths(uc) for uc in engines))
    if not common:
        raise EngineLayoutError(f"could not locate the CPU state inside unicorn; {_REQUIRED}")
    return min(common, key=lambda kj: kj[1])


def _insn_mtspr(spr: int, rs: int) -> int:
    sprf = ((spr & 0x1F) << 5) | (spr >> 5)
    return (31 << 26) | (rs << 21) | (sprf << 11) | (467 << 1)


_SC1 = 0x4400_0022


def _run_stub(uc: Uc, words: list[int], base: int = 0x1000) -> None:
    """Run ``words`` at ``base`` on a scratch engine until its ``sc 1``."""
    uc.mem_write(base, struct.pack(f">{len(words)}I", *words))
    h = uc.hook_add(UC_HOOK_INTR, lambda u, intno, ud: u.emu_stop())
    try:
        uc.emu_start(base, base + 4 * len(words))
    finally:
        uc.hook_del(h)


def _find_spr(uc: Uc, env: int) -> int:
    words: list[int] = []
    for i in range(8):
        words += [(15 << 26) | (3 << 21) | 0xA5A5,  # lis r3, 0xA5A5
                  (24 << 26) | (3 << 21) | (3 << 16) | (0x0100 + i),  # ori r3, r3, i
                  _insn_mtspr(_SPRG0 + i, 3)]
    _run_stub(uc, [*words, _SC1])
    pattern = b"".join(struct.pack("=I", 0xA5A5_0100 + i) for i in range(8))
    j = ctypes.string_at(env, 0x4000).find(pattern)
    if j < 0:
        raise EngineLayoutError(f"could not locate the SPR array inside unicorn; {_REQUIRED}")
    return j - _SPRG0 * 4


def _find_field(uc: Uc, env: int, reg: int, values: tuple[int, ...]) -> int:
    found: set[int] | None = None
    for value in values:
        uc.reg_write(reg, value)
        blob = ctypes.string_at(env, 0x4000)
        packed = struct.pack("=I", value)
        here = {i for i in range(0, len(blob), 4) if blob[i : i + 4] == packed}
        found = here if found is None else found & here
    if not found or len(found) != 1:
        raise EngineLayoutError(f"could not locate register {reg} inside unicorn; {_REQUIRED}")
    return found.pop()


def _find_crf(uc: Uc, env: int) -> int:
    uc.reg_write(UC_PPC_REG_CR, 0x1357_9BDF)
    pattern = b"".join(struct.pack("=I", n) for n in (1, 3, 5, 7, 9, 0xB, 0xD, 0xF))
    j = ctypes.string_at(env, 0x4000).find(pattern)
    if j < 0:
        raise EngineLayoutError(f"could not locate CR inside unicorn; {_REQUIRED}")
    return j


def _find_spr_cb(env: int, spr: int) -> tuple[int, int]:
    """The SPR callback table: records whose name pointers point at "SRR0" and "SRR1"."""
    ranges = _readable_ranges()
    start = spr + 4 * _SPR_COUNT
    blob = ctypes.string_at(env, start + 0x20000)
    hits: dict[bytes, int] = {}
    for i in range(start, len(blob) - 8, 8):
        (p,) = struct.unpack_from("=Q", blob, i)
        if _window(ranges, p, 8) < 5:
            continue
        name = ctypes.string_at(p, 5)
        if name in (b"SRR0\0", b"SRR1\0") and name not in hits:
            hits[name] = i
        if len(hits) == 2:
            break
    if len(hits) != 2:
        raise EngineLayoutError(f"could not locate the SPR table inside unicorn; {_REQUIRED}")
    stride = hits[b"SRR1\0"] - hits[b"SRR0\0"]
    name_off = hits[b"SRR0\0"] - start - _SPR_SRR0 * stride
    if not 0 <= name_off < stride:
        raise EngineLayoutError(f"the SPR table does not follow the SPR array; {_REQUIRED}")
    return start, start + stride * _SPR_COUNT


def _find_env_size(uc: Uc, env: int, after: int) -> int:
    handle = int(cast(Any, uc)._uch.value)
    blob = ctypes.string_at(env, after + 0x4000)
    j = blob.find(struct.pack("=Q", handle), after)
    while j >= 0 and j % 8:
        j = blob.find(struct.pack("=Q", handle), j + 1)
    if j < 0:
        raise EngineLayoutError(f"could not find the end of the CPU state; {_REQUIRED}")
    return j


def _find_no_exit_request(uc: Uc, env_size: int) -> int:
    """After ``target_page_size`` (4 KiB), ``target_page_align``, the host page sizes,
    ``cpu_context_size`` (== env_size) and ``next_pc`` come four bools: hook_insert,
    first_tb, no_exit_request, init_done (true)."""
    handle = int(cast(Any, uc)._uch.value)
    head = ctypes.string_at(handle, 0x4000)
    anchor = struct.pack("=IIQQ", 0x1000, 0xFFF, 0x1000, 0x1000)
    a = head.find(anchor)
    while a >= 0 and a % 8:
        a = head.find(anchor, a + 1)
    if a < 0:
        raise EngineLayoutError(f"cannot find the page-size fields of uc_struct; {_REQUIRED}")
    (ctx_size,) = struct.unpack_from("=i", head, a + 32)
    if ctx_size != env_size or head[a + 51] != 1:
        raise EngineLayoutError(f"uc_struct does not have the expected layout; {_REQUIRED}")
    return a + 50


def _check_no_exit_request(offset: int) -> None:
    """Behaviour: ``stw`` to an unmapped address, then ``li r5, 1``, in one block."""
    for flag in (False, True):
        uc = new_engine()
        uc.mem_map(0, 0x10000)
        flag_at = ctypes.c_bool.from_address(int(cast(Any, uc)._uch.value) + offset)
        flag_at.value = flag
        uc.hook_add(UC_HOOK_MEM_WRITE_UNMAPPED, lambda *a: False)
        uc.reg_write(UC_PPC_REG_0 + 4, 0x8000_0000)
        words = [0x9064_0000, 0x38A0_0001, _SC1]  # stw r3,0(r4); li r5,1; sc 1
        uc.mem_write(0x1000, struct.pack(">3I", *words))
        try:
            uc.emu_start(0x1000, 0x100C)
        except UcError:
            pass
        ran_on = uc.reg_read(UC_PPC_REG_0 + 5) == 1
        flag_at.value = False
        if ran_on != flag:
            raise EngineLayoutError(f"no_exit_request check failed; {_REQUIRED}")


def _find_mmu(spr: int, tail: int, env_size: int,
              env_path: tuple[int, int]) -> tuple[int, int, int]:
    """(mmu_model, nb_tlb, tlb): the MMU model is the int that reads MMU_REAL with e500v2's
    flags four ints later; nb_tlb is TLB0CFG + TLB1CFG entries; the TLB array is the pointer
    behind which a guest ``tlbwe`` to TLB1 entry 0 lands (checked after switching the MMU
    on, on a scratch engine)."""
    uc: Any = new_engine(mmu=True)
    uc.mem_map(0, 0x10000)
    handle = int(uc._uch.value)
    env = ctypes.c_uint64.from_address(handle + env_path[0]).value + env_path[1]
    blob = ctypes.string_at(env, env_size)
    models = [i for i in range(tail, env_size - 20, 4)
              if struct.unpack_from("=5I", blob, i)[::4] == (MMU_REAL, _E500V2_FLAGS)]
    if len(models) != 1:
        raise EngineLayoutError(f"could not locate the MMU model inside unicorn; {_REQUIRED}")
    sprs = struct.unpack_from("=1024I", blob, spr)
    nb_tlb = (sprs[_SPR_TLB0CFG] & 0xFFF) + (sprs[_SPR_TLB1CFG] & 0xFFF)
    counts = [i for i in range(0, spr, 4) if struct.unpack_from("=I", blob, i)[0] == nb_tlb]
    if not counts:
        raise EngineLayoutError(f"could not locate the TLB size inside unicorn; {_REQUIRED}")
    probe = Layout(env_path=env_path, spr=spr, msr=0, nip=0, lr=0, ctr=0, crf=0, xer=0,
                   spr_cb=(0, 0), env_size=env_size, no_exit_request=0, mmu_model=models[0],
                   nb_tlb=nb_tlb, tlb=0, error_code=0)
    # tlbwe (before the MMU is on, so the stub itself need not be mapped): TLB1 entry 0 =
    # V | TSIZE 4 KiB, EPN 0x5A5A_5000, RPN 0x0000_3000 | SR
    mas = {624: 0x1000_0000, 625: 0x8000_0100, 626: 0x5A5A_5000, 627: 0x0000_3001, 944: 0}
    words: list[int] = []
    for n, value in mas.items():
        words += [(15 << 26) | (3 << 21) | (value >> 16),  # lis r3, hi
                  (24 << 26) | (3 << 21) | (3 << 16) | (value & 0xFFFF),  # ori r3, r3, lo
                  _insn_mtspr(n, 3)]
    _run_stub(uc, [*words, 0x7C00_07A4, _SC1])  # tlbwe
    want = struct.pack("=IIQQ", 0, 0x8000_0100, 0x5A5A_5000, 0x3001)
    ranges = _readable_ranges()
    head = ctypes.string_at(env, spr)
    for off in range(counts[0], spr - 8, 8):
        (p,) = struct.unpack_from("=Q", head, off)
        at = p + (nb_tlb - 16) * _TLB_ENTRY  # TLB1 follows TLB0's entries
        if _window(ranges, at, _TLB_ENTRY) >= _TLB_ENTRY and ctypes.string_at(at, 24) == want:
            enable_mmu(uc, probe, env)  # the model is accepted: the MSR re-applies cleanly
            return models[0], nb_tlb, off
    raise EngineLayoutError(f"could not locate the TLB array inside unicorn; {_REQUIRED}")


def _find_error_code(uc: Uc, env: int, tail: int, env_size: int) -> int:
    """The int after the SPR table that holds a system call's LEV as the INTR hook sees it:
    the one place that reads 0x55 after ``sc 0x55`` and 0x2A after ``sc 0x2A``."""
    found: set[int] | None = None
    for lev in (0x55, 0x2A):
        _run_stub(uc, [0x4400_0002 | lev << 5])
        blob = ctypes.string_at(env + tail, env_size - tail)
        here = {tail + i for i in range(0, len(blob) - 4, 4)
                if struct.unpack_from("=I", blob, i)[0] == lev}
        found = here if found is None else found & here
    if not found or len(found) != 1:
        raise EngineLayoutError(f"could not locate the exception detail in unicorn; {_REQUIRED}")
    return found.pop()


def _discover() -> Layout:
    uc = new_engine()
    uc.mem_map(0, 0x10000)
    env_path = _find_env_path([uc, new_engine(), new_engine()])
    handle = int(cast(Any, uc)._uch.value)
    env = ctypes.c_uint64.from_address(handle + env_path[0]).value + env_path[1]
    spr = _find_spr(uc, env)
    msr_values = (0x0002_1200, 0x0000_1000, 0x0002_9000)  # MSR-legal, unlikely elsewhere
    plain = (0x1234_5670, 0x0BAD_CAF0, 0x7654_3210)
    msr = _find_field(uc, env, UC_PPC_REG_MSR, msr_values)
    nip = _find_field(uc, env, UC_PPC_REG_PC, msr_values)
    lr = _find_field(uc, env, UC_PPC_REG_LR, plain)
    ctr = _find_field(uc, env, UC_PPC_REG_CTR, (0x2468_ACE0, 0x1357_9BD0, 0x0FED_CBA0))
    xer = _find_field(uc, env, UC_PPC_REG_XER, (0x0000_5A5A, 0x0000_7F3C, 0x0000_1E6B))
    crf = _find_crf(uc, env)
    # A guest mtxer keeps SO, OV and CA in the three words after it (unicorn's reg_write
    # does not split them, the guest's instructions do): check with a guest program.
    uc.reg_write(UC_PPC_REG_XER, 0)
    uc.reg_write(UC_PPC_REG_0 + 3, _XER_SO_OV_CA | 0x11)
    _run_stub(uc, [_insn_mtspr(1, 3), _SC1])
    so_ov_ca = struct.unpack("=4I", ctypes.string_at(env + xer, 16))
    if so_ov_ca != (0x11, 1, 1, 1):
        raise EngineLayoutError(f"XER does not have the expected layout; {_REQUIRED}")
    spr_cb = _find_spr_cb(env, spr)
    env_size = _find_env_size(uc, env, spr_cb[1])
    no_exit = _find_no_exit_request(uc, env_size)
    _check_no_exit_request(no_exit)
    mmu_model, nb_tlb, tlb = _find_mmu(spr, spr_cb[1], env_size, env_path)
    error_code = _find_error_code(uc, env, spr_cb[1], env_size)
    cpu = ctypes.c_uint64.from_address(handle + env_path[0]).value
    try:
        irq = irq_layout.discover(uc, env, cpu, error_code, env_size, _run_stub, _insn_mtspr)
    except irq_layout.IrqLayoutError as e:
        raise EngineLayoutError(str(e)) from None
    for name, off in (("MSR", msr), ("PC", nip), ("LR", lr), ("CTR", ctr), ("XER", xer),
                      ("CR", crf)):
        if not 32 * 4 <= off < spr:
            raise EngineLayoutError(f"{name} is not where expected; {_REQUIRED}")
    return Layout(env_path=env_path, spr=spr, msr=msr, nip=nip, lr=lr, ctr=ctr, crf=crf,
                  xer=xer, spr_cb=spr_cb, env_size=env_size, no_exit_request=no_exit,
                  mmu_model=mmu_model, nb_tlb=nb_tlb, tlb=tlb, error_code=error_code,
                  pending_interrupts=irq.pending_interrupts, mpic_iack=irq.mpic_iack,
                  mpic_proxy=irq.mpic_proxy, check_pow=irq.check_pow)


_lock = threading.Lock()
_layout: Layout | None = None


def layout() -> Layout:
    """This process's :class:`Layout` (discovered on first use, ~10 ms)."""
    global _layout
    with _lock:
        if _layout is None:
            _layout = _discover()
        return _layout
