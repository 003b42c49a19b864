"""Malformed host files through the command line: each is one clear line and exit status 2.

``tests/test_loader.py`` and ``tests/test_devicetree.py`` check the loaders' messages one by one;
this is the user's view of the same files and of what those tests do not build — wrong
architecture and byte order for both ``-kernel`` and ``-bios``, images larger than RAM or the
ROM, an initrd larger than RAM, device trees that are huge, byte-swapped, or built to make the
parser slow, and FIFOs, which used to block the command forever before it printed anything.
Files are crafted byte by byte (sparse where they are big), so every case is cheap.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from machine.cli import main
from machine.platform import DTB_MAX_SIZE, GiB, MiB

EM_PPC, EM_PPC64, EM_ARM = 20, 21, 40
NOP = b"\x60\x00\x00\x00"
Seg = tuple[int, int, bytes, int, int]  # paddr, vaddr, file bytes, memsz, flags


def elf(*, cls: int = 1, data: int = 2, machine: int = EM_PPC, etype: int = 2,
        entry: int = 0x1000, segs: tuple[Seg, ...] = ((0x1000, 0x1000, NOP * 4, 0x10, 5),),
        phentsize: int | None = None, phoff: int | None = None,
        phnum: int | None = None) -> bytes:
    """An ELF executable with the given identity and ``PT_LOAD`` segments."""
    e = ">" if data == 2 else "<"
    ehsize, phsize = (52, 32) if cls == 1 else (64, 56)
    body = ehsize + phsize * len(segs)
    headers, bodies = b"", b""
    for paddr, vaddr, blob, memsz, flags in segs:
        off = body + len(bodies)
        if cls == 1:
            headers += struct.pack(e + "8I", 1, off, vaddr, paddr, len(blob), memsz, flags, 4)
        else:
            headers += struct.pack(e + "IIQQQQQQ", 1, flags, off, vaddr, paddr, len(blob),
                                   memsz, 4)
        bodies += blob
    ident = b"\x7fELF" + bytes([cls, data, 1, 0]) + bytes(8)
    fields = (etype, machine, 1, entry, ehsize if phoff is None else phoff, 0, 0, ehsize,
              phsize if phentsize is None else phentsize,
              len(segs) if phnum is None else phnum, 40, 0, 0)
    fmt = "HHIIIIIHHHHHH" if cls == 1 else "HHIQQQIHHHHHH"
    return ident + struct.pack(e + fmt, *fields) + headers + bodies


def fdt(structure: bytes, strings: bytes = b"", magic: int = 0xD00DFEED) -> bytes:
    """A version-17 flattened device tree around a raw structure block."""
    rsv = bytes(16)
    off_struct = 40 + len(rsv)
    off_strings = off_struct + len(structure)
    total = off_strings + len(strings)
    header = struct.pack(">10I", magic, total, off_struct, off_strings, 40, 17, 16, 0,
                         len(strings), len(structure))
    return header + rsv + structure + strings


def begin(name: bytes) -> bytes:
    n = name + b"\0"
    return struct.pack(">I", 1) + n + bytes(-len(n) % 4)


END_NODE, FDT_END = struct.pack(">I", 2), struct.pack(">I", 9)
ROOT_OK = begin(b"") + END_NODE + FDT_END


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_files(tmp_path_factory.mktemp("hostile"))


def make_files(d: Path) -> dict[str, Path]:
    """Every malformed file of :data:`CASES`, in directory ``d``."""
    made: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        made[name] = d / name
        made[name].write_bytes(data)

    put("le.elf", elf(data=1))
    put("ppc64.elf", elf(cls=2, machine=EM_PPC64))
    put("ppc64le.elf", elf(cls=2, data=1, machine=EM_PPC64))
    put("arm.elf", elf(machine=EM_ARM))
    put("oversized.elf", elf(segs=((0, 0, NOP, 0x700_0000, 5),), entry=0))
    put("bss4g.elf", elf(segs=((0, 0, NOP, 0xFFFF_FFF0, 5),), entry=0))
    put("past4g.elf", elf(segs=((0xFFFF_F000, 0xFFFF_F000, NOP, 0x2000, 5),), entry=0xFFFF_F000))
    put("phnum.elf", elf(phnum=0xFFFF))
    put("phoff.elf", elf(phoff=0xFFFF_FFF0))
    put("phentsize.elf", elf(phentsize=7))
    put("cut-segment.elf", elf()[:-8])
    put("relocatable.elf", elf(etype=1))
    put("entry-outside.elf", elf(entry=0x90_0000))
    put("overlap.elf", elf(segs=((0x1000, 0x1000, b"a" * 16, 0x100, 5),
                                 (0x1080, 0x1080, b"b" * 16, 0x100, 5))))
    put("ident-only.elf", b"\x7fELF\x01\x02\x01" + bytes(9))
    put("class7.elf", b"\x7fELF\x07\x09" + bytes(60))
    put("rom-le.elf", elf(data=1, entry=0xFFF0_0000,
                          segs=((0xFFF0_0000, 0xFFF0_0000, NOP, 4, 5),)))
    put("rom-overflow.elf", elf(entry=0xFFF0_0000,  # 1 MiB + 64 KiB: starts below the ROM
                                segs=((0xFFEF_0000, 0xFFEF_0000, NOP, 0x11_0000, 5),)))
    made["raw-2m.bin"] = sparse(d / "raw-2m.bin", 2 * MiB)
    made["raw-100m.bin"] = sparse(d / "raw-100m.bin", 100 * MiB)
    made["initrd-4g"] = sparse(d / "initrd-4g", 4 * GiB)
    made["initrd-3g"] = sparse(d / "initrd-3g", 3 * GiB)
    made["empty"] = sparse(d / "empty", 0)
    made["fwcfg-4g"] = sparse(d / "fwcfg-4g", 4 * GiB)
    made["dtb-9m"] = sparse(d / "dtb-9m", 9 * MiB)
    good = fdt(ROOT_OK)
    put("swapped.dtb", fdt(ROOT_OK, magic=0xEDFE0DD0))
    put("cut.dtb", good[:20])
    put("totalsize.dtb", good[:4] + struct.pack(">I", 0xFFFF_FFF0) + good[8:])
    put("offsets.dtb", good[:8] + struct.pack(">II", 0xFFFF_FF00, 0xFFFF_FF00) + good[16:])
    put("deep.dtb", fdt(begin(b"") + begin(b"n") * 100_000 + END_NODE * 100_001 + FDT_END))
    put("siblings.dtb", fdt(begin(b"") + b"".join(begin(b"n%d" % i) + END_NODE
                                                   for i in range(200_000)) + END_NODE + FDT_END))
    put("props.dtb", fdt(begin(b"") + b"".join(struct.pack(">III", 3, 0, 6 * i)
                                                for i in range(20_000)) + END_NODE + FDT_END,
                         b"".join(b"p%04d\0" % i for i in range(20_000))))
    put("proplen.dtb", fdt(begin(b"") + struct.pack(">III", 3, 0xFFFF_FFF0, 0) + END_NODE
                           + FDT_END, b"model\0"))
    put("garbage.dtb", fdt(b"\xff" * 64))
    made["dir"] = d / "dir"
    made["dir"].mkdir()
    return made


Case = tuple[Callable[[dict[str, Path]], list[str]], str]
CASES: dict[str, Case] = {
    "kernel-little-endian": (lambda f: ["-kernel", str(f["le.elf"])], "little-endian"),
    "kernel-ppc64": (lambda f: ["-kernel", str(f["ppc64.elf"])], "64-bit big-endian"),
    "kernel-ppc64le": (lambda f: ["-kernel", str(f["ppc64le.elf"])], "64-bit little-endian"),
    "kernel-arm": (lambda f: ["-kernel", str(f["arm.elf"])], "ARM"),
    "kernel-larger-than-ram": (lambda f: ["-m", "64", "-kernel", str(f["oversized.elf"])],
                               "needs -m 113"),
    "kernel-bss-of-4g": (lambda f: ["-kernel", str(f["bss4g.elf"])], "does not fit"),
    "kernel-past-4g": (lambda f: ["-kernel", str(f["past4g.elf"])], "past 4 GiB"),
    "kernel-65535-headers": (lambda f: ["-kernel", str(f["phnum.elf"])], "program headers"),
    "kernel-headers-at-4g": (lambda f: ["-kernel", str(f["phoff.elf"])], "program headers"),
    "kernel-header-size": (lambda f: ["-kernel", str(f["phentsize.elf"])], "7 bytes"),
    "kernel-cut-segment": (lambda f: ["-kernel", str(f["cut-segment.elf"])], "truncated"),
    "kernel-relocatable": (lambda f: ["-kernel", str(f["relocatable.elf"])], "ET_REL"),
    "kernel-entry-outside": (lambda f: ["-kernel", str(f["entry-outside.elf"])], "entry point"),
    "kernel-overlap": (lambda f: ["-kernel", str(f["overlap.elf"])], "overlapping"),
    "kernel-ident-only": (lambda f: ["-kernel", str(f["ident-only.elf"])], "truncated"),
    "kernel-bad-class": (lambda f: ["-kernel", str(f["class7.elf"])], "corrupt ELF header"),
    "kernel-raw-larger-than-ram": (lambda f: ["-m", "64", "-kernel", str(f["raw-100m.bin"])],
                                   "needs -m 101"),
    "kernel-empty": (lambda f: ["-kernel", str(f["empty"])], "empty"),
    "kernel-directory": (lambda f: ["-kernel", str(f["dir"])], "not a regular file"),
    "bios-little-endian": (lambda f: ["-bios", str(f["rom-le.elf"])], "little-endian"),
    "bios-ppc64": (lambda f: ["-bios", str(f["ppc64.elf"])], "64-bit"),
    "bios-larger-than-rom": (lambda f: ["-bios", str(f["rom-overflow.elf"])], "outside"),
    "bios-raw-2m": (lambda f: ["-bios", str(f["raw-2m.bin"])], "the boot ROM holds"),
    "bios-in-ram": (lambda f: ["-bios", str(f["overlap.elf"])], "overlapping"),
    "initrd-4g-larger-than-ram": (lambda f: ["--demo", "-initrd", str(f["initrd-4g"])],
                                  "does not fit in 256 MiB"),
    "initrd-3g-in-3g-ram": (lambda f: ["--demo", "-m", "3G", "-initrd", str(f["initrd-3g"])],
                            "does not fit in 3072 MiB"),
    "initrd-empty": (lambda f: ["--demo", "-initrd", str(f["empty"])], "empty"),
    "initrd-without-kernel": (lambda f: ["-initrd", str(f["empty"])], "-kernel"),
    "dtb-9m": (lambda f: ["--demo", "-dtb", str(f["dtb-9m"])], f"{DTB_MAX_SIZE}-byte"),
    "dtb-byte-swapped": (lambda f: ["--demo", "-dtb", str(f["swapped.dtb"])], "bad magic"),
    "dtb-cut": (lambda f: ["--demo", "-dtb", str(f["cut.dtb"])], "header"),
    "dtb-totalsize-4g": (lambda f: ["--demo", "-dtb", str(f["totalsize.dtb"])], "truncated"),
    "dtb-offsets": (lambda f: ["--demo", "-dtb", str(f["offsets.dtb"])], "offsets"),
    "dtb-100000-deep": (lambda f: ["--demo", "-dtb", str(f["deep.dtb"])], "deeper than 64"),
    "dtb-200000-siblings": (lambda f: ["--demo", "-dtb", str(f["siblings.dtb"])],
                            "too many nodes side by side"),
    "dtb-20000-properties": (lambda f: ["--demo", "-dtb", str(f["props.dtb"])],
                             "too many properties side by side"),
    "dtb-property-length": (lambda f: ["--demo", "-dtb", str(f["proplen.dtb"])], "runs past"),
    "dtb-garbage": (lambda f: ["--demo", "-dtb", str(f["garbage.dtb"])], "unknown token"),
    "dtb-directory": (lambda f: ["--demo", "-dtb", str(f["dir"])], "dir"),
    "fw_cfg-file-of-4g": (lambda f: ["--demo", "-fw_cfg", f"name=opt/big,file={f['fwcfg-4g']}"],
                          "'opt/big' is 4294967296 bytes"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_malformed_input_is_one_line_and_exit_2(
    case: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args, needle = CASES[case]
    start = time.monotonic()
    code = main([*args(files), "--timeout", "10"])
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fwcfg-e500: "), err
    assert needle in lines[0], err
    assert out == ""  # refused before any guest code ran
    assert elapsed < 5, f"took {elapsed:.1f} s to refuse"


@pytest.mark.parametrize("option", ["-kernel", "-initrd", "-dtb", "-bios", "-fw_cfg"])
def test_a_fifo_is_refused_at_once_instead_of_blocking(tmp_path: Path, option: str) -> None:
    """Opening a FIFO for reading waits for a writer; the loaders used to wait forever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    arg = f"name=opt/f,file={fifo}" if option == "-fw_cfg" else str(fifo)
    demo = [] if option in ("-kernel", "-bios") else ["--demo"]
    p = subprocess.run([sys.executable, "-m", "machine", *demo, option, arg],
                       capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    lines = p.stderr.decode().strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and str(fifo) in lines[0], p.stderr


def test_a_device_tree_from_a_pipe_with_a_writer_still_loads(tmp_path: Path) -> None:
    """``-dtb <(dtc ...)``: the non-blocking open must not make the read give up early."""
    good = tmp_path / "good.dtb"
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(good), "-"], check=True,
                   input=b"/dts-v1/;\n/ { #address-cells = <2>; #size-cells = <2>; };\n")
    script = (f'exec {sys.executable} -m machine --demo -append piped '
              f'-dtb <(sleep 0.3; cat "{good}")')
    p = subprocess.run(["bash", "-c", script], capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert b"cmdline: piped" in p.stdout
