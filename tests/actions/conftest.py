"""Scheduled-actions fixtures: the simulated cluster of the integration tests."""

from tests.integration.conftest import sim, topology  # noqa: F401 - fixtures used by the run tests
