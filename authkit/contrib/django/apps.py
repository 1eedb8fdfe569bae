"""The Django app: add ``"authkit.contrib.django"`` to ``INSTALLED_APPS`` for the
``manage.py authkit_...`` commands and the system checks of authkit's settings.
The session engine works without it."""

from __future__ import annotations

from django.apps import AppConfig


class AuthKitConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "authkit.contrib.django"
    label = "authkit"
    verbose_name = "authkit"

    def ready(self) -> None:
        # Registers the system checks of authkit's settings (manage.py check).
        from authkit.contrib.django import checks  # noqa: F401
