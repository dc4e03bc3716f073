"""The project package: settings, URLs, the ASGI/WSGI entry points, `serve`, the dashboard and the metrics."""

import sys

# Two optional imports of libraries we use, for features no Spark Control process uses: httpx imports its command-line
# client whenever rich and pygments are installed (the test tools bring them), and paramiko imports invoke (a paramiko
# dependency) only to run the `Match exec` lines of an OpenSSH config file, which Spark Control never reads (hosts
# come from topology). Together ~5 MiB of every process's memory. None in `sys.modules` makes such an import fail at
# once, as it does where the package is missing, and both libraries carry on without the feature.
for _unused in ("httpx._main", "invoke"):
    sys.modules.setdefault(_unused, None)
