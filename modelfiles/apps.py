from django.apps import AppConfig


class ModelfilesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "modelfiles"
    verbose_name = "Model files"
