"""The OAuth 2.0 username-password flow (legacy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from authkit.salesforce.auth._base import LOGIN_URL, FlowOptions, _check_str, _FlowKeywords, _MintingSession
from authkit.storage.base import AuthStorage

if TYPE_CHECKING:
    from typing_extensions import Unpack


class PasswordAuth(_MintingSession):
    """The username-password flow (legacy; prefer JWT).  The security token is appended
    to the password, as Salesforce requires from untrusted IP ranges.

    >>> auth = PasswordAuth("3MVG9...", secret, "me@acme.com", password, security_token)
    """

    _flow = "password"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        username: str,
        password: str,
        security_token: str = "",
        login_url: str = LOGIN_URL,
        token_store: AuthStorage | None = None,
        *,
        options: FlowOptions | None = None,
        **option_overrides: Unpack[_FlowKeywords],
    ) -> None:
        _check_str(client_secret, "client_secret")
        _check_str(username, "username")
        _check_str(password, "password")
        if not isinstance(security_token, str):
            raise TypeError("security_token must be a str")
        self._username = username
        self._password = password + security_token
        super().__init__(
            login_url=login_url, client_id=client_id, user=username, client_secret=client_secret,
            token_store=token_store, options=FlowOptions._merge(options, dict(option_overrides)),
        )

    def _repr_user(self) -> str:
        return f", username={self._username!r}"

    def _grant(self) -> dict[str, str]:
        assert self._client_secret is not None
        return {"grant_type": "password", "client_id": self._client_id, "client_secret": self._client_secret,
                "username": self._username, "password": self._password}

    def _user_id(self) -> str:
        return self._username
