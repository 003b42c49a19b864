"""Writes ``abi.h``: every number the guest stubs share with the machine, from the Python side.

The guest stubs and the machine must agree on addresses, hypercall tokens, the spin-table layout
and the fw_cfg keys and layouts.  Those live once, in ``machine/platform.py`` and
``fwcfg/_layouts.py`` (with the MMIO register offsets in ``fwcfg/_frontends.py``); the Makefile
runs this script so that C and assembly read the same values instead of copies.  The output is
a pure function of those modules (no dates, no paths), so the images stay reproducible, and a
changed constant shows up as a changed image in ``tests/test_guest_stubs.py``.

Usage: ``python3 gen_abi.py OUTPUT`` (run with the repository root on ``sys.path``).
Only ``#define`` lines are emitted, with plain hex numbers, so the header works in ``.S`` files
and in preprocessed linker scripts as well as in C.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from construct import Struct

from fwcfg import _layouts as L
from fwcfg._frontends import MmioWide
from machine import platform as P
from machine.boot.guest import FirmwareExit


def field_offsets(layout: Struct) -> dict[str, int]:
    """Byte offset of every named field of a fixed-size construct ``Struct``."""
    offsets: dict[str, int] = {}
    pos = 0
    for sub in layout.subcons:
        if sub.name:
            offsets[sub.name] = pos
        pos += sub.sizeof()
    return offsets


def number(value: int) -> str:
    return f"0x{value:x}" if value > 9 else str(value)


def string(value: str) -> str:
    assert value.isascii() and value.isprintable(), value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def rows() -> Iterator[tuple[str, str] | str]:
    """(name, C token) pairs, and section titles as plain strings."""
    yield "machine/platform.py: processor and memory"
    for name in (
        "ROM_BASE", "ROM_SIZE", "FWCFG_BASE", "MAX_CPUS", "RAM_BASE",
        "MIN_RAM_SIZE", "MAX_RAM_SIZE", "RAM_ALIGN", "PAGE_SIZE",
    ):
        yield f"PLAT_{name}", number(getattr(P, name))
    for name in ("SPR_PIR", "SPR_TBL_READ", "SPR_TBU_READ"):
        yield name, number(getattr(P, name))

    yield "machine/platform.py: hypercalls"
    yield "HCALL_INSN", number(P.HCALL_INSN)
    for call in P.Hcall:
        yield f"HC_{call.name}", number(call.value)
    for status in P.EvStatus:
        yield f"EV_{status.name}", number(status.value)
    yield "BYTE_CHANNEL_MAX", number(P.BYTE_CHANNEL_MAX)
    yield "CONSOLE_HANDLE", number(P.CONSOLE_HANDLE)

    yield "machine/platform.py: boot flow and spin table"
    yield "EPAPR_MAGIC", number(P.EPAPR_MAGIC)
    yield "DIRECT_BOOT_STACK", number(P.DIRECT_BOOT_STACK)
    yield "SECONDARY_IMA_SIZE", number(P.SECONDARY_IMA_SIZE)
    yield "SPIN_ENTRY_SIZE", number(P.SPIN_ENTRY_SIZE)
    spin = field_offsets(P.SpinEntry)
    # 64-bit fields are big-endian: the high word first, the low word 4 bytes later.
    yield "SPIN_OFF_ENTRY_ADDR_HI", number(spin["entry_addr"])
    yield "SPIN_OFF_ENTRY_ADDR_LO", number(spin["entry_addr"] + P.SPIN_ENTRY_ADDR_LO)
    yield "SPIN_OFF_R3_HI", number(spin["r3"])
    yield "SPIN_OFF_R3_LO", number(spin["r3"] + 4)
    yield "SPIN_OFF_RESERVED", number(spin["reserved"])
    yield "SPIN_OFF_PIR", number(spin["pir"])
    yield "SPIN_HOLD", number(P.SPIN_HOLD)
    yield "SPIN_TABLE_PAGE_SIZE", number(P.SPIN_TABLE_PAGE_SIZE)
    # docs/DESIGN.md "Firmware scratch memory": the spin-table page past the last entry.
    yield "FW_SCRATCH_OFFSET", number(P.MAX_CPUS * P.SPIN_ENTRY_SIZE)

    yield "machine/platform.py: image placement and device tree"
    yield "DTB_GAP", number(P.DTB_GAP)
    yield "DTB_ALIGN", number(P.DTB_ALIGN)
    yield "DTB_MAX_SIZE", number(P.DTB_MAX_SIZE)
    yield "FDT_FILE_NAME", string(P.FDT_FILE_NAME)
    yield "DT_BYTE_CHANNEL_COMPATIBLE", string(P.DT_BYTE_CHANNEL_COMPATIBLE)

    yield "fwcfg/_frontends.py: wide MMIO register offsets"
    yield "FW_CFG_REG_DATA", number(MmioWide.DATA)
    yield "FW_CFG_REG_SELECTOR", number(MmioWide.SELECTOR)
    yield "FW_CFG_REG_DMA_HI", number(MmioWide.DMA)
    yield "FW_CFG_REG_DMA_LO", number(MmioWide.DMA + 4)

    yield "fwcfg/_layouts.py: keys, features, DMA and file directory"
    yield "FW_CFG_SIGNATURE", number(int.from_bytes(L.SIGNATURE, "big"))
    for key in L.Key:
        yield f"FW_CFG_KEY_{key.name}", number(key.value)
    for feature in L.Feature:
        assert feature.name is not None
        yield f"FW_CFG_FEATURE_{feature.name}", number(feature.value)
    for bit in L.DmaControl:
        assert bit.name is not None
        yield f"FW_CFG_DMA_CTL_{bit.name}", number(bit.value)
    yield "FW_CFG_DMA_SELECT_SHIFT", number(L.DMA_SELECT_SHIFT)
    yield "FW_CFG_DMA_ACCESS_SIZE", number(L.DMA_ACCESS_SIZE)
    for name, off in field_offsets(L.DmaAccess).items():
        yield f"FW_CFG_DMA_OFF_{name.upper()}", number(off)
    yield "FW_CFG_FILE_DIR_HEADER_SIZE", number(L.FILE_DIR_HEADER_SIZE)
    yield "FW_CFG_MAX_FILE_SLOTS", number(L.MAX_FILE_SLOTS)
    yield "FW_CFG_FILE_ENTRY_SIZE", number(L.FILE_ENTRY_SIZE)
    yield "FW_CFG_FILE_NAME_FIELD", number(L.FILE_NAME_FIELD)
    for name, off in field_offsets(L.FileEntry).items():
        yield f"FW_CFG_FILE_OFF_{name.upper()}", number(off)

    yield "machine/boot/guest/__init__.py: why the firmware powers off (FW_POWEROFF codes)"
    for code in FirmwareExit:
        yield f"FW_EXIT_{code.name}", number(code.value)
        yield f"FW_MSG_{code.name}", string(code.message)


def render() -> str:
    out = [
        "/* Generated by guest-stubs/gen_abi.py from machine/platform.py and fwcfg/. */",
        "/* Do not edit: change the Python constants and rebuild. */",
        "#ifndef GUEST_ABI_H",
        "#define GUEST_ABI_H",
    ]
    seen: set[str] = set()
    for row in rows():
        if isinstance(row, str):
            out += ["", f"/* {row} */"]
            continue
        name, value = row
        assert name not in seen, f"duplicate name {name}"
        seen.add(name)
        out.append(f"#define {name} {value}")
    out += ["", "#endif", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gen_abi.py OUTPUT", file=sys.stderr)
        return 2
    target = Path(argv[1])
    text = render()
    # Leave an unchanged header alone so that make does not rebuild everything.
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
