"""What the Flask and Django integrations share: cleanup under the lock, Salesforce settings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from authkit.contrib import (
    CLEANUP_LOCK,
    build_salesforce_auth,
    build_salesforce_client,
    format_failure,
    format_report,
    run_cleanup,
)
from authkit.errors import ConfigurationError, StorageError
from authkit.models import CleanupReport
from authkit.salesforce import ClientCredentialsAuth, JwtAuth, PasswordAuth, RefreshTokenAuth, StaticTokenAuth
from authkit.storage import MemoryStorage


def test_run_cleanup_reports_and_skips_when_locked() -> None:
    storage = MemoryStorage()
    storage.store_kv("gone", b"x", ttl=0.000001)
    report = run_cleanup(storage, batch_size=1)
    assert report == CleanupReport(tokens=0, sessions=0, kv=1)
    with storage.lock(CLEANUP_LOCK):
        assert run_cleanup(storage) is None
        assert run_cleanup(storage, wait=0.05) is None
    with pytest.raises(ValueError):
        run_cleanup(storage, wait=-1)
    with pytest.raises(TypeError):
        run_cleanup(storage, wait="1")  # type: ignore[arg-type]


def test_run_cleanup_does_not_mistake_a_failure_for_a_held_lock() -> None:
    class Slow(MemoryStorage):
        def _cleanup_batch(self, now: datetime, limit: int) -> CleanupReport:
            raise TimeoutError("the work timed out")

    with pytest.raises(TimeoutError, match="work"):
        run_cleanup(Slow())


def test_format_report() -> None:
    # Worded as `authkit cleanup` words it, so one log parser reads every cleanup.
    assert format_report(CleanupReport(1, 2, 3), seconds=1.234) == (
        "cleanup: deleted 6 expired records (tokens 1, sessions 2, kv 3) in 1.23 s"
    )
    assert format_report(None) == "skipped: another cleanup is running"
    assert format_report(CleanupReport(1, 2, 3), seconds=1.2344, as_json=True) == (
        '{"kv": 3, "seconds": 1.234, "sessions": 2, "status": "ok", "tokens": 1, "total": 6}'
    )
    assert format_report(None, as_json=True) == '{"reason": "another cleanup is running", "status": "skipped"}'


def test_format_failure_is_one_line_and_masks_the_url_password() -> None:
    exc = StorageError("cannot connect to postgresql://app:pa%2Fss-word@db/app\n  (quoted by the driver)")
    line = format_failure(exc, "postgresql://app:pa%2Fss-word@db/app")
    assert line == "cleanup failed: StorageError: cannot connect to postgresql://app:***@db/app (quoted by the driver)"
    decoded = format_failure(StorageError("password pa/ss-word refused"), "postgresql://app:pa%2Fss-word@db/app")
    assert "pa/ss-word" not in decoded
    assert format_failure(StorageError("x"), None) == "cleanup failed: StorageError: x"


def test_flows_from_settings(tmp_path: Path) -> None:
    from authkit.testing.fake_salesforce import generate_rsa_key_pair

    private_pem, _ = generate_rsa_key_pair()
    key_file = tmp_path / "server.key"
    key_file.write_text(private_pem)
    store = MemoryStorage()
    jwt = build_salesforce_auth({"flow": "jwt", "client_id": "cid", "username": "u@example.com",
                                 "private_key_file": str(key_file), "login_url": "https://test.salesforce.com",
                                 "token_timeout": 3, "api_version": "60.0"}, store)
    assert isinstance(jwt, JwtAuth) and jwt.audience == "https://test.salesforce.com"
    assert isinstance(build_salesforce_auth({"flow": "refresh-token", "client_id": "c", "refresh_token": "r"},
                                            store), RefreshTokenAuth)
    assert isinstance(build_salesforce_auth({"flow": "client_credentials", "client_id": "c", "client_secret": "s",
                                             "domain_url": "https://acme.my.salesforce.com"}, store),
                      ClientCredentialsAuth)
    assert isinstance(build_salesforce_auth({"flow": "PASSWORD", "client_id": "c", "client_secret": "s",
                                             "username": "u", "password": "p"}, None), PasswordAuth)
    static = build_salesforce_auth({"flow": "static", "access_token": "t", "instance_url": "https://x.example"},
                                   store)
    assert isinstance(static, StaticTokenAuth)
    ready = StaticTokenAuth("t", "https://x.example")
    assert build_salesforce_auth({"auth": ready}, store) is ready
    assert build_salesforce_auth({"auth": lambda: ready, "api_version": "60.0"}, store) is ready
    client = build_salesforce_client({"auth": ready, "api_version": "60.0", "timeout": [3, 9]}, store)
    client.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "no Salesforce settings"),
        ({"flow": "saml"}, "unknown Salesforce flow"),
        ({"auth": "not a session"}, "AuthSession"),
        ({"auth": StaticTokenAuth("t", "https://x.example"), "flow": "jwt"}, "also flow"),
        ({"flow": "jwt", "client_id": "c", "username": "u", "private_key": "k", "private_key_file": "f"}, "not both"),
        ({"flow": "static", "access_token": "t", "instance_url": "https://x.example", "colour": 1}, "static flow"),
    ],
)
def test_bad_settings_are_configuration_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_salesforce_auth(config, None)


def test_unreadable_key_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="private key file"):
        build_salesforce_auth({"flow": "jwt", "client_id": "c", "username": "u",
                               "private_key_file": str(tmp_path / "missing.key")}, None)
