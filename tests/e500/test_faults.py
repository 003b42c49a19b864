"""A guest that does something impossible stops the machine with a typed, readable fault."""

from __future__ import annotations

import pytest

from machine.events import FaultKind, GuestFault

from .guests import boot

pytestmark = pytest.mark.cross


@pytest.mark.parametrize(
    ("code", "kind", "address"),
    [
        ("li32 4, 0xD0000000\n    lwz 5, 0(4)", FaultKind.READ_UNMAPPED, 0xD000_0000),
        ("li32 4, 0xD0000010\n    stw 5, 0(4)", FaultKind.WRITE_UNMAPPED, 0xD000_0010),
        ("li32 4, 0xD0000000\n    mtctr 4\n    bctr", FaultKind.FETCH_UNMAPPED, 0xD000_0000),
        (".long 0", FaultKind.ILLEGAL_INSTRUCTION, None),
        ("sc", FaultKind.SYSTEM_CALL, None),
        ("tw 31, 0, 0", FaultKind.PROGRAM, None),
    ],
    ids=["read", "write", "fetch", "illegal", "sc-lev0", "trap"],
)
async def test_guest_fault_stops_the_machine_with_the_cpu_state(
    code: str, kind: FaultKind, address: int | None
) -> None:
    b = await boot(f"""
_start:
    li 20, 0x2020
    nop
fault:
    {code}
    li 3, 0
    hcall HC_FW_POWEROFF
""")
    faults = b.of(GuestFault)
    assert len(faults) == 1
    f = faults[0]
    assert f.kind is kind
    assert f.cpu == 0
    if address is not None:
        assert f.address == address
    if kind is not FaultKind.FETCH_UNMAPPED:
        assert 0xFFF0_0000 <= f.pc < 0xFFF0_0100
    assert f.state.gpr[20] == 0x2020
    assert b.result.code != 0
    assert b.result.fault is f
    assert kind.value in b.result.reason and "r20=0x00002020" in b.result.reason


async def test_stores_to_the_boot_rom_are_ignored() -> None:
    b = await boot("""
_start:
    li32 4, 0xfff00000
    lwz 5, 0(4)
    li 6, 0
    stw 6, 0(4)
    lwz 7, 0(4)
    subf 3, 5, 7            /* 0 when the ROM word did not change */
    hcall HC_FW_POWEROFF
""")
    assert b.result.code == 0


async def test_an_infinite_loop_is_stopped_by_the_timeout_with_the_pc() -> None:
    b = await boot("""
_start:
    nop
forever:
    b forever
""", timeout=0.5)
    assert b.result.code == 124
    assert "timeout after 0.5 s" in b.result.reason
    assert "cpu 0 at pc 0xfff00004" in b.result.reason
