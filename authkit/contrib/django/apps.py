"""The Django app: add ``"authkit.contrib.django"`` to ``INSTALLED_APPS`` for
``manage.py authkit_cleanup``.  The session engine works without it."""

from __future__ import annotations

from django.apps import AppConfig


class AuthKitConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "authkit.contrib.django"
    label = "authkit"
    verbose_name = "authkit"
