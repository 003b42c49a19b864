"""The public face of fwcfg-e500 for people who script boots: one import for tests and programs.

    from machine.api import E500Machine, DEMO_ELF, CpuReleased

    async with E500Machine(kernel=DEMO_ELF, smp=4, record_events=True) as m:
        await m.console.expect("all 4 cpus up")
        first = await m.wait_for(CpuReleased)

Everything here is re-exported from the module that owns it; :func:`run_machine` is the one
helper that lives here: boot, run to the end, hand back what happened as values.
See the README, "Scripting boots: the Python API", for the tour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from fwcfg import ConfigError, FwCfgOption
from machine.board import E500Machine, MachineConfig, RunResult
from machine.boot.guest import DEMO_ELF, FIRMWARE_ELF
from machine.devices.console import (
    ConsoleEnded,
    ConsoleError,
    ConsoleFailure,
    ConsoleTimeout,
)
from machine.eventhub import EventsEnded, EventStream, EventTimeout, EventWaitError
from machine.events import (
    CpuParked,
    CpuReleased,
    CpuStarted,
    CpuState,
    CpuWoken,
    Event,
    EventsLost,
    FaultKind,
    FwCfgDma,
    FwCfgSelect,
    GuestFault,
    Hypercall,
    ParkReason,
    PowerOff,
    Reset,
)

E = TypeVar("E", bound=Event)

#: Seconds :func:`run_machine` lets a machine run before it stops it (exit code 124).
DEFAULT_RUN_TIMEOUT = 30.0


@dataclass(frozen=True)
class MachineRun:
    """A finished run: how it ended, what the guest printed, every event from power-on."""

    result: RunResult
    output: bytes
    events: list[Event] = field(default_factory=list)

    @property
    def code(self) -> int:
        """The FW_POWEROFF code (124 on timeout, 125 on a guest fault)."""
        return self.result.code

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def of(self, kind: type[E]) -> list[E]:
        """The events of one class, in order."""
        return [e for e in self.events if isinstance(e, kind)]


async def run_machine(config: MachineConfig | None = None, *,
                      timeout: float | None = DEFAULT_RUN_TIMEOUT,
                      **kwargs: Any) -> MachineRun:
    """Build a machine, run it until it stops (or ``timeout``), and return the record.

    Takes a :class:`MachineConfig` or its fields as keywords; events are recorded from
    power-on.  Bad host input raises :class:`ConfigError` before anything runs.
    """
    m = E500Machine(config, **kwargs)
    m.events.record()  # before power-on: the record starts with the first event
    try:
        result = await m.run(timeout=timeout)
    finally:
        m.close()
    return MachineRun(result=result, output=m.console.output, events=m.events.history)


__all__ = [
    "DEFAULT_RUN_TIMEOUT",
    "DEMO_ELF",
    "FIRMWARE_ELF",
    "ConfigError",
    "ConsoleEnded",
    "ConsoleError",
    "ConsoleFailure",
    "ConsoleTimeout",
    "CpuParked",
    "CpuReleased",
    "CpuStarted",
    "CpuState",
    "CpuWoken",
    "E500Machine",
    "Event",
    "EventStream",
    "EventTimeout",
    "EventWaitError",
    "EventsEnded",
    "EventsLost",
    "FaultKind",
    "FwCfgDma",
    "FwCfgOption",
    "FwCfgSelect",
    "GuestFault",
    "Hypercall",
    "MachineConfig",
    "MachineRun",
    "ParkReason",
    "PowerOff",
    "Reset",
    "RunResult",
    "run_machine",
]
