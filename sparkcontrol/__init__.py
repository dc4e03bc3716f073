"""The project package: settings, URLs, the ASGI/WSGI entry points, `serve`, the dashboard and the metrics."""

import importlib.util
import os
import sys
from pathlib import Path

# Optional parts of libraries we use, for features no Spark Control process uses; together ~10 MiB of every
# process's memory. None in `sys.modules` makes such an import fail at once, as it does where the package is
# missing, and each library carries on without the feature:
# - httpx imports its command-line client whenever rich and pygments are installed (the test tools bring them);
# - paramiko imports invoke (a paramiko dependency) only to run the `Match exec` lines of an OpenSSH config file,
#   which Spark Control never reads (hosts come from topology);
# - Twisted imports pyOpenSSL (with service_identity) for TLS, which `serve` does not speak: it serves plain HTTP
#   on the address it is given, and TLS belongs to the reverse proxy in front (docs/OPERATIONS.md);
# - autobahn imports cbor2 for WAMP's serializers (the dashboard websocket is plain WebSocket with JSON text), and
#   click only to colour its console messages. A program that uses click itself (uvicorn) imports it before it
#   imports Spark Control, and keeps it.
for _unused in ("httpx._main", "invoke", "OpenSSL", "cbor2", "click"):
    sys.modules.setdefault(_unused, None)

# autobahn's native UTF-8 validator and unmasker (NVX) compile their C declarations with pycparser when imported
# (~1.2 MiB). They speed up large frames from clients; dashboard clients send none larger than a ping.
os.environ.setdefault("AUTOBAHN_USE_NVX", "0")


def _django_test_signals_alone() -> None:
    """django-ninja 1.7 imports `setting_changed` through `django.test.signals` (its upstream fix, vitalik/django-ninja
    #1772, is not released). Importing a module through its package runs the package first, and `django.test` brings
    Django's whole test framework (unittest and mock, the test client, a WSGI server): ~1.7 MiB of every process. The
    module needs nothing of its package, so it is loaded alone, under its own name, where the import finds it. A later
    `import django.test` (the tests) finds it there too, and the signal and its receivers are the same objects."""
    import django

    name = "django.test.signals"
    if name in sys.modules or "django.test" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(django.__file__).parent / "test" / "signals.py")
    assert spec is not None and spec.loader is not None  # a .py path always has a spec and a loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


_django_test_signals_alone()
