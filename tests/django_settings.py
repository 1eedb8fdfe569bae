"""Django settings for tests/test_django_sessions.py (also its URLconf and views).

The tests call ``settings.configure()`` with the upper-case names below rather
than setting ``DJANGO_SETTINGS_MODULE``, so nothing leaks into the environment
of other tests' subprocesses.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

SECRET_KEY = "authkit-tests-only-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.sessions", "authkit.contrib.django"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "tests.django_settings"
DATABASES: dict[str, dict[str, str]] = {}
SESSION_ENGINE = "authkit.contrib.django.sessions"
AUTHKIT_STORAGE_URL = "memory://"
LOGGING_CONFIG = None


def set_view(request: HttpRequest) -> HttpResponse:
    for key, value in request.GET.items():
        request.session[key] = value
    return JsonResponse({"key": request.session.session_key})


def get_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse(dict(request.session.items()))


def login_view(request: HttpRequest) -> HttpResponse:
    # What django.contrib.auth.login() does to the session: a new key, then the user id.
    request.session.cycle_key()
    request.session["_auth_user_id"] = request.GET["user"]
    return JsonResponse({"key": request.session.session_key})


def logout_view(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return JsonResponse({})


def touch_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no session use")


urlpatterns = [
    path("set", set_view),
    path("get", get_view),
    path("login", login_view),
    path("logout", logout_view),
    path("touch", touch_view),
]
