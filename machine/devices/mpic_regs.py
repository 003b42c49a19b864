"""The MPIC's register map and bit layouts: the facts of the device, kept apart from its behaviour.

The model is QEMU 7.2's ``ppce500`` interrupt controller: hw/intc/openpic.c configured as a
Freescale MPIC 4.2 ("fsl,mpic", ``OPENPIC_MODEL_FSL_MPIC_42``).  Every number here is a
guest-visible fact of that device, checked against ``qemu-system-ppc -M ppce500`` through qtest
(tests/devices/test_mpic_differential.py).  Offsets are relative to the MPIC block (CCSR +
0x4_0000, ``machine.platform.MPIC_OFFSET``).

The block is not one flat register file: QEMU builds it from six windows, each with its own
decoder, and the gaps between them are holes (reads 0, writes ignored).  How an address is
decoded depends on its window (:data:`WINDOWS`), which is why the quirks of each decoder (the
timer window's wrap-around, the source window's 0x20 stride) are described next to its offsets.
"""

from __future__ import annotations

import enum
from typing import Final

from construct import BitsInteger, BitStruct, Flag, Padding

# --- Windows (QEMU's OPENPIC_*_REG_START/SIZE) ----------------------------------------------


class Window(enum.Enum):
    """The decoders the block is built from."""

    GLOBAL = "glb"
    TIMER = "tmr"
    MSI = "msi"
    SUMMARY = "summary"
    SOURCE = "src"
    CPU = "cpu"


#: (window, start, size).  Anything in the 256 KiB block outside these is a hole.
WINDOWS: Final = (
    (Window.GLOBAL, 0x0_0000, 0x10F0),
    (Window.TIMER, 0x0_10F0, 0x220),
    (Window.MSI, 0x0_1600, 0x200),
    (Window.SUMMARY, 0x0_3800, 0x800),
    (Window.SOURCE, 0x1_0000, 0x2000),
    # 0x100 for the last CPU: QEMU sizes it for 32 CPUs whatever -smp says.
    (Window.CPU, 0x2_0000, 0x100 + 31 * 0x1000),
)

# --- Global window ---------------------------------------------------------------------------

BRR1: Final = 0x0000  #: block revision register 1 (read-only)
#: The current-CPU window: the per-CPU registers of whichever CPU makes the access.
CURRENT_CPU_FIRST: Final = 0x0040
CURRENT_CPU_LAST: Final = 0x00B0
FRR: Final = 0x1000  #: feature reporting (read-only)
GCR: Final = 0x1020  #: global configuration
VIR: Final = 0x1080  #: vendor identification (read-only)
PIR: Final = 0x1090  #: processor initialization (reads 0)
IPI_IVPR0: Final = 0x10A0  #: vector/priority of IPI 0; IPI n at + 0x10 * n
SPVR: Final = 0x10E0  #: spurious vector

# --- Timer window: TFRR, then four timers of 0x40 bytes ----------------------------------------

TFRR: Final = 0x10F0  #: timer frequency reporting (read/write, no effect)
TIMER0: Final = 0x1100  #: timer n's registers start at TIMER0 + TIMER_STRIDE * n
TIMER_STRIDE: Final = 0x40
GTCCR: Final = 0x00  #: current count (read-only)
GTBCR: Final = 0x10  #: base count and count inhibit
GTVPR: Final = 0x20  #: vector/priority
GTDR: Final = 0x30  #: destination

# --- MSI window (also reachable as CCSR + 0x4_1600, ``machine.platform.MSI_OFFSET``) -------------

MSI_WINDOW: Final = 0x1600  #: where the MSI window starts in the block
MSIR0: Final = 0x000  #: shared MSI register n at + 0x10 * n (read clears)
MSISR: Final = 0x120  #: which MSIRs are non-zero
MSIIR: Final = 0x140  #: write to signal an MSI

# --- Source window: one 0x20-byte block per source -------------------------------------------

SOURCE_STRIDE: Final = 0x20
IVPR: Final = 0x00  #: vector/priority
IDR: Final = 0x10  #: destination (one bit per CPU)
ILR: Final = 0x18  #: level: which core input the source drives (:class:`Inttgt`)

# --- CPU window: one 0x1000-byte block per CPU; the same layout as the current-CPU window -----

CPU_STRIDE: Final = 0x1000
IPIDR0: Final = 0x40  #: IPI n dispatch at + 0x10 * n (write-only)
CTPR: Final = 0x80  #: current task priority
WHOAMI: Final = 0x90  #: the CPU's own index
IACK: Final = 0xA0  #: interrupt acknowledge (read: the vector, and the source enters service)
EOI: Final = 0xB0  #: end of interrupt (write)

# --- Model constants (QEMU's FSL MPIC 4.2 configuration) ------------------------------------

BRR1_VALUE: Final = 0x0040_0402  #: block id 0x0040, major 4, minor 2
VID: Final = 2  #: FRR[VID]: OpenPIC spec revision 1.2
VIR_VALUE: Final = 0
#: Sources FRR reports (FRR[NIRQ] = this - 1).  The decoders accept all 256 source blocks.
FRR_NIRQ: Final = 196
MAX_CPUS: Final = 32
N_SOURCES: Final = 256  #: source blocks in the source window
N_EXTERNAL: Final = 12  #: external pins: 0..11, sense and polarity programmable
FIRST_INTERNAL: Final = 16  #: 16..255: internal sources, always level (sense reads 0)
N_IPIS: Final = 4
N_TIMERS: Final = 4  #: one timer group, as QEMU (real MPICs have a second at + 0x1000)
N_MSI_REGS: Final = 8
IRQ_IPI0: Final = N_SOURCES  #: IPIs and timers are sources past the source window
IRQ_TIMER0: Final = IRQ_IPI0 + N_IPIS
N_IRQS: Final = IRQ_TIMER0 + N_TIMERS  #: every source the model keeps
IRQ_MSI0: Final = 224  #: MSIR n drives source 224 + n (the device tree's msi interrupts)
#: QEMU runs the global timers at a fixed 25 MHz whatever TFRR says.
TIMER_NS_PER_TICK: Final = 40

# --- Bit fields -------------------------------------------------------------------------------

IVPR_MASK: Final = 0x8000_0000  #: MSK: the source is masked
IVPR_ACTIVITY: Final = 0x4000_0000  #: A: the source is being delivered (read-only)
IVPR_MODE: Final = 0x2000_0000  #: distributed delivery (not writable on this model)
IVPR_POLARITY: Final = 0x0080_0000
IVPR_SENSE: Final = 0x0040_0000  #: 1 = level
IVPR_PRIORITY: Final = 0x000F_0000
IVPR_PRIORITY_SHIFT: Final = 16
VECTOR_MASK: Final = 0xFFFF
#: The IVPR bits a write can change (the rest read 0, or are the activity bit).
IVPR_WRITABLE: Final = IVPR_MASK | IVPR_PRIORITY | IVPR_SENSE | IVPR_POLARITY | VECTOR_MASK

GCR_RESET: Final = 0x8000_0000  #: RST: reset the controller (reads back 0)
GCR_MODE: Final = 0x6000_0000  #: the mode field this model keeps
GCR_MODE_MIXED: Final = 0x2000_0000
GCR_MODE_PROXY: Final = 0x6000_0000  #: core-int ("external proxy"): the core reads IACK into EPR

TBCR_CI: Final = 0x8000_0000  #: count inhibit
TCCR_TOG: Final = 0x8000_0000  #: toggles each time the count reaches zero
TCCR_COUNT: Final = 0x7FFF_FFFF

CTPR_MASK: Final = 0xF


class Inttgt(enum.IntEnum):
    """ILR[INTTGT]: the core input a source drives.  Any other value written selects INT."""

    INT = 0
    CINT = 1  #: critical input
    MCP = 2  #: machine check (not wired to the cores on ppce500, as in QEMU)


# --- Layouts, for decoding and documentation (first field = most significant bit) ------------

#: IVPR, and the IPI and timer vector/priority registers.
Ivpr = BitStruct(
    "mask" / Flag,
    "activity" / Flag,
    "mode" / Flag,
    Padding(5),
    "polarity" / Flag,
    "sense" / Flag,
    Padding(2),
    "priority" / BitsInteger(4),
    "vector" / BitsInteger(16),
)

#: FRR: sources - 1, CPUs - 1, version.
Frr = BitStruct(
    Padding(5),
    "nirq" / BitsInteger(11),
    Padding(3),
    "ncpu" / BitsInteger(5),
    "vid" / BitsInteger(8),
)

#: MSIIR: which MSIR (SRS) and which bit of it (IBS) a write sets.
Msiir = BitStruct(
    "srs" / BitsInteger(3),
    "ibs" / BitsInteger(5),
    Padding(24),
)
