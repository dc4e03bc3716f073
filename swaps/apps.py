from django.apps import AppConfig


class SwapsConfig(AppConfig):
    name = "swaps"

    def ready(self) -> None:
        from catalog.services import register_disk_deleter
        from swaps.services import model_disk_delete_remote

        register_disk_deleter(model_disk_delete_remote)
