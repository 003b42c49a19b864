"""The user's ``-dtb FILE``: checked token by token, then fixed up to this machine.

The blob is checked before the ``fdt`` package sees it (``fdt.parse_dtb`` does no bounds
checking of its own), so a corrupt file is one clear :class:`fwcfg.ConfigError`, never a crash;
then the nodes the machine owns (memory, CPUs, hypervisor, chosen, fw_cfg) are replaced by its
own (machine/boot/devicetree.py builds them), and everything else is the user's.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import fdt
from construct import ConstructError

from fwcfg import ConfigError
from machine import platform as P
from machine.boot.devicetree import (
    FDT_HEADER_SIZE,
    FDT_LAST_COMP_VERSION,
    FDT_MAGIC,
    FDT_MAX_DEPTH,
    FDT_MAX_SIBLING_WORK,
    FDT_VERSION,
    HYPERVISOR_NODE,
    MEMORY_NODE,
    FdtHeader,
    TreeConfig,
    _cpus_node,
    _fill_chosen,
    _fwcfg_node,
    _hypervisor_node,
    _memory_node,
    _put,
    _serialise,
    _spin_reservation,
)

_BEGIN_NODE, _END_NODE, _PROP, _NOP, _END = 1, 2, 3, 4, 9
#: The devicetree specification's default cell counts when a parent does not say.
_DEFAULT_ADDRESS_CELLS: Final = 2
_DEFAULT_SIZE_CELLS: Final = 1
_PHANDLE_PROPS: Final = ("phandle", "linux,phandle")

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


def _mpic_phandle(root: fdt.Node) -> int | None:
    """The phandle of the user's MPIC node (an "fsl,mpic" or "open-pic" interrupt
    controller), for the byte channel's interrupts; None if the tree has none."""
    stack = [root]
    while stack:
        node = stack.pop()
        if "fsl,mpic" in _strings(node, "compatible") or _strings(node, "device_type") == [
                "open-pic"]:
            for name in _PHANDLE_PROPS:
                words = _words(node, name)
                if words:
                    return words[0]
            return None
        stack.extend(node.nodes)
    return None


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

    _replace(root, root.get_subnode(HYPERVISOR_NODE),
             _hypervisor_node(cfg, _mpic_phandle(root)))

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
