from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit trail: who did what, when, for every app."""

    name = "audit"
    verbose_name = "Audit trail"
