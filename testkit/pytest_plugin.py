"""pytest plugin: a failing test's report shows the output of every service still running (`testkit.service`),
so a failure that starts in a server process is seen in the server's own words."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from testkit.service import running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for number, service in enumerate(running(), start=1):
            report.sections.append((f"service {number} ({service.workdir}) logs", service.logs()))
