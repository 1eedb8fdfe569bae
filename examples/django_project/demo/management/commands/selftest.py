"""``manage.py selftest``: drive the views through Django's test client against a local fake org.

Uses a temporary SQLite storage and :class:`authkit.testing.FakeSalesforce`,
so it needs no network and leaves nothing behind; exits 0 when all is well.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import management
from django.core.management.base import BaseCommand, CommandError
from django.test import Client, override_settings

from authkit.contrib.django import get_storage
from authkit.contrib.session_ids import stored_session_id
from authkit.testing import FakeSalesforce


class Command(BaseCommand):
    help = "Check the example project end to end against a local fake Salesforce org."

    def handle(self, *args: Any, **options: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp, FakeSalesforce() as org:
            jwt_app = org.register_jwt_app(run_as=org.default_user.username)
            key_file = Path(tmp) / "server.key"
            key_file.write_text(jwt_app.private_key_pem or "")
            if org.rest is not None:
                org.rest.insert("Account", {"Name": "Acme"})
                org.rest.insert("Account", {"Name": "Globex"})
            salesforce = {
                "flow": "jwt",
                "client_id": jwt_app.client_id,
                "username": org.default_user.username,
                "private_key_file": str(key_file),
                "login_url": org.login_url,
            }
            with override_settings(AUTHKIT_STORAGE_URL=f"sqlite:///{Path(tmp) / 'authkit.db'}",
                                   AUTHKIT_SALESFORCE=salesforce):
                self._check(org)

    def _check(self, org: FakeSalesforce) -> None:
        out = self.stdout.write
        storage = get_storage()
        client = Client()
        out(f"GET /            -> {client.get('/').json()}")
        anonymous = client.cookies[settings.SESSION_COOKIE_NAME].value
        out(f"POST /login      -> {client.post('/login', {'username': 'alice'}).json()}")
        key = client.cookies[settings.SESSION_COOKIE_NAME].value
        out(f"session key changed at login: {key != anonymous} | old session deleted: "
            f"{storage.get_session(stored_session_id(anonymous)) is None}")
        out(f"GET /            -> {client.get('/').json()}")
        record = storage.get_session(stored_session_id(key))
        assert record is not None and record.expires_at is not None
        out(f"stored session   -> user_id={record.user_id!r}, data={record.data}, "
            f"expires in {round((record.expires_at - storage.now()).total_seconds() / 60)} min")
        out(f"GET /accounts    -> {client.get('/accounts').json()}")
        client.get("/accounts")
        out(f"token requests to Salesforce: {org.token_requests}  (one login, shared by all requests)")
        out(f"POST /logout     -> {client.post('/logout').json()}")
        out(f"session after logout: {storage.get_session(stored_session_id(key))}")
        management.call_command("authkit_cleanup", stdout=self.stdout)
        management.call_command("clearsessions")
        if key == anonymous or storage.get_session(stored_session_id(key)) is not None or org.token_requests != 1:
            raise CommandError("self-check failed")
        out("self-check passed")
