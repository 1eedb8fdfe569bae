"""The project's own tests, run by Django's test runner: ``python manage.py test demo``.

They show how to test views that use authkit sessions and the shared
Salesforce client: a memory storage and a local fake org through
``override_settings``, no database needed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase, override_settings

from authkit.contrib.django import get_storage
from authkit.contrib.session_ids import stored_session_id
from authkit.testing import FakeSalesforce


@override_settings(AUTHKIT_STORAGE_URL="memory://")
class SessionViewsTests(SimpleTestCase):
    def test_visits_are_counted_per_session(self) -> None:
        self.assertEqual(self.client.get("/").json(), {"user": None, "visits": 1})
        self.assertEqual(self.client.get("/").json(), {"user": None, "visits": 2})

    def test_login_changes_the_session_key_and_keeps_the_data(self) -> None:
        self.client.get("/")
        before = self.client.cookies[settings.SESSION_COOKIE_NAME].value
        self.client.post("/login", {"username": "alice"})
        after = self.client.cookies[settings.SESSION_COOKIE_NAME].value
        self.assertNotEqual(before, after)
        self.assertIsNone(get_storage().get_session(stored_session_id(before)))
        record = get_storage().get_session(stored_session_id(after))
        assert record is not None
        self.assertEqual(record.user_id, "alice")
        self.assertEqual(self.client.get("/").json(), {"user": "alice", "visits": 2})

    def test_logout_deletes_the_session(self) -> None:
        self.client.post("/login", {"username": "bob"})
        key = self.client.cookies[settings.SESSION_COOKIE_NAME].value
        self.client.post("/logout")
        self.assertIsNone(get_storage().get_session(stored_session_id(key)))
        self.assertEqual(self.client.get("/").json(), {"user": None, "visits": 1})

    def test_accounts_needs_a_login(self) -> None:
        self.assertEqual(self.client.get("/accounts").status_code, 401)


class SalesforceViewTests(SimpleTestCase):
    def test_accounts_from_the_fake_org_with_one_login(self) -> None:
        with FakeSalesforce() as org, tempfile.TemporaryDirectory() as tmp:
            assert org.rest is not None
            org.rest.insert("Account", {"Name": "Umbrella"})
            with override_settings(AUTHKIT_STORAGE_URL=f"sqlite:///{Path(tmp) / 'authkit.db'}",
                                   AUTHKIT_SALESFORCE={"auth": org.jwt_auth}):
                self.client.post("/login", {"username": "carol"})
                for _ in range(3):
                    self.assertEqual(self.client.get("/accounts").json(), {"accounts": ["Umbrella"]})
            self.assertEqual(org.token_requests, 1)
