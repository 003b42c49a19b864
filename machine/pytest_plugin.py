"""pytest plugin for fwcfg-e500: boot a machine in one line of a test.

Installed with the package (entry point ``pytest11: fwcfg_e500``), so any project that depends
on fwcfg-e500 gets the fixtures:

``e500`` (trio tests, needs pytest-trio)
    An async factory: ``m = await e500(kernel=DEMO_ELF, smp=4)`` returns a running
    :class:`~machine.board.E500Machine` (events recorded from power-on).  Every machine the test
    booted is stopped and its threads released when the test ends, whatever happened.

``e500_sync`` (plain tests)
    The same for blocking code: ``m = e500_sync(kernel=DEMO_ELF)`` returns a started
    :class:`~machine.sync.SyncMachine`.

When a test fails, the console output of each machine it booted is added to the report
("e500 console"), which is usually the first thing one wants to see.  With
``--e500-trace-dir DIR`` every machine also writes its boot timeline (Chrome trace JSON) to
``DIR/<test>-<n>.json``.

The module imports nothing heavy at collection time (the machine is imported inside the
fixtures), so merely having the plugin installed costs other test suites nothing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from machine.board import E500Machine
    from machine.sync import SyncMachine

_QUOTE_MAX = 4000
_MACHINES = pytest.StashKey[list["E500Machine"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fwcfg-e500")
    group.addoption("--e500-trace-dir", metavar="DIR", default=None,
                    help="write each test machine's boot timeline (Chrome trace JSON) here")


def _booted(request: pytest.FixtureRequest) -> list[E500Machine]:
    node = request.node
    if _MACHINES not in node.stash:
        node.stash[_MACHINES] = []
    return node.stash[_MACHINES]


def _trace_path(request: pytest.FixtureRequest, n: int) -> Path | None:
    where = request.config.getoption("--e500-trace-dir")
    if where is None:
        return None
    directory = Path(where)
    directory.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    return directory / f"{name}-{n}.json"


@pytest.fixture
async def e500(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``m = await e500(**MachineConfig fields)``: a running machine, stopped after the test."""
    import trio

    from machine.board import E500Machine, MachineConfig

    machines = _booted(request)
    mine: list[E500Machine] = []
    async with trio.open_nursery() as nursery:

        async def boot(config: MachineConfig | None = None, **kwargs: Any) -> E500Machine:
            if config is None:
                kwargs.setdefault("record_events", True)
            m = E500Machine(config, **kwargs)
            machines.append(m)
            mine.append(m)
            trace = _trace_path(request, len(machines))
            if trace is not None:
                m.trace_to(trace)
            await nursery.start(m.run)
            return m

        try:
            yield boot
        finally:
            for m in mine:
                m.stop(reason="the test ended")
    for m in mine:
        m.close()


@pytest.fixture
def e500_sync(request: pytest.FixtureRequest) -> Iterator[Callable[..., SyncMachine]]:
    """``m = e500_sync(**MachineConfig fields)``: a started SyncMachine, closed after the test."""
    from machine.board import MachineConfig
    from machine.sync import SyncMachine

    machines = _booted(request)
    mine: list[SyncMachine] = []

    def boot(config: MachineConfig | None = None, **kwargs: Any) -> SyncMachine:
        m = SyncMachine(config, **kwargs)
        machines.append(m.machine)
        trace = _trace_path(request, len(machines))
        if trace is not None:
            m.machine.trace_to(trace)
        mine.append(m)
        return m.start()

    try:
        yield boot
    finally:
        errors: list[BaseException] = []
        for m in mine:
            try:
                m.close()
            except BaseException as err:  # close them all, then report the first
                errors.append(err)
        if errors:
            raise errors[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    machines = item.stash.get(_MACHINES, None)
    if machines and report.failed:
        for n, m in enumerate(machines, 1):
            text = m.console.text
            if len(text) > _QUOTE_MAX:
                text = f"[... {len(text) - _QUOTE_MAX} characters before]\n" + text[-_QUOTE_MAX:]
            ending = m.result.reason if m.result is not None else "still running"
            title = f"e500 console (machine {n}, smp {m.n_cpus}: {ending})"
            if (title, text) not in report.sections:
                report.sections.append((title, text or "(nothing printed)"))
    return report
