"""``authkit salesforce login`` and ``authkit salesforce logout``.

``login`` runs the web-server flow with PKCE end to end: it listens on the
loopback redirect URI, opens the authorization URL in a browser where it can
and always prints it (on a server without a display, open it in a browser
whose ``localhost`` reaches the server, e.g. through ``ssh -L 1717:localhost:1717``),
checks ``state``, trades the code for tokens and keeps the refresh token in
the token store::

    authkit salesforce login --client-id 3MVG9... --token-store --storage redis://cache:6379/0
    # later, in any process:
    RefreshTokenAuth("3MVG9...", None, token_store=store, username="me@acme.com")

``logout`` revokes that token at Salesforce and removes it from the store.
The commands are registered by :func:`add_commands`; everything else about
the ``authkit`` command (storage options, exit codes, masking) is
:mod:`authkit.cli`'s.
"""

from __future__ import annotations

import argparse
import html
import json
import queue
import socket
import threading
import webbrowser
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from authkit import cli as _cli
from authkit._cli_run import EXIT_OK, EXIT_USAGE, _emit, _Failure, _positive_seconds
from authkit._cli_storage import _opened, _storage_label
from authkit.errors import AuthenticationError, ConfigurationError

__all__ = ["add_commands", "DEFAULT_LOGIN_TIMEOUT"]

DEFAULT_LOGIN_TIMEOUT = 300.0
_LOOPBACK_HOSTS = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1", "::1": "::1"}


# -- the loopback redirect receiver -------------------------------------------------


class _Receiver(HTTPServer):
    """One-shot HTTP server on the redirect URI's loopback address: hands the first
    redirect that carries a ``code`` or an ``error`` to the waiting command."""

    allow_reuse_address = True

    def __init__(self, host: str, port: int, path: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _RedirectHandler)
        self.redirect_path = path or "/"
        self.results: queue.Queue[dict[str, str]] = queue.Queue()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _RedirectHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds the authorization code: never logged.
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != self.server.redirect_path:
            self._page(404, "Not found", "This is the authkit login redirect; nothing else lives here.")
            return
        params = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        if "code" not in params and "error" not in params:
            self._page(400, "Not a login redirect", "The request carries neither a code nor an error.")
            return
        self.server.results.put(params)
        if "error" in params:
            self._page(200, "Login failed", f"Salesforce said: {params.get('error_description') or params['error']}. "
                                            "See the terminal.")
        else:
            self._page(200, "Logged in", "authkit received the login. You can close this window.")

    def _page(self, status: int, title: str, text: str) -> None:
        body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
                f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")  # the URL holds the code
        self.end_headers()
        self.wfile.write(body)


def _receiver(redirect_uri: str) -> tuple[_Receiver, str]:
    """A listening receiver for ``redirect_uri`` and the redirect URI to send (port 0 → the bound port)."""
    parts = urlsplit(redirect_uri)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host not in _LOOPBACK_HOSTS:
        raise _Failure(
            f"--redirect-uri must be an http:// loopback URL (localhost, 127.0.0.1 or [::1]), got {redirect_uri!r}: "
            "the command receives the redirect itself", EXIT_USAGE)
    try:
        port = parts.port if parts.port is not None else 80
    except ValueError:
        raise _Failure(f"--redirect-uri has an invalid port: {redirect_uri!r}", EXIT_USAGE) from None
    try:
        server = _Receiver(_LOOPBACK_HOSTS[host], port, parts.path)
    except OSError as exc:
        raise _Failure(f"cannot listen on {host}:{port} for the login redirect: {exc.strerror} "
                            "(another login running? choose another --redirect-uri registered on the app)") from None
    if port == 0:
        netloc = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
        redirect_uri = urlunsplit(parts._replace(netloc=netloc))
    return server, redirect_uri


# -- login ------------------------------------------------------------------------------


def _cmd_login(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: Any) -> int:
    from authkit.salesforce.auth import LOGIN_URL, WebServerFlow

    if not args.token_store and not args.print_refresh_token:
        raise _Failure("say where the refresh token goes: --token-store (the --storage store) or "
                            "--print-refresh-token (stdout, e.g. into a secret manager)", EXIT_USAGE)
    for name in _cli._SECRET_ENV:
        _cli._env(name, scrub)
    client_id = args.client_id or _cli._env("SF_CLIENT_ID")
    if not client_id:
        raise _Failure("missing Salesforce setting --client-id or SF_CLIENT_ID: login needs the connected "
                            "app's consumer key", EXIT_USAGE)
    secret = _cli._env("SF_CLIENT_SECRET")
    login_url = args.login_url or _cli._env("SF_LOGIN_URL") or LOGIN_URL
    username = args.username or _cli._env("SF_USERNAME")
    with ExitStack() as stack:
        store = stack.enter_context(_opened(args, scrub, create=True)) if args.token_store else None
        server, redirect_uri = _receiver(args.redirect_uri or _cli._env("SF_REDIRECT_URI") or _default_redirect())
        stack.callback(server.server_close)
        try:
            flow = WebServerFlow(client_id, redirect_uri, client_secret=secret, login_url=login_url,
                                 scopes=tuple(args.scopes.split()))
        except (TypeError, ValueError) as exc:
            raise _Failure(f"bad Salesforce setting: {exc}", EXIT_USAGE) from None
        url, state, verifier = flow.authorization_url()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="authkit-login-redirect", daemon=True)
        thread.start()
        stack.callback(server.shutdown)
        err.write(f"Log in to Salesforce in a browser; waiting for the redirect to {redirect_uri}\n{url}\n")
        err.flush()
        if not args.no_browser and _open_browser(url):
            err.write("(opened in your browser)\n")
            err.flush()
        try:
            params = server.results.get(timeout=args.timeout)
        except queue.Empty:
            raise _Failure(f"timed out after {args.timeout:g} s waiting for the browser login; run the "
                                "command again (--timeout SECONDS waits longer)") from None
        try:
            # First: a redirect that does not answer this login is ignored whatever it says.
            flow.check_state(state, params.get("state"))
        except AuthenticationError as exc:
            raise _Failure(f"login failed: {exc}") from None
        if "error" in params:
            description = params.get("error_description") or ""
            raise _Failure(f"login refused: {params['error']}: {description}".rstrip(": "))
        try:
            auth = flow.exchange(params["code"], verifier, token_store=store, username=username)
        except AuthenticationError as exc:
            raise _Failure(_cli._auth_failure(exc, "web-server")) from None
        refresh_token = auth.refresh_token
        assert refresh_token is not None
        scrub.add(refresh_token)
        instance = auth.instance_url
        who = auth.username
        as_who = f" as {who}" if who else ""
        data = {"status": "ok", "username": who, "instance_url": instance, "token_store": bool(args.token_store),
                "token_id": auth.token_id}
        if args.print_refresh_token:
            # The one place a secret is printed, because the user asked for exactly that.
            out.write(refresh_token + "\n")
            err.write(f"ok: logged in{as_who} at {instance}\n")
        elif args.json:
            out.write(json.dumps(data, sort_keys=True) + "\n")
        else:
            out.write(f"ok: logged in{as_who} at {instance}\n")
            out.write(f"token store: {_storage_label(args)} (token id {auth.token_id})\n")
            out.write(f"use it with: RefreshTokenAuth({client_id!r}, None, token_store=store, username={who!r})\n")
    return EXIT_OK


def _default_redirect() -> str:
    from authkit.salesforce.auth import DEFAULT_REDIRECT_URI

    return DEFAULT_REDIRECT_URI


def _open_browser(url: str) -> bool:
    """Open ``url`` in a browser if this machine has one; False on a server without a display."""
    try:
        return bool(webbrowser.open(url, new=2))
    except webbrowser.Error:
        return False


# -- logout ----------------------------------------------------------------------------


def _cmd_logout(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: Any) -> int:
    flow = args.flow or _cli._env("SF_FLOW") or "refresh-token"
    args.flow = flow
    flow = _cli._detect_flow(args)
    with ExitStack() as stack:
        store = stack.enter_context(_opened(args, scrub, create=False)) if args.token_store else None
        auth = _cli._build_auth(args, flow, scrub, store)
        if not hasattr(auth, "revoke"):
            raise _Failure(f"the {flow} flow has nothing to revoke: a static token is revoked where it "
                                "came from", EXIT_USAGE)
        try:
            revoked = auth.revoke()
        except AuthenticationError as exc:
            raise _Failure(_cli._auth_failure(exc, flow)) from None
        except ConfigurationError as exc:
            raise _Failure(str(exc), EXIT_USAGE) from None
    where = f" and removed it from {_storage_label(args)}" if args.token_store else ""
    line = f"ok: revoked the Salesforce token{where}" if revoked else "ok: nothing to revoke (no token held)"
    _emit(out, args, line, {"status": "ok", "revoked": revoked, "token_store": bool(args.token_store)})
    return EXIT_OK


# -- registration --------------------------------------------------------------------


def add_commands(sf_commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``login`` and ``logout`` under ``authkit salesforce``."""
    login = sf_commands.add_parser(
        "login", parents=[common], help="log in in a browser (web-server flow + PKCE) and keep the refresh token",
        description="Run the OAuth web-server flow with PKCE on a loopback redirect: open the login page in a "
                    "browser (the URL is printed too, for machines without one), check the state, and keep the "
                    "refresh token in the --storage store (--token-store). The connected app's callback URL "
                    "must be the --redirect-uri. SF_CLIENT_SECRET is sent if set.")
    login.add_argument("--client-id", help="connected app consumer key (default $SF_CLIENT_ID)")
    login.add_argument("--login-url", help="default $SF_LOGIN_URL, else https://login.salesforce.com")
    login.add_argument("--redirect-uri", help="the app's callback URL, an http loopback URL (default "
                       "$SF_REDIRECT_URI, else http://localhost:1717/OauthRedirect; port 0 picks a free one)")
    login.add_argument("--scopes", default="api refresh_token", help="space-separated (default: %(default)s)")
    login.add_argument("--username", help="name the stored token by this username (default: the user who logs "
                       "in, from Salesforce's identity service)")
    login.add_argument("--token-store", action="store_true", help="keep the tokens in the --storage store")
    login.add_argument("--print-refresh-token", action="store_true",
                       help="print the refresh token on stdout instead (a secret: pipe it somewhere safe)")
    login.add_argument("--no-browser", action="store_true", help="only print the URL; do not open a browser")
    login.add_argument("--timeout", type=_positive_seconds, default=DEFAULT_LOGIN_TIMEOUT, metavar="SECONDS",
                       help="how long to wait for the browser (default %(default)g)")
    login.add_argument("--json", action="store_true", help="print the result as one JSON object")
    login.set_defaults(handler=_cmd_login)

    logout = sf_commands.add_parser(
        "logout", parents=[common], help="revoke the stored Salesforce token and remove it from the store",
        description="Revoke the refresh token (and its access tokens) at Salesforce's /services/oauth2/revoke "
                    "and delete it from the --storage store. Other flows (--flow) revoke their access token.")
    logout.add_argument("--flow", metavar="FLOW", help="default: refresh-token")
    logout.add_argument("--client-id", help="connected app consumer key (default $SF_CLIENT_ID)")
    logout.add_argument("--username", help="the stored token's username (default $SF_USERNAME)")
    logout.add_argument("--login-url", help="default $SF_LOGIN_URL, else https://login.salesforce.com")
    logout.add_argument("--token-store", action="store_true", help="the token is in the --storage store")
    logout.add_argument("--json", action="store_true", help="print the result as one JSON object")
    for name in ("private_key_file", "audience", "domain_url", "instance_url", "subject_token_type"):
        logout.set_defaults(**{name: None})
    logout.set_defaults(handler=_cmd_logout)
