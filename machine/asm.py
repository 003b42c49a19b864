"""Assemble tiny PowerPC guests with Debian's GNU cross tools, for tests and experiments.

A firmware developer's loop is "edit a few instructions, boot, look"; this makes the first step
one call.  ``assemble(source)`` links the code as a boot-ROM image (entry ``_start`` at the
start of the ROM) unless another ``base`` is given, and returns the ELF's path.

The hypercall tokens and other constants are available to the source as assembler symbols
(``HC_EV_BYTE_CHANNEL_SEND``, ``HC_FW_POWEROFF``, ...), generated from
:mod:`machine.platform` so no test spells a number twice.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from fwcfg import ConfigError
from machine.platform import FWCFG_BASE, ROM_BASE, Hcall

AS = "powerpc-linux-gnu-as"
LD = "powerpc-linux-gnu-ld"

_PRELUDE = "\n".join(
    [f"    .set HC_{h.name}, {int(h):#x}" for h in Hcall]
    + [f"    .set FWCFG_BASE, {FWCFG_BASE:#x}"]
    + [
        # hcall TOKEN: load the token into r11 and execute `sc 1`.
        "    .macro hcall token",
        "    lis 11, (\\token)@h",
        "    ori 11, 11, (\\token)@l",
        "    sc 1",
        "    .endm",
        # li32 REG, VALUE: load a 32-bit constant.
        "    .macro li32 reg, value",
        "    lis \\reg, (\\value)@h",
        "    ori \\reg, \\reg, (\\value)@l",
        "    .endm",
    ]
)


def have_cross_tools() -> bool:
    return shutil.which(AS) is not None and shutil.which(LD) is not None


def assemble(source: str, *, base: int = ROM_BASE, workdir: Path | None = None) -> Path:
    """Assemble and link ``source`` (GNU as syntax, e500) at ``base``; return the ELF path.

    The source must define ``_start``.  Results are cached by content in ``workdir`` (default:
    a per-user temporary directory), so repeated test runs do not re-run the tools.
    """
    if not have_cross_tools():
        raise ConfigError(
            f"{AS} is not installed (Debian: apt-get install binutils-powerpc-linux-gnu)"
        )
    text = f"{_PRELUDE}\n    .text\n    .globl _start\n{source}\n"
    digest = hashlib.sha256(f"{base:#x}\n{text}".encode()).hexdigest()[:16]
    out_dir = workdir or Path(tempfile.gettempdir()) / "fwcfg-e500-asm"
    out_dir.mkdir(parents=True, exist_ok=True)
    elf = out_dir / f"{digest}.elf"
    if elf.exists():
        return elf
    src = out_dir / f"{digest}.S"
    obj = out_dir / f"{digest}.o"
    src.write_text(text)
    for cmd in (
        [AS, "-a32", "-mbig", "-me500", "-o", str(obj), str(src)],
        [LD, "-N", "--no-warn-rwx-segments", "-Ttext", hex(base), "-e", "_start",
         "-o", str(elf) + ".tmp", str(obj)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise ConfigError(f"{cmd[0]} failed:\n{proc.stderr.strip()}")
    Path(str(elf) + ".tmp").rename(elf)
    return elf
