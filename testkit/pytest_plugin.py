"""pytest plugin: a failing test's report shows the output of every service it used (`testkit.service`) — those
running when it began (a session's deployment) and those it made itself, stopped since or not — so a failure that
starts in a server process is seen in the server's own words."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from testkit.service import Service, created_count, created_since, running

_seen = pytest.StashKey[tuple[int, list[Service]]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_seen] = (created_count(), running())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    mark, before = item.stash.get(_seen, (created_count(), []))
    services: list[Service] = []
    for service in [*before, *created_since(mark), *running()]:
        if not any(service is known for known in services):
            services.append(service)
    for number, service in enumerate(services, start=1):
        report.sections.append((f"service {number} ({service.workdir}) logs", service.logs()))
