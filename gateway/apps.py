from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"

    def ready(self) -> None:
        from gateway.runtime import connect_drain_receiver

        connect_drain_receiver()
