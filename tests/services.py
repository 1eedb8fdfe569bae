"""Where the test servers are, and what to do when one is missing.

URLs come from ``AUTHKIT_TEST_POSTGRES_URL``, ``AUTHKIT_TEST_MYSQL_URL`` and
``AUTHKIT_TEST_REDIS_URL``, with the local defaults below.  A missing server
skips its tests with a loud reason, unless ``AUTHKIT_REQUIRE_SERVICES=1``
(CI), where it fails them.  ``AUTHKIT_TEST_SERVICES=none`` skips every
server's tests on purpose: the database-free run.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get("AUTHKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("AUTHKIT_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("AUTHKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

REQUIRED = os.environ.get("AUTHKIT_REQUIRE_SERVICES") == "1"
# AUTHKIT_TEST_SERVICES=none: the database-free run (CI's extra interpreters), every server's tests skipped.
SERVICES_OFF = os.environ.get("AUTHKIT_TEST_SERVICES") == "none"


def reachable(url: str, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=timeout):
            return True
    except OSError:
        return False


def require(url: str, name: str) -> str:
    """``url`` if its server is up; otherwise skip (or fail under AUTHKIT_REQUIRE_SERVICES=1)."""
    if SERVICES_OFF:
        pytest.skip(f"{name}: not in the database-free run (AUTHKIT_TEST_SERVICES=none)")
    if not reachable(url):
        message = f"*** {name} is not reachable at {urlsplit(url).netloc}: its tests did NOT run ***"
        if REQUIRED:
            pytest.fail(message + " (AUTHKIT_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return url


def unique_prefix(kind: str = "t") -> str:
    """A table/key prefix no other test (or test run) uses."""
    return f"ak{kind}{uuid.uuid4().hex[:10]}_"
