"""GUTS: the global utilities block of an MPC8544 ("fsl,mpc8544-guts"), sans I/O.

QEMU's ppce500 maps this block at CCSR + 0xE_0000 (hw/ppc/mpc8544_guts.c).  QEMU models almost
nothing of it: PVR and SVR read the current CPU's registers, a write with bit 0x2 to RSTCR asks
for a system reset, and every other register reads 0 and ignores writes.  Accesses must be
32-bit and aligned (its ``valid`` sizes are 4..4); anything else reads 0 and is ignored.

What Linux and U-Boot need on top, and what this model adds on purpose (docs/PLATFORM.md says
each):

* **DEVDISR is a real register** that reads back what was written.  Its TB0 and TB1 bits
  (``CCSR_GUTS_DEVDISR_TB0`` = 0x4000, ``..._TB1`` = 0x1000 in Linux's include/linux/fsl/guts.h)
  stop the timebase of core 0 and core 1.  Linux's ``mpc85xx_freeze_time_base``
  (arch/powerpc/platforms/85xx/mpc85xx_pm_ops.c) sets both, lets the secondary copy the
  boot CPU's timebase, then clears both: that two-flag hand-off is what makes SMP bring-up fast
  (without it Linux runs the ~10^4 hand-off software contest of kernel/smp-tbsync.c).  This
  machine has one clock for all CPUs, so either bit freezes *every* CPU's timebase until both
  are clear; the board is told through :meth:`GutsOutputs.freeze_timebase` on each change.
* **PORPLLSR describes the clocks of PLATFORM.md** instead of reading 0 (U-Boot's
  ``get_sys_info`` multiplies by it, and 0 gives a 0 Hz bus).  See :data:`PORPLLSR_VALUE`.
* **PVR and SVR are fixed at construction** (the board passes its CPUs' PVR): QEMU reads them
  from ``current_cpu``, which is why QEMU 7.2 crashes when qtest reads them (no CPU is current).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from machine.platform import BUS_HZ, CLOCK_HZ, GUTS_SIZE

# --- Register offsets inside the block (QEMU's MPC8544_GUTS_ADDR_*) -------------------------

PORPLLSR: Final = 0x00
PORBMSR: Final = 0x04
PORDEVSR: Final = 0x0C
DEVDISR: Final = 0x70
PVR: Final = 0xA0
SVR: Final = 0xA4
RSTCR: Final = 0xB0

#: RSTCR bit that requests a hard reset (HRESET_REQ; QEMU's MPC8544_GUTS_RSTCR_RESET).
RSTCR_HRESET_REQ: Final = 0x2
#: DEVDISR bits that stop the timebase of core 0 and core 1 (Linux's CCSR_GUTS_DEVDISR_TB0/1).
DEVDISR_TB0: Final = 0x0000_4000
DEVDISR_TB1: Final = 0x0000_1000
DEVDISR_TB_MASK: Final = DEVDISR_TB0 | DEVDISR_TB1

#: SVR as QEMU reports it for its e500v2 CPU models (POWERPC_SVR_E500 in target/ppc).
SVR_E500: Final = 0x4000_0000

# --- PORPLLSR: the clock tree the value describes ------------------------------------------

#: The SYSCLK input this value assumes (a board fact U-Boot takes from CONFIG_SYS_CLK_FREQ; the
#: P2020 boards use 100 MHz).  A local constant: PLATFORM.md names only the 400 MHz clocks.
SYSCLK_HZ: Final = 100_000_000
#: PORPLLSR[26:30] (mask 0x3E): platform (CCB) clock : SYSCLK.  400 MHz / 100 MHz = 4.
_PLAT_RATIO: Final = BUS_HZ // SYSCLK_HZ
#: PORPLLSR[E500_RATIO] (6 bits at 16 for core 0, at 24 for core 1): core : CCB in halves.
#: 400 MHz cores on a 400 MHz platform = 1:1 = 2.
_E500_RATIO: Final = 2 * CLOCK_HZ // BUS_HZ
#: PORPLLSR[DDR_RATIO] (bits 9..13): 7 means DDR runs synchronous to the platform clock, so
#: U-Boot with CONFIG_DDR_CLK_FREQ keeps the DDR clock = the platform clock.
_DDR_SYNC: Final = 0x7
#: 0x0202_0E08: U-Boot's get_sys_info computes bus = 4 x 100 MHz = 400 MHz and each core
#: = 2 x 400 / 2 = 400 MHz, the clocks of PLATFORM.md and the device tree.
PORPLLSR_VALUE: Final = (
    (_E500_RATIO << 24) | (_E500_RATIO << 16) | (_DDR_SYNC << 9) | (_PLAT_RATIO << 1)
)
assert _PLAT_RATIO * SYSCLK_HZ == BUS_HZ and _E500_RATIO * BUS_HZ == 2 * CLOCK_HZ


class GutsOutputs(Protocol):
    """What GUTS drives.  Both are called on the accessing CPU's thread, inside the store."""

    def request_reset(self) -> None:
        """RSTCR[HRESET_REQ] was written: reset the machine (or stop it, with -no-reboot)."""

    def freeze_timebase(self, frozen: bool) -> None:
        """DEVDISR's TB bits changed from all clear to some set (True) or back (False)."""


@dataclass(frozen=True, slots=True)
class GutsState:
    """The guest-visible state that changes (for save/restore and inspection)."""

    devdisr: int


class Guts:
    """The GUTS register block: ``read``/``write`` take offsets from the block's base."""

    def __init__(self, outputs: GutsOutputs, *, pvr: int, svr: int = SVR_E500) -> None:
        """``pvr``: the CPUs' processor version register (every CPU of the machine has the
        same).  ``svr``: the system version register, QEMU's value unless told otherwise."""
        self._outputs = outputs
        self._pvr = pvr & 0xFFFF_FFFF
        self._svr = svr & 0xFFFF_FFFF
        self._devdisr = 0

    @property
    def timebase_frozen(self) -> bool:
        return bool(self._devdisr & DEVDISR_TB_MASK)

    def reset(self) -> None:
        """Power-on values.  If the timebase was frozen it is released (the board is told)."""
        self._set_devdisr(0)

    def snapshot(self) -> GutsState:
        return GutsState(devdisr=self._devdisr)

    def restore(self, state: GutsState) -> None:
        self._set_devdisr(state.devdisr)

    def read(self, offset: int, size: int) -> int:
        """A guest load.  Only aligned 32-bit accesses exist (QEMU: ``valid`` 4..4); the rest,
        like the unmodelled registers, read 0."""
        if not _valid(offset, size):
            return 0
        if offset == PORPLLSR:
            return PORPLLSR_VALUE
        if offset == DEVDISR:
            return self._devdisr
        if offset == PVR:
            return self._pvr
        if offset == SVR:
            return self._svr
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """A guest store.  RSTCR and DEVDISR act; every other store is ignored, as in QEMU."""
        if not _valid(offset, size):
            return
        value &= 0xFFFF_FFFF
        if offset == RSTCR:
            if value & RSTCR_HRESET_REQ:
                self._outputs.request_reset()
        elif offset == DEVDISR:
            self._set_devdisr(value)

    def _set_devdisr(self, value: int) -> None:
        was = self.timebase_frozen
        self._devdisr = value
        if self.timebase_frozen != was:
            self._outputs.freeze_timebase(self.timebase_frozen)


def _valid(offset: int, size: int) -> bool:
    return size == 4 and offset % 4 == 0 and 0 <= offset < GUTS_SIZE
