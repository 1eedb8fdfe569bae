"""``manage.py check`` catches authkit's misconfigurations before the first request fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from tests import django_settings

if not settings.configured:
    settings.configure(**{name: getattr(django_settings, name) for name in dir(django_settings) if name.isupper()})
django.setup()

from django.core import checks  # noqa: E402
from django.test import override_settings  # noqa: E402

from authkit.contrib.django.checks import check_settings  # noqa: E402
from authkit.storage import MemoryStorage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def ids(**overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return [error.id for error in check_settings()]


def test_a_good_configuration_passes() -> None:
    assert ids(AUTHKIT_STORAGE_URL="sqlite:///authkit.db", AUTHKIT_STORAGE_OPTIONS={"prefix": "app_"}) == []
    assert ids(AUTHKIT_STORAGE_URL="redis://localhost/0", AUTHKIT_STORAGE_OPTIONS={"prefix": "app:"}) == []
    assert ids(AUTHKIT_STORAGE=MemoryStorage(), AUTHKIT_STORAGE_URL=None) == []
    assert ids(AUTHKIT_STORAGE_URL="memory://", AUTHKIT_CLEANUP_N_REQUESTS=100) == []


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"AUTHKIT_STORAGE_URL": None}, ["authkit.E001"]),
    ({"AUTHKIT_STORAGE_URL": ""}, ["authkit.E001"]),
    ({"AUTHKIT_STORAGE_URL": "authkit.db"}, ["authkit.E002"]),
    ({"AUTHKIT_STORAGE_URL": "postgress://db/app"}, ["authkit.E002"]),
    ({"AUTHKIT_STORAGE_OPTIONS": ["prefix"]}, ["authkit.E004"]),
    ({"AUTHKIT_STORAGE_URL": "sqlite:///a.db", "AUTHKIT_STORAGE_OPTIONS": {"prefix": "my-app"}}, ["authkit.E005"]),
    ({"AUTHKIT_STORAGE_URL": "redis://h/0", "AUTHKIT_STORAGE_OPTIONS": {"prefix": ""}}, ["authkit.E005"]),
    ({"AUTHKIT_SALESFORCE": "jwt"}, ["authkit.E010"]),
    ({"AUTHKIT_SALESFORCE": {"flow": "jwtt"}}, ["authkit.E011"]),
    ({"AUTHKIT_SALESFORCE": {"flow": "password", "client_id": "c", "usernme": "typo"}}, ["authkit.E011"]),
    ({"AUTHKIT_CLEANUP_N_REQUESTS": 0}, ["authkit.E020"]),
    ({"AUTHKIT_CLEANUP_N_REQUESTS": "100"}, ["authkit.E020"]),
])
def test_misconfigurations_are_errors(overrides: dict[str, Any], expected: list[str]) -> None:
    overrides.setdefault("AUTHKIT_STORAGE_URL", "memory://")
    assert ids(AUTHKIT_STORAGE=None, **overrides) == expected


def test_a_missing_driver_is_an_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    with override_settings(AUTHKIT_STORAGE=None, AUTHKIT_STORAGE_URL="postgresql://app@db/app"):
        [error] = check_settings()
    assert error.id == "authkit.E003" and "pip install 'authkit-sf[postgres]'" in (error.hint or "")


def test_the_checks_run_with_djangos_own() -> None:
    with override_settings(AUTHKIT_STORAGE=None, AUTHKIT_STORAGE_URL=None):
        assert "authkit.E001" in [error.id for error in checks.run_checks()]


def test_manage_py_check_fails_on_a_bad_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHKIT_", "SF_", "DJANGO_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    manage = [sys.executable, str(ROOT / "examples" / "django_project" / "manage.py"), "check"]
    good = subprocess.run(manage, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**env, "AUTHKIT_STORAGE_URL": f"sqlite:///{tmp_path / 'a.db'}"})
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(manage, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**env, "AUTHKIT_STORAGE_URL": "nosuch://x"})
    assert bad.returncode != 0
    assert "authkit.E002" in bad.stderr and "Traceback" not in bad.stderr
