"""ASGI entry point: HTTP through Django, websockets through Channels' router."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkcontrol.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from realtime.auth import RunSync, dashboard_auth_stack  # noqa: E402
from sparkcontrol.bodylimit import BodyLimit  # noqa: E402
from sparkcontrol.routing import websocket_urlpatterns  # noqa: E402


def websocket_application(*, run_sync: RunSync | None = None) -> Any:
    """The dashboards' websockets: the origin check, who is on the other end (looked up through `run_sync` when
    given: `serve` passes its HTTP pool), then the routes."""
    return AllowedHostsOriginValidator(dashboard_auth_stack(URLRouter(websocket_urlpatterns), run_sync=run_sync))


application = ProtocolTypeRouter(
    {
        # Bodies over a route's limit are refused before Django reads them (see sparkcontrol/bodylimit.py).
        "http": BodyLimit(django_asgi_app),
        "websocket": websocket_application(),
    }
)
