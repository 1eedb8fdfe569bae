"""The OAuth 2.0 client credentials flow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from authkit.salesforce._oauth import normalize_url
from authkit.salesforce.auth._base import FlowOptions, _check_str, _FlowKeywords, _MintingSession
from authkit.storage.base import AuthStorage

if TYPE_CHECKING:
    from typing_extensions import Unpack


class ClientCredentialsAuth(_MintingSession):
    """The client credentials flow: the connected app's run-as user, on the org's My Domain.

    >>> auth = ClientCredentialsAuth("3MVG9...", secret, "https://acme.my.salesforce.com")
    """

    _flow = "client_credentials"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        domain_url: str,
        token_store: AuthStorage | None = None,
        *,
        options: FlowOptions | None = None,
        **option_overrides: Unpack[_FlowKeywords],
    ) -> None:
        _check_str(client_secret, "client_secret")
        super().__init__(
            login_url=normalize_url(domain_url, "domain_url"), client_id=client_id, user=client_id,
            client_secret=client_secret, token_store=token_store,
            options=FlowOptions._merge(options, dict(option_overrides)),
        )

    def _grant(self) -> dict[str, str]:
        assert self._client_secret is not None
        return {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._client_secret}

    def _user_id(self) -> str:
        return self._client_id
