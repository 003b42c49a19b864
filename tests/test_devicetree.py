"""The device tree, read back with Debian's dtc and libfdt tools (code we did not write).

Every generated or fixed-up blob goes through ``dtc -I dtb -O dts`` and must produce no warning;
properties are read with ``fdtget``.
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwcfg import ConfigError
from machine import platform as P
from machine.boot.devicetree import (
    FDT_HEADER_SIZE,
    FdtHeader,
    TreeConfig,
    build_fdt,
)
from machine.boot.user_dtb import fixup_user_dtb, load_user_dtb

MiB = P.MiB

USER_DTS = """/dts-v1/;
/memreserve/ 0x1000000 0x10000;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    compatible = "acme,board";
    model = "user board";

    aliases {
        serial0 = &uart0;
    };

    memory@0 {
        device_type = "memory";
        reg = <0 0 0 0x8000000>;
    };

    memory@10000000 {
        device_type = "memory";
        reg = <0 0x10000000 0 0x8000000>;
    };

    cpus {
        #address-cells = <1>;
        #size-cells = <0>;
        cpu0: PowerPC,8544@0 {
            device_type = "cpu";
            reg = <0>;
        };
    };

    soc@e0000000 {
        #address-cells = <1>;
        #size-cells = <1>;
        compatible = "simple-bus";
        ranges = <0x0 0x0 0xe0000000 0x100000>;

        uart0: serial@4500 {
            compatible = "ns16550";
            reg = <0x4500 0x100>;
            clock-frequency = <400000000>;
        };

        widget@6000 {
            compatible = "acme,widget";
            reg = <0x6000 0x100>;
            acme,owner-cpu = <&cpu0>;
            acme,blob = [01 02 03];
            acme,names = "a", "b";
        };
    };

    chosen {
        bootargs = "user args";
        linux,initrd-start = <0x5000000>;
        linux,initrd-end = <0x5001000>;
        acme,keep = "kept";
    };
};
"""


#: The one complaint dtc has about the machine's tree, as about QEMU ppce500's own: Linux on
#: PowerPC only creates devices under the buses its platform lists, so the gpio-poweroff node
#: sits under the soc simple-bus with no ``reg`` (machine/boot/dt_platform.py).
POWER_OFF_WARNING = (b"Warning (simple_bus_reg): /soc@e0000000/power-off: "
                     b"missing or empty reg/ranges property\n")


def decompile(blob: bytes) -> str:
    """``dtc -I dtb -O dts``: must succeed with nothing on stderr but the power-off node's
    warning (when the tree has that node)."""
    run = subprocess.run(["dtc", "-I", "dtb", "-O", "dts"], input=blob, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stderr.replace(b"<stdout>: ", b"") in (b"", POWER_OFF_WARNING), \
        run.stderr.decode()
    return run.stdout.decode()


def compile_dts(tmp_path: Path, source: str, name: str = "user") -> bytes:
    dts = tmp_path / f"{name}.dts"
    dts.write_text(source)
    run = subprocess.run(["dtc", "-I", "dts", "-O", "dtb", dts], capture_output=True)
    assert run.returncode == 0 and run.stderr == b"", run.stderr.decode()
    return run.stdout


class Fdtget:
    """``fdtget`` on one blob; values as libfdt reads them."""

    def __init__(self, tmp_path: Path, blob: bytes, name: str = "tree.dtb") -> None:
        self.path = tmp_path / name
        self.path.write_bytes(blob)

    def _run(self, *args: str) -> str:
        return subprocess.run(["fdtget", *args], check=True, capture_output=True,
                              text=True).stdout.rstrip("\n")

    def cells(self, node: str, prop: str) -> list[int]:
        return [int(w, 16) for w in self._run("-t", "x", str(self.path), node, prop).split()]

    def string(self, node: str, prop: str) -> str:
        return self._run("-t", "s", str(self.path), node, prop)

    def raw(self, node: str, prop: str) -> bytes:
        return bytes(int(b, 16) for b in self._run("-t", "bx", str(self.path), node, prop).split())

    def props(self, node: str) -> set[str]:
        return set(self._run("-p", str(self.path), node).split())

    def subnodes(self, node: str) -> list[str]:
        return self._run("-l", str(self.path), node).split()


def memreserves(dts: str) -> list[tuple[int, int]]:
    return [(int(a, 16), int(s, 16))
            for a, s in re.findall(r"/memreserve/\s+0x([0-9a-f]+) 0x([0-9a-f]+);", dts)]


def node_block(dts: str, header: str) -> str:
    """The text of one node (found by its header line) up to its closing brace."""
    start = dts.index(header)
    depth = 0
    for i in range(start, len(dts)):
        depth += {"{": 1, "}": -1}.get(dts[i], 0)
        if dts[i] == "}" and depth == 0:
            return dts[start : i + 1]
    raise AssertionError(f"{header} is not closed")


# --- the generated tree -----------------------------------------------------------------------


@pytest.mark.parametrize(("n_cpus", "ram_size"), [(1, 256 * MiB), (2, 64 * MiB), (4, 3 * P.GiB),
                                                  (32, 512 * MiB)])
def test_generated_tree_property_by_property(tmp_path: Path, n_cpus: int, ram_size: int) -> None:
    cfg = TreeConfig(ram_size=ram_size, n_cpus=n_cpus, bootargs="console=hvc0 root=/dev/ram")
    blob = build_fdt(cfg)
    dts = decompile(blob)
    t = Fdtget(tmp_path, blob)

    assert t.cells("/", "#address-cells") == [2]
    assert t.cells("/", "#size-cells") == [2]
    # fdtget prints a string list space-separated; "fsl,qemu-e500" is what Linux's QEMU e500
    # platform probes for.
    assert t.string("/", "compatible") == "fwcfg-e500 fsl,qemu-e500"
    assert t.string("/", "model") == "fwcfg-e500"
    assert t.subnodes("/") == ["memory@0", "cpus", "hypervisor", "chosen", "fw-cfg@f0000000",
                               "soc@e0000000", "aliases"]

    assert t.string("/memory@0", "device_type") == "memory"
    assert t.cells("/memory@0", "reg") == [0, 0, 0, ram_size]

    assert t.cells("/cpus", "#address-cells") == [1]
    assert t.cells("/cpus", "#size-cells") == [0]
    assert t.subnodes("/cpus") == [f"cpu@{i:x}" for i in range(n_cpus)]
    for i in range(n_cpus):
        cpu = f"/cpus/cpu@{i:x}"
        assert t.string(cpu, "device_type") == "cpu"
        assert t.cells(cpu, "reg") == [i]
        assert t.string(cpu, "compatible") == "PowerPC,e500v2"
        assert t.cells(cpu, "clock-frequency") == [400_000_000]
        assert t.cells(cpu, "timebase-frequency") == [400_000_000]
        assert t.cells(cpu, "bus-frequency") == [P.BUS_HZ]
        for cache in ("d", "i"):
            assert t.cells(cpu, f"{cache}-cache-size") == [0x8000]
            assert t.cells(cpu, f"{cache}-cache-line-size") == [32]
        if i == 0:
            assert t.string(cpu, "status") == "okay"
            assert "cpu-release-addr" not in t.props(cpu)
        else:
            assert t.string(cpu, "status") == "disabled"
            assert t.string(cpu, "enable-method") == "spin-table"
            hi, lo = t.cells(cpu, "cpu-release-addr")
            assert (hi << 32 | lo) == ram_size - 4096 + 32 * i == P.spin_entry_addr(ram_size, i)

    assert t.string("/hypervisor", "compatible") == "epapr,hypervisor-1 simple-bus"
    assert t.cells("/hypervisor", "hcall-instructions") == [0x44000022]
    assert t.cells("/hypervisor", "guest-id") == [0]
    assert t.string("/hypervisor", "guest-name") == "fwcfg-e500"
    assert t.raw("/hypervisor", "has-idle") == b""
    console = "/hypervisor/byte-channel@0"
    assert t.string(console, "compatible") == "epapr,hv-byte-channel"
    assert t.cells(console, "hv-handle") == [0]
    assert t.cells(console, "reg") == [0]
    # ehv_bytechan's rx and tx interrupts, level, on the MPIC
    assert t.cells(console, "interrupts") == [P.BYTE_CHANNEL_RX_IRQ, 2, P.BYTE_CHANNEL_TX_IRQ, 2]
    assert t.cells(console, "interrupt-parent") == t.cells("/soc@e0000000/pic@40000", "phandle")

    # The platform devices at QEMU ppce500's CCSR offsets, with the CCSR block at 0xE000_0000.
    soc = "/soc@e0000000"
    assert t.string(soc, "compatible") == "fsl,mpc8544-immr simple-bus"
    assert t.cells(soc, "ranges") == [0, 0, 0xE000_0000, 0x10_0000]
    assert t.subnodes(soc) == ["pic@40000", "msi@41600", "serial@4500", "global-utilities@e0000",
                               "gpio@ff000", "power-off"]
    pic = f"{soc}/pic@40000"
    assert t.string(pic, "compatible") == "fsl,mpic"
    assert t.string(pic, "device_type") == "open-pic"
    assert t.cells(pic, "reg") == [0x40000, 0x40000]
    assert t.cells(pic, "#interrupt-cells") == [2]
    assert t.raw(pic, "interrupt-controller") == b""
    assert t.cells(f"{soc}/serial@4500", "interrupts") == [42, 2]
    assert t.string(f"{soc}/serial@4500", "compatible") == "ns16550"
    guts = f"{soc}/global-utilities@e0000"
    assert t.string(guts, "compatible") == "fsl,mpc8544-guts fsl,p2020-guts"
    assert t.raw(guts, "fsl,has-rstcr") == b""
    assert t.cells(f"{soc}/gpio@ff000", "interrupts") == [47, 2]
    assert t.cells(f"{soc}/power-off", "gpios") == [*t.cells(f"{soc}/gpio@ff000", "phandle"), 0, 0]
    assert t.string("/aliases", "serial0") == f"{soc}/serial@4500"

    assert t.string("/chosen", "bootargs") == "console=hvc0 root=/dev/ram"
    assert t.string("/chosen", "stdout-path") == console
    assert t.props("/chosen") == {"bootargs", "stdout-path"}

    assert t.string("/fw-cfg@f0000000", "compatible") == "qemu,fw-cfg-mmio"
    assert t.cells("/fw-cfg@f0000000", "reg") == [0, 0xF000_0000, 0, 0x18]
    assert t.raw("/fw-cfg@f0000000", "dma-coherent") == b""

    assert memreserves(dts) == [(ram_size - 4096, 4096)]
    header = FdtHeader.parse(blob[:FDT_HEADER_SIZE])
    assert (header.version, header.boot_cpuid_phys, header.totalsize) == (17, 0, len(blob))


def test_initrd_is_described_with_single_cells(tmp_path: Path) -> None:
    cfg = TreeConfig(ram_size=256 * MiB, n_cpus=1, initrd=(64 * MiB, 64 * MiB + 12345))
    t = Fdtget(tmp_path, build_fdt(cfg))
    decompile(build_fdt(cfg))
    assert t.cells("/chosen", "linux,initrd-start") == [64 * MiB]
    assert t.cells("/chosen", "linux,initrd-end") == [64 * MiB + 12345]


@pytest.mark.parametrize("bootargs", ["", "console=hvc0 name=café", "a\tb"])
def test_any_command_line_is_one_nul_terminated_string(tmp_path: Path, bootargs: str) -> None:
    blob = build_fdt(TreeConfig(ram_size=256 * MiB, n_cpus=2, bootargs=bootargs))
    decompile(blob)
    assert Fdtget(tmp_path, blob).raw("/chosen", "bootargs") == bootargs.encode() + b"\0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_cpus=0), r"0 CPUs requested; fwcfg-e500 has 1 to 32"),
        (dict(n_cpus=33), r"33 CPUs requested"),
        (dict(ram_size=256 * MiB + 100), r"RAM size 0x10000064 is not a multiple of 0x1000"),
        (dict(ram_size=4 * P.GiB), r"RAM size 0x100000000"),
        (dict(bootargs="a\0b"), r"command line contains a NUL"),
        (dict(initrd=(0x100, 0x10)), r"initrd range 0x100-0x10 is not inside RAM"),
    ],
)
def test_impossible_configurations_are_config_errors(kwargs: dict[str, object],
                                                     message: str) -> None:
    args: dict[str, object] = {"ram_size": 256 * MiB, "n_cpus": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        TreeConfig(**args)  # type: ignore[arg-type]


def test_an_oversized_command_line_does_not_fit_the_window() -> None:
    cfg = TreeConfig(ram_size=256 * MiB, n_cpus=1, bootargs="x" * P.DTB_MAX_SIZE)
    with pytest.raises(ConfigError, match=r"the device tree is \d+ bytes; at most 8388608"):
        build_fdt(cfg)


# --- the user's -dtb --------------------------------------------------------------------------


def test_user_tree_round_trips_with_the_machine_filled_in(tmp_path: Path) -> None:
    user = compile_dts(tmp_path, USER_DTS)
    before = decompile(user)
    cfg = TreeConfig(ram_size=256 * MiB, n_cpus=2, bootargs="console=hvc0")
    fixed = fixup_user_dtb(user, cfg)
    after = decompile(fixed)
    t = Fdtget(tmp_path, fixed)

    # The user's own nodes are untouched, byte for byte as dtc prints them.
    for header in ("soc@e0000000 {", "aliases {"):
        assert node_block(after, header) == node_block(before, header)
    assert t.string("/", "model") == "user board"
    assert t.string("/", "compatible") == "acme,board"

    # The machine's RAM replaces every memory node.
    assert [n for n in t.subnodes("/") if n.startswith("memory")] == ["memory@0"]
    assert t.cells("/memory@0", "reg") == [0, 0, 0, 256 * MiB]

    # The machine's CPUs replace the user's, and references to the user's cpu0 still resolve.
    assert t.subnodes("/cpus") == ["cpu@0", "cpu@1"]
    assert t.cells("/cpus/cpu@1", "cpu-release-addr") == [0, P.spin_entry_addr(256 * MiB, 1)]
    assert t.cells("/soc@e0000000/widget@6000", "acme,owner-cpu") == t.cells("/cpus/cpu@0",
                                                                             "phandle")

    # /chosen: the machine's command line and console; the stale initrd goes, the rest stays.
    assert t.string("/chosen", "bootargs") == "console=hvc0"
    assert t.string("/chosen", "stdout-path") == "/hypervisor/byte-channel@0"
    assert t.string("/chosen", "acme,keep") == "kept"
    assert t.props("/chosen") == {"bootargs", "stdout-path", "acme,keep"}

    assert t.cells("/hypervisor", "hcall-instructions") == [0x44000022]
    assert t.cells("/fw-cfg@f0000000", "reg") == [0, 0xF000_0000, 0, 0x18]
    assert memreserves(after) == [(0x1000000, 0x10000), (256 * MiB - 4096, 4096)]
    assert FdtHeader.parse(fixed[:FDT_HEADER_SIZE]).boot_cpuid_phys == 0


def test_user_tree_with_one_cell_addresses(tmp_path: Path) -> None:
    source = """/dts-v1/;
/ {
    #address-cells = <1>;
    #size-cells = <1>;
    compatible = "acme,small";
    model = "small";
    fw-cfg@f0000000 {
        compatible = "qemu,fw-cfg-mmio";
        reg = <0xf0000000 0x100>;
    };
};
"""
    cfg = TreeConfig(ram_size=3 * P.GiB, n_cpus=4, initrd=(64 * MiB, 65 * MiB))
    fixed = fixup_user_dtb(compile_dts(tmp_path, source), cfg)
    decompile(fixed)
    t = Fdtget(tmp_path, fixed)
    assert t.cells("/memory@0", "reg") == [0, 3 * P.GiB]
    assert t.cells("/fw-cfg@f0000000", "reg") == [0xF000_0000, 0x18]
    assert "dma-coherent" in t.props("/fw-cfg@f0000000")
    assert t.cells("/chosen", "linux,initrd-start") == [64 * MiB]
    assert t.subnodes("/cpus") == ["cpu@0", "cpu@1", "cpu@2", "cpu@3"]


def test_fixing_up_the_machines_own_tree_changes_nothing() -> None:
    cfg = TreeConfig(ram_size=128 * MiB, n_cpus=8, bootargs="quiet", initrd=(64 * MiB, 70 * MiB))
    blob = build_fdt(cfg)
    assert fixup_user_dtb(blob, cfg) == blob


def test_user_reservations_do_not_leak_into_later_trees(tmp_path: Path) -> None:
    fixup_user_dtb(compile_dts(tmp_path, USER_DTS), TreeConfig(ram_size=256 * MiB, n_cpus=1))
    dts = decompile(build_fdt(TreeConfig(ram_size=256 * MiB, n_cpus=1)))
    assert memreserves(dts) == [(256 * MiB - 4096, 4096)]


def test_load_user_dtb_reads_the_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "board.dtb"
    path.write_bytes(compile_dts(tmp_path, USER_DTS))
    cfg = TreeConfig(ram_size=256 * MiB, n_cpus=1)
    assert load_user_dtb(path, cfg) == fixup_user_dtb(path.read_bytes(), cfg)
    with pytest.raises(ConfigError, match=r"cannot read device tree .*/missing.dtb: No such file"):
        load_user_dtb(tmp_path / "missing.dtb", cfg)
    path.write_bytes(b"not a tree")
    with pytest.raises(ConfigError, match=rf"device tree {path} is not a usable device tree blob: "
                                          r"only 10 bytes"):
        load_user_dtb(path, cfg)


def _patch(blob: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def _struct_offset(blob: bytes) -> int:
    return int(FdtHeader.parse(blob[:FDT_HEADER_SIZE]).off_dt_struct)


CORRUPTIONS = [
    ("bad magic", lambda b: _patch(b, 0, ">I", 0xFEEDD00D), r"bad magic 0xfeedd00d"),
    ("truncated", lambda b: b[: len(b) // 2], r"truncated: the header says \d+ bytes"),
    ("old version", lambda b: _patch(b, 20, ">II", 3, 2), r"format version 3"),
    ("struct outside", lambda b: _patch(b, 8, ">I", 0x7FFF_0000), r"block offsets or sizes"),
    ("unknown token", lambda b: _patch(b, _struct_offset(b), ">I", 7), r"unknown token 0x7"),
    ("early end", lambda b: _patch(b, _struct_offset(b), ">I", 9), r"FDT_END .* inside an open"),
    ("stray end node", lambda b: _patch(b, _struct_offset(b), ">I", 2), r"unbalanced end of node"),
    ("name offset", lambda b: _patch(b, _struct_offset(b) + 16, ">I", 0xFFFF),
     r"outside the strings block"),
    ("bad node name", lambda b: b.replace(b"widget@6000", b"wid*et@6000"),
     r"bad node name 'wid\*et@6000'"),
    ("two @", lambda b: b.replace(b"widget@6000", b"widget@6@00"), r"bad node name 'widget@6@00'"),
    ("bad property name", lambda b: b.replace(b"acme,keep", b"acme;keep"),
     r"bad property name 'acme;keep'"),
    ("shared phandle", lambda b: b.replace(b"acme,owner-cpu", b"phandle\0owner-cpu"),
     r"phandle 0x1 is given to both /cpus/PowerPC,8544@0 and /soc@e0000000/widget@6000"),
    ("no terminator", lambda b: _patch(b, 16, ">I", len(b) - 16),
     r"block offsets|reservation map is not terminated"),
]


@pytest.mark.parametrize(("corrupt", "message"), [c[1:] for c in CORRUPTIONS],
                         ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_user_trees_name_the_problem(
    tmp_path: Path, corrupt: Callable[[bytes], bytes], message: str
) -> None:
    blob = corrupt(compile_dts(tmp_path, USER_DTS))
    expected = "board.dtb is not a usable device tree blob: .*" + message
    with pytest.raises(ConfigError, match=expected):
        fixup_user_dtb(blob, TreeConfig(ram_size=256 * MiB, n_cpus=1), source="board.dtb")


def test_huge_user_tree_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(bytes(P.DTB_MAX_SIZE))
    source = USER_DTS.replace('model = "user board";', 'model = "user board";\n'
                              '    acme,firmware = /incbin/("big.bin");')
    blob = compile_dts(tmp_path, source)
    with pytest.raises(ConfigError, match=r"more than the 8388608-byte device tree window"):
        fixup_user_dtb(blob, TreeConfig(ram_size=256 * MiB, n_cpus=1))
    path = tmp_path / "big.dtb"
    path.write_bytes(blob)
    with pytest.raises(ConfigError, match=r"big.dtb is larger than the 8388608-byte"):
        load_user_dtb(path, TreeConfig(ram_size=256 * MiB, n_cpus=1))


def test_absurdly_deep_user_tree_is_refused(tmp_path: Path) -> None:
    nested = "".join(f"n{i} {{ " for i in range(80)) + "};" * 80
    blob = compile_dts(tmp_path, f"/dts-v1/;\n/ {{ {nested} }};\n")
    with pytest.raises(ConfigError, match=r"nested deeper than 64 levels"):
        fixup_user_dtb(blob, TreeConfig(ram_size=256 * MiB, n_cpus=1))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_user_trees_are_refused_or_fixed_never_crashed(
    tmp_path: Path, data: st.DataObject
) -> None:
    blob = bytearray(compile_dts(tmp_path, USER_DTS))
    for _ in range(data.draw(st.integers(1, 6))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        fixed = fixup_user_dtb(bytes(blob), TreeConfig(ram_size=256 * MiB, n_cpus=2))
    except ConfigError:
        return
    run = subprocess.run(["dtc", "-I", "dtb", "-O", "dts"], input=fixed, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()
