"""Everything about fw_cfg that is a number or a byte layout, in one place.

The names and values follow QEMU's ``docs/specs/fw_cfg.rst`` (cited by section below) and the
header QEMU shares with Linux (``qemu_fw_cfg.h``).  The device, the client, the tests and the
guest-stub header all import from here, so a layout is spelled exactly once.

Byte order is part of each name: the file directory and the DMA descriptor are big-endian on
every architecture, while the integer items QEMU itself creates are little-endian.
"""

from __future__ import annotations

import enum
from typing import Final

from construct import Array, Int16ub, Int32ub, Int64ub, PaddedString, Padding, Struct, this

# --- "Selector (Control) Register" and "Selector Keys" -------------------------------------


class Key(enum.IntEnum):
    """Well-known selector keys ("Selector Keys" and the legacy keys of ``qemu_fw_cfg.h``)."""

    SIGNATURE = 0x00
    ID = 0x01
    UUID = 0x02
    RAM_SIZE = 0x03
    NOGRAPHIC = 0x04
    NB_CPUS = 0x05
    MACHINE_ID = 0x06
    KERNEL_ADDR = 0x07
    KERNEL_SIZE = 0x08
    KERNEL_CMDLINE = 0x09
    INITRD_ADDR = 0x0A
    INITRD_SIZE = 0x0B
    BOOT_DEVICE = 0x0C
    NUMA = 0x0D
    BOOT_MENU = 0x0E
    MAX_CPUS = 0x0F
    KERNEL_ENTRY = 0x10
    KERNEL_DATA = 0x11
    INITRD_DATA = 0x12
    CMDLINE_ADDR = 0x13
    CMDLINE_SIZE = 0x14
    CMDLINE_DATA = 0x15
    SETUP_ADDR = 0x16
    SETUP_SIZE = 0x17
    SETUP_DATA = 0x18
    FILE_DIR = 0x19
    FILE_FIRST = 0x20
    #: Bit 14 once meant "open for writing"; QEMU masks it off and it grants nothing.
    WRITE_CHANNEL = 0x4000
    #: Bit 15: the architecture-local key space ("Selector Keys").
    ARCH_LOCAL = 0x8000
    #: What the device selects for a key outside its entry space: every read returns zeros.
    INVALID = 0xFFFF


#: The bits of a key that index an entry table (QEMU's ``FW_CFG_ENTRY_MASK``).
ENTRY_MASK: Final = 0x3FFF


class PpcKey(enum.IntEnum):
    """Architecture-local keys of QEMU's PowerPC machines (``include/hw/ppc/ppc.h``)."""

    WIDTH = 0x8000
    HEIGHT = 0x8001
    DEPTH = 0x8002
    TBFREQ = 0x8003
    CLOCKFREQ = 0x8004
    IS_KVM = 0x8005
    KVM_HC = 0x8006
    KVM_PID = 0x8007
    NVRAM_ADDR = 0x8008
    BUSFREQ = 0x8009
    NVRAM_FLAT = 0x800A
    VIACONFIG = 0x800B


# --- "Signature (Key 0x0000, FW_CFG_SIGNATURE)" and "Revision / feature bitmap" ------------

#: The bytes of item 0x0000.
SIGNATURE: Final = b"QEMU"


class Feature(enum.IntFlag):
    """Bits of the little-endian u32 at key 0x0001 ("Revision / feature bitmap")."""

    TRADITIONAL = 0x1
    DMA = 0x2


# --- "DMA Address Register" and "DMA interface" --------------------------------------------

#: What the DMA address register reads back: the big-endian bytes of 0x51454d5520434647.
DMA_SIGNATURE: Final = b"QEMU CFG"


class DmaControl(enum.IntFlag):
    """The low bits of ``FWCfgDmaAccess.control`` ("DMA interface").  Bits 31..16 hold a key."""

    ERROR = 0x01
    READ = 0x02
    SKIP = 0x04
    SELECT = 0x08
    WRITE = 0x10


#: ``control >> DMA_SELECT_SHIFT`` is the key a SELECT transfer selects.
DMA_SELECT_SHIFT: Final = 16

#: The 16-byte descriptor a guest hands the DMA register (all fields big-endian).
DmaAccess = Struct(
    "control" / Int32ub,
    "length" / Int32ub,
    "address" / Int64ub,
)
DMA_ACCESS_SIZE: Final = 16
#: Where the device stores the completion status inside a descriptor.
DMA_CONTROL_OFFSET: Final = 0

# --- "File Directory (Key 0x0019, FW_CFG_FILE_DIR)" ----------------------------------------

#: A name is at most 55 bytes: the 56-byte field always keeps a terminating NUL.
FILE_NAME_MAX: Final = 55
FILE_NAME_FIELD: Final = 56
#: File slots QEMU provides by default (``x-file-slots``), and its accepted range.
DEFAULT_FILE_SLOTS: Final = 0x20
MIN_FILE_SLOTS: Final = 0x10
MAX_FILE_SLOTS: Final = 0x3FE0

#: One directory entry (``struct FWCfgFile``), 64 bytes, big-endian.
FileEntry = Struct(
    "size" / Int32ub,
    "select" / Int16ub,
    Padding(2) * "reserved",
    "name" / PaddedString(FILE_NAME_FIELD, "utf8"),
)
FILE_ENTRY_SIZE: Final = 64

#: The directory item: a big-endian count, then that many entries.  QEMU sizes the item for
#: every slot (``4 + 64 * file_slots`` bytes); the unused tail reads as zeros.
FileDir = Struct(
    "count" / Int32ub,
    "files" / Array(this.count, FileEntry),
)
FILE_DIR_HEADER_SIZE: Final = 4

assert DmaAccess.sizeof() == DMA_ACCESS_SIZE
assert FileEntry.sizeof() == FILE_ENTRY_SIZE


def file_dir_size(file_slots: int) -> int:
    """Length of the directory item of a device with ``file_slots`` slots."""
    return FILE_DIR_HEADER_SIZE + FILE_ENTRY_SIZE * file_slots
