"""Host image files -> the flat images and addresses the machine serves or maps.

The kernel becomes one flat image (PLATFORM.md KERNEL_ADDR / KERNEL_SIZE / KERNEL_ENTRY /
KERNEL_DATA): ELF ``PT_LOAD`` segments laid out from the lowest physical address, gaps and bss
zero-filled.  The firmware becomes the 1 MiB boot ROM.  The initrd is placed by QEMU's ppce500
rule (:func:`machine.platform.initrd_base`).  :func:`plan_layout` checks the whole placement --
kernel, initrd, device tree, spin-table page -- before anything is written to guest RAM.

Every problem with a host file is one :class:`fwcfg.ConfigError` sentence naming the file and
what is wrong with it; nothing here lets a parser exception escape.  Files are mapped, not read:
size checks happen on the file size before any byte is touched, and the initrd, which can be
hundreds of MiB, stays a read-only ``mmap`` that fw_cfg serves straight from the page cache.

Formats:

* **ELF**: 32-bit, big-endian, ``EM_PPC``; loaded by ``p_paddr``.  Like QEMU's ELF loader, an
  entry point that lies inside an executable segment whose virtual and physical addresses differ
  (a Linux ``vmlinux``: linked at 0xC0000000, loaded at 0) is moved to the physical address,
  because the guest starts with an identity view.
* **legacy uImage** (magic 0x27051956): PowerPC, type "kernel", uncompressed; the header's load
  address and entry point are used and both CRCs are checked.
* **raw**: anything else is a kernel loaded at the bottom of RAM and entered at its first byte.
* **firmware**: an ELF whose segments and entry lie in the ROM window, or a raw ROM image of at
  most 1 MiB, placed so that it ends at the top of the 4 GiB space (its last word at
  0xFFFFFFFC) and entered at 0xFFFFFFFC -- the e500 reset vector, where a real boot ROM keeps a
  branch to its start.
"""

from __future__ import annotations

import itertools
import mmap
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, cast

from construct import Bytes, Enum, Int8ub, Int16ub, Int16ul, Int32ub, Padding, Struct
from elftools.elf.constants import P_FLAGS
from elftools.elf.descriptions import describe_e_machine
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE

from fwcfg import ConfigError
from machine import platform as P
from machine.boot.regions import BootLayout as BootLayout
from machine.boot.regions import FirmwareImage as FirmwareImage
from machine.boot.regions import FlatImage as FlatImage
from machine.boot.regions import InitrdImage as InitrdImage
from machine.boot.regions import KernelImage as KernelImage
from machine.boot.regions import Region as Region

ADDRESS_SPACE: Final = 1 << 32
#: Where a raw firmware image is entered: the last word of the address space (e500 reset vector).
RESET_VECTOR: Final = ADDRESS_SPACE - 4


# --- ELF identification ---------------------------------------------------------------------

ELF_MAGIC: Final = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EM_PPC: Final = ENUM_E_MACHINE["EM_PPC"]
ELF32_EHDR_SIZE: Final = 52
ELF32_PHDR_SIZE: Final = 32
PT_LOAD: Final = 1

#: The part of the ELF header that is the same for every class and byte order, read before
#: anything trusts the rest (so a foreign ELF is named, not mis-parsed).
ElfIdent = Struct(
    "magic" / Bytes(4),
    "ei_class" / Int8ub,
    "ei_data" / Int8ub,
    Padding(10) * "ei_version, ei_osabi, ei_abiversion, ei_pad",
    "e_type_be" / Int16ub,
    "e_machine_be" / Int16ub,
)
ELF_IDENT_SIZE: Final = 20
assert ElfIdent.sizeof() == ELF_IDENT_SIZE
_E_MACHINE_LE = Int16ul

#: Short names for the machines people most often pass by mistake; others use pyelftools' text.
_MACHINE_NAMES: Final = {
    "EM_386": "i386",
    "EM_X86_64": "x86-64",
    "EM_ARM": "ARM",
    "EM_AARCH64": "AArch64",
    "EM_PPC": "PowerPC",
    "EM_PPC64": "PowerPC64",
    "EM_RISCV": "RISC-V",
    "EM_MIPS": "MIPS",
    "EM_S390": "s390",
}
_MACHINE_BY_NUMBER: Final = {v: k for k, v in ENUM_E_MACHINE.items() if k.startswith("EM_")}

WANTED_ELF: Final = "a 32-bit big-endian PowerPC ELF"

# --- legacy U-Boot image --------------------------------------------------------------------

UIMAGE_MAGIC: Final = 0x2705_1956
UIMAGE_ARCH_PPC: Final = 7

#: U-Boot's legacy image header (include/image.h ``struct legacy_img_hdr``), all big-endian.
UImageHeader = Struct(
    "magic" / Int32ub,
    "hcrc" / Int32ub * "CRC32 of the header with this field zero",
    "time" / Int32ub,
    "size" / Int32ub * "payload bytes after the header",
    "load" / Int32ub,
    "ep" / Int32ub,
    "dcrc" / Int32ub * "CRC32 of the payload",
    "os" / Int8ub,
    "arch" / Int8ub,
    "type" / Enum(Int8ub, standalone=1, kernel=2, ramdisk=3, multi=4, firmware=5, script=6,
                  filesystem=7, flat_dt=8, kernel_noload=14),
    "comp" / Enum(Int8ub, none=0, gzip=1, bzip2=2, lzma=3, lzo=4, lz4=5, zstd=6),
    "name" / Bytes(32),
)
UIMAGE_HEADER_SIZE: Final = 64
assert UImageHeader.sizeof() == UIMAGE_HEADER_SIZE
_UIMAGE_HCRC_OFFSET: Final = 4


# --- files ----------------------------------------------------------------------------------


def _map(path: Path, what: str) -> mmap.mmap:
    """Map a regular, non-empty host file read-only; every failure is a :class:`ConfigError`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot open {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        if st.st_size == 0:
            raise ConfigError(f"{what} {path} is empty")
        try:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot map {what} {path}: {exc}") from None
    finally:
        os.close(fd)


def _ram_needed(end: int) -> int:
    """The smallest ``-m`` (whole MiB) whose RAM holds ``[0, end)`` below the spin-table page."""
    return max(P.MIN_RAM_SIZE, P.align_up(end + P.SPIN_TABLE_PAGE_SIZE, P.MiB))


def _check_below_spin_table(region: Region, ram_size: int, what: str) -> None:
    limit = P.spin_table_base(ram_size)
    if region.end > limit:
        needed = _ram_needed(region.end)
        raise ConfigError(
            f"{what} ({region.start:#x}-{region.end:#x}) does not fit in "
            f"{ram_size // P.MiB} MiB of RAM below the spin table at {limit:#x}; "
            f"it needs -m {needed // P.MiB} or more"
        )


# --- ELF ------------------------------------------------------------------------------------


def _describe_elf(ei_class: int, ei_data: int, machine: int) -> str:
    bits = {ELFCLASS32: "32-bit", ELFCLASS64: "64-bit"}[ei_class]
    order = {ELFDATA2LSB: "little-endian", ELFDATA2MSB: "big-endian"}[ei_data]
    key = _MACHINE_BY_NUMBER.get(machine)
    if key is None:
        name = f"machine {machine}"
    else:
        name = _MACHINE_NAMES.get(key) or describe_e_machine(key)
    return f"a {bits} {order} {name} ELF"


def _check_elf_ident(image: mmap.mmap, path: Path, what: str) -> None:
    if len(image) < ELF_IDENT_SIZE:
        raise ConfigError(f"{what} {path} is a truncated ELF ({len(image)} bytes)")
    ident = ElfIdent.parse(image[:ELF_IDENT_SIZE])
    if ident.ei_class not in (ELFCLASS32, ELFCLASS64) or ident.ei_data not in (
        ELFDATA2LSB, ELFDATA2MSB
    ):
        raise ConfigError(
            f"{what} {path} has a corrupt ELF header (class {ident.ei_class}, "
            f"data encoding {ident.ei_data}); fwcfg-e500 needs {WANTED_ELF}"
        )
    if ident.ei_data == ELFDATA2MSB:
        machine = ident.e_machine_be
    else:
        machine = _E_MACHINE_LE.parse(image[18:20])
    if (ident.ei_class, ident.ei_data, machine) != (ELFCLASS32, ELFDATA2MSB, EM_PPC):
        found = _describe_elf(ident.ei_class, ident.ei_data, machine)
        raise ConfigError(f"{what} {path} is {found}; fwcfg-e500 needs {WANTED_ELF}")


@dataclass(frozen=True)
class _Segment:
    index: int
    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    executable: bool

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


def _elf_segments(image: mmap.mmap, path: Path, what: str) -> tuple[int, list[_Segment]]:
    """The entry point and the ``PT_LOAD`` segments, sorted, validated against the file."""
    _check_elf_ident(image, path, what)

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{what} {path} is a broken ELF: {problem}")

    size = len(image)
    if size < ELF32_EHDR_SIZE:
        raise ConfigError(f"{what} {path} is a truncated ELF: the header needs "
                          f"{ELF32_EHDR_SIZE} bytes, the file has {size}")
    try:
        elf = ELFFile(cast(IO[bytes], image))  # an mmap is a seekable byte stream
        hdr = elf.header
        if hdr["e_type"] not in ("ET_EXEC", "ET_DYN"):
            raise bad(f"type {hdr['e_type']}, not an executable")
        phnum, phoff, phentsize = hdr["e_phnum"], hdr["e_phoff"], hdr["e_phentsize"]
        if phnum and phentsize != ELF32_PHDR_SIZE:
            raise bad(f"program header entries of {phentsize} bytes (expected {ELF32_PHDR_SIZE})")
        if phoff + phnum * phentsize > size:
            raise bad(f"the program headers end at {phoff + phnum * phentsize:#x}, "
                      f"past the end of the {size}-byte file (truncated?)")
        entry = hdr["e_entry"]
        raw = [elf.get_segment(i).header for i in range(phnum)]
    except ConfigError:
        raise
    except Exception as exc:  # pyelftools raises ELFError, its vendored construct's errors, ...
        raise bad(str(exc) or type(exc).__name__) from None

    segments: list[_Segment] = []
    for i, ph in enumerate(raw):
        if ph["p_type"] not in ("PT_LOAD", PT_LOAD) or ph["p_memsz"] == 0:
            continue
        seg = _Segment(i, ph["p_paddr"], ph["p_vaddr"], ph["p_offset"], ph["p_filesz"],
                       ph["p_memsz"], bool(ph["p_flags"] & P_FLAGS.PF_X))
        if seg.filesz > seg.memsz:
            raise bad(f"segment {i} has more file bytes ({seg.filesz:#x}) than memory "
                      f"bytes ({seg.memsz:#x})")
        if seg.offset + seg.filesz > size:
            raise ConfigError(
                f"{what} {path} is truncated: segment {i} needs bytes up to "
                f"{seg.offset + seg.filesz:#x}, the file has {size:#x}"
            )
        if seg.end > ADDRESS_SPACE:
            raise bad(f"segment {i} at {seg.paddr:#x} (+{seg.memsz:#x}) runs past 4 GiB")
        segments.append(seg)
    if not segments:
        raise ConfigError(f"{what} {path} has no loadable segment")
    segments.sort(key=lambda s: s.paddr)
    for a, b in itertools.pairwise(segments):
        if b.paddr < a.end:
            raise ConfigError(
                f"{what} {path} has overlapping segments: {a.index} ({a.paddr:#x}-{a.end:#x}) "
                f"and {b.index} ({b.paddr:#x}-{b.end:#x})"
            )
    return _physical_entry(entry, segments), segments


def _physical_entry(entry: int, segments: list[_Segment]) -> int:
    """Move a virtual entry point to its physical address (see the module docstring)."""
    for seg in segments:
        if (seg.executable and seg.vaddr != seg.paddr
                and seg.vaddr <= entry < seg.vaddr + seg.filesz):
            return entry - seg.vaddr + seg.paddr
    return entry


def _flatten(image: mmap.mmap, segments: list[_Segment], base: int, size: int) -> FlatImage:
    """Lay the segments out from ``base`` in ``size`` bytes, zero-filling gaps and bss (as
    views of the mapped file: nothing is copied)."""
    view = memoryview(image)
    return FlatImage(size, [(seg.paddr - base, view[seg.offset : seg.offset + seg.filesz])
                            for seg in segments])


def _entry_inside(entry: int, region: Region, path: Path, what: str) -> None:
    if not region.start <= entry < region.end:
        raise ConfigError(
            f"{what} {path} has its entry point {entry:#x} outside its image "
            f"({region.start:#x}-{region.end:#x})"
        )


# --- kernel ---------------------------------------------------------------------------------


def _uimage(image: mmap.mmap, path: Path) -> tuple[int, int, int, int]:
    """(load, entry, payload offset, payload size) of a legacy uImage, after all checks."""
    what = f"kernel uImage {path}"
    if len(image) < UIMAGE_HEADER_SIZE:
        raise ConfigError(f"{what} is truncated: {len(image)} bytes, the header alone is 64")
    header = bytearray(image[:UIMAGE_HEADER_SIZE])
    hdr = UImageHeader.parse(header)
    header[_UIMAGE_HCRC_OFFSET : _UIMAGE_HCRC_OFFSET + 4] = bytes(4)
    if zlib.crc32(header) != hdr.hcrc:
        raise ConfigError(f"{what} has a bad header checksum")
    if hdr.arch != UIMAGE_ARCH_PPC:
        raise ConfigError(f"{what} is for architecture {hdr.arch}, not PowerPC "
                          f"({UIMAGE_ARCH_PPC})")
    if hdr.type != "kernel":
        raise ConfigError(f"{what} has image type {hdr.type}; fwcfg-e500 loads type kernel")
    if hdr.comp != "none":
        raise ConfigError(f"{what} is {hdr.comp}-compressed; fwcfg-e500 loads uncompressed "
                          f"kernels only")
    end = UIMAGE_HEADER_SIZE + hdr.size
    if hdr.size == 0:
        raise ConfigError(f"{what} has an empty payload")
    if end > len(image):
        raise ConfigError(f"{what} is truncated: the header announces {hdr.size} bytes, "
                          f"the file holds {len(image) - UIMAGE_HEADER_SIZE}")
    if zlib.crc32(memoryview(image)[UIMAGE_HEADER_SIZE:end]) != hdr.dcrc:
        raise ConfigError(f"{what} has a bad data checksum")
    return hdr.load, hdr.ep, UIMAGE_HEADER_SIZE, hdr.size


def _is_uimage(image: mmap.mmap) -> bool:
    return len(image) >= 4 and int.from_bytes(image[:4], "big") == UIMAGE_MAGIC


def load_kernel(path: str | Path, ram_size: int) -> KernelImage:
    """Load ``-kernel FILE`` (ELF, uImage or raw) for a machine with ``ram_size`` bytes of RAM."""
    path = Path(path)
    what = "kernel"
    # The mapping stays open on success: the image is served from it (see FlatImage).
    image = _map(path, what)
    try:
        if image[:4] == ELF_MAGIC:
            entry, segments = _elf_segments(image, path, what)
            base = segments[0].paddr
            region = Region("kernel", base, segments[-1].end - base)
            _check_below_spin_table(region, ram_size, f"{what} {path}")
            _entry_inside(entry, region, path, what)
            data = _flatten(image, segments, base, region.size)
        elif _is_uimage(image):
            load, entry, offset, size = _uimage(image, path)
            region = Region("kernel", load, size)
            _check_below_spin_table(region, ram_size, f"{what} {path}")
            _entry_inside(entry, region, path, what)
            data = FlatImage(size, [(0, memoryview(image)[offset : offset + size])])
        else:
            region = Region("kernel", P.RAM_BASE, len(image))
            entry = P.RAM_BASE
            _check_below_spin_table(region, ram_size, f"{what} {path}")
            data = FlatImage(len(image), [(0, memoryview(image))])
    except BaseException:
        try:
            image.close()
        except BufferError:
            pass  # a view escaped into the exception; the mapping goes with it
        raise
    return KernelImage(load_addr=region.start, entry=entry, data=data, path=path)


# --- firmware -------------------------------------------------------------------------------


def load_firmware(path: str | Path) -> FirmwareImage:
    """Load ``-bios FILE`` as the boot ROM (an ELF inside the ROM window, or a raw ROM image)."""
    path = Path(path)
    what = "firmware"
    rom_region = Region("the boot ROM", P.ROM_BASE, P.ROM_SIZE)
    with _map(path, what) as image:
        if image[:4] == ELF_MAGIC:
            entry, segments = _elf_segments(image, path, what)
            for seg in segments:
                if not (rom_region.start <= seg.paddr and seg.end <= rom_region.end):
                    raise ConfigError(
                        f"{what} {path} has segment {seg.index} at {seg.paddr:#x}-{seg.end:#x}, "
                        f"outside {rom_region}"
                    )
            _entry_inside(entry, rom_region, path, what)
            flat = _flatten(image, segments, P.ROM_BASE, P.ROM_SIZE)
            rom = bytes(flat)  # the ROM is small and must outlive the file mapping
            flat.release()
        elif _is_uimage(image):
            raise ConfigError(f"{what} {path} is a uImage; -bios takes an ELF or a raw ROM image")
        else:
            if len(image) > P.ROM_SIZE:
                raise ConfigError(
                    f"{what} {path} is a raw image of {len(image)} bytes; the boot ROM holds "
                    f"{P.ROM_SIZE}"
                )
            rom = bytes(P.ROM_SIZE - len(image)) + image[:]
            entry = RESET_VECTOR
    return FirmwareImage(entry=entry, rom=rom, path=path)


# --- initrd and the whole layout ------------------------------------------------------------


def _dtb_window(kernel_end: int) -> Region:
    return Region("the device tree window", P.dtb_base(kernel_end), P.DTB_MAX_SIZE)


def load_initrd(path: str | Path, ram_size: int, kernel_end: int) -> InitrdImage:
    """Map ``-initrd FILE`` and place it after a kernel ending at ``kernel_end``.

    The file is mapped, not read: the returned view is backed by the page cache and is read
    once, when fw_cfg or the direct-boot loader copies it into guest RAM.
    """
    path = Path(path)
    image = _map(path, "initrd")
    region = Region("initrd", P.initrd_base(kernel_end), len(image))
    try:
        _check_below_spin_table(region, ram_size, f"initrd {path}")
        window = _dtb_window(kernel_end)
        if region.overlaps(window):
            raise ConfigError(_overlap_message(region, window, kernel_end, f"initrd {path}"))
    except ConfigError:
        image.close()
        raise
    return InitrdImage(addr=region.start, data=memoryview(image), path=path)


def _overlap_message(a: Region, b: Region, kernel_end: int, what: str) -> str:
    return (
        f"{what} ({a.start:#x}-{a.end:#x}) would overlap {b} (both are placed after the "
        f"kernel, which ends at {kernel_end:#x}); more RAM does not help, a smaller kernel "
        f"or initrd does"
    )


def plan_layout(
    kernel: KernelImage | None, initrd: InitrdImage | None, fdt_size: int, ram_size: int
) -> BootLayout:
    """Check that kernel, initrd and device tree fit below the spin table without overlapping.

    The device tree goes to ``dtb_base(kernel.end)`` (``dtb_base(0)`` with no kernel, where the
    firmware puts it when KERNEL_ADDR and KERNEL_SIZE are 0) and keeps a ``DTB_MAX_SIZE`` window
    there, whatever its actual size, so that the initrd placement does not depend on the tree
    (whose /chosen names the initrd).  Raises :class:`ConfigError` naming what does not fit and,
    where more RAM helps, the ``-m`` needed.
    """
    if not 0 < fdt_size <= P.DTB_MAX_SIZE:
        raise ConfigError(f"the device tree is {fdt_size} bytes; at most {P.DTB_MAX_SIZE} fit")
    if kernel is None and initrd is not None:
        raise ConfigError("an initrd needs a kernel: it is placed after the kernel")
    kernel_end = 0 if kernel is None else kernel.end
    kernel_region = None if kernel is None else Region("the kernel", kernel.load_addr, kernel.size)
    initrd_region = None if initrd is None else Region("the initrd", initrd.addr, initrd.size)
    window = _dtb_window(kernel_end)
    dtb = Region("the device tree", window.start, fdt_size)
    spin = Region("the spin table page", P.spin_table_base(ram_size), P.SPIN_TABLE_PAGE_SIZE)

    placed = [r for r in (kernel_region, initrd_region, window) if r is not None]
    top = max(r.end for r in placed)
    if top > spin.start:
        worst = max(placed, key=lambda r: r.end)
        raise ConfigError(
            f"{worst} does not fit in {ram_size // P.MiB} MiB of RAM below {spin}; "
            f"the boot images need -m {_ram_needed(top) // P.MiB} or more"
        )
    for a, b in itertools.combinations(placed, 2):
        if a.overlaps(b):
            raise ConfigError(_overlap_message(a, b, kernel_end, str(a)))
    return BootLayout(ram_size=ram_size, kernel=kernel_region, initrd=initrd_region, dtb=dtb,
                      dtb_window=window, spin_table=spin)
