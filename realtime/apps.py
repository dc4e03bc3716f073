from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """The dashboard's live channel: one websocket group, and the broadcast helpers every app sends through."""

    name = "realtime"
    verbose_name = "Realtime"
