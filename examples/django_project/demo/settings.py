"""Settings of the example project: authkit sessions, no database needed.

From the environment, as in production:

    AUTHKIT_STORAGE_URL   sessions and the Salesforce token (default: sqlite file next to manage.py)
    SF_CLIENT_ID, SF_USERNAME, SF_PRIVATE_KEY_FILE, SF_LOGIN_URL
                          the JWT bearer flow behind /accounts (optional)
    DJANGO_SECRET_KEY     required outside DEBUG
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-insecure-key" if DEBUG else "")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.sessions",  # for `manage.py clearsessions`
    "authkit.contrib.django",  # for `manage.py authkit_cleanup`
    "demo",  # for `manage.py selftest`
]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"
DATABASES: dict[str, Any] = {}  # authkit keeps the sessions: no database needed for them

# -- authkit -----------------------------------------------------------------
SESSION_ENGINE = "authkit.contrib.django.sessions"
SESSION_COOKIE_AGE = 30 * 60  # seconds of inactivity before a session ends...
SESSION_SAVE_EVERY_REQUEST = True  # ...counted from the last request
AUTHKIT_SESSION_USER_KEY = "user"  # the record's user_id (default: django.contrib.auth's user id)
AUTHKIT_STORAGE_URL = os.environ.get("AUTHKIT_STORAGE_URL", f"sqlite:///{BASE_DIR / 'authkit.db'}")

if os.environ.get("SF_CLIENT_ID"):
    AUTHKIT_SALESFORCE = {
        "flow": "jwt",
        "client_id": os.environ["SF_CLIENT_ID"],
        "username": os.environ["SF_USERNAME"],
        "private_key_file": os.environ["SF_PRIVATE_KEY_FILE"],
        "login_url": os.environ.get("SF_LOGIN_URL", "https://login.salesforce.com"),
    }
