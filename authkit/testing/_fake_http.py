"""The HTTP side of :class:`~authkit.testing.FakeSalesforce`: a threading server on 127.0.0.1 whose
handler routes each request (OAuth endpoints, identity, ``/services/data``, ``/services/apexrest``) to
the org, logs only method, path and status, and closes every connection when the org stops.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from authkit.testing._fake_faults import take
from authkit.testing._fake_oauth import authorize_endpoint, form_fields, revoke_endpoint, token_endpoint

if TYPE_CHECKING:
    from authkit.testing.fake_salesforce import FakeSalesforce

__all__ = ["Server", "Handler"]

logger = logging.getLogger("authkit.testing")

_JSON = "application/json;charset=UTF-8"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 64 threads connecting at once must not hit a full backlog
    org: FakeSalesforce


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server
    timeout = 30  # idle keep-alive connections end instead of pinning a thread forever
    # Headers and body go out as two writes; without TCP_NODELAY the body waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.server.org._mutex:
            self.server.org._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.org._mutex:
                self.server.org._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # Only the method and path reach the log, never headers or bodies (tokens).
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        org = self.server.org
        parts = urlsplit(self.path)
        path = parts.path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        auth = self.headers.get("Authorization")
        try:
            if path == "/services/oauth2/token":
                result = self._token_endpoint(method, body)
                if result is None:
                    return
            elif path == "/services/oauth2/userinfo" or path.startswith("/id/"):
                result = org._userinfo(auth)
            elif path == "/services/oauth2/revoke" and method in ("POST", "GET"):
                result = revoke_endpoint(org, method, parse_qs(parts.query, keep_blank_values=True), body)
            elif path == "/services/oauth2/authorize" and method == "GET":
                result = authorize_endpoint(org, parse_qs(parts.query, keep_blank_values=True))
            elif path.startswith(("/services/data", "/services/apexrest")):
                result = org._data(method, path, parse_qs(parts.query, keep_blank_values=True), body, auth,
                                   self.headers.get("Content-Type"), dict(self.headers.items()))
            else:
                error = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
                result = (404, {}, json.dumps(error).encode())
        except Exception:
            logger.exception("FakeSalesforce failed on %s %s", method, path)
            error = [{"errorCode": "UNKNOWN_EXCEPTION", "message": "An unexpected error occurred"}]
            result = (500, {}, json.dumps(error).encode())
        status, headers, payload = result
        with org._mutex:
            org.requests_log.append((method, path, status))
        logger.debug("FakeSalesforce %s %s -> %d", method, path, status)
        self.send_response(status)
        headers = {"Content-Type": _JSON, **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD" and payload:
            self.wfile.write(payload)

    def _token_endpoint(self, method: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        org = self.server.org
        with org._mutex:
            org.token_requests += 1
            drop = org._drop_token_connections > 0
            if drop:
                org._drop_token_connections -= 1
                injected = None
            else:
                injected = take(org._token_injected, "")
        if org.token_delay > 0:
            time.sleep(org.token_delay)
        if drop:
            # The request arrived (and for a refresh grant, the token is spent) but no answer comes.
            if method == "POST":
                form = form_fields(body)
                if form.get("grant_type") == "refresh_token":
                    token_endpoint(org, form)
            with org._mutex:
                org.requests_log.append((method, "/services/oauth2/token", 0))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if injected is not None:
            return injected.status, injected.headers, injected.body
        if method != "POST":
            return 405, {}, json.dumps({"error": "invalid_request", "error_description": "must use HTTP POST"}).encode()
        return token_endpoint(org, form_fields(body))
