"""Example 2: a firmware developer's loop — rebuild a stub, boot it with extra fw_cfg files,
read back what it wrote.

The stub (``examples/stub/``) looks for ``opt/greeting`` in the fw_cfg directory, answers into
the host's writable ``opt/reply`` with a DMA WRITE, prints the answer and powers off with its
length.  This script:

1. rebuilds the stub when a source is newer than the ELF (the ABI numbers come from
   ``machine.platform`` and ``fwcfg`` as ``-D`` flags, so nothing is spelled twice);
2. boots it as the boot ROM with ``-fw_cfg name=opt/greeting,string=...`` and a writable file;
3. checks the console line, the bytes that arrived in ``opt/reply`` and the fw_cfg events.

Run: ``python examples/firmware_loop.py "some greeting"`` (needs powerpc-linux-gnu-gcc).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from fwcfg import DmaControl, FwCfgOption, Key
from machine.api import E500Machine, FwCfgDma
from machine.platform import FWCFG_BASE, EvStatus, Hcall

STUB = Path(__file__).resolve().parent / "stub"
SOURCES = [STUB / "start.S", STUB / "reply.c"]
CC = "powerpc-linux-gnu-gcc"
#: As guest-stubs/Makefile: e500v2 is 32-bit Book E, big-endian, without a classic FPU.
ARCH = ["-mcpu=8548", "-mbig-endian", "-m32", "-msoft-float", "-msdata=none", "-G", "0"]
CFLAGS = ["-std=gnu11", "-O2", "-ffreestanding", "-fno-builtin", "-fno-pic", "-fno-pie",
          "-fno-stack-protector", "-fno-tree-loop-distribute-patterns", "-Wall", "-Werror"]
LDFLAGS = ["-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none",
           "-Wl,--no-warn-rwx-segments", "-Wl,-N", "-Wl,-Ttext=0xfff00000", "-Wl,-e,_start"]


def abi_defines() -> list[str]:
    """The machine's numbers, handed to the stub's compiler."""
    values = {f"HC_{h.name}": int(h) for h in Hcall}
    values |= {
        "FWCFG_BASE": FWCFG_BASE,
        "EV_EAGAIN": int(EvStatus.EAGAIN),
        "FW_CFG_FILE_DIR": int(Key.FILE_DIR),
        "FW_CFG_DMA_ERROR": int(DmaControl.ERROR),
        "FW_CFG_DMA_SELECT": int(DmaControl.SELECT),
        "FW_CFG_DMA_WRITE": int(DmaControl.WRITE),
    }
    return [f"-D{name}={value:#x}" for name, value in values.items()]


def build(out_dir: Path) -> Path:
    """Rebuild the stub if any source is newer than the ELF (what ``make`` would do)."""
    elf = out_dir / "reply-stub.elf"
    if elf.exists() and all(s.stat().st_mtime <= elf.stat().st_mtime for s in SOURCES):
        return elf
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [CC, *ARCH, *CFLAGS, *abi_defines(), *LDFLAGS, "-o", str(elf), *map(str, SOURCES)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"building the stub failed:\n{proc.stderr}")
    print(f"built {elf}")
    return elf


async def boot_stub(elf: Path, greeting: str) -> tuple[str, bytes, list[FwCfgDma]]:
    """Boot the stub; return its console line, what it wrote to opt/reply, its DMA events."""
    m = E500Machine(bios=elf, record_events=True,
                    fw_cfg=[FwCfgOption(name="opt/greeting", string=greeting)])
    # A file the guest may write (QEMU's writable fw_cfg files): added before power-on.
    reply_key = m.fwcfg.add_file("opt/reply", bytes(128), writable=True)
    async with m:
        line = await m.console.expect("stub: ", fail="stub: error")
        answer = await m.console.expect("\n")
        result = await m.wait(timeout=10)
    reply = m.fwcfg.contents(reply_key)[: result.code]
    dma = [e for e in m.events.history if isinstance(e, FwCfgDma)]
    assert line.group() == "stub: "
    return answer.string[: answer.start()], reply, dma


async def main(greeting: str = "world from the firmware loop") -> int:
    elf = build(Path(tempfile.gettempdir()) / "fwcfg-e500-examples")
    line, reply, dma = await boot_stub(elf, greeting)
    expected = f"HELLO, {greeting.upper()}!"
    print(f"console: {line}")
    print(f"opt/reply: {reply.decode()!r}")
    for event in dma:
        print(f"  {event.describe()}")
    assert line == expected, line
    assert reply == expected.encode(), reply
    writes = [e for e in dma if e.op == "write"]
    assert [(e.name, e.length, e.error) for e in writes] == [("opt/reply", len(expected), False)]
    print("ok: the stub read opt/greeting and wrote its answer back through fw_cfg DMA")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, *sys.argv[1:2]))
