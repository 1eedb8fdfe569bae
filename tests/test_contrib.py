"""What the Flask and Django integrations share: Salesforce settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from authkit.contrib import build_salesforce_auth, build_salesforce_client
from authkit.errors import ConfigurationError
from authkit.salesforce import ClientCredentialsAuth, JwtAuth, PasswordAuth, RefreshTokenAuth, StaticTokenAuth
from authkit.storage import MemoryStorage


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
