from django.apps import AppConfig


class SwapsConfig(AppConfig):
    name = "swaps"
