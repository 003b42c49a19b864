"""Each vCPU's Book E timebase and decrementer, kept from host time and exact when read.

unicorn's TBL, TBU and DEC are plain SPRs that nothing counts.  The engine makes the
instructions that read or write them trap (their SPR callbacks are QEMU's "no access", see
:meth:`Timers.trap_sprs`), and :meth:`Timers.emulate` answers them from the clock at the
moment of the access:

* **timebase**: the machine's :class:`Clock` (400 MHz since power-on, following host time)
  plus the CPU's own offset, so ``mttbl``/``mttbu`` (SPR 284/285) change only the writer's;
* **decrementer**: counts down from the value written at the clock's rate.  When it reaches 0
  it sets TSR[DIS] (and reloads from DECAR with TCR[ARE]); QEMU's own TSR/TCR code turns
  TSR[DIS] & TCR[DIE] into the decrementer interrupt input (the engine raises it on the loaded
  CPU).  :meth:`Timers.service` does that at slice boundaries; the scheduler stops the engine
  at the earliest expiry (:meth:`Timers.next_expiry`) so it is on time.

The clock can be frozen (GUTS' DEVDISR freezes every CPU's timebase for Linux's SMP timebase
sync): while frozen, timebases and decrementers stand still.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from machine.cpu.vcpu import VCpu
from machine.platform import TIMEBASE_HZ

SPR_DEC, SPR_DECAR, SPR_TSR, SPR_TCR = 22, 54, 336, 340
SPR_TBL_R, SPR_TBU_R, SPR_TBL_W, SPR_TBU_W = 268, 269, 284, 285
#: The SPRs whose accesses the engine traps to :meth:`Timers.emulate`.
TRAPPED = (SPR_DEC, SPR_TBL_R, SPR_TBU_R, SPR_TBL_W, SPR_TBU_W)
TSR_DIS = 0x0800_0000
TCR_DIE = 0x0400_0000
TCR_ARE = 0x0040_0000
_MSR_PR = 0x4000
_MASK64 = (1 << 64) - 1


class Clock:
    """Ticks of the machine's timebase clock since power-on; freezable (thread-safe)."""

    def __init__(self, hz: int = TIMEBASE_HZ) -> None:
        self._hz = hz
        self._lock = threading.Lock()
        self._t0 = time.monotonic_ns()
        self._frozen: int | None = None

    def now(self) -> int:
        frozen = self._frozen
        if frozen is not None:
            return frozen
        return (time.monotonic_ns() - self._t0) * self._hz // 1_000_000_000

    def monotonic_ns(self, tick: int) -> int:
        """When (CLOCK_MONOTONIC ns) the clock reaches ``tick``, if it runs."""
        return self._t0 + -(-tick * 1_000_000_000 // self._hz)

    def freeze(self, frozen: bool) -> None:
        """Stop (True) or restart (False) every CPU's timebase and decrementer."""
        with self._lock:
            if frozen and self._frozen is None:
                self._frozen = self.now()
            elif not frozen and self._frozen is not None:
                # Restart where it stopped: shift the origin by the time it stood still.
                self._t0 = time.monotonic_ns() - self._frozen * 1_000_000_000 // self._hz
                self._frozen = None

    @property
    def frozen(self) -> bool:
        return self._frozen is not None


class CpuTimer:
    """One CPU's timebase offset and decrementer (in clock ticks)."""

    __slots__ = ("dec", "dec_at", "tb_offset")

    def __init__(self) -> None:
        self.tb_offset = 0
        self.dec = 0  # the value written, at tick dec_at; 0 = stopped
        self.dec_at = 0

    def expiry(self) -> int | None:
        return self.dec_at + self.dec if self.dec else None

    def dec_value(self, now: int) -> int:
        return max(0, self.dec - (now - self.dec_at)) if self.dec else 0


class Timers:
    def __init__(self, clock: Clock, cpus: Iterable[VCpu]) -> None:
        self.clock = clock
        self.of = {cpu: CpuTimer() for cpu in cpus}

    def reset(self, cpu: VCpu) -> None:
        self.of[cpu] = CpuTimer()

    # --- the trapped instructions (the engine's INTR hook, worker thread) ------------------

    def emulate(self, cpu: VCpu, insn: int) -> bool:
        """Carry out ``insn`` if it is an access to a trapped SPR that ``cpu`` may make;
        False leaves the exception to the guest (a user-mode write, or not ours)."""
        if insn >> 26 != 31:
            return False
        xo = (insn >> 1) & 0x3FF
        sprn = ((insn >> 16) & 0x1F) | ((insn >> 11) & 0x1F) << 5
        rt = (insn >> 21) & 0x1F
        user = bool(cpu.msr & _MSR_PR)
        t = self.of[cpu]
        now = self.clock.now()
        if xo in (339, 371):  # mfspr, mftb
            if sprn in (SPR_TBL_R, SPR_TBU_R):
                tb = (now + t.tb_offset) & _MASK64
                cpu.set_gpr(rt, tb if sprn == SPR_TBL_R else tb >> 32)
                return True
            if sprn == SPR_DEC and not user:
                cpu.set_gpr(rt, t.dec_value(now))
                return True
            return False
        if xo != 467 or user:  # mtspr, supervisor only
            return False
        value = cpu.gpr(rt)
        if sprn in (SPR_TBL_W, SPR_TBU_W):
            tb = (now + t.tb_offset) & _MASK64
            low, high = (value, tb >> 32) if sprn == SPR_TBL_W else (tb & 0xFFFF_FFFF, value)
            t.tb_offset = (high << 32 | low) - now
            return True
        if sprn == SPR_DEC:
            t.dec, t.dec_at = value, now
            return True
        return False

    # --- expiries (worker thread, between slices) ------------------------------------------

    def service(self) -> list[VCpu]:
        """Let every decrementer that reached 0 set TSR[DIS] (reloading with TCR[ARE]); the
        CPUs whose decrementer interrupt input is now raised."""
        if self.clock.frozen:
            return []
        now = self.clock.now()
        raised = []
        for cpu, t in self.of.items():
            due = t.expiry()
            if due is None or due > now:
                continue
            tcr = cpu.read_spr(SPR_TCR)
            decar = cpu.read_spr(SPR_DECAR)
            if tcr & TCR_ARE and decar:
                periods = (now - due) // decar + 1
                t.dec_at, t.dec = due + (periods - 1) * decar, decar
            else:
                t.dec = 0
            cpu.write_spr(SPR_TSR, cpu.read_spr(SPR_TSR) | TSR_DIS)
            if tcr & TCR_DIE:
                raised.append(cpu)
        return raised

    def next_expiry(self) -> int | None:
        """The earliest tick at which a decrementer with its interrupt enabled reaches 0."""
        if self.clock.frozen:
            return None
        soonest: int | None = None
        for cpu, t in self.of.items():
            due = t.expiry()
            if due is not None and (soonest is None or due < soonest) \
                    and cpu.read_spr(SPR_TCR) & TCR_DIE:
                soonest = due
        return soonest

    @staticmethod
    def decrementer_level(cpu: VCpu) -> bool:
        """The decrementer interrupt input: TSR[DIS] and TCR[DIE]."""
        return bool(cpu.read_spr(SPR_TSR) & TSR_DIS and cpu.read_spr(SPR_TCR) & TCR_DIE)
