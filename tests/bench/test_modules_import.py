"""Every bench module imports: `python -m bench` runs its parts one after another, so a broken import in a late
part (after minutes of measuring) loses the whole run."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

MODULES = sorted(info.name for info in pkgutil.iter_modules(bench.__path__) if info.name != "__main__")


def test_the_bench_has_its_parts():
    assert {"run", "swaps", "sweeps", "push", "api", "sampling", "gateway", "repeat"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_a_bench_module_imports(name):
    importlib.import_module(f"bench.{name}")
