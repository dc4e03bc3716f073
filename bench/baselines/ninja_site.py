"""django-ninja on daphne out of the box (M4's second baseline): `startproject` settings, one NinjaAPI route.

Served as `DJANGO_SETTINGS_MODULE=bench.baselines.ninja_settings daphne bench.baselines.ninja_site:application`.
"""

from __future__ import annotations

from django.core.asgi import get_asgi_application
from django.urls import path
from ninja import NinjaAPI

api = NinjaAPI()


@api.get("/hello")
def hello(request: object) -> dict:
    return {"hello": "world"}


urlpatterns = [path("api/", api.urls)]
application = get_asgi_application()
