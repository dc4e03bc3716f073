"""Settings of the Channels baseline: the in-memory channel layer, no database, no middleware."""

from __future__ import annotations

SECRET_KEY = "bench-channels-baseline-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.baselines.channels_site"
DATABASES: dict = {}
USE_TZ = True
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
ASGI_APPLICATION = "bench.baselines.channels_site.application"
