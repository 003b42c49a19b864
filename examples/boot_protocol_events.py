"""Example 4: assert on the boot protocol itself, not just on what the guest prints.

The machine reports what happened as frozen event values: fw_cfg transfers (with file names
and byte counts), hypercalls, CPUs parked, woken and released.  This script boots the demo
twice and checks the protocol from the events:

* firmware boot: which fw_cfg items the firmware read, where it put the kernel and the device
  tree, and that the secondaries were released in CPU order (FW_CPU_RELEASE by the firmware
  to arm the spin table, then the kernel's spin-table stores);
* direct boot (``--direct``): the machine holds the secondaries on the spin table itself, and
  the same kernel releases them the same way, so the release events carry the entry point and
  r3 that ePAPR promises.

``record_events=True`` keeps every event from power-on, so the checks can run after the boot;
``m.wait_for`` searches that record from a cursor, so a sequence of waits checks an order.

Run: ``python examples/boot_protocol_events.py [SMP]``.
"""

from __future__ import annotations

import sys

import trio

from machine.api import (
    DEMO_ELF,
    CpuParked,
    CpuReleased,
    CpuWoken,
    E500Machine,
    Event,
    FwCfgDma,
    Hypercall,
)
from machine.platform import SPIN_ENTRY_ADDR_LO, spin_entry_addr


def is_release_call(event: Event, cpu: int) -> bool:
    return (isinstance(event, Hypercall) and event.name == "FW_CPU_RELEASE"
            and event.args[0] == cpu)


async def firmware_boot(smp: int) -> None:
    async with E500Machine(kernel=DEMO_ELF, smp=smp, record_events=True) as m:
        assert (await m.wait(timeout=10)).code == 0
        # Order, checked with successive waits: the firmware arms every secondary's spin
        # table entry (FW_CPU_RELEASE to its parking code) before it loads anything...
        for cpu in range(1, smp):
            await m.wait_for(lambda e, cpu=cpu: is_release_call(e, cpu))
        kernel = await m.wait_for(lambda e: isinstance(e, FwCfgDma) and e.name == "kernel_data")
        fdt = await m.wait_for(lambda e: isinstance(e, FwCfgDma) and e.name == "etc/fdt")

    events = m.events.history
    reads = [e.name for e in events if isinstance(e, FwCfgDma) and e.op == "read"]
    print("firmware read, in order:", ", ".join(dict.fromkeys(n or "?" for n in reads)))
    print("secondaries parked on their spin-table entries:", end=" ")
    assert {"nb_cpus", "kernel_addr", "kernel_size", "kernel_entry", "file_dir"} <= set(reads)
    assert not any(isinstance(e, FwCfgDma) and e.error for e in events)
    # ...then DMAs the kernel to its load address and the tree to where the machine said.
    assert isinstance(kernel, FwCfgDma) and isinstance(fdt, FwCfgDma)
    assert m.images.kernel is not None
    assert (kernel.address, kernel.length) == (m.images.kernel.load_addr, m.images.kernel.size)
    assert (fdt.address, fdt.length) == (m.images.dtb_addr, len(m.images.fdt))

    # The kernel releases the secondaries through the spin table, one at a time, in order:
    # each was parked (FW_WAIT_STORE) on the low word of its own entry_addr.
    entry_word = {cpu: spin_entry_addr(m.ram_size, cpu) + SPIN_ENTRY_ADDR_LO
                  for cpu in range(1, smp)}
    parked_on = {e.cpu: e.address for e in events
                 if isinstance(e, CpuParked) and e.cpu in entry_word
                 and e.address in entry_word.values()}
    print({cpu: hex(address or 0) for cpu, address in sorted(parked_on.items())})
    assert parked_on == entry_word
    released = [e.cpu for e in events
                if isinstance(e, CpuWoken) and e.by == "store" and e.cpu in parked_on]
    print("spin-table releases (firmware boot):", released)
    assert released == list(range(1, smp))


async def direct_boot(smp: int) -> None:
    async with E500Machine(kernel=DEMO_ELF, smp=smp, direct=True, record_events=True) as m:
        assert (await m.wait(timeout=10)).code == 0
    releases = [e for e in m.events.history if isinstance(e, CpuReleased)]
    print("spin-table releases (direct boot):",
          [(e.cpu, hex(e.entry), e.r3) for e in releases])
    assert [e.cpu for e in releases] == list(range(1, smp))
    assert all(e.by == "spin-table" and e.r3 == e.cpu for e in releases)
    assert len({e.entry for e in releases}) == 1  # the kernel's one secondary entry point
    assert not any(isinstance(e, FwCfgDma) for e in m.events.history)  # no firmware ran


async def main(smp: int = 4) -> int:
    await firmware_boot(smp)
    await direct_boot(smp)
    print("ok: the boot protocol went as PLATFORM.md describes")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, *map(int, sys.argv[1:2])))
