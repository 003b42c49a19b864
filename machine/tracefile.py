"""The boot timeline as Chrome trace-event JSON, for Perfetto (ui.perfetto.dev) and chrome://tracing.

Layout of the file (the "JSON array" form of Google's Trace Event Format):

* one process (the machine) with one thread track per CPU (``cpu N``) and a ``machine`` track;
* per CPU, *duration* events (``B``/``E``) for the spans it was ``running`` and ``parked: …``
  (idle, wait-store, spin table), so a glance shows which CPU worked when;
* *instant* events (``i``) for fw_cfg selects and DMA transfers (file name and byte count in
  ``args``), hypercalls, releases, console output and guest faults, on the CPU that did them;
* *flow* arrows (``s``/``f``) from the CPU that called FW_CPU_RELEASE to the CPU it released;
* power-off as a global instant, after which every open span is closed.

Events are written as they are delivered, not held in memory, so tracing 50 machines costs
file space, not RAM.  The array form was chosen over the object form for that reason: the format
allows the closing ``]`` to be missing, so even a trace whose writer never finished (the process
was killed) still opens; a finished trace is strict JSON, which the tests load with ``json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from fwcfg import ConfigError
from machine.events import (
    CpuParked,
    CpuReleased,
    CpuStarted,
    CpuWoken,
    Event,
    FwCfgDma,
    FwCfgSelect,
    GuestFault,
    Hypercall,
    PowerOff,
    Reset,
)
from machine.platform import PAGE_SIZE, Hcall, spin_table_base

if TYPE_CHECKING:
    from machine.config import MachineConfig
    from machine.devices.console import Console
    from machine.eventhub import EventHub

_PID = 1
_RELEASE_TOKEN = int(Hcall.FW_CPU_RELEASE)
#: A long run's file is at most this stale (seconds) if the process dies before it finishes.
_FLUSH_EVERY_S = 0.25


class Traced(Protocol):
    """What the trace writer follows of a machine."""

    config: MachineConfig
    n_cpus: int
    events: EventHub
    console: Console

    def now(self) -> float: ...


class TraceWriter:
    """Turns machine events into trace events on ``out``; :meth:`finish` completes the file."""

    def __init__(self, out: TextIO, n_cpus: int, *, title: str, clock: Callable[[], float],
                 spin_table: range = range(0)) -> None:
        self._out = out
        self._spin_table = spin_table
        self._n_cpus = n_cpus
        self._machine_tid = n_cpus  # the track after the CPUs
        self._clock = clock
        self._first = True
        self._finished = False
        self._off = False  # after power-off nothing opens a span again
        self._open: dict[int, str] = {}  # tid -> name of the open span
        self._last_ts: dict[int, float] = {}
        self._flows: dict[int, int] = {}  # target cpu -> flow id of a pending FW_CPU_RELEASE
        self._next_flow = 1
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            CpuStarted: self._started,
            CpuParked: self._parked,
            CpuWoken: self._woken,
            CpuReleased: self._released,
            FwCfgSelect: self._select,
            FwCfgDma: self._dma,
            Hypercall: self._hypercall,
            GuestFault: self._fault,
            Reset: self._reset,
            PowerOff: self._power_off,
        }
        self._write({"ph": "M", "pid": _PID, "name": "process_name", "args": {"name": title}})
        for tid, name in [*((i, f"cpu {i}") for i in range(n_cpus)),
                          (self._machine_tid, "machine")]:
            self._write({"ph": "M", "pid": _PID, "tid": tid, "name": "thread_name",
                         "args": {"name": name}})
            self._write({"ph": "M", "pid": _PID, "tid": tid, "name": "thread_sort_index",
                         "args": {"sort_index": tid}})
        self._out.flush()
        self._flushed = time.monotonic()

    @classmethod
    def attach(cls, machine: Traced, path: Path) -> TraceWriter:
        """Open ``path`` and follow ``machine``'s events and console until its run ends."""
        try:
            out = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by finish()
        except OSError as err:
            raise ConfigError(
                f"--trace-file {str(path)!r} cannot be written: {err.strerror}"
            ) from None
        cfg = machine.config
        title = f"fwcfg-e500 (smp {cfg.smp}, {cfg.ram_size >> 20} MiB)"
        base = spin_table_base(cfg.ram_size)
        writer = cls(out, machine.n_cpus, title=title, clock=machine.now,
                     spin_table=range(base, base + PAGE_SIZE))
        machine.events.subscribe(writer.on_event)
        machine.console.add_listener(writer.on_console)
        machine.events.on_end(writer.finish)
        return writer

    # --- input -----------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None and not self._finished and not self._off:
            handler(event)

    def on_console(self, cpu: int, data: bytes) -> None:
        if self._finished:
            return
        text = data.decode("utf-8", "replace")
        self._instant(cpu, self._clock(), "console", "console", {"text": text})

    def finish(self) -> None:
        """Close the open spans and the JSON array; later events are ignored."""
        if self._finished:
            return
        end = max(self._last_ts.values(), default=0.0)
        for tid in list(self._open):
            self._end_span(tid, end)
        self._out.write("\n]\n")
        self._out.close()
        self._finished = True

    # --- events ----------------------------------------------------------------------------

    def _started(self, e: CpuStarted) -> None:
        self._span(e.cpu, e.time, "running", {"pc": _hex(e.pc)})

    def _parked(self, e: CpuParked) -> None:
        args = {"pc": _hex(e.pc)}
        name = f"parked: {e.reason.value}"
        if e.address is not None:
            args["address"] = _hex(e.address)
            if e.address in self._spin_table:
                # The firmware's FW_WAIT_STORE on its spin-table entry: waiting for the OS.
                name = "parked: spin table"
        self._span(e.cpu, e.time, name, args)

    def _woken(self, e: CpuWoken) -> None:
        self._span(e.cpu, e.time, "running", {"woken by": e.by})

    def _released(self, e: CpuReleased) -> None:
        args = {"entry": _hex(e.entry), "r3": _hex(e.r3), "by": e.by}
        if self._open.get(e.cpu) != "running":
            self._span(e.cpu, e.time, "running", {"released by": e.by})
        self._instant(e.cpu, e.time, f"released to {e.entry:#x}", "cpu", args)
        flow = self._flows.pop(e.cpu, None)
        if flow is not None:
            self._write({"ph": "f", "bp": "e", "pid": _PID, "tid": e.cpu, "ts": self._ts(e.cpu,
                         e.time), "id": flow, "name": "FW_CPU_RELEASE", "cat": "release"})

    def _select(self, e: FwCfgSelect) -> None:
        label = e.name or f"{e.key:#06x}"
        self._instant(e.cpu, e.time, f"fw_cfg select {label}", "fw_cfg",
                      {"key": _hex(e.key), "name": e.name})

    def _dma(self, e: FwCfgDma) -> None:
        label = e.name or f"{e.key:#06x}"
        self._instant(e.cpu, e.time, f"fw_cfg DMA {e.op} {label}", "fw_cfg", {
            "file": e.name, "key": _hex(e.key), "bytes": e.length, "offset": e.offset,
            "address": _hex(e.address), "op": e.op, "error": e.error,
        })

    def _hypercall(self, e: Hypercall) -> None:
        args: dict[str, Any] = {"args": [_hex(a) for a in e.args], "status": e.status}
        self._instant(e.cpu, e.time, e.name, "hypercall", args)
        if e.token == _RELEASE_TOKEN and e.status == 0 and e.args:
            flow = self._next_flow
            self._next_flow += 1
            self._flows[e.args[0]] = flow
            self._write({"ph": "s", "pid": _PID, "tid": e.cpu, "ts": self._ts(e.cpu, e.time),
                         "id": flow, "name": "FW_CPU_RELEASE", "cat": "release"})

    def _fault(self, e: GuestFault) -> None:
        self._instant(e.cpu, e.time, f"guest fault: {e.kind.value}", "fault",
                      {"pc": _hex(e.pc), "address": None if e.address is None
                       else _hex(e.address), "registers": e.state.describe()})

    def _reset(self, e: Reset) -> None:
        for tid in list(self._open):
            self._end_span(tid, e.time * 1e6)
        self._instant(self._machine_tid, e.time, f"reset by cpu {e.cpu}", "machine", {},
                      scope="g")

    def _power_off(self, e: PowerOff) -> None:
        self._instant(self._machine_tid, e.time, f"power-off ({e.code})", "machine",
                      {"code": e.code, "reason": e.reason}, scope="g")
        for tid in list(self._open):
            self._end_span(tid, e.time * 1e6)
        self._off = True

    # --- output ----------------------------------------------------------------------------

    def _ts(self, tid: int, when: float) -> float:
        """Microseconds, never before the track's previous event (B/E must nest per track;
        events from different threads can reach the hub a hair out of time order)."""
        ts = max(round(when * 1e6, 3), self._last_ts.get(tid, 0.0))
        self._last_ts[tid] = ts
        return ts

    def _span(self, tid: int, when: float, name: str, args: dict[str, Any]) -> None:
        ts = self._ts(tid, when)
        if tid in self._open:
            self._end_span(tid, ts)
        self._open[tid] = name
        self._write({"ph": "B", "pid": _PID, "tid": tid, "ts": ts, "name": name, "cat": "cpu",
                     "args": args})

    def _end_span(self, tid: int, ts_us: float) -> None:
        name = self._open.pop(tid)
        ts = max(round(ts_us, 3), self._last_ts.get(tid, 0.0))
        self._last_ts[tid] = ts
        self._write({"ph": "E", "pid": _PID, "tid": tid, "ts": ts, "name": name, "cat": "cpu"})

    def _instant(self, tid: int, when: float, name: str, cat: str, args: dict[str, Any],
                 scope: str = "t") -> None:
        self._write({"ph": "i", "s": scope, "pid": _PID, "tid": tid, "ts": self._ts(tid, when),
                     "name": name, "cat": cat, "args": args})

    def _write(self, record: dict[str, Any]) -> None:
        self._out.write("[\n" if self._first else ",\n")
        self._first = False
        self._out.write(json.dumps(record, separators=(",", ":")))
        if record["ph"] != "M" and time.monotonic() - self._flushed > _FLUSH_EVERY_S:
            self._out.flush()
            self._flushed = time.monotonic()


def _hex(value: int) -> str:
    return f"{value:#x}"
