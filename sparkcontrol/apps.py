from django.apps import AppConfig


class SparkControlConfig(AppConfig):
    """The project package: settings, URLs, serving, the dashboard. It wires the apps; no app imports it."""

    name = "sparkcontrol"
    verbose_name = "Spark Control"
