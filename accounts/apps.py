from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Who may do what: API tokens, their scopes, the API's auth classes, sign-in lockouts."""

    name = "accounts"
    verbose_name = "Accounts and API tokens"

    def ready(self) -> None:
        from accounts import logins  # noqa: F401 - connects the sign-in lockout audit
