from django.apps import AppConfig


class SparkControlConfig(AppConfig):
    name = "sparkcontrol"
    verbose_name = "Spark Control"
