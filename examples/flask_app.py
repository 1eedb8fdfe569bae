"""A Flask app with authkit sessions and one shared Salesforce client.

Run it:

    python examples/flask_app.py              # a self-check: the app against a local fake org, exits 0
    python examples/flask_app.py --serve      # serve it on http://127.0.0.1:5000 (your settings, below)
    flask --app examples/flask_app run        # the same, with Flask's own command
    flask --app examples/flask_app authkit cleanup   # cron: delete expired sessions and tokens

Settings come from the environment, as in production:

    AUTHKIT_STORAGE_URL   where sessions and the Salesforce token live (default sqlite:///authkit.db)
    SF_CLIENT_ID, SF_USERNAME, SF_PRIVATE_KEY_FILE, SF_LOGIN_URL
                          the JWT bearer flow for /accounts (optional)

Every gunicorn worker opens the same storage: a user's session works on any
worker, and all workers share one Salesforce token (one login, one refresh).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request, session

from authkit.contrib.flask import AuthKit, regenerate_session
from authkit.contrib.session_ids import stored_session_id

authkit = AuthKit()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app factory: settings from the environment, overridden by ``config``."""
    app = Flask(__name__)
    app.config["AUTHKIT_STORAGE_URL"] = os.environ.get("AUTHKIT_STORAGE_URL", "sqlite:///authkit.db")
    app.config["PERMANENT_SESSION_LIFETIME"] = 30 * 60  # idle timeout of a logged-in session
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if os.environ.get("SF_CLIENT_ID"):
        app.config.update(
            AUTHKIT_SALESFORCE_FLOW="jwt",
            AUTHKIT_SALESFORCE_CLIENT_ID=os.environ["SF_CLIENT_ID"],
            AUTHKIT_SALESFORCE_USERNAME=os.environ["SF_USERNAME"],
            AUTHKIT_SALESFORCE_PRIVATE_KEY_FILE=os.environ["SF_PRIVATE_KEY_FILE"],
            AUTHKIT_SALESFORCE_LOGIN_URL=os.environ.get("SF_LOGIN_URL", "https://login.salesforce.com"),
        )
    app.config.update(config or {})
    authkit.init_app(app)

    @app.get("/")
    def home() -> Any:
        session["visits"] = session.get("visits", 0) + 1
        return jsonify(user=session.get("user_id"), visits=session["visits"])

    @app.post("/login")
    def login() -> Any:
        username = request.form["username"]  # a real app checks a password here
        regenerate_session()  # a new session id at login: no session fixation
        session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME of inactivity
        session["user_id"] = username
        return jsonify(user=username)

    @app.post("/logout")
    def logout() -> Any:
        session.clear()  # deletes the stored session and the cookie
        return jsonify(user=None)

    @app.get("/accounts")
    def accounts() -> Any:
        if "user_id" not in session:
            return jsonify(error="log in first"), 401
        # One client for the whole app, shared by every request thread.
        records = authkit.salesforce.query_all("SELECT Id, Name FROM Account ORDER BY Name")
        return jsonify(accounts=[r["Name"] for r in records])

    return app


def selftest() -> None:
    """Drive the app through Flask's test client against a local fake org."""
    from authkit.testing import FakeSalesforce

    with tempfile.TemporaryDirectory() as tmp, FakeSalesforce() as org:
        jwt_app = org.register_jwt_app(run_as=org.default_user.username)
        key_file = Path(tmp) / "server.key"
        key_file.write_text(jwt_app.private_key_pem or "")
        if org.rest is not None:
            org.rest.insert("Account", {"Name": "Acme"})
            org.rest.insert("Account", {"Name": "Globex"})
        app = create_app({
            "TESTING": True,
            "AUTHKIT_STORAGE_URL": f"sqlite:///{Path(tmp) / 'authkit.db'}",
            "AUTHKIT_SALESFORCE_FLOW": "jwt",
            "AUTHKIT_SALESFORCE_CLIENT_ID": jwt_app.client_id,
            "AUTHKIT_SALESFORCE_USERNAME": org.default_user.username,
            "AUTHKIT_SALESFORCE_PRIVATE_KEY_FILE": str(key_file),
            "AUTHKIT_SALESFORCE_LOGIN_URL": org.login_url,
        })
        storage = authkit.get_storage(app)
        client = app.test_client()

        print("GET /            ->", client.get("/").json)
        anonymous = client.get_cookie("session")
        assert anonymous is not None
        print("POST /login      ->", client.post("/login", data={"username": "alice"}).json)
        logged_in = client.get_cookie("session")
        assert logged_in is not None and logged_in.value != anonymous.value
        print("session id changed at login:", logged_in.value != anonymous.value,
              "| old session deleted:", storage.get_session(stored_session_id(anonymous.value)) is None)
        print("GET /            ->", client.get("/").json)
        record = storage.get_session(stored_session_id(logged_in.value))
        assert record is not None and record.expires_at is not None
        print(f"stored session   -> user_id={record.user_id!r}, data={record.data}, "
              f"expires in {round((record.expires_at - storage.now()).total_seconds() / 60)} min")
        print("GET /accounts    ->", client.get("/accounts").json)
        client.get("/accounts")
        print("token requests to Salesforce:", org.token_requests, " (one login, shared by all requests)")
        print("POST /logout     ->", client.post("/logout").json)
        print("session after logout:", storage.get_session(stored_session_id(logged_in.value)))
        result = app.test_cli_runner().invoke(args=["authkit", "cleanup"])
        print("flask authkit cleanup ->", result.output.strip())
        assert result.exit_code == 0
        assert org.token_requests == 1
        authkit.close(app)
    print("self-check passed")


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        create_app().run(debug=False)
    else:
        selftest()
