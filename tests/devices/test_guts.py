"""GUTS register by register: QEMU's values where QEMU has them, and what this machine adds
(PORPLLSR's clocks, DEVDISR read/write with the timebase freeze, RSTCR's reset request)."""

from __future__ import annotations

import pytest

from machine.devices.guts import (
    DEVDISR,
    DEVDISR_TB0,
    DEVDISR_TB1,
    PORBMSR,
    PORDEVSR,
    PORPLLSR,
    PORPLLSR_VALUE,
    PVR,
    RSTCR,
    SVR,
    SVR_E500,
    SYSCLK_HZ,
    Guts,
)
from machine.platform import BUS_HZ, CLOCK_HZ, GUTS_SIZE

E500V2_V22_PVR = 0x8021_0022


class Recorder:
    """The board side: records every call GUTS makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool | None]] = []

    def request_reset(self) -> None:
        self.calls.append(("reset", None))

    def freeze_timebase(self, frozen: bool) -> None:
        self.calls.append(("freeze", frozen))


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def guts(rec: Recorder) -> Guts:
    return Guts(rec, pvr=E500V2_V22_PVR)


def test_reset_values(guts: Guts) -> None:
    assert guts.read(PVR, 4) == E500V2_V22_PVR
    assert guts.read(SVR, 4) == SVR_E500
    assert guts.read(PORPLLSR, 4) == 0x0202_0E08 == PORPLLSR_VALUE
    assert guts.read(DEVDISR, 4) == 0
    for offset in (PORBMSR, PORDEVSR, RSTCR, 0x80, 0xC0, 0xB20, GUTS_SIZE - 4):
        assert guts.read(offset, 4) == 0, hex(offset)


def test_porpllsr_decodes_to_the_platform_clocks() -> None:
    """U-Boot's get_sys_info: bus = PLAT_RATIO x SYSCLK, core i = E500_RATIO_i x bus / 2."""
    bus = ((PORPLLSR_VALUE & 0x3E) >> 1) * SYSCLK_HZ
    cores = [((PORPLLSR_VALUE >> (16 + 8 * i)) & 0x3F) * bus // 2 for i in (0, 1)]
    assert bus == BUS_HZ == 400_000_000
    assert cores == [CLOCK_HZ, CLOCK_HZ]
    assert (PORPLLSR_VALUE >> 9) & 0x1F == 7  # DDR synchronous to the platform


def test_rstcr_requests_reset(guts: Guts, rec: Recorder) -> None:
    guts.write(RSTCR, 4, 0x1)
    guts.write(RSTCR, 4, 0xFFFF_FFFD)
    assert rec.calls == []
    guts.write(RSTCR, 4, 0x2)
    assert rec.calls == [("reset", None)]
    assert guts.read(RSTCR, 4) == 0  # self-clearing, as QEMU reads it


def test_devdisr_tb_bits_freeze_and_release(guts: Guts, rec: Recorder) -> None:
    """Linux's mpc85xx_freeze_time_base: set TB0|TB1, read back, clear both."""
    guts.write(DEVDISR, 4, DEVDISR_TB0 | DEVDISR_TB1)
    assert guts.read(DEVDISR, 4) == 0x5000
    assert rec.calls == [("freeze", True)] and guts.timebase_frozen
    guts.write(DEVDISR, 4, DEVDISR_TB1)  # still frozen: no new call
    assert rec.calls == [("freeze", True)]
    guts.write(DEVDISR, 4, 0x8000_0000)  # another device bit, both TB bits clear
    assert rec.calls == [("freeze", True), ("freeze", False)]
    assert guts.read(DEVDISR, 4) == 0x8000_0000 and not guts.timebase_frozen


def test_either_tb_bit_freezes_every_cpu(guts: Guts, rec: Recorder) -> None:
    guts.write(DEVDISR, 4, DEVDISR_TB0)
    guts.write(DEVDISR, 4, 0)
    guts.write(DEVDISR, 4, DEVDISR_TB1)
    assert rec.calls == [("freeze", True), ("freeze", False), ("freeze", True)]


def test_reset_releases_a_frozen_timebase(guts: Guts, rec: Recorder) -> None:
    guts.write(DEVDISR, 4, 0xFFFF_FFFF)
    guts.reset()
    assert rec.calls == [("freeze", True), ("freeze", False)]
    assert guts.read(DEVDISR, 4) == 0
    guts.reset()
    assert len(rec.calls) == 2


@pytest.mark.parametrize(("offset", "size"), [(DEVDISR, 1), (DEVDISR, 2), (DEVDISR + 2, 2),
                                              (DEVDISR + 1, 4), (DEVDISR, 8), (GUTS_SIZE, 4),
                                              (-4, 4)])
def test_only_aligned_words_exist(guts: Guts, rec: Recorder, offset: int, size: int) -> None:
    """QEMU's ops accept 4-byte accesses only: the rest reads 0 and does nothing."""
    guts.write(DEVDISR, 4, 0x1234_5678)
    rec.calls.clear()
    guts.write(offset, size, 0xFFFF_FFFF)
    guts.write(RSTCR + (offset - DEVDISR), size, 0x2)
    assert guts.read(offset, size) == 0
    assert guts.read(DEVDISR, 4) == 0x1234_5678 and rec.calls == []


def test_pvr_svr_are_read_only(guts: Guts) -> None:
    guts.write(PVR, 4, 0)
    guts.write(SVR, 4, 0)
    guts.write(PORPLLSR, 4, 0)
    assert (guts.read(PVR, 4), guts.read(SVR, 4)) == (E500V2_V22_PVR, SVR_E500)
    assert guts.read(PORPLLSR, 4) == PORPLLSR_VALUE


def test_snapshot_restore(rec: Recorder) -> None:
    a = Guts(rec, pvr=E500V2_V22_PVR)
    a.write(DEVDISR, 4, DEVDISR_TB0 | 1)
    b = Guts(rec, pvr=E500V2_V22_PVR)
    b.restore(a.snapshot())
    assert b.read(DEVDISR, 4) == DEVDISR_TB0 | 1 and b.timebase_frozen
    assert rec.calls == [("freeze", True), ("freeze", True)]  # b tells its board too
