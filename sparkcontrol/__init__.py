"""The project package: settings, URLs, the ASGI/WSGI entry points, `serve`, the dashboard and the metrics."""

import os
import sys

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
