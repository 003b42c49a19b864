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

``-dtb FILE`` (:mod:`machine.boot.user_dtb`): the user's tree is checked token by token before the
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

from dataclasses import dataclass
from typing import Any, Final

import fdt
from construct import Int32ub, Struct

from fwcfg import ConfigError
from machine import platform as P
from machine.boot import dt_platform

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


MEMORY_NODE: Final = f"memory@{P.RAM_BASE:x}"
FWCFG_NODE: Final = f"fw-cfg@{P.FWCFG_BASE:x}"
HYPERVISOR_NODE, _CONSOLE_NODE = P.CONSOLE_PATH.strip("/").split("/")


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


def _hypervisor_node(cfg: TreeConfig, mpic_phandle: int | None = P.DT_MPIC_PHANDLE) -> fdt.Node:
    """``/hypervisor``; the byte channel's interrupts go to the MPIC with ``mpic_phandle``
    (None: a user's tree without one; the channel is then polled)."""
    console = fdt.Node(
        _CONSOLE_NODE,
        fdt.PropStrings("compatible", P.DT_BYTE_CHANNEL_COMPATIBLE),
        fdt.PropWords("reg", P.CONSOLE_HANDLE),
        fdt.PropWords("hv-handle", P.CONSOLE_HANDLE),
        *(dt_platform.byte_channel_interrupts(mpic_phandle) if mpic_phandle else ()),
    )
    return fdt.Node(
        HYPERVISOR_NODE,
        fdt.PropStrings("compatible", *P.DT_HYPERVISOR_COMPATIBLE),
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
        dt_platform.soc_node(),
        dt_platform.aliases_node(),
    )
    _fill_chosen(root.get_subnode("chosen"), cfg)
    return _serialise(root, [_spin_reservation(cfg)])
