"""Helpers for scenario tests: assemble a tiny guest, boot it, collect what it did."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from machine.asm import assemble
from machine.board import E500Machine, RunResult
from machine.events import Event

#: Prints the 4 bytes in r5 (count in r4) on the console; clobbers r3, r4, r11.
PUTS = """
    .macro puts4 a, b
    li 3, 0
    li 4, \\b
    li32 5, \\a
    hcall HC_EV_BYTE_CHANNEL_SEND
    .endm
"""


@dataclass
class Boot:
    result: RunResult
    machine: E500Machine
    console: bytes
    per_cpu: dict[int, bytes]
    events: list[Event] = field(default_factory=list)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def boot(source: str, *, timeout: float = 10, during: Any = None, **config: Any) -> Boot:
    """Boot ``source`` as the firmware; ``during(machine)`` runs beside it if given."""
    bios = Path(assemble(PUTS + source))
    m = E500Machine(bios=bios, **config)
    out = bytearray()
    per: dict[int, bytearray] = {}
    events: list[Event] = []

    def on_out(cpu: int, data: bytes) -> None:
        out.extend(data)
        per.setdefault(cpu, bytearray()).extend(data)

    m.console.add_listener(on_out)
    m.events.subscribe(events.append)
    box: list[RunResult] = []

    async def go(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        box.append(await m.run(timeout=timeout, task_status=task_status))

    try:
        async with trio.open_nursery() as n:
            await n.start(go)
            if during is not None:
                await during(m)
    finally:
        m.close()
    return Boot(box[0], m, bytes(out), {k: bytes(v) for k, v in per.items()}, events)
