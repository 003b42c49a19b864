"""Kernel, firmware and initrd loading: real cross-built ELFs, foreign and broken files, layouts.

The PowerPC ELFs are assembled and linked here from source with the Debian cross binutils; the
flat images are checked against ``objcopy -O binary``, an independent implementation of "lay the
loadable sections out from the lowest address".
"""

from __future__ import annotations

import mmap
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from construct import Bytes, Const, Int8ub, Int32ub, Struct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwcfg import BytearrayMemory, ConfigError, DmaAccess, FwCfg, Key
from machine import platform as P
from machine.boot.loader import (
    RESET_VECTOR,
    FlatImage,
    InitrdImage,
    KernelImage,
    load_firmware,
    load_initrd,
    load_kernel,
    plan_layout,
)

MiB = P.MiB
#: tmp_path is shared by the examples of one test; each example overwrites its own file.
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
RAM = 256 * MiB
CROSS = "powerpc-linux-gnu-"

KERNEL_ASM = """
    .section .text
    .globl _start
_start:
    li 3, 1
    lis 4, msg@ha
    addi 4, 4, msg@l
    b _start
    .section .data
msg: .asciz "kernel data"
    .section .bss
buf: .space 0x2000
"""

KERNEL_LDS = """
ENTRY(_start)
PHDRS { text PT_LOAD; data PT_LOAD; }
SECTIONS {
  .text 0x10000 : { *(.text) } :text
  .data 0x13000 : { *(.data) } :data
  .bss : { *(.bss) } :data
  /DISCARD/ : { *(.note.GNU-stack) *(.gnu.attributes) }
}
"""

#: Linked like a Linux vmlinux: virtual 0xC0000000, physical 0; the entry is 8 bytes in.
VMLINUX_ASM = """
    .section .text
    nop
    nop
    .globl _start
_start:
    b _start
"""
VMLINUX_LDS = """
ENTRY(_start)
PHDRS { text PT_LOAD FLAGS(5); }
SECTIONS {
  .text 0xC0000000 : AT(0) { *(.text) } :text
  /DISCARD/ : { *(.note.GNU-stack) *(.gnu.attributes) }
}
"""

FIRMWARE_ASM = """
    .section .text
    .globl _start
_start:
    li 3, 7
    b _start
    .section .reset, "ax"
    .globl reset
reset:
    b _start
"""
FIRMWARE_LDS = """
ENTRY(reset)
PHDRS { rom PT_LOAD FLAGS(5); }
SECTIONS {
  .text 0xFFFFF000 : { *(.text) . = 0xFFC; *(.reset) } :rom
  /DISCARD/ : { *(.note.GNU-stack) *(.gnu.attributes) }
}
"""

#: A uImage header written independently of the loader's (U-Boot include/image.h).
UImage = Struct(
    "magic" / Const(0x27051956, Int32ub),
    "hcrc" / Int32ub,
    "time" / Int32ub,
    "size" / Int32ub,
    "load" / Int32ub,
    "ep" / Int32ub,
    "dcrc" / Int32ub,
    "os" / Int8ub,
    "arch" / Int8ub,
    "type" / Int8ub,
    "comp" / Int8ub,
    "name" / Bytes(32),
)


def make_uimage(payload: bytes, *, load: int, ep: int, arch: int = 7, itype: int = 2,
                comp: int = 0, size: int | None = None, dcrc: int | None = None) -> bytes:
    fields = dict(hcrc=0, time=0, size=len(payload) if size is None else size, load=load, ep=ep,
                  dcrc=zlib.crc32(payload) if dcrc is None else dcrc, os=5, arch=arch,
                  type=itype, comp=comp, name=b"test kernel".ljust(32, b"\0"))
    header = UImage.build(fields)
    fields["hcrc"] = zlib.crc32(header)
    return UImage.build(fields) + payload


def link(tmp_path: Path, name: str, asm: str, lds: str) -> Path:
    src, obj, script, elf = (tmp_path / f"{name}{ext}" for ext in (".S", ".o", ".lds", ".elf"))
    src.write_text(asm)
    script.write_text(lds)
    subprocess.run([CROSS + "as", "-o", obj, src], check=True)
    subprocess.run([CROSS + "ld", "-z", "max-page-size=0x1000", "--no-warn-rwx-segments",
                    "-T", script, "-o", elf, obj], check=True)
    return elf


def objcopy_binary(elf: Path) -> bytes:
    out = elf.with_suffix(".bin")
    subprocess.run([CROSS + "objcopy", "-O", "binary", elf, out], check=True)
    return out.read_bytes()


def elf32_phdrs(blob: bytes) -> list[tuple[int, ...]]:
    """(offset of the entry, p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz) per phdr."""
    phoff, = struct.unpack_from(">I", blob, 28)
    phentsize, phnum = struct.unpack_from(">HH", blob, 42)
    return [(phoff + i * phentsize, *struct.unpack_from(">6I", blob, phoff + i * phentsize))
            for i in range(phnum)]


@pytest.fixture
def kernel_elf(tmp_path: Path) -> Path:
    return link(tmp_path, "kernel", KERNEL_ASM, KERNEL_LDS)


def put(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- kernels ----------------------------------------------------------------------------------


@pytest.mark.cross
def test_elf_kernel_becomes_one_flat_image_with_gaps_and_bss_zeroed(kernel_elf: Path) -> None:
    kernel = load_kernel(kernel_elf, RAM)
    flat = objcopy_binary(kernel_elf)  # .text at 0x10000 .. .data at 0x13000, no bss

    assert kernel.load_addr == 0x10000
    assert kernel.entry == 0x10000
    assert kernel.end == 0x13000 + len(b"kernel data\0") + 0x2000  # .data, then .bss
    assert kernel.data[: len(flat)] == flat
    assert kernel.data[len(flat):] == bytes(kernel.size - len(flat))
    assert kernel.data[0x3000:0x300C] == b"kernel data\0"
    assert kernel.path == kernel_elf


@pytest.mark.cross
def test_vmlinux_style_entry_is_moved_to_its_physical_address(tmp_path: Path) -> None:
    elf = link(tmp_path, "vmlinux", VMLINUX_ASM, VMLINUX_LDS)
    kernel = load_kernel(elf, RAM)
    assert (kernel.load_addr, kernel.entry, kernel.size) == (0, 8, 12)
    assert kernel.data == objcopy_binary(elf)


def test_uimage_kernel_uses_header_load_address_and_entry(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 16
    path = put(tmp_path, "uImage", make_uimage(payload, load=0x40_0000, ep=0x40_0100))
    kernel = load_kernel(path, RAM)
    assert (kernel.load_addr, kernel.entry, kernel.data) == (0x40_0000, 0x40_0100, payload)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(arch=2), r"architecture 2, not PowerPC"),
        (dict(itype=3), r"image type ramdisk; fwcfg-e500 loads type kernel"),
        (dict(comp=1), r"is gzip-compressed"),
        (dict(dcrc=0x1234), r"bad data checksum"),
        (dict(size=0x2000), r"truncated: the header announces 8192 bytes, the file holds 4096"),
        (dict(ep=0x10_0000), r"entry point 0x100000 outside its image \(0x400000-0x401000\)"),
    ],
)
def test_uimage_problems_are_named(tmp_path: Path, change: dict[str, int], message: str) -> None:
    image = make_uimage(bytes(4096), **{"load": 0x40_0000, "ep": 0x40_0000, **change})
    with pytest.raises(ConfigError, match=message):
        load_kernel(put(tmp_path, "uImage", image), RAM)


def test_uimage_with_corrupt_header_checksum_is_rejected(tmp_path: Path) -> None:
    image = bytearray(make_uimage(bytes(64), load=0, ep=0))
    image[8] ^= 1  # ih_time: covered by the header CRC
    with pytest.raises(ConfigError, match=r"uImage .* bad header checksum"):
        load_kernel(put(tmp_path, "uImage", bytes(image)), RAM)


def test_raw_kernel_is_loaded_at_zero_and_entered_at_zero(tmp_path: Path) -> None:
    payload = bytes((i * 37) & 0xFF for i in range(10_000))
    kernel = load_kernel(put(tmp_path, "Image", payload), RAM)
    assert (kernel.load_addr, kernel.entry, kernel.data, kernel.end) == (0, 0, payload, 10_000)


def test_host_elf_is_named_with_what_it_is() -> None:
    true = Path(shutil.which("true") or "/bin/true")
    with pytest.raises(ConfigError, match=rf"^kernel {re.escape(str(true))} is a 64-bit "
                                          r"little-endian [\w-]+ ELF; fwcfg-e500 needs a 32-bit "
                                          r"big-endian PowerPC ELF$"):
        load_kernel(true, RAM)


def test_x86_64_elf_is_named_exactly(tmp_path: Path) -> None:
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, 62) + bytes(44)
    path = put(tmp_path, "prog", header)
    with pytest.raises(ConfigError) as err:
        load_kernel(path, RAM)
    assert str(err.value) == (
        f"kernel {path} is a 64-bit little-endian x86-64 ELF; "
        "fwcfg-e500 needs a 32-bit big-endian PowerPC ELF"
    )


@pytest.mark.cross
@pytest.mark.parametrize(
    ("offset", "value", "found"),
    [
        (5, b"\x01", "a 32-bit little-endian machine 5120 ELF"),  # EM_PPC read little-endian
        (4, b"\x02", "a 64-bit big-endian PowerPC ELF"),
        (18, b"\x00\x15", "a 32-bit big-endian PowerPC64 ELF"),
        (18, b"\x00\x28", "a 32-bit big-endian ARM ELF"),
    ],
)
def test_foreign_powerpc_variants_are_named(
    kernel_elf: Path, tmp_path: Path, offset: int, value: bytes, found: str
) -> None:
    blob = bytearray(kernel_elf.read_bytes())
    blob[offset : offset + len(value)] = value
    with pytest.raises(ConfigError, match=re.escape(f"is {found}; fwcfg-e500 needs a 32-bit")):
        load_kernel(put(tmp_path, "foreign.elf", bytes(blob)), RAM)


@pytest.mark.cross
def test_little_endian_powerpc_elf_is_named(kernel_elf: Path, tmp_path: Path) -> None:
    blob = bytearray(kernel_elf.read_bytes())
    blob[5] = 1  # ELFDATA2LSB ...
    blob[18:20] = (20).to_bytes(2, "little")  # ... with EM_PPC written the little-endian way
    with pytest.raises(ConfigError, match="is a 32-bit little-endian PowerPC ELF; "):
        load_kernel(put(tmp_path, "le.elf", bytes(blob)), RAM)


@pytest.mark.cross
def test_truncated_copies_fail_until_the_last_segment_is_complete(
    kernel_elf: Path, tmp_path: Path
) -> None:
    """Cuts that keep the ELF magic but lose segment bytes are refused; the section headers
    trail the segments and are not needed, so cuts into them still load."""
    blob = kernel_elf.read_bytes()
    whole = load_kernel(kernel_elf, RAM)
    needed = max(off + filesz for _, _, off, _, _, filesz, _ in elf32_phdrs(blob))
    cuts = sorted({*range(len(b"\x7fELF"), needed, 53), needed - 1, needed, len(blob) - 1})
    copy = tmp_path / "cut.elf"
    for cut in cuts:
        copy.write_bytes(blob[:cut])
        if cut < needed:
            with pytest.raises(ConfigError, match=r"truncated|broken ELF|corrupt ELF header"):
                load_kernel(copy, RAM)
        else:
            assert load_kernel(copy, RAM) == KernelImage(whole.load_addr, whole.entry,
                                                         whole.data, copy)


@pytest.mark.cross
def test_relocatable_object_is_not_a_kernel(tmp_path: Path) -> None:
    link(tmp_path, "k", KERNEL_ASM, KERNEL_LDS)
    with pytest.raises(ConfigError, match=r"broken ELF: type ET_REL, not an executable"):
        load_kernel(tmp_path / "k.o", RAM)


@pytest.mark.cross
def test_elf_without_loadable_segment(kernel_elf: Path, tmp_path: Path) -> None:
    blob = bytearray(kernel_elf.read_bytes())
    for at, *_ in elf32_phdrs(bytes(blob)):
        blob[at : at + 4] = struct.pack(">I", 4)  # PT_NOTE
    with pytest.raises(ConfigError, match=r"has no loadable segment"):
        load_kernel(put(tmp_path, "noload.elf", bytes(blob)), RAM)


@pytest.mark.cross
def test_elf_with_overlapping_segments(kernel_elf: Path, tmp_path: Path) -> None:
    blob = bytearray(kernel_elf.read_bytes())
    at = elf32_phdrs(bytes(blob))[1][0]
    blob[at + 12 : at + 16] = struct.pack(">I", 0x10004)  # data's p_paddr into .text
    with pytest.raises(ConfigError, match=r"overlapping segments: 0 \(0x10000-0x10010\) and 1 "
                                          r"\(0x10004-"):
        load_kernel(put(tmp_path, "overlap.elf", bytes(blob)), RAM)


@pytest.mark.cross
def test_elf_entry_outside_the_image(kernel_elf: Path, tmp_path: Path) -> None:
    blob = bytearray(kernel_elf.read_bytes())
    blob[24:28] = struct.pack(">I", 0x8000)
    with pytest.raises(ConfigError, match=r"entry point 0x8000 outside its image"):
        load_kernel(put(tmp_path, "entry.elf", bytes(blob)), RAM)


@pytest.mark.cross
def test_kernel_too_big_for_ram_says_which_m_is_needed(tmp_path: Path) -> None:
    elf = link(tmp_path, "big", KERNEL_ASM.replace("0x2000", "0x2000000"), KERNEL_LDS)
    with pytest.raises(ConfigError, match=r"needs -m (\d+) or more") as err:
        load_kernel(elf, 32 * MiB)
    needed = int(re.search(r"-m (\d+)", str(err.value)).group(1))  # type: ignore[union-attr]
    # It ends at 0x201300c (32 MiB + 76 KiB); with the spin-table page that is 33 MiB, and the
    # machine's minimum RAM (64 MiB, room for the device-tree window) is what it names.
    assert needed == P.MIN_RAM_SIZE // MiB == 64
    assert load_kernel(elf, needed * MiB).end == 0x201300C


@pytest.mark.cross
def test_huge_bss_is_refused_before_anything_is_allocated(kernel_elf: Path, tmp_path: Path) -> None:
    blob = bytearray(kernel_elf.read_bytes())
    at = elf32_phdrs(bytes(blob))[1][0]
    blob[at + 20 : at + 24] = struct.pack(">I", 0xE000_0000)  # p_memsz: 3.5 GiB of bss
    with pytest.raises(ConfigError, match=r"does not fit in 3072 MiB .* needs -m 3585 or more"):
        load_kernel(put(tmp_path, "huge.elf", bytes(blob)), P.MAX_RAM_SIZE)


def test_huge_raw_file_is_refused_from_its_size(tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    with path.open("wb") as f:
        f.truncate(4 * P.GiB)  # sparse: costs nothing, must not be read
    with pytest.raises(ConfigError, match=r"kernel .* needs -m 4097 or more"):
        load_kernel(path, RAM)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", r"kernel .*/missing does not exist"),
        (lambda d: d, r"kernel .* is not a regular file"),
        (lambda d: put(d, "empty", b""), r"kernel .*/empty is empty"),
        (lambda d: put(d, "short.elf", b"\x7fELF\x01"), r"truncated ELF \(5 bytes\)"),
        (lambda d: put(d, "hdr.elf", b"\x7fELF\x01\x02\x01" + bytes(9) + b"\x00\x02\x00\x14"
                       + bytes(10)),
         r"truncated ELF: the header needs 52 bytes, the file has 30"),
    ],
)
def test_unusable_files(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_kernel(make(tmp_path), RAM)


@FUZZ
@given(junk=st.binary(min_size=0, max_size=300))
def test_junk_behind_an_elf_header_is_refused_not_crashed(tmp_path: Path, junk: bytes) -> None:
    ident = b"\x7fELF\x01\x02\x01" + bytes(9) + b"\x00\x02\x00\x14"
    path = put(tmp_path, "junk.elf", ident + junk)
    try:
        kernel = load_kernel(path, RAM)
    except ConfigError as err:
        assert str(path) in str(err)
    else:  # junk that happens to describe a valid image must really describe it
        assert kernel.load_addr <= kernel.entry < kernel.end <= P.spin_table_base(RAM)


@pytest.mark.cross
@FUZZ
@given(data=st.data())
def test_mutated_headers_are_refused_or_loaded_never_crashed(
    kernel_elf: Path, tmp_path: Path, data: st.DataObject
) -> None:
    blob = bytearray(kernel_elf.read_bytes())
    phoff = struct.unpack_from(">I", blob, 28)[0]
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.sampled_from([*range(16, 52), *range(phoff, phoff + 64)]))
        blob[at] = data.draw(st.integers(0, 255))
    path = put(tmp_path, "mutant.elf", bytes(blob))
    try:
        kernel = load_kernel(path, RAM)
    except ConfigError as err:
        assert str(path) in str(err)
    else:
        assert kernel.end <= P.spin_table_base(RAM)


# --- firmware ---------------------------------------------------------------------------------


@pytest.mark.cross
def test_firmware_elf_becomes_the_rom(tmp_path: Path) -> None:
    elf = link(tmp_path, "fw", FIRMWARE_ASM, FIRMWARE_LDS)
    fw = load_firmware(elf)
    code = objcopy_binary(elf)
    assert fw.entry == 0xFFFF_FFFC
    assert len(fw.rom) == P.ROM_SIZE
    assert fw.rom[-len(code):] == code
    assert fw.rom[: -len(code)] == bytes(P.ROM_SIZE - len(code))
    assert fw.rom[-4:] == struct.pack(">I", 0x4800_0000 | (-0xFFC & 0x03FF_FFFC))  # b _start


@pytest.mark.cross
def test_firmware_outside_the_rom_is_refused(kernel_elf: Path) -> None:
    with pytest.raises(ConfigError, match=r"segment 0 at 0x10000-0x10010, outside the boot ROM "
                                          r"at 0xfff00000-0x100000000"):
        load_firmware(kernel_elf)


def test_raw_rom_ends_at_the_reset_vector(tmp_path: Path) -> None:
    code = b"\x38\x60\x00\x07" * 1023 + b"\x4b\xff\xf0\x04"
    fw = load_firmware(put(tmp_path, "rom.bin", code))
    assert fw.entry == RESET_VECTOR == 0xFFFF_FFFC
    assert fw.rom[-len(code):] == code
    assert fw.rom[: -len(code)] == bytes(P.ROM_SIZE - len(code))


def test_raw_rom_larger_than_the_rom_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"raw image of 1048577 bytes; the boot ROM holds 10485"):
        load_firmware(put(tmp_path, "rom.bin", bytes(P.ROM_SIZE + 1)))


def test_uimage_firmware_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a uImage; -bios takes an ELF or a raw ROM image"):
        load_firmware(put(tmp_path, "fw.ub", make_uimage(bytes(16), load=0, ep=0)))


# --- initrd and layout ------------------------------------------------------------------------


def fake_kernel(end: int, load: int = 0) -> KernelImage:
    return KernelImage(load_addr=load, entry=load, data=bytes(end - load), path=Path("k"))


def test_initrd_is_mapped_and_placed_after_the_kernel(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096
    initrd = load_initrd(put(tmp_path, "initrd", payload), RAM, kernel_end=12 * MiB)
    # After the kernel and the device-tree window (36..44 MiB), on a 16 MiB boundary.
    assert initrd.addr == P.initrd_base(12 * MiB) == 48 * MiB
    assert initrd.end == 48 * MiB + len(payload)
    assert isinstance(initrd.data.obj, mmap.mmap)  # served from the page cache, never copied
    assert initrd.data == payload


def test_initrd_too_large_for_ram(tmp_path: Path) -> None:
    path = tmp_path / "big.cpio"
    with path.open("wb") as f:
        f.truncate(220 * MiB)
    with pytest.raises(ConfigError, match=rf"initrd {path} \(0x3000000-0x10c00000\) does not fit "
                                          r"in 256 MiB .* needs -m 269 or more"):
        load_initrd(path, RAM, kernel_end=12 * MiB)
    assert load_initrd(path, 269 * MiB, kernel_end=12 * MiB).end == 268 * MiB


def test_initrd_never_lands_in_the_device_tree_window(tmp_path: Path) -> None:
    # QEMU's rule put the initrd inside the window for kernels ending in [33, 41) MiB, ...;
    # ours starts it past both the kernel and the window, for every kernel size.
    for end in range(0, 300 * MiB, MiB // 2):
        base = P.initrd_base(end)
        assert base % P.INITRD_ALIGN == 0
        assert base >= end and base >= P.dtb_base(end) + P.DTB_MAX_SIZE
    initrd = load_initrd(put(tmp_path, "initrd", bytes(4096)), RAM, kernel_end=40 * MiB)
    assert initrd.addr == 80 * MiB  # window 64..72 MiB


def test_empty_initrd_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"initrd .* is empty"):
        load_initrd(put(tmp_path, "initrd", b""), RAM, kernel_end=MiB)


def test_plan_layout_places_everything_below_the_spin_table(tmp_path: Path) -> None:
    kernel = fake_kernel(12 * MiB)
    initrd = load_initrd(put(tmp_path, "initrd", bytes(3 * MiB)), RAM, kernel.end)
    layout = plan_layout(kernel, initrd, fdt_size=3000, ram_size=RAM)
    assert layout.kernel is not None and layout.initrd is not None
    assert (layout.kernel.start, layout.kernel.end) == (0, 12 * MiB)
    assert (layout.initrd.start, layout.initrd.end) == (48 * MiB, 51 * MiB)
    assert (layout.dtb.start, layout.dtb.size) == (36 * MiB, 3000)
    assert (layout.dtb_window.start, layout.dtb_window.end) == (36 * MiB, 44 * MiB)
    assert layout.spin_table.start == RAM - P.PAGE_SIZE
    regions = [layout.kernel, layout.initrd, layout.dtb_window, layout.spin_table]
    assert all(not a.overlaps(b) for i, a in enumerate(regions) for b in regions[i + 1:])


def test_plan_layout_names_the_ram_needed_and_that_ram_suffices() -> None:
    kernel = fake_kernel(30 * MiB)
    with pytest.raises(ConfigError, match=r"the device tree window at 0x3600000-0x3e00000 does "
                                          r"not fit in 48 MiB .* need -m 64 or more"):
        plan_layout(kernel, None, fdt_size=3000, ram_size=48 * MiB)
    assert plan_layout(kernel, None, fdt_size=3000, ram_size=64 * MiB).dtb.start == 54 * MiB


def test_plan_layout_without_a_kernel_keeps_the_firmwares_device_tree_window() -> None:
    layout = plan_layout(None, None, fdt_size=3000, ram_size=RAM)
    assert layout.kernel is None
    assert (layout.dtb.start, layout.dtb_window.end) == (24 * MiB, 32 * MiB)
    with pytest.raises(ConfigError, match=r"window at 0x1800000-0x2000000 does not fit in 24 MiB"
                                          r" .* need -m 64 or more"):
        plan_layout(None, None, fdt_size=3000, ram_size=24 * MiB)


def test_plan_layout_refuses_overlap_and_oversized_trees() -> None:
    kernel = fake_kernel(40 * MiB)
    # An initrd placed by hand (not by initrd_base) inside the device-tree window.
    clash = InitrdImage(addr=P.dtb_base(kernel.end), data=memoryview(bytes(4096)),
                        path=Path("initrd"))
    with pytest.raises(ConfigError, match=r"the initrd at 0x4000000-0x4001000 .* would overlap "
                                          r"the device tree window"):
        plan_layout(kernel, clash, fdt_size=3000, ram_size=RAM)
    with pytest.raises(ConfigError, match=r"the device tree is 8388609 bytes"):
        plan_layout(fake_kernel(MiB), None, fdt_size=P.DTB_MAX_SIZE + 1, ram_size=RAM)


# --- the flat kernel image is served from the file's pages, never built ----------------------


def _sample_flat() -> tuple[FlatImage, bytes]:
    backing = bytes(range(256)) * 64  # stands in for the mapped file
    view = memoryview(backing)
    pieces = [(0x10, view[0:0x100]), (0x400, view[0x200:0x800]), (0x1000, view[0x900:0x901])]
    flat = bytearray(0x1800)
    for off, v in pieces:
        flat[off : off + len(v)] = v
    return FlatImage(0x1800, pieces), bytes(flat)


@given(offset=st.integers(0, 0x17FF), length=st.integers(1, 0x1800))
def test_flat_image_views_match_the_flat_bytes(offset: int, length: int) -> None:
    image, flat = _sample_flat()
    length = min(length, len(flat) - offset)
    assert bytes(image.view(offset, length)) == flat[offset : offset + length]
    # A DMA asks for at most span() bytes: always inside one piece or one gap.
    span = image.span(offset)
    assert 1 <= span <= len(flat) - offset
    assert bytes(image.view(offset, span)) == flat[offset : offset + span]
    assert image[offset : offset + length] == flat[offset : offset + length]
    assert image[offset] == flat[offset]


def test_flat_image_runs_end_at_piece_edges_and_direct_boot_writes_gaps_as_zeros() -> None:
    image, flat = _sample_flat()
    assert [image.span(o) for o in (0, 0x10, 0x50, 0x110, 0x400, 0xA00, 0x1000, 0x1001)] == [
        0x10, 0x100, 0xC0, 0x2F0, 0x600, 0x600, 1, 0x7FF]
    assert isinstance(image.view(0x400, 0x600), memoryview)  # a piece: no copy
    mem = BytearrayMemory(0x4000)
    mem.data[:] = b"\xff" * 0x4000
    image.write_to(mem, 0x1000)
    assert bytes(mem.data[0x1000:0x2800]) == flat
    assert image == flat and bytes(image) == flat


@pytest.mark.cross
def test_fw_cfg_dma_of_the_kernel_copies_the_pieces_into_ram(kernel_elf: Path) -> None:
    kernel = load_kernel(kernel_elf, RAM)
    assert isinstance(kernel.data, FlatImage)
    mem = BytearrayMemory(1 << 20)
    dev = FwCfg(mem)
    dev.add_item(Key.KERNEL_DATA, kernel.data)
    desc = 0x8000
    mem.write(desc, DmaAccess.build(dict(control=(Key.KERNEL_DATA << 16) | 0x0A,
                                         length=kernel.size, address=0x10000)))
    dev.dma(desc)
    assert mem.read(desc, 4) == bytes(4)  # completed, no ERROR
    assert mem.read(0x10000, kernel.size) == objcopy_binary(kernel_elf) + bytes(
        kernel.size - len(objcopy_binary(kernel_elf)))
