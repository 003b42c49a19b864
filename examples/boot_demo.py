"""Example 1: boot the bundled demo and assert on what it prints.

The demo kernel (``machine/boot/guest/demo.elf``) is booted by the bundled firmware through fw_cfg,
prints what its device tree says, releases every secondary CPU through the ePAPR spin table and
powers off.  Each ``expect`` continues where the previous one matched, so the checks below also
pin the order of the lines; ``fail=`` stops at once if the demo reports a CPU that did not come
up, instead of waiting for the timeout.

Run: ``python examples/boot_demo.py [SMP] [COMMAND LINE]``.
"""

from __future__ import annotations

import re
import sys

import trio

from machine.api import DEMO_ELF, E500Machine

EPAPR_MAGIC = 0x45504150  # r6 of the boot CPU (ePAPR 1.1, 5.4.1)


async def main(smp: int = 4, append: str = "console=hvc0 hello") -> int:
    async with E500Machine(kernel=DEMO_ELF, smp=smp, append=append) as m:
        failed = ["did not come up", "only "]
        await m.console.expect("demo: ePAPR demo kernel on fwcfg-e500", fail=failed)
        await m.console.expect(f"cmdline: {append}\n")
        await m.console.expect("memory: 256 MiB at 0x0")
        cpus = await m.console.expect(re.compile(r"cpus: (\d+) \(boot cpu 0, (\d+) spin-table\)"))
        assert (int(cpus[1]), int(cpus[2])) == (smp, smp - 1), cpus.group()

        boot = await m.console.expect(re.compile(r"cpu 0: r3=fdt .* r6=(0x[0-9a-f]{8})"))
        assert int(boot[1], 16) == EPAPR_MAGIC
        # Secondaries enter with r3 = their spin-table r3 (the CPU index) and r6 = 0.
        for cpu in range(1, smp):
            line = await m.console.expect(
                re.compile(rf"cpu {cpu}: r3=(0x[0-9a-f]{{8}}) .* r6=(0x[0-9a-f]{{8}}) .*"
                           rf"pir={cpu}\n"),
                fail=failed,
            )
            assert (int(line[1], 16), int(line[2], 16)) == (cpu, 0), line.group()
        summary = "demo: 1 cpu up" if smp == 1 else f"demo: all {smp} cpus up"
        await m.console.expect(summary, fail=failed)
        result = await m.wait(timeout=10)

    print(m.console.text, end="")
    print(f"-- {result.reason}, exit code {result.code}")
    return result.code


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(trio.run(main, *([int(args[0])] if args else []), *args[1:2]))
