"""What a serving process on the embedded default does not load: the Redis client is for scaled-out set-ups only
(`REDIS_URL`), and importing it anyway cost every process ~6 MiB of its idle memory; Django's test framework is for
the tests (~1.7 MiB)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkcontrol.settings")
django.setup()
import sparkcontrol.asgi, gateway.runtime, gateway.views, gateway.caps, accounts.tokens  # what `serve` imports
print(sorted(name for name in sys.modules if name == "redis" or name.startswith("redis.")))
"""


def _loaded_modules(tmp_path: Path, probe: str = PROBE) -> str:
    """The last line `probe` printed (the modules it looked for), run in a fresh interpreter on the embedded default
    (no REDIS_URL)."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["SPARKCONTROL_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_the_embedded_default_does_not_load_the_redis_client(tmp_path):
    assert _loaded_modules(tmp_path) == "[]"


def test_the_shared_caps_load_it_when_they_are_made(tmp_path):
    """The probe does see redis when it is loaded: shared caps (made only with REDIS_URL) import it."""
    made = PROBE.replace("print(", "gateway.caps.SharedCaps('redis://127.0.0.1:1/0'); print(", 1)
    assert "'redis'" in _loaded_modules(tmp_path, made)


TEST_FRAMEWORK_PROBE = """
import os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkcontrol.settings")
django.setup()
import sparkcontrol.asgi, gateway.runtime, gateway.views, gateway.caps, accounts.tokens  # what `serve` imports
print(sorted(name for name in sys.modules if name.split(".")[0] == "unittest" or name.startswith("django.test")))
"""


def test_a_serving_process_does_not_load_djangos_test_framework(tmp_path):
    """django-ninja reaches for `setting_changed` through `django.test.signals`; only that module is loaded."""
    assert _loaded_modules(tmp_path, TEST_FRAMEWORK_PROBE) == "['django.test.signals']"


def test_the_test_framework_still_loads_whole_and_ninja_still_follows_setting_changes(tmp_path):
    probe = TEST_FRAMEWORK_PROBE.replace(
        "print(",
        "import ninja.conf\n"
        "from django.test import Client, signals\n"
        "from django.test.utils import override_settings\n"
        "assert signals is sys.modules['django.test.signals']\n"
        "with override_settings(NINJA_PAGINATION_PER_PAGE=7):\n"
        "    assert ninja.conf.settings.PAGINATION_PER_PAGE == 7\n"
        "assert ninja.conf.settings.PAGINATION_PER_PAGE != 7\n"
        "assert Client().get('/api/health', HTTP_HOST='localhost').status_code in (200, 503)\n"
        "print(",
        1,
    )
    assert "'django.test.client'" in _loaded_modules(tmp_path, probe)
