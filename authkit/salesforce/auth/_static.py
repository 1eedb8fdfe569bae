"""A token obtained elsewhere: nothing to mint."""

from __future__ import annotations

from authkit.salesforce._oauth import normalize_url
from authkit.salesforce.auth._base import AuthSession


class StaticTokenAuth(AuthSession):
    """A token obtained elsewhere (the Salesforce CLI, a web login).  It cannot refresh:
    after a 401 the client has no new token to retry with (``SessionExpiredError``).

    >>> auth = StaticTokenAuth(token, "https://acme.my.salesforce.com")
    """

    def __init__(self, access_token: str, instance_url: str) -> None:
        if not isinstance(access_token, str):
            raise TypeError("access_token must be a str")
        if not access_token:
            raise ValueError("access_token must not be empty")
        self._access_token = access_token
        self._instance_url = normalize_url(instance_url, "instance_url")

    def __repr__(self) -> str:
        return f"StaticTokenAuth(instance_url={self._instance_url!r})"

    def access_token(self) -> str:
        return self._access_token

    @property
    def instance_url(self) -> str:
        return self._instance_url
