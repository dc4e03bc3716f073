from django.apps import AppConfig


class ClusterConfig(AppConfig):
    name = "cluster"
    verbose_name = "Cluster topology"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from cluster.signals import sync_after_migrate

        post_migrate.connect(sync_after_migrate, sender=self)
