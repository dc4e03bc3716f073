from django.apps import AppConfig


class SparkControlConfig(AppConfig):
    name = "sparkcontrol"
    verbose_name = "Spark Control"

    def ready(self) -> None:
        from sparkcontrol import logins  # noqa: F401 - connects the sign-in lockout audit
