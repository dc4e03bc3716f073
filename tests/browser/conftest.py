"""Browser fixtures: one running Spark Control (embedded default) over a sparksim cluster for the session, Debian's
headless Chromium driven by Playwright, and logged-in dashboard pages that fail the test on any script error or
Content-Security-Policy violation.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    CHROMIUM,
    CHROMIUM_ARGS,
    Server,
)

pytestmark = pytest.mark.integration

DISABLED = "qdrant"


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sparksim import SimCluster

    with SimCluster(root=tmp_path_factory.mktemp("browser-sim"), nodes=2, load_seconds=1.0, launcher_dir="") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, sim: Any) -> Iterator[Server]:
    """Spark Control as `manage.py serve` runs it: one process, SQLite, in-memory channel layer, embedded worker."""
    running = Server(
        tmp=tmp_path_factory.mktemp("browser-server"),
        sim=sim,
        # Load samples every 2 s, so the load charts move within a test.
        extra_env={"DISABLED_SERVICES": DISABLED, "SPARKCONTROL_LOAD_SAMPLE_SECONDS": "2"},
    )
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium per test module: Playwright's event loop is gone before tests of other directories run."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium (scripts/ensure-system-deps)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go; DASHBOARD_ARTIFACTS keeps them somewhere of your choosing."""
    chosen = os.environ.get("DASHBOARD_ARTIFACTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("browser-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Watched:
    """A page and everything it did that a test may want to assert on."""

    page: Any
    context: Any
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [line for line in self.console if "Content Security Policy" in line]


def open_page(
    browser: Any,
    server: Server,
    *,
    user: str = ADMIN_USER,
    password: str = ADMIN_PASSWORD,
    before: Callable[[Any], None] | None = None,
) -> Watched:
    """A fresh browser context, signed in through the login form, on the dashboard with its websocket live."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    if before is not None:
        before(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    watched = Watched(page=page, context=context)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    page.on("console", lambda message: watched.console.append(f"{message.type}: {message.text}"))

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto("/")
    assert "/login/" in page.url, f"the dashboard did not ask for a login: {page.url}"
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#connection[data-state=live]")
    return watched


@pytest.fixture
def clean(server: Server) -> Server:
    server.quiesce()
    return server


@pytest.fixture
def dashboard(browser: Any, clean: Server) -> Iterator[Watched]:
    """The dashboard of the staff user `admin`; fails the test on a script error or CSP violation."""
    watched = open_page(browser, clean)
    yield watched
    watched.context.close()
    assert not watched.errors, f"script errors on the page: {watched.errors}"
    assert not watched.csp_violations(), f"Content-Security-Policy violations: {watched.csp_violations()}"
