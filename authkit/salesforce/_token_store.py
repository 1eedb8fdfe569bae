"""The Salesforce token shared through an :class:`~authkit.storage.AuthStorage`.

Every process (gunicorn worker, Celery task, cron job, on any host) that
builds the same flow for the same identity finds the same stored
:class:`~authkit.models.AuthToken` and uses it instead of logging in again.
:class:`SharedToken` is the bookkeeping behind ``token_store=``; the auth
sessions use it like this::

    shared = SharedToken(storage, flow="jwt", login_url=..., client_id=..., user=...)
    token = shared.read()
    if not shared.usable(token):
        with shared.lock():                     # one minter across every process
            token = shared.read()               # someone may have minted meanwhile
            if not shared.usable(token):
                token = mint()
                shared.write(token)

The stored token:

* lives under a stable id, ``salesforce:<flow>:<hash of flow, login host,
  client id and user>``, so two identities never share a token;
* has ``metadata`` ``{"instance_url", "identity_url", "flow"}``; a token whose
  ``instance_url`` is not trusted (see :func:`~authkit.salesforce._oauth.trusted_instance_url`)
  is never used; after an
  ``invalidate`` also ``"invalidated": true`` (kept, not deleted, because it
  may carry the newest rotated refresh token);
* has ``expires_at`` ``None`` unless ``max_token_age`` is set (Salesforce
  sends no expiry), so ``cleanup_expired`` leaves it alone; a token without
  a refresh token that was invalidated gets ``expires_at`` = now, so cleanup
  may reap it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

from authkit.errors import AuthenticationError
from authkit.models import AuthToken
from authkit.salesforce._oauth import trusted_instance_url
from authkit.storage.base import AuthStorage, Clock

__all__ = ["SharedToken", "shared_token_id"]

logger = logging.getLogger("authkit.salesforce")


def shared_token_id(flow: str, login_url: str, client_id: str, user: str) -> str:
    """The stable stored-token id for one identity: readable flow, hashed rest (bounded length)."""
    digest = hashlib.sha256("\n".join(("v1", flow, login_url, client_id, user)).encode()).hexdigest()
    return f"salesforce:{flow}:{digest[:40]}"


class SharedToken:
    """One identity's token in a shared store: read, lock, write, compare-and-swap invalidate.

    ``lock_timeout`` is how long a process waits for another one's mint;
    ``lock_ttl`` frees the lock if its holder dies mid-mint.
    """

    def __init__(
        self,
        storage: AuthStorage,
        *,
        flow: str,
        login_url: str,
        client_id: str,
        user: str,
        max_token_age: timedelta | None,
        clock: Clock,
        lock_timeout: float = 30.0,
        lock_ttl: float = 60.0,
    ) -> None:
        if not isinstance(storage, AuthStorage):
            raise TypeError("token_store must be an AuthStorage (see authkit.open_storage)")
        self.storage = storage
        self.token_id = shared_token_id(flow, login_url, client_id, user)
        self.login_url = login_url
        self.lock_name = f"authkit:{self.token_id}"
        self.max_token_age = max_token_age
        self.lock_timeout = lock_timeout
        self.lock_ttl = lock_ttl
        self._clock = clock

    def __repr__(self) -> str:
        return f"SharedToken({self.token_id!r}, storage={type(self.storage).__name__})"

    def read(self) -> AuthToken | None:
        """The stored token, usable or not (it may still carry a refresh token)."""
        return self.storage.get_token(self.token_id)

    def fresh_until(self, token: AuthToken) -> datetime | None:
        """When ``max_token_age`` retires this token (``None``: only a 401 does)."""
        return None if self.max_token_age is None else token.issued_at + self.max_token_age

    def usable(self, token: AuthToken | None) -> bool:
        """True if ``token`` is a live access token that nobody invalidated."""
        if token is None or token.metadata.get("invalidated") or not token.metadata.get("instance_url"):
            return False
        try:
            trusted_instance_url(token.metadata["instance_url"], self.login_url)
        except (TypeError, ValueError):
            # Whoever can write the store must not be able to send our bearer token elsewhere:
            # such a token is not adopted (a new one is minted), and the host is not logged.
            logger.warning("the shared Salesforce token %s names an untrusted instance_url; not using it",
                           self.token_id)
            return False
        now = self._clock()
        if token.is_expired(now):
            return False
        until = self.fresh_until(token)
        return until is None or now < until

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the mint lock of this identity, across every process sharing the store."""
        try:
            with self.storage.lock(self.lock_name, timeout=self.lock_timeout, ttl=self.lock_ttl):
                yield
        except TimeoutError as exc:
            raise AuthenticationError(
                f"timed out after {self.lock_timeout:g}s waiting for another process to mint the "
                f"Salesforce token {self.token_id}"
            ) from exc

    def write(self, token: AuthToken) -> None:
        """Store a newly minted token (the caller holds :meth:`lock`)."""
        self.storage.store_token(token)

    def invalidate(self, stale_token: str) -> bool:
        """Mark the stored token invalid if it still holds ``stale_token``; True if it did.

        Compare-and-swap: checked without the lock first (the common case,
        someone already replaced it, costs one read), then again under it.
        """
        if not self._holds(self.read(), stale_token):
            return False
        with self.lock():
            token = self.read()
            if not self._holds(token, stale_token):
                return False
            assert token is not None
            marked = replace(token, metadata={**token.metadata, "invalidated": True})
            if token.refresh_token is None:
                marked.expires_at = self._clock()  # nothing worth keeping: let cleanup_expired reap it
            self.storage.store_token(marked)
        logger.debug("invalidated the shared Salesforce token %s", self.token_id)
        return True

    @staticmethod
    def _holds(token: AuthToken | None, stale_token: str) -> bool:
        return token is not None and not token.metadata.get("invalidated") and token.access_token == stale_token
