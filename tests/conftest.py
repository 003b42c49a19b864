"""Suite-wide rules.

Tests that need QEMU, the cross tools or gdb-multiarch skip only where those tools are missing
(a developer's laptop).  ``scripts/test.sh`` installs them, so under CI (``CI`` set) a skip can
only mean a broken setup: it is turned into a failure instead of a silent gap.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (a required tool is missing?): {report.longrepr}"
