"""What gdb is told about the e500 core: the target description and the register numbering.

gdb's PowerPC support (``rs6000-tdep.c``) accepts any description that has the feature
``org.gnu.gdb.power.core`` with r0..r31, pc, msr, cr, lr, ctr and xer; the FPU
(``org.gnu.gdb.power.fpu``) and SPE (``org.gnu.gdb.power.spe``) features are optional.  The
e500v2 has no classic FPU and unicorn exposes no SPE upper halves, so we describe the core only
and ``info registers`` shows exactly those 38 registers, 32 bits each.  The architecture is
given as ``powerpc:e500`` so that ``target remote`` picks the right disassembler even with no
ELF file loaded; ``set architecture powerpc:e500`` or ``powerpc:common`` both accept it.

The ``regnum`` attributes make the remote numbering contiguous (0..37): that is the order of
the ``g`` packet and the numbers in ``p``/``P`` packets.

A description cannot state the byte order.  With the guest's ELF loaded (``file``), gdb takes
big-endian from it; with no file at all, gdb-multiarch assumes the host's order and shows
byte-swapped values until ``set endian big``, exactly as with QEMU's stub.
"""

from __future__ import annotations

import enum
from typing import Final

#: Registers after r0..r31, in remote-protocol order.
SPECIAL_REGS: Final = ("pc", "msr", "cr", "lr", "ctr", "xer")
REG_NAMES: Final = tuple(f"r{i}" for i in range(32)) + SPECIAL_REGS
N_REGS: Final = len(REG_NAMES)
REG_BYTES: Final = 4


class Reg(enum.IntEnum):
    """Remote register numbers of the special registers."""

    PC = 32
    MSR = 33
    CR = 34
    LR = 35
    CTR = 36
    XER = 37


_TYPES: Final = {"pc": "code_ptr", "lr": "code_ptr"}


def _reg_xml(number: int, name: str) -> str:
    kind = _TYPES.get(name, "uint32")
    return f'    <reg name="{name}" bitsize="32" type="{kind}" regnum="{number}"/>\n'


TARGET_XML: Final = (
    '<?xml version="1.0"?>\n'
    '<!DOCTYPE target SYSTEM "gdb-target.dtd">\n'
    "<target>\n"
    "  <architecture>powerpc:e500</architecture>\n"
    '  <feature name="org.gnu.gdb.power.core">\n'
    + "".join(_reg_xml(n, name) for n, name in enumerate(REG_NAMES))
    + "  </feature>\n"
    "</target>\n"
).encode("ascii")

#: The annexes ``qXfer:features:read`` serves.
FEATURE_FILES: Final = {"target.xml": TARGET_XML}
