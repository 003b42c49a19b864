"""Starting and stopping machines from every front door leaves nothing behind.

``async with`` (cancelled, timed out, or left early), the synchronous facade, the pytest
fixtures, and a long run of machines one after another: worker threads come back to the
baseline and memory stops growing.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
import trio

from machine.api import (
    DEMO_ELF,
    ConfigError,
    ConsoleEnded,
    CpuReleased,
    E500Machine,
    FwCfgDma,
    PowerOff,
    run_machine,
)
from machine.asm import assemble
from machine.cpu import quantum
from machine.sync import SyncMachine
from machine.sync import run_machine as run_machine_sync

#: Every CPU spins for ever without a hypercall: only the host can stop this machine.
SPIN = """
_start:
    b _start
"""

pytest_plugins = ["pytester"]


def vcpu_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vcpu")]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_cancelling_the_block_stops_every_spinning_cpu() -> None:
    before = vcpu_threads()
    m = E500Machine(bios=assemble(SPIN), smp=4)
    with trio.CancelScope() as scope:
        async with m:
            assert len(vcpu_threads()) == len(before) + 1  # one worker runs all 4 vCPUs
            scope.deadline = trio.current_time() + 0.2  # from now: a loaded host is slow to start
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert m.result is not None
    assert m.result.reason == "the async with block ended"
    assert not any(cpu.running for cpu in m.cpus)
    assert vcpu_threads() == before


async def test_leaving_the_block_early_stops_the_machine() -> None:
    before = vcpu_threads()
    async with E500Machine(bios=assemble(SPIN), smp=2, record_events=True) as m:
        await m.wait_for(lambda e: e.describe().startswith("cpu 1: started"), timeout=5)
    assert isinstance(m.events.history[-1], PowerOff)
    assert vcpu_threads() == before


async def test_wait_with_a_timeout_reports_where_the_cpus_are() -> None:
    async with E500Machine(bios=assemble(SPIN)) as m:
        with pytest.raises(TimeoutError, match=r"still running after 0.2 s: cpu 0 at pc"):
            await m.wait(timeout=0.2)


async def test_run_machine_returns_the_whole_record() -> None:
    run = await run_machine(kernel=DEMO_ELF, smp=3, append="quiet")
    assert run.code == 0
    assert "cmdline: quiet" in run.text
    assert sorted(e.cpu for e in run.of(CpuReleased)) == [1, 2]
    assert isinstance(run.events[-1], PowerOff)


async def test_run_machine_stops_a_guest_that_never_ends() -> None:
    run = await run_machine(bios=assemble(SPIN), timeout=0.2)
    assert run.code == 124
    assert run.result.reason.startswith("timeout after 0.2 s")


def test_sync_machine_scripts_a_boot_without_async() -> None:
    before = vcpu_threads()
    with SyncMachine(kernel=DEMO_ELF, smp=2, append="from a script") as m:
        match = m.console.expect("cmdline: from a script", timeout=10)
        assert match.group() == "cmdline: from a script"
        released = m.wait_for(CpuReleased)
        assert released.cpu == 1  # type: ignore[attr-defined]
        assert m.wait().code == 0
        with pytest.raises(ConsoleEnded, match=r"stopped \(FW_POWEROFF by cpu 0\) before 'never'"):
            m.console.expect("never")
    assert any(isinstance(e, FwCfgDma) and e.name == "etc/fdt" for e in m.events)
    assert vcpu_threads() == before


def test_sync_machine_stop_powers_off_a_spinning_guest() -> None:
    before = vcpu_threads()
    with SyncMachine(bios=assemble(SPIN), smp=2) as m:
        result = m.stop(3, "enough")
    assert (result.code, result.reason) == (3, "enough")
    assert vcpu_threads() == before


def test_sync_machine_reports_bad_host_input_before_starting() -> None:
    with pytest.raises(ConfigError, match="-smp 99"):
        SyncMachine(kernel=DEMO_ELF, smp=99)


def test_run_machine_for_scripts() -> None:
    run = run_machine_sync(kernel=DEMO_ELF)
    assert run.code == 0
    assert "demo: 1 cpu up" in run.text


async def test_the_trio_fixture_boots_in_one_line(e500: object) -> None:
    m = await e500(kernel=DEMO_ELF, smp=2)  # type: ignore[operator]
    await m.console.expect("demo: all 2 cpus up")


def test_the_sync_fixture_boots_in_one_line(e500_sync: object) -> None:
    m = e500_sync(kernel=DEMO_ELF, smp=2)  # type: ignore[operator]
    m.console.expect("demo: all 2 cpus up")


def test_a_failing_test_shows_the_console_and_can_write_traces(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(
        """
        from machine.boot.guest import DEMO_ELF

        async def test_wrong_line(e500):
            m = await e500(kernel=DEMO_ELF, smp=2, append="visible in the report")
            await m.console.expect("demo: all 2 cpus up")
            assert False, "the test's own failure"
        """
    )
    traces = tmp_path / "traces"
    result = pytester.runpytest_subprocess("-p", "trio", "-o", "trio_mode=true",
                                           f"--e500-trace-dir={traces}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*e500 console (machine 1, smp 2: *",
        "cmdline: visible in the report",
    ])
    assert [p.name for p in traces.iterdir()] == ["test_wrong_line-1.json"]


async def test_a_hundred_machines_in_a_row_leak_no_threads_or_memory() -> None:
    baseline_threads = threading.active_count()
    samples: list[float] = []
    for i in range(100):
        async with E500Machine(kernel=DEMO_ELF) as m:
            assert (await m.wait(timeout=10)).code == 0
        if i % 10 == 9:
            # A closed machine is freed by the cyclic collector (unicorn's hooks refer back to
            # their engine), and its engine once its quantum timer surely cannot touch it;
            # wait for both, so the numbers measure leaks, not collection timing.
            gc.collect()
            await trio.sleep(quantum.GRACE_S)
            assert quantum.reap() == 0
            samples.append(rss_mib())
            assert threading.active_count() == baseline_threads
    # After warm-up (allocator arenas, code caches), 80 more machines add almost nothing.
    assert samples[-1] - samples[1] < 16, samples
