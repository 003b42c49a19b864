"""The guest-visible contract of the fwcfg-e500 machine, as constants.

This module is the one home of every number in ``PLATFORM.md`` except the fw_cfg selector keys
and binary layouts, which live in :mod:`fwcfg._layouts` because the device model is usable on its
own.  Code elsewhere imports names from here; it never spells an address or a token itself.  The
section comments name the PLATFORM.md section each group comes from.
"""

from __future__ import annotations

import enum
from typing import Final

from construct import Bytes, Int32ub, Int64ub, Struct

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB

# --- Processor and memory ------------------------------------------------------------------

MIN_CPUS: Final = 1
MAX_CPUS: Final = 32
RAM_BASE: Final = 0
DEFAULT_RAM_SIZE: Final = 256 * MiB
MAX_RAM_SIZE: Final = 3 * GiB
#: RAM sizes are whole pages so that unicorn can map them and the spin-table page is aligned.
RAM_ALIGN: Final = 4 * KiB
#: The smallest RAM that can hold a kernel, the device-tree window (which starts at 24 MiB or
#: later and keeps 8 MiB) and the spin-table page.
MIN_RAM_SIZE: Final = 64 * MiB

ROM_BASE: Final = 0xFFF0_0000
ROM_SIZE: Final = 1 * MiB

FWCFG_BASE: Final = 0xF000_0000
FWCFG_SIZE: Final = 0x18

PAGE_SIZE: Final = 4 * KiB

# --- CCSR: the platform devices, at QEMU ppce500's offsets (PLATFORM.md "Platform devices") --

#: QEMU's ppce500 puts CCSR at 0xF_E000_0000, which this engine cannot reach (its page mask is
#: 32-bit); the block sits below 4 GiB instead, as real MPC85xx boards' firmware places it.
CCSR_BASE: Final = 0xE000_0000
CCSR_SIZE: Final = 1 * MiB
#: Device offsets inside CCSR (QEMU's MPC8544_* constants, hw/ppc/e500.c).
UART0_OFFSET: Final = 0x4500
UART_SIZE: Final = 0x100
MPIC_OFFSET: Final = 0x40000
MPIC_SIZE: Final = 0x40000
MSI_OFFSET: Final = 0x41600
MSI_SIZE: Final = 0x200
GUTS_OFFSET: Final = 0xE0000
GUTS_SIZE: Final = 0x1000
GPIO_OFFSET: Final = 0xFF000
GPIO_SIZE: Final = 0x1000
#: MPIC interrupt sources (the device tree's first interrupt cell), as QEMU numbers them.
UART_IRQ: Final = 42
GPIO_IRQ: Final = 47
#: The console byte channel's receive and transmit interrupts: level sources of our own
#: choosing, unused by QEMU's ppce500 (Linux's ehv_bytechan wants both).
BYTE_CHANNEL_RX_IRQ: Final = 56
BYTE_CHANNEL_TX_IRQ: Final = 57
#: Device-tree phandles of the nodes others refer to (interrupt-parent, gpios).
DT_MPIC_PHANDLE: Final = 1
DT_GPIO_PHANDLE: Final = 2
DT_MSI_PHANDLE: Final = 3
#: The interrupt sense cell for the MPIC's two-cell specifiers: active-high level.
DT_IRQ_LEVEL_HIGH: Final = 2
#: GUTS compatibles: QEMU's, then one in Linux's mpc85xx_smp_guts_ids, so Linux syncs each
#: secondary's timebase by freezing it through DEVDISR (two hand-offs) instead of its software
#: contest (~10^4 spin-wait hand-offs: why QEMU 7.2 hangs at -smp 2).
DT_GUTS_COMPATIBLE: Final = ("fsl,mpc8544-guts", "fsl,p2020-guts")
#: Where each CPU's interrupt acknowledge reads its vector into EPR in core-int mode (QEMU:
#: ``env->mpic_iack``): the current-CPU window's IACK register.
MPIC_IACK_ADDR: Final = CCSR_BASE + MPIC_OFFSET + 0xA0

# --- Addressing (PLATFORM.md "Addressing") --------------------------------------------------

#: Book E MAS1/MAS2/MAS3 bits the machine writes into TLB entries.
MAS1_V: Final = 0x8000_0000
MAS1_IPROT: Final = 0x4000_0000
MAS2_I: Final = 0x08
MAS2_G: Final = 0x02
MAS3_ALL: Final = 0x3F  # UX | SX | UW | SW | UR | SR


def mas1_tsize(size: int) -> int:
    """MAS1[TSIZE] for a page of ``size`` bytes (log2 of KiB, in bits 7..11)."""
    return ((size.bit_length() - 1 - 10) << 7) & 0xF80


#: The power-on mapping every CPU starts with: TLB1 entries (ESEL, EA = PA, size, MAS2 WIMGE),
#: IPROT, address space 0, TID 0, every access allowed.  Four 1 GiB entries cover the whole
#: 32-bit physical space, so firmware written for a flat machine runs unchanged, and an access
#: to an address where nothing is stays a guest fault (exit 125), not a TLB miss.  The top
#: entries of TLB1, so that a firmware's own entries (from ESEL 0 up) do not collide.
POWER_ON_TLB1: Final = (
    (12, 0x0000_0000, 1 * GiB, 0),
    (13, 0x4000_0000, 1 * GiB, 0),
    (14, 0x8000_0000, 1 * GiB, 0),
    (15, 0xC000_0000, 1 * GiB, MAS2_I | MAS2_G),  # devices (fw_cfg) and the boot ROM
)

#: e500v2 processor version register value as unicorn reports it (informational).
CPU_COMPATIBLE: Final = "PowerPC,e500v2"
TIMEBASE_HZ: Final = 400_000_000
CLOCK_HZ: Final = 400_000_000
BUS_HZ: Final = 400_000_000
#: The machine advances every CPU's timebase at least this often while any CPU runs.
TIMEBASE_TICK_S: Final = 0.001
L1_CACHE_SIZE: Final = 0x8000
L1_CACHE_LINE: Final = 32

#: Book E special-purpose register numbers the machine touches.
SPR_PIR: Final = 286
SPR_PVR: Final = 287
SPR_TBL_READ: Final = 268
SPR_TBU_READ: Final = 269
SPR_TBL_WRITE: Final = 284
SPR_TBU_WRITE: Final = 285
SPR_SRR0: Final = 26
SPR_SRR1: Final = 27

# --- Hypercalls (ePAPR ABI) ----------------------------------------------------------------

#: ``sc 1``: the only hypercall instruction.  ``sc`` (LEV 0, 0x44000002) is a guest system call.
HCALL_INSN: Final = 0x4400_0022
SC_LEV0_INSN: Final = 0x4400_0002


class Vendor(enum.IntEnum):
    """Hypercall vendor ids (the high half of the token in r11)."""

    EPAPR = 1
    FW = 0x4657  # "FW": this platform's own calls


def token(vendor: Vendor, number: int) -> int:
    """The r11 token of a hypercall: ``(vendor << 16) | number``."""
    return (int(vendor) << 16) | number


class Hcall(enum.IntEnum):
    """Every hypercall token the machine implements."""

    EV_BYTE_CHANNEL_SEND = token(Vendor.EPAPR, 1)
    EV_BYTE_CHANNEL_RECEIVE = token(Vendor.EPAPR, 2)
    EV_BYTE_CHANNEL_POLL = token(Vendor.EPAPR, 3)
    EV_IDLE = token(Vendor.EPAPR, 16)
    FW_CPU_RELEASE = token(Vendor.FW, 1)
    FW_WAIT_STORE = token(Vendor.FW, 2)
    FW_POWEROFF = token(Vendor.FW, 3)
    FW_RESET = token(Vendor.FW, 4)
    FW_GET_TIME = token(Vendor.FW, 5)


class EvStatus(enum.IntEnum):
    """ePAPR hypercall status codes (r3 on return)."""

    SUCCESS = 0
    EPERM = 1
    ENOENT = 2
    EIO = 3
    EAGAIN = 4
    ENOMEM = 5
    EFAULT = 6
    ENODEV = 7
    EINVAL = 8
    INTERNAL = 9
    CONFIG = 10
    INVALID_STATE = 11
    UNIMPLEMENTED = 12
    BUFFER_OVERFLOW = 13


#: Byte-channel transfers carry at most this many bytes per call (r5..r8).
BYTE_CHANNEL_MAX: Final = 16
#: Handle of the machine console byte channel.
CONSOLE_HANDLE: Final = 0
#: Bytes the console accepts before EV_BYTE_CHANNEL_SEND reports EV_EAGAIN (reported as tx space).
CONSOLE_TX_SPACE: Final = 64 * KiB

# --- Boot flow -----------------------------------------------------------------------------

EPAPR_MAGIC: Final = 0x4550_4150
#: r7 of a released secondary: the size of its initial mapped area.
SECONDARY_IMA_SIZE: Final = 64 * MiB

# --- Spin table ----------------------------------------------------------------------------

#: One entry per CPU, in the reserved page at the top of RAM.  All fields big-endian.
SpinEntry = Struct(
    "entry_addr" / Int64ub,
    "r3" / Int64ub,
    "reserved" / Int32ub,
    "pir" / Int32ub,
    "pad" / Bytes(8),
)
SPIN_ENTRY_SIZE: Final = 32
assert SpinEntry.sizeof() == SPIN_ENTRY_SIZE
#: Offset of the low word of entry_addr inside an entry: the word whose store releases a CPU.
SPIN_ENTRY_ADDR_LO: Final = 4
#: entry_addr bit 0 set = the CPU is held.
SPIN_HOLD: Final = 1
#: The spin-table page is the last page of RAM.
SPIN_TABLE_PAGE_SIZE: Final = PAGE_SIZE
assert MAX_CPUS * SPIN_ENTRY_SIZE <= SPIN_TABLE_PAGE_SIZE


def spin_table_base(ram_size: int) -> int:
    """Physical address of the spin table for a machine with ``ram_size`` bytes of RAM."""
    return RAM_BASE + ram_size - SPIN_TABLE_PAGE_SIZE


def spin_entry_addr(ram_size: int, cpu: int) -> int:
    """Physical address of CPU ``cpu``'s spin-table entry (its ``cpu-release-addr``)."""
    return spin_table_base(ram_size) + cpu * SPIN_ENTRY_SIZE


# --- Device tree ---------------------------------------------------------------------------

#: The root's compatible list.  Linux picks its platform in setup_arch (probe_machine) from
#: it, long before it reads anything else: "fsl,qemu-e500" selects its QEMU e500 platform.
DT_COMPATIBLE: Final = ("fwcfg-e500", "fsl,qemu-e500")
DT_MODEL: Final = "fwcfg-e500"
#: "simple-bus" too: Linux's mpc85xx platforms (qemu-e500 among them) create devices only for
#: the children of buses they know, and ehv_bytechan's console is a device under /hypervisor.
DT_HYPERVISOR_COMPATIBLE: Final = ("epapr,hypervisor-1", "simple-bus")
DT_BYTE_CHANNEL_COMPATIBLE: Final = "epapr,hv-byte-channel"
DT_FWCFG_COMPATIBLE: Final = "qemu,fw-cfg-mmio"
DT_GUEST_NAME: Final = "fwcfg-e500"
DT_GUEST_ID: Final = 0
CONSOLE_PATH: Final = "/hypervisor/byte-channel@0"
#: The fw_cfg file that carries the flattened device tree.
FDT_FILE_NAME: Final = "etc/fdt"

# --- Image placement (the same rules QEMU's ppce500 uses, hw/ppc/e500.c) -------------------

#: Initrd: 16 MiB aligned, after both the kernel and the device-tree window.
INITRD_ALIGN: Final = 16 * MiB
#: Device tree (direct boot, and where the firmware puts it): 24 MiB past the kernel, 1 MiB aligned.
DTB_GAP: Final = 24 * MiB
DTB_ALIGN: Final = 1 * MiB
DTB_MAX_SIZE: Final = 8 * MiB


def align_down(value: int, align: int) -> int:
    return value & ~(align - 1)


def align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def initrd_base(kernel_end: int) -> int:
    """Where the initrd goes for a kernel whose image ends at ``kernel_end``.

    Deliberately not QEMU's rule (``(max(end, 32 MiB) + 32 MiB) & ~(16 MiB - 1)``): with that
    rule, kernels ending in [33, 41) MiB, [49, 57) MiB, ... put the initrd inside the 8 MiB
    device-tree window.  Here the initrd starts at the first 16 MiB boundary past both.
    """
    return align_up(max(kernel_end, dtb_base(kernel_end) + DTB_MAX_SIZE), INITRD_ALIGN)


def dtb_base(kernel_end: int) -> int:
    """Where the device tree goes for a kernel whose image ends at ``kernel_end``."""
    return align_down(kernel_end + DTB_GAP, DTB_ALIGN)


def ima_size(end: int) -> int:
    """Size of the boot CPU's initial mapped area: the smallest Book E TLB size (1 KiB * 4^n)
    that covers ``[0, end)`` — the rule QEMU's ppce500 uses, so kernels see the same r7."""
    size = 1 * KiB
    while size < end:
        size *= 4
    return size


#: r1 for the boot CPU in direct boot (QEMU ppce500 uses 16 MiB - 8: a usable initial stack).
DIRECT_BOOT_STACK: Final = 16 * MiB - 8
