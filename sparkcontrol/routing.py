"""Websocket routes."""

from django.urls import path

from swaps.consumers import DashboardConsumer

websocket_urlpatterns = [
    path("ws/swaps/", DashboardConsumer.as_asgi()),
]
