"""The machine as its parts see it: the vCPU hooks, the hypercall services, the device wires.

Each part of the machine talks to the board through a narrow protocol of its own: the engine's
hooks (:class:`machine.cpu.engine.Host`), the hypercall handlers
(:class:`machine.devices.hypercalls.Services`) and the platform devices
(:class:`machine.devices.ccsr.CcsrHost`).  The adapters here implement those protocols over
one :class:`~machine.board.E500Machine`, so the board itself stays the lifecycle: power-on, the
CPU tasks, reset and power-off.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from fwcfg import DmaOp, DmaTransfer
from machine.cpu.irq_layout import IRQ_CEXT, IRQ_EXT
from machine.cpu.vcpu import Exit, ExitKind, VCpu
from machine.devices import hypercalls
from machine.devices.hypercalls import PowerOffRequest, ResetRequest
from machine.events import Event, FwCfgDma, FwCfgSelect, Hypercall
from machine.platform import FWCFG_SIZE, EvStatus

if TYPE_CHECKING:
    from machine.board import E500Machine


class VcpuHooks:
    """What a running vCPU's hooks reach (:class:`machine.cpu.engine.Host`; worker thread)."""

    def __init__(self, m: E500Machine) -> None:
        self._m = m
        self._svc = HypercallServices(m)

    def mmio_read(self, cpu: VCpu, offset: int, size: int) -> int:
        if offset >= FWCFG_SIZE:
            return 0
        return int(self._m._mmio.read(offset, size))

    def mmio_write(self, cpu: VCpu, offset: int, size: int, value: int) -> None:
        m = self._m
        if offset >= FWCFG_SIZE:
            return
        events = m._mmio.write(offset, size, value)
        for e in events:  # a DMA READ wrote RAM behind unicorn's back: no stale code
            if isinstance(e, DmaTransfer) and e.op is DmaOp.READ and e.length \
                    and m.ram.contains(e.address, 1):
                end = min(e.address + e.length, m.ram.base + m.ram.size)
                m.engine.drop_code(e.address, end)
        if events and m.events.active:
            now = m.now()
            for e in events:
                m.events.emit(fwcfg_event(e, cpu.index, now))

    def ccsr_read(self, cpu: VCpu, offset: int, size: int) -> int:
        return self._m.ccsr.read(offset, size, cpu.index)

    def ccsr_write(self, cpu: VCpu, offset: int, size: int, value: int) -> None:
        self._m.ccsr.write(offset, size, value, cpu.index)

    def hypercall(self, cpu: VCpu) -> Exit | None:
        return hypercalls.dispatch(self._svc, cpu, self._m.events.active)

    def store(self, cpu: VCpu, addr: int, data: bytes) -> None:
        self._m.watch.store(addr, data)
        self._m.spins.stored(addr)

    def doze(self, cpu: VCpu, resume_pc: int) -> None:
        self._m.doze_in_slice(cpu, resume_pc)


def fwcfg_event(e: Any, cpu: int, now: float) -> Event:
    if hasattr(e, "control"):
        return FwCfgDma(time=now, cpu=cpu, key=e.key, name=e.name, op=str(e.op),
                        offset=e.offset, length=e.length, address=e.address, error=e.error)
    return FwCfgSelect(time=now, cpu=cpu, key=e.key, name=e.name)


class HypercallServices:
    """What the hypercall handlers see of the machine (:class:`hypercalls.Services`)."""

    def __init__(self, m: E500Machine) -> None:
        self._m = m

    def console_send(self, cpu: int, data: bytes) -> bool:
        ok = self._m.console.guest_send(cpu, data)
        self._m.ccsr.console_changed()  # (the tx line: space may be gone)
        return ok

    def console_receive(self, max_count: int) -> bytes:
        data = self._m.console.receive(max_count)
        self._m.ccsr.byte_channel_read()  # (the rx line: input may be gone)
        return data

    def console_poll(self) -> tuple[int, int]:
        self._m.ccsr.byte_channel_read()
        return self._m.console.poll()

    def release(self, caller: int, target: int, entry: int, r3: int) -> EvStatus:
        return self._m.release(caller, target, entry, r3)

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._m._t0

    def hypercall_event(self, event: Hypercall) -> None:
        self._m.events.emit(event)

    def event_time(self) -> float:
        return self._m.now()

    def ram_contains(self, addr: int, size: int) -> bool:
        return self._m.ram.contains(addr, size)

    def wait_store_in_slice(self, cpu: VCpu, addr: int,
                            expected: int) -> int | hypercalls.Parked | None:
        return self._m.wait_store_in_slice(cpu, addr, expected)

    def idle_in_slice(self, cpu: VCpu) -> bool:
        return self._m.idle_in_slice(cpu)


class PlatformWires:
    """The platform devices' outputs (:class:`machine.devices.ccsr.CcsrHost`).

    Called with the CCSR lock held, from a guest access (the worker thread, inside the
    accessing vCPU's hook) or from the trio thread (console input, reset, qtest)."""

    def __init__(self, m: E500Machine) -> None:
        self._m = m

    def _on_worker(self) -> bool:
        return threading.get_ident() == self._m.scheduler.worker_id

    def set_interrupt(self, cpu: int, critical: bool, level: bool) -> None:
        m = self._m
        m.scheduler.set_input(m.cpus[cpu], IRQ_CEXT if critical else IRQ_EXT, level)

    def set_coreint(self, on: bool) -> None:
        for cpu in self._m.cpus:
            self._m.engine.set_epr_proxy(cpu, on)

    def console_write(self, cpu: int | None, data: bytes) -> None:
        self._m.console.guest_send(cpu or 0, data, force=True)

    def console_take(self, max_count: int) -> bytes:
        return self._m.console.receive(max_count)

    def console_levels(self) -> tuple[bool, bool]:
        waiting, space = self._m.console.poll()
        return waiting > 0, space > 0

    def freeze_timebase(self, frozen: bool) -> None:
        m = self._m
        m.clock.freeze(frozen)
        m.timers.changed()
        if self._on_worker():
            m.scheduler.retime()

    def guest_reset(self, cpu: int | None) -> None:
        self._end_slice(ExitKind.RESET, ResetRequest(by="RSTCR"))

    def guest_power_off(self, cpu: int | None) -> None:
        self._end_slice(ExitKind.POWEROFF, PowerOffRequest(0, by="GPIO power-off"))

    def _end_slice(self, kind: ExitKind, request: Any) -> None:
        """A guest store asked to reset or power off: its vCPU's slice ends with it, as the
        hypercalls do.  (Under qtest no vCPU runs: the qtest port handles it.)"""
        engine = self._m.engine
        cpu = engine.current
        if self._on_worker() and cpu is not None:
            engine.stop_with(Exit(kind, cpu.nip, request))
        else:
            self._m.host_request(kind, request)

    def deadline_changed(self) -> None:
        if self._on_worker():
            self._m.scheduler.retime()
