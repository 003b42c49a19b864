"""Each vCPU's Book E timers -- timebase, decrementer, fixed-interval timer, watchdog -- kept
from host time and exact when read.

unicorn's TBL, TBU and DEC are plain SPRs that nothing counts, and QEMU's FIT and watchdog
timers are compiled out of it.  The engine makes the instructions that read or write TBL, TBU,
DEC and TCR trap (their SPR callbacks are QEMU's "no access", see
:meth:`Engine._trap_sprs <machine.cpu.engine.Engine._trap_sprs>`), and :meth:`Timers.emulate`
answers them from the clock at the moment of the access:

* **timebase**: the machine's :class:`Clock` (400 MHz since power-on, following host time)
  plus the CPU's own offset, so ``mttbl``/``mttbu`` (SPR 284/285) change only the writer's;
* **decrementer**: counts down from the value written at the clock's rate.  When it reaches 0
  it sets TSR[DIS] (and reloads from DECAR with TCR[ARE]);
* **fixed-interval timer**: TSR[FIS] is set each time the timebase bit TCR[FP|FPEXT] selects
  goes from 0 to 1 (e500: bit 63 - (FPEXT << 2 | FP), counted from the least significant);
* **watchdog**: at each 0-to-1 transition of the bit TCR[WP|WPEXT] selects, the next step of
  the Book E watchdog: TSR[ENW] set, then TSR[WIS] (the watchdog interrupt), then -- both set
  and TCR[WRC] non-zero -- TSR[WRS] = TCR[WRC] and the machine resets
  (:attr:`Timers.on_watchdog_reset`).  TCR[WRC] can be set once; only a reset clears it.

Status bits turn into interrupt inputs as QEMU's ``booke_update_irq`` says (status and enable:
:func:`machine.cpu.interrupts.timer_levels`); the engine gives them to the loaded CPU.
:meth:`Timers.service` sets the status bits that came due, at slice boundaries; the scheduler
stops the engine at the earliest expiry with its interrupt enabled (:meth:`Timers.next_expiry`)
so it is on time; a trapped write that moves an expiry asks the scheduler to re-time
(:attr:`Timers.retime`).  Status bits whose interrupt is disabled are set lazily, at the next
boundary after they came due, rather than waking the machine for nobody.

The clock can be frozen (GUTS' DEVDISR freezes every CPU's timebase for Linux's SMP timebase
sync): while frozen, timebases and all four timers stand still.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from machine.cpu.interrupts import (
    SPR_TCR,
    SPR_TSR,
    TCR_ARE,
    TCR_DIE,
    TCR_FIE,
    TCR_WIE,
    TCR_WRC,
    TCR_WRC_SHIFT,
    TSR_DIS,
    TSR_ENW,
    TSR_FIS,
    TSR_WIS,
    TSR_WRS_SHIFT,
)
from machine.cpu.vcpu import VCpu
from machine.platform import TIMEBASE_HZ

SPR_DEC, SPR_DECAR = 22, 54
SPR_TBL_R, SPR_TBU_R, SPR_TBL_W, SPR_TBU_W = 268, 269, 284, 285
#: The SPRs whose accesses the engine traps to :meth:`Timers.emulate`.
TRAPPED = (SPR_DEC, SPR_TBL_R, SPR_TBU_R, SPR_TBL_W, SPR_TBU_W, SPR_TCR)
_MSR_PR = 0x4000
_MASK64 = (1 << 64) - 1
#: A period selector that picks timebase bit 63 never fires within the machine's life.
_NEVER = 63


def fit_bit(tcr: int) -> int:
    """The timebase bit (0 = least significant) whose 0-to-1 transitions set TSR[FIS]."""
    return 63 - (((tcr >> 24) & 3) | ((tcr >> 13) & 0xF) << 2)


def wdt_bit(tcr: int) -> int:
    """The timebase bit whose 0-to-1 transitions step the watchdog."""
    return 63 - (((tcr >> 30) & 3) | ((tcr >> 17) & 0xF) << 2)


def transitions(bit: int, after: int, upto: int) -> int:
    """How many times timebase bit ``bit`` goes from 0 to 1 in ``(after, upto]``."""
    half, period = 1 << bit, 2 << bit
    return max(0, (upto + half) // period - (after + half) // period)


def next_transition(bit: int, after: int) -> int:
    """The first timebase value above ``after`` at which bit ``bit`` goes from 0 to 1."""
    half, period = 1 << bit, 2 << bit
    return (after + half) // period * period + half


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
    """One CPU's timebase offset and timers (in clock ticks)."""

    __slots__ = ("dec", "dec_at", "fit_seen", "tb_offset", "wdt_seen")

    def __init__(self, now: int = 0) -> None:
        self.tb_offset = 0
        self.dec = 0  # the value written, at tick dec_at; 0 = stopped
        self.dec_at = 0
        #: The clock tick up to which FIT and watchdog transitions have been taken.
        self.fit_seen = self.wdt_seen = now

    def expiry(self) -> int | None:
        return self.dec_at + self.dec if self.dec else None

    def dec_value(self, now: int) -> int:
        return max(0, self.dec - (now - self.dec_at)) if self.dec else 0


class Timers:
    def __init__(self, clock: Clock, cpus: Iterable[VCpu]) -> None:
        self.clock = clock
        self.of = {cpu: CpuTimer(clock.now()) for cpu in cpus}
        #: A trapped write moved an expiry: the scheduler should re-time its deadline.
        self.retime = False
        #: The earliest tick at which :meth:`service` has anything to do, or None if nothing
        #: is pending; -1 when unknown (a write, a reset, a freeze may have moved it).  Most
        #: boundaries are not timer expiries: this spares them a pass over every CPU.
        self._next_any: int | None = -1
        #: The same for expiries with their interrupt enabled (:meth:`next_expiry`).
        self._next_wake: int | None = None
        #: Called (worker thread) when a watchdog's third step resets the machine.
        self.on_watchdog_reset: Callable[[VCpu], None] = lambda cpu: None

    def reset(self, cpu: VCpu) -> None:
        self.of[cpu] = CpuTimer(self.clock.now())
        self._next_any = -1

    def changed(self) -> None:
        """Something outside the trapped writes moved an expiry (a clock freeze)."""
        self._next_any = -1

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
            if user:
                return False
            if sprn == SPR_DEC:
                cpu.set_gpr(rt, t.dec_value(now))
                return True
            if sprn == SPR_TCR:
                cpu.set_gpr(rt, cpu.read_spr(SPR_TCR))
                return True
            return False
        if xo != 467 or user:  # mtspr, supervisor only
            return False
        value = cpu.gpr(rt)
        if sprn in (SPR_TBL_W, SPR_TBU_W):
            self._take_transitions(cpu, t, now)  # those before the jump happened
            tb = (now + t.tb_offset) & _MASK64
            low, high = (value, tb >> 32) if sprn == SPR_TBL_W else (tb & 0xFFFF_FFFF, value)
            t.tb_offset = (high << 32 | low) - now
            self.retime, self._next_any = True, -1
            return True
        if sprn == SPR_DEC:
            t.dec, t.dec_at = value, now
            self.retime, self._next_any = True, -1
            return True
        if sprn == SPR_TCR:
            self._take_transitions(cpu, t, now)  # under the old periods
            old = cpu.read_spr(SPR_TCR)
            if old & TCR_WRC:  # write-once: only a reset clears it
                value = value & ~TCR_WRC | old & TCR_WRC
            cpu.write_spr(SPR_TCR, value)
            self.retime, self._next_any = True, -1
            return True
        return False

    # --- expiries (worker thread, between slices) ------------------------------------------

    def service(self) -> list[VCpu]:
        """Set the status bits of every timer that came due (reloading decrementers with
        TCR[ARE], stepping watchdogs); the CPUs whose TSR changed."""
        if self.clock.frozen:
            return []
        now = self.clock.now()
        pending = self._next_any
        if pending is None or 0 <= now < pending:
            return []
        self._next_any = -1
        changed = []
        for cpu, t in self.of.items():
            before = cpu.read_spr(SPR_TSR)
            due = t.expiry()
            if due is not None and due <= now:
                tcr = cpu.read_spr(SPR_TCR)
                decar = cpu.read_spr(SPR_DECAR)
                if tcr & TCR_ARE and decar:
                    periods = (now - due) // decar + 1
                    t.dec_at, t.dec = due + (periods - 1) * decar, decar
                else:
                    t.dec = 0
                cpu.write_spr(SPR_TSR, cpu.read_spr(SPR_TSR) | TSR_DIS)
            self._take_transitions(cpu, t, now)
            if cpu.read_spr(SPR_TSR) != before:
                changed.append(cpu)
        return changed

    def _take_transitions(self, cpu: VCpu, t: CpuTimer, now: int) -> None:
        """FIT and watchdog transitions up to ``now``, under the CPU's current TCR."""
        tcr = cpu.read_spr(SPR_TCR)
        fit, wdt = fit_bit(tcr), wdt_bit(tcr)
        if fit < _NEVER and transitions(fit, t.fit_seen + t.tb_offset, now + t.tb_offset):
            cpu.write_spr(SPR_TSR, cpu.read_spr(SPR_TSR) | TSR_FIS)
        t.fit_seen = now
        steps = 0
        if wdt < _NEVER:
            steps = transitions(wdt, t.wdt_seen + t.tb_offset, now + t.tb_offset)
        t.wdt_seen = now
        for _ in range(min(steps, 3)):
            tsr = cpu.read_spr(SPR_TSR)
            if not tsr & TSR_ENW:
                cpu.write_spr(SPR_TSR, tsr | TSR_ENW)
            elif not tsr & TSR_WIS:
                cpu.write_spr(SPR_TSR, tsr | TSR_WIS)
            else:
                wrc = (tcr & TCR_WRC) >> TCR_WRC_SHIFT
                if wrc:
                    cpu.write_spr(SPR_TSR, tsr & ~(3 << TSR_WRS_SHIFT) | wrc << TSR_WRS_SHIFT)
                    self.on_watchdog_reset(cpu)
                break

    def next_expiry(self) -> int | None:
        """The earliest clock tick at which a timer whose expiry matters comes due: a
        decrementer with its interrupt enabled, a FIT with its interrupt enabled, a watchdog
        that can interrupt or reset."""
        if self.clock.frozen:
            return None
        if self._next_any == -1:
            self._plan()
        return self._next_wake

    def _plan(self) -> None:
        """Work out :attr:`_next_any` and :attr:`_next_wake` from every CPU's timers."""
        soonest: int | None = None  # any expiry, enabled or not
        wake: int | None = None

        def consider(tick: int | None, enabled: bool) -> None:
            nonlocal soonest, wake
            if tick is None:
                return
            if soonest is None or tick < soonest:
                soonest = tick
            if enabled and (wake is None or tick < wake):
                wake = tick

        for cpu, t in self.of.items():
            tcr = cpu.read_spr(SPR_TCR)
            consider(t.expiry(), bool(tcr & TCR_DIE))
            fit = fit_bit(tcr)
            if fit < _NEVER:
                consider(next_transition(fit, t.fit_seen + t.tb_offset) - t.tb_offset,
                         bool(tcr & TCR_FIE))
            wdt = wdt_bit(tcr)
            if wdt < _NEVER:
                consider(next_transition(wdt, t.wdt_seen + t.tb_offset) - t.tb_offset,
                         bool(tcr & (TCR_WIE | TCR_WRC)))
        self._next_any, self._next_wake = soonest, wake
