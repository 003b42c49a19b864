"""The ``fwcfg-e500`` command, spelled like QEMU so that one script can drive either.

Options use QEMU's single-dash long spelling (``-m 256``, ``-smp 4``, ``-fw_cfg name=opt/x,...``,
``-qtest stdio``); this machine's own additions use double dashes (``--direct``, ``--trace``).
Every bad option or host file ends the command with one line on stderr and exit status 2;
nothing a user types produces a traceback.

Two modes: ``-qtest`` builds the same machine and serves QEMU's qtest protocol over its address
map without running any CPU (:func:`run_qtest`, what the differential tests drive); otherwise
the machine boots (:func:`boot`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

import trio

from fwcfg import ConfigError, Event, FwCfgOption, parse_fw_cfg_option
from machine import platform
from machine.board import E500Machine, MachineConfig, RunResult
from machine.bus import CcsrWindow, RomImage, e500_address_map
from machine.debug.qtest import IrqInputs, QtestServer, VirtualClock, open_chardev, serve
from machine.devices.mpic_regs import N_IRQS
from machine.events import Event as MachineEvent

PROG = "fwcfg-e500"
#: Where QEMU's ppce500 puts its MPIC in the QOM tree (qtest's set_irq_in names it so).
QTEST_PIC_PATH = "/machine/pic"

_SIZE_RE = re.compile(r"^(?:size=)?(\d+)([kKmMgGtT]?)[bB]?$")
_UNITS = {"": platform.MiB, "k": platform.KiB, "m": platform.MiB, "g": platform.GiB,
          "t": 1024 * platform.GiB}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one line (raised, printed by :func:`main`)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command line, in QEMU's spelling."""
    p = _Parser(prog=PROG, allow_abbrev=False,
                description="An emulated PowerPC e500 machine booted through fw_cfg.")
    p.add_argument("-m", dest="memory", metavar="SIZE", default=None,
                   help="RAM size, MiB unless suffixed with K/M/G (default 256M)")
    p.add_argument("-smp", dest="smp", metavar="N", default="1",
                   help="number of CPUs, N or cpus=N[,maxcpus=M] (1..32)")
    p.add_argument("-kernel", metavar="FILE", help="kernel image (ELF, uImage or raw)")
    p.add_argument("-initrd", metavar="FILE", help="initial ramdisk")
    p.add_argument("-append", metavar="CMDLINE", default="", help="kernel command line")
    p.add_argument("-dtb", metavar="FILE", help="use this device tree instead of generating one")
    p.add_argument("-bios", metavar="FILE", help="firmware ELF for the boot ROM")
    p.add_argument("-fw_cfg", dest="fw_cfg", action="append", default=[],
                   metavar="[name=]NAME,file=PATH|string=TEXT",
                   help="add a fw_cfg file (repeatable)")
    p.add_argument("-uuid", metavar="UUID", help="machine UUID (fw_cfg key 0x0002)")
    p.add_argument("-S", dest="stopped", action="store_true",
                   help="do not start the CPUs (qtest mode never starts them)")
    p.add_argument("-qtest", metavar="CHARDEV",
                   help="serve the qtest protocol on 'stdio' or 'unix:PATH[,server=on]'")
    p.add_argument("-no-reboot", dest="no_reboot", action="store_true",
                   help="exit (status 0) when the guest resets instead of restarting it")
    p.add_argument("-nographic", action="store_true", help="accepted for QEMU compatibility")
    p.add_argument("-display", metavar="none", help="accepted for QEMU compatibility")
    p.add_argument("-nodefaults", action="store_true", help="accepted for QEMU compatibility")
    p.add_argument("-s", dest="gdb_default", action="store_true",
                   help="shorthand for -gdb tcp::1234")
    p.add_argument("-gdb", metavar="DEV", help="wait for a gdb connection on DEV")
    p.add_argument("--direct", action="store_true",
                   help="load kernel and device tree directly into RAM (no firmware)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop the machine after this long")
    p.add_argument("--trace", action="store_true", help="print machine events on stderr")
    p.add_argument("--trace-file", metavar="FILE", help="write machine events to FILE")
    p.add_argument("--demo", action="store_true", help="boot the bundled demo guest")
    return p


def parse_memory(text: str | None) -> int:
    """``-m``: QEMU's size spelling (MiB by default), checked against PLATFORM.md limits."""
    if text is None:
        return platform.DEFAULT_RAM_SIZE
    match = _SIZE_RE.match(text.strip())
    if match is None:
        raise ConfigError(f"-m {text!r} is not a size (e.g. 256, 512M, 1G)")
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if not platform.MIN_RAM_SIZE <= size <= platform.MAX_RAM_SIZE:
        raise ConfigError(
            f"-m {text!r}: RAM must be between {platform.MIN_RAM_SIZE // platform.MiB} MiB"
            f" and {platform.MAX_RAM_SIZE // platform.MiB} MiB"
        )
    if size % platform.RAM_ALIGN:
        raise ConfigError(f"-m {text!r}: RAM must be a multiple of {platform.RAM_ALIGN} bytes")
    return size


def parse_smp(text: str) -> tuple[int, int]:
    """``-smp``: ``N`` or ``cpus=N[,maxcpus=M]`` -> (cpus, max_cpus)."""
    values: dict[str, str] = {}
    for index, part in enumerate(text.split(",")):
        key, sep, value = part.partition("=")
        if not sep and index == 0:
            key, value = "cpus", part
        if key not in ("cpus", "maxcpus", "sockets", "cores", "threads"):
            raise ConfigError(f"-smp {text!r}: unknown parameter {key!r}")
        values[key] = value
    try:
        cpus = int(values.get("cpus", "1"))
        max_cpus = int(values.get("maxcpus", str(cpus)))
    except ValueError:
        raise ConfigError(f"-smp {text!r} is not a CPU count") from None
    for what, n in (("CPU count", cpus), ("maxcpus", max_cpus)):
        if not platform.MIN_CPUS <= n <= platform.MAX_CPUS:
            raise ConfigError(
                f"-smp {text!r}: {what} {n} is outside {platform.MIN_CPUS}..{platform.MAX_CPUS}"
            )
    if max_cpus < cpus:
        raise ConfigError(f"-smp {text!r}: maxcpus {max_cpus} is below the CPU count {cpus}")
    return cpus, max_cpus


def parse_fw_cfg_options(texts: Sequence[str]) -> list[FwCfgOption]:
    return [parse_fw_cfg_option(t) for t in texts]


def run_qtest(args: argparse.Namespace, trace: TextIO | None) -> int:
    """Serve qtest over the machine a boot would build; no CPU ever runs.

    The machine is :class:`E500Machine` from the same options (:func:`machine_config`), so
    the port sees what a guest would: its RAM, its fw_cfg front end (the very object the vCPUs
    use: the kernel, command line, initrd and etc/fdt items of a boot), the boot ROM and the
    CCSR block.  The platform devices run on a virtual clock that starts at 0 and moves only
    through clock_step/clock_set, as QEMU's does under qtest; ``set_irq_in /machine/pic``
    drives MPIC sources.
    """
    # --trace-file here is qtest's own trace (one fw_cfg event a line, opened by main), not the
    # machine's timeline: no CPU runs, so a boot's trace would be empty.
    machine = E500Machine(dataclasses.replace(machine_config(args), trace_file=None))
    for warning in machine.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)

    def on_event(event: Event) -> None:
        if trace is not None:
            print(event, file=trace, flush=True)

    ccsr = machine.ccsr
    clock = VirtualClock(ccsr.next_deadline_ns, ccsr.service)
    machine.use_virtual_clock(clock.now)

    def set_mpic_source(irq: int, level: bool) -> None:
        with ccsr.lock:
            ccsr.mpic.set_source(irq, level)

    amap = e500_address_map(machine.ram, machine.fwcfg_mmio,
                            rom=RomImage(machine.images.rom, platform.ROM_BASE),
                            ccsr=CcsrWindow(ccsr))
    server = QtestServer(amap, on_event=on_event, clock=clock,
                         irq_inputs={QTEST_PIC_PATH: IrqInputs(N_IRQS, set_mpic_source)})
    try:
        with open_chardev(args.qtest) as (rfile, wfile):
            serve(server, rfile, wfile)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        machine.close()
        machine.fwcfg.close()
    return 0


# --- booting ---------------------------------------------------------------------------------


def machine_config(args: argparse.Namespace) -> MachineConfig:
    """The machine the options describe (host-side checks happen when it is built)."""
    cpus, _max_cpus = parse_smp(args.smp)
    kernel = args.kernel
    if args.demo and kernel is None:
        from machine.boot.guest import DEMO_ELF

        kernel = str(DEMO_ELF)
    return MachineConfig(
        ram_size=parse_memory(args.memory),
        smp=cpus,
        kernel=Path(kernel) if kernel else None,
        initrd=Path(args.initrd) if args.initrd else None,
        append=args.append,
        dtb=Path(args.dtb) if args.dtb else None,
        bios=Path(args.bios) if args.bios else None,
        fw_cfg=parse_fw_cfg_options(args.fw_cfg),
        direct=args.direct,
        no_reboot=args.no_reboot,
        uuid=args.uuid,
        trace_file=Path(args.trace_file) if args.trace_file else None,
    )


def boot(args: argparse.Namespace) -> int:
    """Build the machine, boot it with the console on stdout/stdin, return the exit status.

    The status is FW_POWEROFF's code (modulo 256, as for any process); a guest fault is 125
    and a ``--timeout`` is 124, each with a message on stderr that says where the CPUs were.
    """
    machine = E500Machine(machine_config(args))
    for warning in machine.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    out = sys.stdout.buffer

    def on_console(_cpu: int, data: bytes) -> None:
        out.write(data)
        out.flush()

    machine.console.add_listener(on_console)
    if args.trace:
        def on_event(event: MachineEvent) -> None:
            print(f"[{event.time:10.6f}] {event.describe()}", file=sys.stderr, flush=True)

        machine.events.subscribe(on_event)
    try:
        result = trio.run(_boot_main, machine, args)
    finally:
        machine.close()
    if result.fault is not None or (result.code == 124 and "timeout" in result.reason):
        print(f"{PROG}: {result.reason}", file=sys.stderr)
    return result.code & 0xFF


async def _boot_main(machine: E500Machine, args: argparse.Namespace) -> RunResult:
    from machine.debug.gdbstub import DEFAULT_GDB_ADDRESS, listen, run_with_gdb

    gdb = args.gdb or (DEFAULT_GDB_ADDRESS if args.gdb_default else None)
    if args.stopped and gdb is None:
        raise ConfigError("-S holds the CPUs for a debugger: add -s or -gdb tcp::PORT")
    # Bound before the nursery opens: a port in use is a ConfigError, not an exception group.
    listeners = await listen(gdb) if gdb else None
    if gdb is not None:
        where = gdb.split(":")[-1]
        print(f"{PROG}: waiting for gdb on port {where}" if args.stopped
              else f"{PROG}: gdb stub on port {where}", file=sys.stderr, flush=True)
    async with trio.open_nursery() as nursery:
        if _stdin_is_readable():
            nursery.start_soon(_pump_stdin, machine)
        if listeners is not None:
            result = await run_with_gdb(machine, listeners, wait_for_debugger=args.stopped,
                                        timeout=args.timeout)
        else:
            result = await machine.run(timeout=args.timeout)
        nursery.cancel_scope.cancel()
    return result


def _stdin_is_readable() -> bool:
    try:
        return (sys.stdin is not None and not sys.stdin.closed and os.isatty(0)) or (
            sys.stdin is not None and stat.S_ISFIFO(os.fstat(0).st_mode)
        )
    except (OSError, ValueError):
        return False


async def _pump_stdin(machine: E500Machine) -> None:
    """Console input: stdin bytes become EV_BYTE_CHANNEL_RECEIVE data."""
    stream = trio.lowlevel.FdStream(os.dup(0))
    async with stream:
        while data := await stream.receive_some(4096):
            machine.console.feed(data)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fwcfg-e500`` and ``python -m machine``; returns the exit status."""
    trace_file: TextIO | None = None
    try:
        args = build_parser().parse_args(argv)
        if args.qtest is None:
            return boot(args)
        if args.trace_file:
            try:
                trace_file = open(args.trace_file, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as err:
                raise ConfigError(
                    f"--trace-file {args.trace_file!r} cannot be written: {err.strerror}"
                ) from None
        trace = trace_file if trace_file is not None else (sys.stderr if args.trace else None)
        return run_qtest(args, trace)
    except (ConfigError, _UsageError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if trace_file is not None:
            trace_file.close()
