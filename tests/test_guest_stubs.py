"""The guest stubs: the shipped images rebuild byte for byte, and the firmware boots to PLATFORM.md.

The firmware is exercised the way a user meets it: as the default ``-bios`` of a real machine,
booting the demo kernel (which reports the registers every CPU entered with), booting a small
kernel that probes the spin-table protocol, and on machines whose fw_cfg lacks something the
firmware needs.  Expected values come from ``machine/platform.py`` and the images' own symbols.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from fwcfg import DmaControl, Key
from machine import platform as P
from machine.board import E500Machine, MachineConfig
from machine.boot import images as boot
from machine.boot.guest import DEMO_ELF, FIRMWARE_ELF, FirmwareExit
from machine.boot.loader import load_kernel
from machine.events import (
    CpuReleased,
    Event,
    FwCfgDma,
    FwCfgSelect,
    Hypercall,
    Reset,
)

REPO = Path(__file__).resolve().parent.parent
STUBS = REPO / "guest-stubs"
CROSS = "powerpc-linux-gnu-"
HAVE_CROSS = all(shutil.which(CROSS + t) for t in ("gcc", "as", "ld", "objcopy"))


def symbols(path: Path) -> dict[str, int]:
    with path.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection), f"{path.name} has no symbol table"
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


def load_segments(path: Path) -> list[tuple[int, int, int]]:
    """(physical address, memory size, flags) of every PT_LOAD segment."""
    with path.open("rb") as f:
        return [(s["p_paddr"], s["p_memsz"], s["p_flags"]) for s in ELFFile(f).iter_segments()
                if s["p_type"] == "PT_LOAD"]


# --- the images ---------------------------------------------------------------------------------


@pytest.mark.cross
@pytest.mark.skipif(not HAVE_CROSS, reason="powerpc-linux-gnu cross tools not installed")
def test_shipped_images_are_exactly_what_the_sources_build(tmp_path: Path) -> None:
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(
        ["make", "-s", "-C", str(STUBS), f"O={tmp_path}", f"PYTHON={sys.executable}"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for shipped in (FIRMWARE_ELF, DEMO_ELF):
        rebuilt = tmp_path / shipped.name
        assert rebuilt.read_bytes() == shipped.read_bytes(), (
            f"{shipped.name} differs from a fresh build of guest-stubs/: "
            "run `make -C guest-stubs install` and commit the result"
        )


def test_firmware_lives_in_the_boot_rom_and_writes_nothing_there() -> None:
    syms = symbols(FIRMWARE_ELF)
    with FIRMWARE_ELF.open("rb") as f:
        entry = ELFFile(f).header["e_entry"]

    assert entry == syms["_start"] == P.ROM_BASE
    for name in ("secondary_park", "enter_kernel", "fw_main", "fw_fail"):
        assert P.ROM_BASE <= syms[name] < P.ROM_BASE + P.ROM_SIZE, name
    for addr, size, flags in load_segments(FIRMWARE_ELF):
        assert addr >= P.ROM_BASE and addr + size <= P.ROM_BASE + P.ROM_SIZE
        assert not flags & P_FLAGS.PF_W, "the ROM is read-only: no writable segment"


def test_demo_fits_the_mapping_a_released_secondary_gets() -> None:
    """QEMU maps EA 0 -> entry & ~(64 MiB - 1) for a released CPU: the demo lives below 64 MiB."""
    syms = symbols(DEMO_ELF)
    with DEMO_ELF.open("rb") as f:
        entry = ELFFile(f).header["e_entry"]

    assert entry == syms["_start"] == 0
    assert syms["secondary_entry"] < P.SECONDARY_IMA_SIZE
    for addr, size, _ in load_segments(DEMO_ELF):
        assert addr + size <= P.SECONDARY_IMA_SIZE


# --- booting through the firmware ------------------------------------------------------------


@dataclass
class Boot:
    code: int
    reason: str
    console: str
    events: list[Event] = field(default_factory=list)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


async def boot_machine(
    config: MachineConfig,
    *,
    prepare: Callable[[E500Machine], None] | None = None,
    during: Callable[[E500Machine], None] | None = None,
    after: Callable[[E500Machine], None] | None = None,
    timeout: float = 30,
) -> Boot:
    """Runs a machine to power-off; `during` is called every millisecond while it runs and
    `after` once it has stopped (while its RAM is still there)."""
    machine = E500Machine(config)
    if prepare is not None:
        prepare(machine)
    out = bytearray()
    events: list[Event] = []
    machine.console.add_listener(lambda cpu, data: out.extend(data))
    machine.events.subscribe(events.append)
    result = None
    try:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                nonlocal result
                result = await machine.run(timeout=timeout, task_status=task_status)
                nursery.cancel_scope.cancel()

            await nursery.start(run)
            while during is not None:
                during(machine)
                await trio.sleep(0.001)
        if after is not None:
            after(machine)
    finally:
        machine.close()
    assert result is not None
    return Boot(result.code, result.reason, out.decode(errors="replace"), events)


def demo_config(**kw: object) -> MachineConfig:
    return MachineConfig(kernel=DEMO_ELF, **kw)  # type: ignore[arg-type]


def expected_demo_lines(n_cpus: int, ima: int, cmdline: str, ram_mib: int = 256) -> list[str]:
    """What the demo prints (after its banner), from the ePAPR boot state PLATFORM.md promises."""
    lines = [
        f"cmdline: {cmdline}",
        f"memory: {ram_mib} MiB at 0x0",
        f"cpus: {n_cpus} (boot cpu 0, {n_cpus - 1} spin-table)",
        f"cpu 0: r3=fdt r4=0x00000000 r5=0x00000000 r6={P.EPAPR_MAGIC:#010x} r7={ima:#010x} pir=0",
    ]
    for i in range(1, n_cpus):
        lines.append(f"cpu {i}: r3={i:#010x} r4=0x00000000 r5=0x00000000 r6=0x00000000 "
                     f"r7={P.SECONDARY_IMA_SIZE:#010x} pir={i}")
    lines.append("demo: 1 cpu up" if n_cpus == 1 else f"demo: all {n_cpus} cpus up")
    return lines


async def test_firmware_pulls_everything_through_fw_cfg_dma_and_boots_every_cpu() -> None:
    kernel = load_kernel(DEMO_ELF, P.DEFAULT_RAM_SIZE)
    dtb = P.dtb_base(kernel.end)
    park = symbols(FIRMWARE_ELF)["secondary_park"]

    run = await boot_machine(demo_config(smp=4, append="hello world"))

    assert (run.code, run.reason) == (0, "FW_POWEROFF by cpu 0")
    dma = {e.name: e for e in run.of(FwCfgDma) if e.op == "read"}
    assert (dma["kernel_data"].address, dma["kernel_data"].length) == (kernel.load_addr,
                                                                       kernel.size)
    fdt = dma[P.FDT_FILE_NAME]
    assert fdt.address == dtb and not any(e.error for e in run.of(FwCfgDma))
    # CPU 0 sends each secondary to the park code with its own entry; each parks on that
    # entry's low word until the demo's release (whose effect is the "cpu N" lines below).
    released = {(e.cpu, e.by, e.entry, e.r3) for e in run.of(CpuReleased)}
    assert released == {(i, "FW_CPU_RELEASE", park, P.spin_entry_addr(P.DEFAULT_RAM_SIZE, i))
                        for i in (1, 2, 3)}
    parked_on = {(e.cpu, e.args[0]) for e in run.of(Hypercall) if e.name == "FW_WAIT_STORE"}
    for i in (1, 2, 3):
        assert (i, P.spin_entry_addr(P.DEFAULT_RAM_SIZE, i) + P.SPIN_ENTRY_ADDR_LO) in parked_on
    lines = run.console.splitlines()
    assert lines[0] == "demo: ePAPR demo kernel on fwcfg-e500"
    assert lines[1:] == expected_demo_lines(4, P.ima_size(dtb + fdt.length), "hello world")


@pytest.mark.parametrize("dma", [True, False], ids=["dma", "data-register"])
async def test_initrd_and_tree_land_byte_exact_where_the_machine_says(
    dma: bool, tmp_path: Path
) -> None:
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(os.urandom(100_003))  # odd length: the word loop and the byte tail
    seen: dict[str, bool] = {}

    def check(m: E500Machine) -> None:
        assert m.images.initrd is not None and m.images.kernel is not None
        i, k = m.images.initrd, m.images.kernel
        seen["initrd"] = m.ram.read(i.addr, i.size) == initrd.read_bytes()
        # the demo has run and written its data and stacks since; its code must be untouched
        code = next(size for addr, size, flags in load_segments(DEMO_ELF)
                    if addr == k.load_addr and not flags & P_FLAGS.PF_W)
        seen["kernel code"] = m.ram.read(k.load_addr, code) == k.data[:code]
        seen["fdt"] = m.ram.read(P.dtb_base(k.end), len(m.images.fdt)) == m.images.fdt

    run = await boot_machine(
        MachineConfig(kernel=DEMO_ELF, initrd=initrd, fwcfg_dma=dma, append="initrd"),
        after=check,
    )
    assert run.code == 0
    assert seen == {"initrd": True, "kernel code": True, "fdt": True}


async def test_without_dma_the_firmware_reads_the_data_register_to_the_same_result() -> None:
    with_dma = await boot_machine(demo_config(smp=2, append="pio"))
    without = await boot_machine(demo_config(smp=2, append="pio", fwcfg_dma=False))

    assert without.code == 0
    assert without.of(FwCfgDma) == []
    assert Key.KERNEL_DATA in {e.key for e in without.of(FwCfgSelect)}
    assert without.console == with_dma.console


async def test_a_single_cpu_machine_boots_without_releasing_anyone() -> None:
    run = await boot_machine(demo_config(smp=1))
    assert run.code == 0
    assert run.of(CpuReleased) == []
    assert run.console.splitlines()[-1] == "demo: 1 cpu up"


async def test_typing_on_the_console_during_boot_does_not_disturb_bring_up() -> None:
    """Console input wakes CPUs in EV_IDLE (the secondaries' power-on loop, the demo's park);
    the firmware treats that as a spurious wake-up and idles again, so nothing changes."""
    quiet = await boot_machine(demo_config(smp=3))
    typed = await boot_machine(demo_config(smp=3), during=lambda m: m.console.feed(b"\n"))

    assert (quiet.code, typed.code) == (0, 0), (quiet.reason, typed.reason)
    assert typed.console == quiet.console
    assert typed.console.splitlines()[-1] == "demo: all 3 cpus up"


def _set(key: int, data: bytes) -> Callable[[E500Machine], None]:
    return lambda m: m.fwcfg.add_bytes(key, data, replace=True)


@pytest.mark.parametrize(
    ("prepare", "kernel", "why"),
    [
        (_set(Key.SIGNATURE, b"QEMX"), DEMO_ELF, FirmwareExit.NO_FWCFG),
        (_set(Key.RAM_SIZE, (8 * P.MiB).to_bytes(8, "little")), DEMO_ELF,
         FirmwareExit.BAD_RAM_SIZE),
        (_set(Key.RAM_SIZE, (4 * P.GiB).to_bytes(8, "little")), DEMO_ELF,
         FirmwareExit.BAD_RAM_SIZE),
        (_set(Key.NB_CPUS, (0).to_bytes(2, "little")), DEMO_ELF, FirmwareExit.BAD_CPU_COUNT),
        (_set(Key.NB_CPUS, (P.MAX_CPUS + 1).to_bytes(2, "little")), DEMO_ELF,
         FirmwareExit.BAD_CPU_COUNT),
        (None, None, FirmwareExit.NO_KERNEL),
        (_set(Key.KERNEL_ADDR, (P.DEFAULT_RAM_SIZE - 64 * P.KiB).to_bytes(4, "little")),
         DEMO_ELF, FirmwareExit.DOES_NOT_FIT),
        (_set(Key.INITRD_SIZE, (1 * P.MiB).to_bytes(4, "little")), DEMO_ELF,
         FirmwareExit.DOES_NOT_FIT),  # INITRD_ADDR is 0: on top of the kernel
    ],
    ids=["bad-signature", "ram-too-small", "ram-over-4g", "no-cpus", "too-many-cpus",
         "no-kernel", "kernel-over-spin-table", "initrd-over-kernel"],
)
async def test_firmware_names_what_is_missing_in_one_line_and_powers_off(
    prepare: Callable[[E500Machine], None] | None, kernel: Path | None, why: FirmwareExit
) -> None:
    run = await boot_machine(MachineConfig(smp=2, kernel=kernel), prepare=prepare)

    assert run.code == why.value
    assert run.console == why.message + "\n"
    assert run.of(CpuReleased) == [], "nothing is started when the boot cannot complete"


async def test_firmware_without_an_etc_fdt_file_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot, "FDT_FILE_NAME", "etc/not-the-fdt")
    run = await boot_machine(demo_config(smp=2))
    assert run.code == FirmwareExit.NO_FDT
    assert run.console == FirmwareExit.NO_FDT.message + "\n"


# --- the spin-table protocol, probed by a small kernel ------------------------------------------

#: CPU 0 checks its own entry state (r1, r6, r8, r9) and the entry the firmware armed for CPU 1,
#: stores 3 (bit 0 still set: CPU 1 must stay held, and its FW_WAIT_STORE wakes for nothing),
#: waits 10 ms of timebase, then releases CPU 1 with r3 = 0x1234 and checks the registers it
#: entered with.  The power-off code says which check failed (0 = all passed).
PROBE_ASM = r"""
    .text
    .globl _start
_start:
    # the boot CPU's entry state beyond what the demo prints: r1, r6, r8, r9
    lis 10, STACK@h
    ori 10, 10, STACK@l
    li 0, 26
    cmpw 1, 10
    bne 9f
    lis 10, MAGIC@h
    ori 10, 10, MAGIC@l
    li 0, 27
    cmpw 6, 10
    bne 9f
    li 0, 28
    cmpwi 8, 0
    bne 9f
    li 0, 29
    cmpwi 9, 0
    bne 9f

    lis 20, SPIN1@ha
    addi 20, 20, SPIN1@l
    lis 21, flag@ha
    addi 21, 21, flag@l
    lis 22, regs@ha
    addi 22, 22, regs@l

    # the armed entry: entry_addr = 1, r3 = 1, reserved = 0, pir = 1
    lwz 0, 0(20)
    li 3, 20
    cmpwi 0, 0
    bne fail
    lwz 0, 4(20)
    li 3, 21
    cmpwi 0, 1
    bne fail
    lwz 0, 8(20)
    li 3, 22
    cmpwi 0, 0
    bne fail
    lwz 0, 12(20)
    li 3, 23
    cmpwi 0, 1
    bne fail
    lwz 0, 16(20)
    li 3, 24
    cmpwi 0, 0
    bne fail
    lwz 0, 20(20)
    li 3, 25
    cmpwi 0, 1
    bne fail

    # bit 0 still set: CPU 1 must stay where it is
    li 0, 3
    stw 0, 4(20)
    msync
    mfspr 5, 268
1:  mfspr 6, 268
    subf 6, 5, 6
    lis 7, TICKS@h
    ori 7, 7, TICKS@l
    cmplw 6, 7
    blt 1b
    lwz 0, 0(21)
    li 3, 2
    cmpwi 0, 0
    bne fail

    # release it the ePAPR way: r3, then the low word of entry_addr last
    li 0, 0x1234
    stw 0, 12(20)
    msync
    lis 5, secondary@ha
    addi 5, 5, secondary@l
    stw 5, 4(20)
    msync
2:  lwz 4, 0(21)
    cmpwi 4, 0
    bne 3f
    mr 3, 21
    lis 11, WAIT_STORE@h
    ori 11, 11, WAIT_STORE@l
    sc 1
    b 2b

3:  lwz 0, 0(22)
    li 3, 10
    cmpwi 0, 0x1234
    bne fail
    li 8, 4
    li 3, 11
4:  lwzx 0, 22, 8
    cmpwi 3, 14
    bne 5f
    lis 9, IMA@h            # r7
    ori 9, 9, IMA@l
    cmpw 0, 9
    b 6f
5:  cmpwi 0, 0
6:  bne fail
    addi 8, 8, 4
    addi 3, 3, 1
    cmpwi 8, 28
    blt 4b
    li 3, 0
fail:
    lis 11, POWEROFF@h
    ori 11, 11, POWEROFF@l
    sc 1
    b .
9:  mr 3, 0
    b fail

secondary:
    lis 12, regs@ha
    addi 12, 12, regs@l
    stw 3, 0(12)
    stw 4, 4(12)
    stw 5, 8(12)
    stw 6, 12(12)
    stw 7, 16(12)
    stw 8, 20(12)
    stw 9, 24(12)
    msync
    lis 12, flag@ha
    addi 12, 12, flag@l
    li 0, 1
    stw 0, 0(12)
    msync
7:  lis 11, IDLE@h
    ori 11, 11, IDLE@l
    sc 1
    b 7b

    .data
flag: .long 0
regs: .space 28
"""


@pytest.mark.cross
@pytest.mark.skipif(not HAVE_CROSS, reason="powerpc-linux-gnu cross tools not installed")
async def test_a_parked_secondary_stays_held_while_bit_0_is_set(tmp_path: Path) -> None:
    defs = {
        "SPIN1": P.spin_entry_addr(P.DEFAULT_RAM_SIZE, 1),
        "TICKS": P.TIMEBASE_HZ // 100,
        "IMA": P.SECONDARY_IMA_SIZE,
        "STACK": P.DIRECT_BOOT_STACK,
        "MAGIC": P.EPAPR_MAGIC,
        "WAIT_STORE": P.Hcall.FW_WAIT_STORE,
        "POWEROFF": P.Hcall.FW_POWEROFF,
        "IDLE": P.Hcall.EV_IDLE,
    }
    src = tmp_path / "probe.S"
    src.write_text(PROBE_ASM)
    obj, elf = tmp_path / "probe.o", tmp_path / "probe.elf"
    subprocess.run([CROSS + "as", "-me500", *(f"--defsym={k}={int(v)}" for k, v in defs.items()),
                    str(src), "-o", str(obj)], check=True)
    subprocess.run([CROSS + "ld", "-N", "--no-warn-rwx-segments", "-Ttext=0x10000",
                    "-e", "_start", str(obj), "-o", str(elf)], check=True)

    run = await boot_machine(MachineConfig(smp=2, kernel=elf))

    assert run.code == 0, f"probe check {run.code} failed"


async def test_firmware_boot_hands_the_kernel_the_same_state_as_direct_boot() -> None:
    """--direct (the machine loads everything, as QEMU does) and the firmware path must agree."""
    firmware = await boot_machine(demo_config(smp=4, append="same state"))
    direct = await boot_machine(demo_config(smp=4, append="same state", direct=True))

    assert (firmware.code, direct.code) == (0, 0), (firmware.reason, direct.reason)
    assert firmware.console == direct.console


#: First boot: count the boot in a writable fw_cfg file (the one thing that survives FW_RESET),
#: then FW_RESET.  Second boot: the firmware must have parked CPU 1 again, so releasing it
#: through its spin-table entry works; power off with 0 (or the number of the failed check).
RESET_PROBE_ASM = r"""
    .text
    .globl _start
_start:
    lis 20, desc@ha
    addi 20, 20, desc@l
    lis 21, count@ha
    addi 21, 21, count@l
    lis 22, FWCFG@h
    ori 22, 22, FWCFG@l
    lis 0, KEY
    ori 0, 0, SELECT_READ
    bl dma
    lwz 5, 0(21)
    cmpwi 5, 0
    bne second
    li 0, 1
    stw 0, 0(21)
    lis 0, KEY
    ori 0, 0, SELECT_WRITE
    bl dma
    lis 11, RESET@h
    ori 11, 11, RESET@l
    sc 1
    li 3, 31               # FW_RESET came back
    b fail

second:
    lis 20, SPIN1@ha
    addi 20, 20, SPIN1@l
    lwz 0, 4(20)           # armed again after the reset
    li 3, 32
    cmpwi 0, 1
    bne fail
    lis 5, secondary@ha
    addi 5, 5, secondary@l
    stw 5, 4(20)
    msync
    lis 21, flag@ha
    addi 21, 21, flag@l
1:  lwz 4, 0(21)
    cmpwi 4, 0
    bne 2f
    mr 3, 21
    lis 11, WAIT_STORE@h
    ori 11, 11, WAIT_STORE@l
    sc 1
    b 1b
2:  li 3, 0
fail:
    lis 11, POWEROFF@h
    ori 11, 11, POWEROFF@l
    sc 1
    b .

# dma: r0 = control; 4 bytes between the item and `count`; fails with 30 on ERROR
dma:
    stw 0, 0(20)
    li 0, 4
    stw 0, 4(20)
    li 0, 0
    stw 0, 8(20)
    stw 21, 12(20)
    msync
    stw 0, 0x10(22)
    stw 20, 0x14(22)
    msync
    lwz 0, 0(20)
    li 3, 30
    cmpwi 0, 0
    bne fail
    blr

secondary:
    lis 12, flag@ha
    addi 12, 12, flag@l
    li 0, 1
    stw 0, 0(12)
    msync
3:  lis 11, IDLE@h
    ori 11, 11, IDLE@l
    sc 1
    b 3b

    .data
    .balign 16
desc: .space 16
count: .long 0
flag: .long 0
"""


@pytest.mark.cross
@pytest.mark.skipif(not HAVE_CROSS, reason="powerpc-linux-gnu cross tools not installed")
async def test_after_fw_reset_the_firmware_boots_again_and_parks_the_secondaries(
    tmp_path: Path,
) -> None:
    writes: list[tuple[int, bytes]] = []
    key = Key.FILE_FIRST + 1  # after "etc/fdt" in the sorted directory
    defs = {
        "SPIN1": P.spin_entry_addr(P.DEFAULT_RAM_SIZE, 1),
        "KEY": key,
        "SELECT_READ": DmaControl.SELECT | DmaControl.READ,
        "SELECT_WRITE": DmaControl.SELECT | DmaControl.WRITE,
        "FWCFG": P.FWCFG_BASE,
        "RESET": P.Hcall.FW_RESET,
        "WAIT_STORE": P.Hcall.FW_WAIT_STORE,
        "POWEROFF": P.Hcall.FW_POWEROFF,
        "IDLE": P.Hcall.EV_IDLE,
    }
    src, obj, elf = tmp_path / "reset.S", tmp_path / "reset.o", tmp_path / "reset.elf"
    src.write_text(RESET_PROBE_ASM)
    subprocess.run([CROSS + "as", "-me500", *(f"--defsym={k}={int(v)}" for k, v in defs.items()),
                    str(src), "-o", str(obj)], check=True)
    subprocess.run([CROSS + "ld", "-N", "--no-warn-rwx-segments", "-Ttext=0x10000",
                    "-e", "_start", str(obj), "-o", str(elf)], check=True)

    def add_counter(m: E500Machine) -> None:
        added = m.fwcfg.add_file("opt/boots", bytes(4), writable=True,
                                 on_write=lambda offset, data: writes.append((offset, data)))
        assert added == key

    run = await boot_machine(MachineConfig(smp=2, kernel=elf), prepare=add_counter)

    assert run.code == 0, f"reset probe check {run.code} failed"
    assert writes == [(0, (1).to_bytes(4, "big"))], "the first boot counted itself once"
    assert len(run.of(Reset)) == 1
    assert [e.cpu for e in run.of(CpuReleased)] == [1, 1], "FW_CPU_RELEASE once per boot"
