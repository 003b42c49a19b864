"""The flattened device tree the guest boots with: generated, or the user's ``-dtb`` fixed up.

PLATFORM.md "Device tree" is the contract; every number comes from :mod:`machine.platform`.
The tree is built with the ``fdt`` package's node objects and serialised as an FDT version 17
blob, the format Linux, U-Boot and ``dtc`` read.  Two details go beyond the bullet list of
PLATFORM.md, both so that Debian's ``dtc -I dtb -O dts`` accepts the blob without a warning:

* ``/hypervisor`` carries ``#address-cells = <1>`` and ``#size-cells = <0>``, and
  ``/hypervisor/byte-channel@0`` carries ``reg = <0>`` next to ``hv-handle = <0>``.  A node with a
  unit address needs a ``reg`` that matches it (dtc's ``unit_address_vs_reg`` check); the handle
  is the natural address on the hypervisor "bus", so ``reg`` repeats it.
* An empty command line is an empty string (one NUL byte), as QEMU writes it; Linux reads it
  as "no arguments".

``-dtb FILE`` (:func:`fixup_user_dtb`): the user's tree is checked token by token before the
``fdt`` package sees it (``fdt.parse_dtb`` does no bounds checking of its own), then the machine
writes what only it knows.  The nodes that describe hardware the machine implements --
``/cpus``, ``/hypervisor`` and the fw_cfg node -- are replaced by the machine's (a user's node
would describe CPUs or hypercalls that do not exist), every ``memory`` node is replaced by
``/memory@0`` sized by ``-m``, ``/chosen`` gets the command line, console and initrd, and the
spin-table page is added to the reservations.  Everything else is kept byte for byte.  Replaced
nodes inherit the user's ``phandle`` (matched by path, CPUs by ``reg``), so references from the
rest of the user's tree still resolve.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import fdt
from construct import ConstructError, Int32ub, Struct

from fwcfg import ConfigError
from machine import platform as P

#: The FDT format version written and read (the one with ``size_dt_struct`` in the header,
#: which dtc has written since 2007), and the oldest version it is compatible with.
FDT_VERSION: Final = 17
FDT_LAST_COMP_VERSION: Final = 16
FDT_MAGIC: Final = 0xD00DFEED
#: Linux's ``FDT_MAX_DEPTH``: deeper user trees are rejected (Linux would not unflatten them).
FDT_MAX_DEPTH: Final = 64
#: ``fdt.parse_dtb`` checks each new node (property) against its siblings one by one, so a
#: parent with n children costs n^2/2 name comparisons (~0.6 us each): 200,000 sibling nodes
#: in a 3 MiB blob took minutes.  Trees that would need more comparisons than this (about a
#: second's worth; real trees need well under 10^5) are refused before parsing.
FDT_MAX_SIBLING_WORK: Final = 2_000_000

#: The FDT header (devicetree specification 5.2), version 17.
FdtHeader = Struct(
    "magic" / Int32ub,
    "totalsize" / Int32ub,
    "off_dt_struct" / Int32ub,
    "off_dt_strings" / Int32ub,
    "off_mem_rsvmap" / Int32ub,
    "version" / Int32ub,
    "last_comp_version" / Int32ub,
    "boot_cpuid_phys" / Int32ub,
    "size_dt_strings" / Int32ub,
    "size_dt_struct" / Int32ub,
)
FDT_HEADER_SIZE: Final = 40
assert FdtHeader.sizeof() == FDT_HEADER_SIZE

_BEGIN_NODE, _END_NODE, _PROP, _NOP, _END = 1, 2, 3, 4, 9
#: The devicetree specification's default cell counts when a parent does not say.
_DEFAULT_ADDRESS_CELLS: Final = 2
_DEFAULT_SIZE_CELLS: Final = 1
_PHANDLE_PROPS: Final = ("phandle", "linux,phandle")

MEMORY_NODE: Final = f"memory@{P.RAM_BASE:x}"
FWCFG_NODE: Final = f"fw-cfg@{P.FWCFG_BASE:x}"
_HYPERVISOR_NODE, _CONSOLE_NODE = P.CONSOLE_PATH.strip("/").split("/")


@dataclass(frozen=True, kw_only=True)
class TreeConfig:
    """What the machine puts into the device tree; validated on construction.

    ``initrd`` is the guest-physical ``(start, end)`` of the initrd, end exclusive, or ``None``.
    """

    ram_size: int
    n_cpus: int
    bootargs: str = ""
    initrd: tuple[int, int] | None = None
    guest_id: int = P.DT_GUEST_ID
    guest_name: str = P.DT_GUEST_NAME

    def __post_init__(self) -> None:
        if not P.MIN_CPUS <= self.n_cpus <= P.MAX_CPUS:
            raise ConfigError(
                f"{self.n_cpus} CPUs requested; fwcfg-e500 has {P.MIN_CPUS} to {P.MAX_CPUS}"
            )
        if not (P.SPIN_TABLE_PAGE_SIZE <= self.ram_size <= P.MAX_RAM_SIZE
                and self.ram_size % P.RAM_ALIGN == 0):
            raise ConfigError(
                f"RAM size {self.ram_size:#x} is not a multiple of {P.RAM_ALIGN:#x} "
                f"up to {P.MAX_RAM_SIZE:#x}"
            )
        if "\0" in self.bootargs:
            raise ConfigError("the kernel command line contains a NUL character")
        if self.initrd is not None:
            start, end = self.initrd
            if not 0 <= start <= end <= P.spin_table_base(self.ram_size):
                raise ConfigError(f"initrd range {start:#x}-{end:#x} is not inside RAM")
        if not 0 <= self.guest_id < 1 << 32:
            raise ConfigError(f"guest id {self.guest_id} does not fit in 32 bits")


# --- building the machine's nodes ----------------------------------------------------------


def _cells(value: int, n: int, what: str) -> list[int]:
    """``value`` as ``n`` big-endian 32-bit cells, most significant first."""
    if not 0 <= value < 1 << (32 * n):
        raise ConfigError(f"{what} {value:#x} does not fit in {n} cell(s) of the device tree")
    return [(value >> (32 * i)) & 0xFFFF_FFFF for i in reversed(range(n))]


def _reg(addr: int, size: int, address_cells: int, size_cells: int, what: str) -> fdt.PropWords:
    return fdt.PropWords(
        "reg", *_cells(addr, address_cells, f"{what} address"), *_cells(size, size_cells, what)
    )


def _string(name: str, value: str) -> fdt.Property:
    """A string property that may be empty or non-ASCII (``fdt.PropStrings`` allows neither)."""
    return fdt.PropBytes(name, data=value.encode() + b"\0")


def _cpu_node(cfg: TreeConfig, index: int) -> fdt.Node:
    props: list[Any] = [
        fdt.PropStrings("device_type", "cpu"),
        fdt.PropWords("reg", index),
        fdt.PropStrings("compatible", P.CPU_COMPATIBLE),
        fdt.PropWords("clock-frequency", P.CLOCK_HZ),
        fdt.PropWords("timebase-frequency", P.TIMEBASE_HZ),
        fdt.PropWords("bus-frequency", P.BUS_HZ),
        fdt.PropWords("d-cache-size", P.L1_CACHE_SIZE),
        fdt.PropWords("i-cache-size", P.L1_CACHE_SIZE),
        fdt.PropWords("d-cache-line-size", P.L1_CACHE_LINE),
        fdt.PropWords("i-cache-line-size", P.L1_CACHE_LINE),
    ]
    if index == 0:
        props.append(fdt.PropStrings("status", "okay"))
    else:
        props += [
            fdt.PropStrings("status", "disabled"),
            fdt.PropStrings("enable-method", "spin-table"),
            # ePAPR: always a 64-bit address, whatever the parent's #address-cells.
            fdt.PropWords(
                "cpu-release-addr",
                *_cells(P.spin_entry_addr(cfg.ram_size, index), 2, "cpu-release-addr"),
            ),
        ]
    return fdt.Node(f"cpu@{index:x}", *props)


def _cpus_node(cfg: TreeConfig) -> fdt.Node:
    return fdt.Node(
        "cpus",
        fdt.PropWords("#address-cells", 1),
        fdt.PropWords("#size-cells", 0),
        *(_cpu_node(cfg, i) for i in range(cfg.n_cpus)),
    )


def _memory_node(cfg: TreeConfig, address_cells: int, size_cells: int) -> fdt.Node:
    return fdt.Node(
        MEMORY_NODE,
        fdt.PropStrings("device_type", "memory"),
        _reg(P.RAM_BASE, cfg.ram_size, address_cells, size_cells, "RAM size"),
    )


def _hypervisor_node(cfg: TreeConfig) -> fdt.Node:
    console = fdt.Node(
        _CONSOLE_NODE,
        fdt.PropStrings("compatible", P.DT_BYTE_CHANNEL_COMPATIBLE),
        fdt.PropWords("reg", P.CONSOLE_HANDLE),
        fdt.PropWords("hv-handle", P.CONSOLE_HANDLE),
    )
    return fdt.Node(
        _HYPERVISOR_NODE,
        fdt.PropStrings("compatible", P.DT_HYPERVISOR_COMPATIBLE),
        fdt.PropWords("hcall-instructions", P.HCALL_INSN),
        fdt.PropWords("guest-id", cfg.guest_id),
        _string("guest-name", cfg.guest_name),
        fdt.Property("has-idle"),
        fdt.PropWords("#address-cells", 1),
        fdt.PropWords("#size-cells", 0),
        console,
    )


def _fwcfg_node(address_cells: int, size_cells: int) -> fdt.Node:
    return fdt.Node(
        FWCFG_NODE,
        fdt.PropStrings("compatible", P.DT_FWCFG_COMPATIBLE),
        _reg(P.FWCFG_BASE, P.FWCFG_SIZE, address_cells, size_cells, "fw_cfg window"),
        fdt.Property("dma-coherent"),
    )


def _fill_chosen(chosen: fdt.Node, cfg: TreeConfig) -> None:
    """Set the properties of ``/chosen`` the machine owns; leave any others alone."""
    for prop in (_string("bootargs", cfg.bootargs), _string("stdout-path", P.CONSOLE_PATH)):
        _put(chosen, prop)
    if cfg.initrd is None:
        chosen.remove_property("linux,initrd-start")
        chosen.remove_property("linux,initrd-end")
    else:
        # Single 32-bit cells, as QEMU's ppce500 writes them; Linux reads either width.
        start, end = cfg.initrd
        _put(chosen, fdt.PropWords("linux,initrd-start", *_cells(start, 1, "initrd start")))
        _put(chosen, fdt.PropWords("linux,initrd-end", *_cells(end, 1, "initrd end")))


def _put(node: fdt.Node, prop: fdt.Property) -> None:
    """Add or replace one property, keeping its position when it already exists."""
    prop.set_parent(node)
    for i, old in enumerate(node.props):
        if old.name == prop.name:
            node.props[i] = prop
            return
    node.props.append(prop)


def _spin_reservation(cfg: TreeConfig) -> dict[str, int]:
    return {"address": P.spin_table_base(cfg.ram_size), "size": P.SPIN_TABLE_PAGE_SIZE}


def _serialise(root: fdt.Node, reservations: list[dict[str, int]]) -> bytes:
    # ``fdt.FDT`` has a mutable default for ``entries``: always pass a list of our own.
    tree = fdt.FDT(entries=reservations)
    tree.root = root
    blob: bytes = tree.to_dtb(version=FDT_VERSION, boot_cpuid_phys=0)
    if len(blob) > P.DTB_MAX_SIZE:
        raise ConfigError(
            f"the device tree is {len(blob)} bytes; at most {P.DTB_MAX_SIZE} fit its window"
        )
    return blob


def build_fdt(cfg: TreeConfig) -> bytes:
    """The machine's own device tree (PLATFORM.md "Device tree") as an FDT v17 blob."""
    root = fdt.Node(
        "/",
        fdt.PropWords("#address-cells", 2),
        fdt.PropWords("#size-cells", 2),
        fdt.PropStrings("compatible", *P.DT_COMPATIBLE),
        fdt.PropStrings("model", P.DT_MODEL),
        _memory_node(cfg, 2, 2),
        _cpus_node(cfg),
        _hypervisor_node(cfg),
        fdt.Node("chosen"),
        _fwcfg_node(2, 2),
    )
    _fill_chosen(root.get_subnode("chosen"), cfg)
    return _serialise(root, [_spin_reservation(cfg)])


# --- the user's -dtb ------------------------------------------------------------------------


#: The characters the devicetree specification (2.2.1, 2.2.4) allows in names, as dtc checks.
_ALNUM: Final = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_NODE_NAME_CHARS: Final = frozenset(_ALNUM + b",._+-@")
_NAME_CHARS: Final = frozenset(_ALNUM + b",._+*#?-")


def _name_ok(name: bytes, allowed: frozenset[int]) -> bool:
    return all(c in allowed for c in name)


def _show(name: bytes) -> str:
    return repr(name.decode("ascii", "backslashreplace"))


def _c_string(block: bytes, start: int, limit: int) -> bytes | None:
    end = block.find(b"\0", start, limit)
    return None if end < 0 else block[start:end]


def check_fdt(blob: bytes, source: str) -> tuple[int, list[dict[str, int]]]:
    """Check ``blob`` is a well-formed FDT; return its total size and its reservations.

    Everything ``fdt.parse_dtb`` would trust is checked here first -- header bounds, token
    stream, nesting, property and name bounds -- so a corrupt file is one clear
    :class:`ConfigError` naming ``source`` and the first problem, never a crash.
    """

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{source} is not a usable device tree blob: {problem}")

    if len(blob) < FDT_HEADER_SIZE:
        raise bad(f"only {len(blob)} bytes, shorter than the {FDT_HEADER_SIZE}-byte header")
    try:
        hdr = FdtHeader.parse(blob)
    except ConstructError as exc:  # pragma: no cover - length checked above
        raise bad(str(exc)) from None
    if hdr.magic != FDT_MAGIC:
        raise bad(f"bad magic {hdr.magic:#010x} (expected {FDT_MAGIC:#010x})")
    if hdr.version < FDT_VERSION or hdr.last_comp_version > FDT_LAST_COMP_VERSION:
        raise bad(f"format version {hdr.version}, compatible back to {hdr.last_comp_version}; "
                  f"fwcfg-e500 reads version {FDT_VERSION} blobs compatible back to "
                  f"{FDT_LAST_COMP_VERSION} (what dtc writes)")
    total = hdr.totalsize
    if total > len(blob):
        raise bad(f"truncated: the header says {total} bytes, the file has {len(blob)}")
    if total > P.DTB_MAX_SIZE:
        raise bad(f"{total} bytes, more than the {P.DTB_MAX_SIZE}-byte device tree window")
    struct_end = hdr.off_dt_struct + hdr.size_dt_struct
    strings_end = hdr.off_dt_strings + hdr.size_dt_strings
    if (hdr.off_mem_rsvmap % 8 or hdr.off_dt_struct % 4
            or not FDT_HEADER_SIZE <= hdr.off_mem_rsvmap < total
            or not FDT_HEADER_SIZE <= hdr.off_dt_struct <= struct_end <= total
            or not hdr.off_dt_strings <= strings_end <= total):
        raise bad("block offsets or sizes in the header lie outside the blob or are misaligned")

    reservations: list[dict[str, int]] = []
    off = hdr.off_mem_rsvmap
    while True:
        if off + 16 > total:
            raise bad("the memory reservation map is not terminated")
        address, size = struct.unpack_from(">QQ", blob, off)
        off += 16
        if address == 0 and size == 0:
            break
        reservations.append({"address": address, "size": size})

    off, depth, seen_root = hdr.off_dt_struct, 0, False
    siblings: list[list[int]] = []  # per open node: [subnodes, properties] so far
    work = 0

    def add_sibling(kind: int, where: str) -> None:
        nonlocal work
        work += siblings[-1][kind]
        siblings[-1][kind] += 1
        if work > FDT_MAX_SIBLING_WORK:
            raise bad(f"too many {('nodes', 'properties')[kind]} side by side (the parent of "
                      f"the one at {where} already has {siblings[-1][kind] - 1}); reading it "
                      f"would take over {FDT_MAX_SIBLING_WORK} name comparisons")

    while True:
        if off + 4 > struct_end:
            raise bad("the structure block ends without FDT_END")
        (tag,) = struct.unpack_from(">I", blob, off)
        where = f"structure offset {off - hdr.off_dt_struct:#x}"
        off += 4
        if tag == _BEGIN_NODE:
            name = _c_string(blob, off, struct_end)
            if name is None:
                raise bad(f"unterminated node name at {where}")
            if depth > 0 and (name.split(b"@")[0] == b"" or name.count(b"@") > 1
                              or not _name_ok(name, _NODE_NAME_CHARS)):
                raise bad(f"bad node name {_show(name)} at {where}")
            if depth == 0 and seen_root:
                raise bad(f"a second root node at {where}")
            if depth == 0 and name:
                raise bad(f"the root node is named {_show(name)}")
            if siblings:
                add_sibling(0, where)
            siblings.append([0, 0])
            seen_root, depth = True, depth + 1
            if depth > FDT_MAX_DEPTH:
                raise bad(f"nodes nested deeper than {FDT_MAX_DEPTH} levels")
            off = P.align_up(off + len(name) + 1, 4)
        elif tag == _END_NODE:
            if depth == 0:
                raise bad(f"unbalanced end of node at {where}")
            siblings.pop()
            depth -= 1
        elif tag == _PROP:
            if off + 8 > struct_end:
                raise bad(f"truncated property at {where}")
            length, nameoff = struct.unpack_from(">II", blob, off)
            off += 8
            if depth == 0:
                raise bad(f"property outside any node at {where}")
            if off + length > struct_end:
                raise bad(f"property value at {where} runs past the structure block")
            if nameoff >= hdr.size_dt_strings:
                raise bad(f"property name at {where} lies outside the strings block")
            pname = _c_string(blob, hdr.off_dt_strings + nameoff, strings_end)
            if not pname or not _name_ok(pname, _NAME_CHARS):
                raise bad(f"bad property name {_show(pname or b'')} at {where}")
            add_sibling(1, where)
            off = P.align_up(off + length, 4)
        elif tag == _NOP:
            continue
        elif tag == _END:
            if depth or not seen_root:
                raise bad(f"FDT_END at {where} inside an open node")
            return total, reservations
        else:
            raise bad(f"unknown token {tag:#x} at {where}")


def _parse(blob: bytes, source: str) -> tuple[fdt.Node, list[dict[str, int]]]:
    total, reservations = check_fdt(blob, source)
    try:
        tree = fdt.parse_dtb(bytes(blob[:total]))
    except Exception as exc:  # fdt raises bare Exception/AssertionError for what it dislikes
        raise ConfigError(f"{source} is not a usable device tree blob: {exc}") from None
    # parse_dtb appends the reservations to FDT's shared default list; empty it again so no
    # later FDT() inherits them.  We use the ones check_fdt read.
    tree.entries.clear()
    _check_phandles(tree.root, source)
    return tree.root, reservations


def _check_phandles(root: fdt.Node, source: str) -> None:
    """Refuse what dtc refuses: a phandle of 0 or 0xffffffff, or one shared by two nodes."""
    seen: dict[int, str] = {}
    stack = [("", root)]
    while stack:
        path, node = stack.pop()
        here = f"{path}/{node.name}" if path or node.name != "/" else "/"
        for name in _PHANDLE_PROPS:
            words = _words(node, name)
            if node.get_property(name) is None:
                continue
            if words is None or len(words) != 1 or words[0] in (0, 0xFFFF_FFFF):
                raise ConfigError(f"{source} is not a usable device tree blob: "
                                  f"a bad {name} in {here}")
            if seen.setdefault(words[0], here) != here:
                raise ConfigError(f"{source} is not a usable device tree blob: phandle "
                                  f"{words[0]:#x} is given to both {seen[words[0]]} and {here}")
        stack.extend((here.rstrip("/"), child) for child in reversed(node.nodes))


def _words(node: fdt.Node, name: str) -> list[int] | None:
    prop = node.get_property(name)
    return list(prop.data) if isinstance(prop, fdt.PropWords) else None


def _cell_count(node: fdt.Node, name: str, default: int, source: str) -> int:
    words = _words(node, name)
    if node.get_property(name) is None:
        return default
    if words is None or len(words) != 1 or not 1 <= words[0] <= 2:
        raise ConfigError(f"{source}: the root node's {name} must be <1> or <2>")
    return words[0]


def _strings(node: fdt.Node, name: str) -> list[str]:
    prop = node.get_property(name)
    return list(prop.data) if isinstance(prop, fdt.PropStrings) else []


def _inherit_phandles(old: fdt.Node | None, new: fdt.Node) -> None:
    if old is None:
        return
    for name in _PHANDLE_PROPS:
        prop = old.get_property(name)
        if prop is not None:
            _put(new, prop.copy())


def _replace(root: fdt.Node, old: fdt.Node | None, new: fdt.Node) -> None:
    """Put ``new`` where ``old`` was (or at the end), carrying over its phandles."""
    _inherit_phandles(old, new)
    new.set_parent(root)
    # By identity: fdt.Node's == compares contents.
    at = next((i for i, n in enumerate(root.nodes) if n is old), None)
    if at is None:
        root.nodes.append(new)
    else:
        root.nodes[at] = new


def _user_cpus_by_reg(cpus: fdt.Node | None) -> Iterator[tuple[int, fdt.Node]]:
    for node in cpus.nodes if cpus is not None else ():
        reg = _words(node, "reg")
        if reg and len(reg) == 1:
            yield reg[0], node


def fixup_user_dtb(blob: bytes, cfg: TreeConfig, source: str = "the -dtb blob") -> bytes:
    """The user's tree with the machine's CPUs, memory, hypervisor, fw_cfg and /chosen.

    ``source`` names the blob in error messages (the CLI passes the file name).
    """
    root, reservations = _parse(blob, source)
    address_cells = _cell_count(root, "#address-cells", _DEFAULT_ADDRESS_CELLS, source)
    size_cells = _cell_count(root, "#size-cells", _DEFAULT_SIZE_CELLS, source)

    user_cpus = root.get_subnode("cpus")
    cpus = _cpus_node(cfg)
    old_cpus = dict(_user_cpus_by_reg(user_cpus))
    for node in cpus.nodes:
        _inherit_phandles(old_cpus.get(node.get_property("reg").value), node)
    _replace(root, user_cpus, cpus)

    memories = [n for n in root.nodes
                if _strings(n, "device_type") == ["memory"] or n.name.split("@")[0] == "memory"]
    keep = next((n for n in memories if n.name == MEMORY_NODE), memories[0] if memories else None)
    for node in memories:
        if node is not keep:
            root.nodes.remove(node)
    _replace(root, keep, _memory_node(cfg, address_cells, size_cells))

    _replace(root, root.get_subnode(_HYPERVISOR_NODE), _hypervisor_node(cfg))

    fwcfgs = [n for n in root.nodes if P.DT_FWCFG_COMPATIBLE in _strings(n, "compatible")]
    for node in fwcfgs[1:]:
        root.nodes.remove(node)
    _replace(root, fwcfgs[0] if fwcfgs else None, _fwcfg_node(address_cells, size_cells))

    chosen = root.get_subnode("chosen")
    if chosen is None:
        chosen = fdt.Node("chosen")
        root.append(chosen)
    _fill_chosen(chosen, cfg)

    spin = _spin_reservation(cfg)
    covered = any(r["address"] <= spin["address"]
                  and spin["address"] + spin["size"] <= r["address"] + r["size"]
                  for r in reservations)
    if not covered:
        reservations.append(spin)
    return _serialise(root, reservations)


def load_user_dtb(path: str | Path, cfg: TreeConfig) -> bytes:
    """Read ``-dtb FILE`` (refusing oversized files before reading them) and fix it up."""
    p = Path(path)
    try:
        # O_NONBLOCK so that a FIFO nobody writes to reads as empty instead of blocking the
        # open forever; reads block again (a pipe with a writer, e.g. <(dtc ...), still works).
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        with open(fd, "rb") as f:
            blob = f.read(P.DTB_MAX_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read device tree {p}: {exc.strerror}") from None
    if len(blob) > P.DTB_MAX_SIZE:
        raise ConfigError(
            f"device tree {p} is larger than the {P.DTB_MAX_SIZE}-byte device tree window"
        )
    return fixup_user_dtb(blob, cfg, source=f"device tree {p}")
