"""One maintenance surface: ``authkit``, ``flask authkit`` and ``manage.py authkit_...`` behave alike.

Every bad input is one line on stderr (and a JSON object with ``--json``), with
the same exit status from all three shells, never a traceback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from tests import django_settings

if not settings.configured:
    settings.configure(**{name: getattr(django_settings, name) for name in dir(django_settings) if name.isupper()})
django.setup()

from django.core.management import ManagementUtility  # noqa: E402
from django.test import override_settings  # noqa: E402
from flask import Flask  # noqa: E402

import authkit.cli  # noqa: E402
from authkit import AuthToken, SessionData, open_storage  # noqa: E402
from authkit.contrib.flask import AuthKit  # noqa: E402
from authkit.maintenance import CLEANUP_LOCK, _CleanupEveryN, run_cleanup  # noqa: E402
from authkit.models import CleanupReport  # noqa: E402
from authkit.storage import MemoryStorage  # noqa: E402

PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)
FUTURE = datetime(2999, 1, 1, tzinfo=timezone.utc)
SHELLS = ("authkit", "flask", "django")


# -- run_cleanup, the library call --------------------------------------------------------


def test_run_cleanup_reports_and_skips_when_locked() -> None:
    storage = MemoryStorage()
    storage.store_kv("gone", b"x", ttl=0.000001)
    report = run_cleanup(storage, batch_size=1)
    assert report == CleanupReport(tokens=0, sessions=0, kv=1)
    with storage.lock(CLEANUP_LOCK):
        assert run_cleanup(storage) is None
        assert run_cleanup(storage, wait=0.05) is None
    for bad in (-1, float("nan"), float("inf"), 1e308):
        with pytest.raises(ValueError):
            run_cleanup(storage, wait=bad)
    for bad_ttl in (0, -1, 1e308):
        with pytest.raises(ValueError):
            run_cleanup(storage, lock_ttl=bad_ttl)
    with pytest.raises(TypeError):
        run_cleanup(storage, wait="1")  # type: ignore[arg-type]


def test_run_cleanup_does_not_mistake_a_failure_for_a_held_lock() -> None:
    class Slow(MemoryStorage):
        def _cleanup_batch(self, now: datetime, limit: int, *kinds: object) -> CleanupReport:
            raise TimeoutError("the work timed out")

    with pytest.raises(TimeoutError, match="work"):
        run_cleanup(Slow())


# -- cleanup every N requests -------------------------------------------------------------


def test_cleanup_every_n_requests_runs_on_a_thread_under_the_lock() -> None:
    storage = MemoryStorage()
    storage.store_kv("gone", b"x", ttl=0.000001)
    every = _CleanupEveryN(lambda: storage, 3)
    assert every.tick() is None and every.tick() is None
    thread = every.tick()
    assert thread is not None and thread is not threading.current_thread()
    thread.join(30)
    assert storage.list_kv_keys() == [] and storage.stats()["kv_expired"] == 0
    # While another process's cleanup holds the lock, the Nth request's cleanup skips.
    storage.store_kv("gone", b"x", ttl=0.000001)
    with storage.lock(CLEANUP_LOCK):
        for _ in range(2):
            assert every.tick() is None
        skipped = every.tick()
        assert skipped is not None
        skipped.join(30)
    assert storage.stats()["kv_expired"] == 1


def test_cleanup_every_n_requests_never_runs_two_at_once_and_never_raises() -> None:
    release = threading.Event()
    started = threading.Event()

    class Blocking(MemoryStorage):
        def _cleanup_batch(self, now: datetime, limit: int, *kinds: object) -> CleanupReport:
            started.set()
            release.wait(30)
            raise RuntimeError("the server went away")  # logged, not raised into a request

    every = _CleanupEveryN(Blocking, 1)
    first = every.tick()
    assert first is not None and started.wait(30)
    assert every.tick() is None  # the first one still runs
    release.set()
    first.join(30)
    assert not first.is_alive()


@pytest.mark.parametrize("bad", [0, -1, "10", 2.5, True])
def test_cleanup_every_n_requests_rejects_bad_intervals(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        _CleanupEveryN(MemoryStorage, bad)


def test_flask_cleanup_every_n_requests() -> None:
    storage = MemoryStorage()
    storage.store_kv("gone", b"x", ttl=0.000001)
    app = Flask(__name__)
    app.config.update(TESTING=True, AUTHKIT_CLEANUP_N_REQUESTS=2)
    AuthKit(app, storage=storage)
    app.add_url_rule("/", "index", lambda: "ok")
    client = app.test_client()
    client.get("/")
    assert storage.stats()["kv_expired"] == 1  # one request: nothing yet
    client.get("/")
    running = app.extensions["authkit"].cleanup._running
    assert running is not None
    running.join(30)
    assert storage.stats()["kv_expired"] == 0


def test_flask_cleanup_every_n_requests_bad_setting() -> None:
    from authkit.errors import ConfigurationError

    app = Flask(__name__)
    app.config.update(AUTHKIT_STORAGE_URL="memory://", AUTHKIT_CLEANUP_N_REQUESTS="10")
    with pytest.raises(ConfigurationError, match="AUTHKIT_CLEANUP_N_REQUESTS"):
        AuthKit(app)


def test_django_cleanup_every_n_requests() -> None:
    from django.test import Client

    import authkit.contrib.django as authkit_django

    storage = MemoryStorage()
    storage.store_kv("gone", b"x", ttl=0.000001)
    with override_settings(AUTHKIT_STORAGE=storage, AUTHKIT_CLEANUP_N_REQUESTS=2):
        client = Client()
        client.get("/touch")
        assert storage.stats()["kv_expired"] == 1  # one request: nothing yet
        client.get("/touch")
        every = authkit_django._cleanup
        assert every is not None and every._running is not None
        every._running.join(30)
        assert storage.stats()["kv_expired"] == 0
    assert authkit_django._cleanup is None  # the setting went away with override_settings


# -- the three shells ---------------------------------------------------------------------


class Shell:
    """Runs a maintenance command through one of the shells, as its users do, and captures it."""

    def __init__(self, name: str, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.name = name
        self.url = url
        self.capsys = capsys

    def __call__(self, *argv: str, options: dict[str, Any] | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        options = options or {}
        if self.name == "authkit":
            prefix = ["--prefix", options["prefix"]] if "prefix" in options else []
            status = authkit.cli.main(["--storage", self.url, *prefix, *argv])
            captured = self.capsys.readouterr()
            return status, captured.out, captured.err
        if self.name == "flask":
            app = Flask(__name__)
            app.config.update(AUTHKIT_STORAGE_URL=self.url, AUTHKIT_STORAGE_OPTIONS=options)
            ext = AuthKit(app)
            try:
                result = app.test_cli_runner().invoke(args=["authkit", *argv])
            finally:
                ext.close(app)
            return result.exit_code, result.stdout, result.stderr
        with override_settings(AUTHKIT_STORAGE=None, AUTHKIT_STORAGE_URL=self.url, AUTHKIT_STORAGE_OPTIONS=options):
            try:
                ManagementUtility(["manage.py", f"authkit_{argv[0]}", *argv[1:]]).execute()
                status = 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
        captured = self.capsys.readouterr()
        return status, captured.out, captured.err


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with open_storage(url) as storage:
        storage.store_tokens_bulk([AuthToken("t-old", "u1", "a-old", expires_at=PAST),
                                   AuthToken("t-new", "u1", "a-new", expires_at=FUTURE)])
        storage.store_sessions_bulk([("s-old", SessionData("s-old", "u1", expires_at=PAST)),
                                     ("s-new", SessionData("s-new", "u1", expires_at=FUTURE))])
    yield url


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> Shell:
    return Shell(request.param, sqlite_url, capsys)


def one_line(err: str, out: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("authkit: error: "), lines[0]
    assert "Traceback" not in err + out
    # The --help hint names the shell; the rest is the same whichever shell ran.
    return lines[0].split(" (see: ")[0]


BAD_INPUTS = [
    (["cleanup", "--lock-ttl", "0"], "argument --lock-ttl: must be > 0 seconds"),
    (["cleanup", "--lock-ttl", "1e308"], "argument --lock-ttl: must be a number of seconds >= 0 and at most 604800"),
    (["cleanup", "--lock-ttl", "nan"], "argument --lock-ttl: must be a number of seconds >= 0 and at most 604800"),
    (["cleanup", "--batch-size", "9" * 20], "argument --batch-size: must be > 0 and at most 1000000"),
    (["cleanup", "--batch-size", "0"], "argument --batch-size: must be > 0 and at most 1000000"),
    (["cleanup", "--batch-size", "ten"], "argument --batch-size: expected a whole number, got 'ten'"),
    (["cleanup", "--wait", "-1"], "argument --wait: must be a number of seconds >= 0 and at most 604800"),
    (["cleanup", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["stats", "--frobnicate", "x"], "unrecognized arguments: --frobnicate x"),
    (["reencrypt", "--lock-ttl", "-5"], "argument --lock-ttl: must be a number of seconds >= 0 and at most 604800"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[" ".join(a)[:40] for a, _ in BAD_INPUTS])
def test_bad_options_are_one_line_and_exit_2_in_every_shell(shell: Shell, argv: list[str], message: str) -> None:
    status, out, err = shell(*argv)
    assert status == 2
    assert one_line(err, out) == f"authkit: error: {message}"
    status, out, err = shell(*argv, "--json")
    assert status == 2
    assert one_line(err, out) == f"authkit: error: {message}"
    assert json.loads(out) == {"status": "error", "error": err.strip()[len("authkit: error: "):]}


@pytest.mark.parametrize("prefix", ["bad prefix!", "", "9starts_with_a_digit"])
def test_a_bad_prefix_is_one_line_and_exit_2_in_every_shell(shell: Shell, prefix: str) -> None:
    for command in ("stats", "cleanup", "init"):
        status, out, err = shell(command, "--json", options={"prefix": prefix})
        assert status == 2, (command, out, err)
        line = one_line(err, out)
        assert line.startswith("authkit: error: bad storage URL or option: prefix must be"), line
        assert json.loads(out)["status"] == "error"


def test_a_bad_storage_url_is_one_line_and_exit_2_in_every_shell(capsys: pytest.CaptureFixture[str]) -> None:
    lines = set()
    for name in SHELLS:
        status, out, err = Shell(name, "nosuch://x", capsys)("cleanup", "--json")
        assert status == 2
        line = one_line(err, out)
        lines.add(line)
        assert json.loads(out) == {"status": "error", "error": line[len("authkit: error: "):]}
    assert len(lines) == 1
    assert next(iter(lines)).startswith("authkit: error: bad storage configuration: unknown storage scheme")


def test_a_server_that_is_down_is_one_line_exit_1_and_no_password(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on the loopback: nothing listens, the connection is refused at once.
    url = "postgresql://app:s3cr3t-pw@127.0.0.1:1/x"
    for name in SHELLS:
        status, out, err = Shell(name, url, capsys)("stats", "--json")
        assert status == 1, (name, err)
        line = one_line(err, out)
        assert "StorageUnavailableError" in line
        assert "s3cr3t-pw" not in out + err
        assert json.loads(out)["status"] == "error"


def test_the_same_commands_succeed_alike_in_every_shell(shell: Shell) -> None:
    status, out, err = shell("stats", "--json")
    assert status == 0, err
    counts = json.loads(out)
    assert counts["tokens_live"] == 1 and counts["tokens_expired"] == 1
    status, out, err = shell("cleanup", "--json", "--batch-size", "1", "--lock-ttl", "60")
    assert status == 0, err
    summary = json.loads(out)
    assert summary.pop("seconds") >= 0
    assert summary == {"status": "ok", "tokens": 1, "sessions": 1, "kv": 0, "total": 2}
    status, out, err = shell("cleanup")
    assert (status, err) == (0, "")
    assert out.startswith("cleanup: deleted 0 expired records (tokens 0, sessions 0, kv 0) in ")
    status, out, err = shell("cleanup", "-q")
    assert (status, out, err) == (0, "", "")
    status, out, err = shell("init", "--json")
    assert status == 0 and json.loads(out)["status"] == "ok"
    status, out, err = shell("reencrypt")
    assert status == 2
    assert one_line(err, out) in ("authkit: error: this storage is not encrypted; nothing to re-encrypt",
                                  "authkit: error: reencrypt needs the keys in AUTHKIT_ENCRYPTION_KEYS "
                                  "(newest first, comma-separated) or AUTHKIT_ENCRYPTION_KEY_FILE")
    status, out, err = shell("encrypt", "--json")
    assert status == 2
    assert json.loads(out)["status"] == "error"
    assert one_line(err, out) in ("authkit: error: this storage has no encryption keys configured; "
                                  "nothing to encrypt with",
                                  "authkit: error: encrypt needs the keys in AUTHKIT_ENCRYPTION_KEYS "
                                  "or AUTHKIT_ENCRYPTION_KEY_FILE")


def test_cleanup_skips_alike_in_every_shell(shell: Shell, sqlite_url: str) -> None:
    with open_storage(sqlite_url) as storage, storage.lock(CLEANUP_LOCK, timeout=5):
        status, out, err = shell("cleanup", "--json")
        assert status == 0, err
        assert json.loads(out) == {"status": "skipped", "reason": "another cleanup is running"}


def test_help_lists_the_same_sub_commands(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    status, out, _ = Shell("authkit", sqlite_url, capsys)("--help")
    assert status == 0
    status, flask_out, _ = Shell("flask", sqlite_url, capsys)("--help")
    assert status == 0
    for command in ("init", "stats", "cleanup", "reencrypt", "encrypt"):
        assert command in out and command in flask_out
    status, out, _ = Shell("django", sqlite_url, capsys)("cleanup", "--help")
    assert status == 0 and "--lock-ttl" in out and "--batch-size" in out
    status, out, _ = Shell("django", sqlite_url, capsys)("encrypt", "--help")
    assert status == 0 and "--start" in out and "--lock-ttl" in out


def test_salesforce_api_version_abc_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for name in list(__import__("os").environ):
        if name.startswith(("SF_", "AUTHKIT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SF_ACCESS_TOKEN", "00Dxx-not-a-real-token")
    monkeypatch.setenv("SF_INSTANCE_URL", "https://acme.my.salesforce.com")
    monkeypatch.setenv("SF_API_VERSION", "abc")
    status = authkit.cli.main(["salesforce", "check"])
    captured = capsys.readouterr()
    assert status == 2
    assert one_line(captured.err, captured.out) == (
        "authkit: error: bad Salesforce setting: api_version must look like '62.0', got 'abc'")
    assert "00Dxx-not-a-real-token" not in captured.out + captured.err


# -- log out everywhere -------------------------------------------------------------------


def test_sessions_and_tokens_revoke_alike_in_every_shell(shell: Shell, sqlite_url: str) -> None:
    with open_storage(sqlite_url) as storage:
        storage.store_sessions_bulk([("s-keep", SessionData("s-keep", "u1", expires_at=FUTURE)),
                                     ("s-other", SessionData("s-other", "u2", expires_at=FUTURE))])
    status, out, err = shell("sessions", "revoke", "--user", "u1", "--keep", "s-keep", "--json")
    assert status == 0, err
    assert json.loads(out) == {"status": "ok", "user": "u1", "deleted": 2, "kept": True}
    status, out, err = shell("tokens", "revoke", "--user", "u1")
    assert status == 0, err
    assert out == "tokens revoke: deleted 2 tokens of user 'u1'\n"
    with open_storage(sqlite_url) as storage:
        assert [s.session_id for s in storage.list_user_sessions("u1")] == ["s-keep"]
        assert [s.session_id for s in storage.list_user_sessions("u2")] == ["s-other"]
        assert storage.list_user_tokens("u1") == []
    status, out, err = shell("sessions", "revoke", "--user", "u1")
    assert (status, out) == (0, "sessions revoke: deleted 1 sessions of user 'u1'\n")


REVOKE_BAD_INPUTS = [
    (["sessions", "revoke"], "the following arguments are required: --user"),
    (["sessions", "revoke", "--user", ""], "argument --user: id must not be empty"),
    (["sessions", "revoke", "--user", "x" * 256], "argument --user: id is 256 characters long; the limit is 255"),
    (["sessions", "revoke", "--user", "u1", "--keep", ""], "argument --keep: id must not be empty"),
    (["sessions"], "the following arguments are required: ACTION"),
    (["sessions", "purge"], "argument ACTION: invalid choice: 'purge' (choose from "),  # quoting varies by Python
    (["tokens", "revoke", "--user", "u1", "--keep", "s1"], "unrecognized arguments: --keep s1"),
]


@pytest.mark.parametrize(("argv", "message"), REVOKE_BAD_INPUTS, ids=[" ".join(a)[:40] for a, _ in REVOKE_BAD_INPUTS])
def test_revoke_bad_input_is_one_line_and_exit_2_in_every_shell(shell: Shell, argv: list[str], message: str) -> None:
    status, out, err = shell(*argv)
    assert status == 2
    line = one_line(err, out)
    assert line == f"authkit: error: {message}" or (
        message.endswith("from ") and line.startswith(f"authkit: error: {message}"))


# -- misconfiguration caught, not mistaken for an empty store -----------------------------


def test_a_missing_sqlite_directory_names_the_directory_exit_2_in_every_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "no" / "such" / "dir"
    url = f"sqlite:///{directory / 'a.db'}"
    for name in SHELLS:
        for command in ("init", "stats", "cleanup"):
            status, out, err = Shell(name, url, capsys)(command)
            assert status == 2, (name, command, err)
            assert one_line(err, out) == (f"authkit: error: bad storage configuration: the SQLite database's "
                                          f"directory {directory} does not exist; create it first")
    assert not (tmp_path / "no").exists()


def test_a_mistyped_redis_prefix_or_database_is_refused_not_reported_empty(
    capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.services import REDIS_URL, require, unique_prefix

    url = require(REDIS_URL, "Redis")
    prefix = unique_prefix("m").rstrip("_") + ":"
    shell = Shell("authkit", url, capsys)
    try:
        for command in (["stats"], ["cleanup"], ["init", "--check"]):
            status, out, err = shell(*command, "--json", options={"prefix": prefix})
            assert status == 2, (command, err)
            assert one_line(err, out).startswith(
                f"authkit: error: bad storage configuration: no authkit store with prefix {prefix!r} at Redis ")
        status, out, err = shell("init", options={"prefix": prefix})
        assert status == 0, err
        status, out, err = shell("stats", "--json", options={"prefix": prefix})
        assert status == 0 and json.loads(out)["kv_live"] == 0
    finally:
        import redis

        client = redis.Redis.from_url(url)
        for name in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(name)
        client.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_init_creates_what_an_app_with_create_schema_false_refuses(
    backend: str, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # create_schema=False is the safe production setting (a mistyped prefix is refused, not
    # created), so the app never creates its schema: `init` must, in every shell.
    from tests.services import REDIS_URL, require, unique_prefix

    url = sqlite_url if backend == "sqlite" else require(REDIS_URL, "Redis")
    prefixes = []
    try:
        for name in SHELLS:
            prefix = unique_prefix(name[:2])
            prefix = prefix if backend == "sqlite" else prefix.rstrip("_") + ":"
            prefixes.append(prefix)
            shell = Shell(name, url, capsys)
            options = {"prefix": prefix, "create_schema": False}
            status, out, err = shell("stats", "--json", options=options)
            assert status == 2 and json.loads(out)["status"] == "error", (name, err)
            assert "authkit init" in one_line(err, out)
            status, out, err = shell("init", "--json", options=options)
            assert status == 0 and json.loads(out)["status"] == "ok", (name, err)
            status, out, err = shell("stats", "--json", options=options)
            assert status == 0 and json.loads(out)["tokens_live"] == 0, (name, err)
    finally:
        if backend == "redis":
            import redis

            client = redis.Redis.from_url(url)
            for prefix in prefixes:
                for key in client.scan_iter(match=prefix + "*"):
                    client.delete(key)
            client.close()


def test_call_command_runs_the_same_code_and_raises_command_error(capsys: pytest.CaptureFixture[str]) -> None:
    from django.core import management
    from django.core.management.base import CommandError

    storage = MemoryStorage()
    storage.store_session("s1", SessionData("s1", "u1"))
    with override_settings(AUTHKIT_STORAGE=storage):
        management.call_command("authkit_sessions", "revoke", "--user", "u1", "--json")
        assert json.loads(capsys.readouterr().out) == {"status": "ok", "user": "u1", "deleted": 1, "kept": False}
        with pytest.raises(CommandError, match="nothing to re-encrypt") as info:
            management.call_command("authkit_reencrypt", "--json")
        assert info.value.returncode == 2
        assert json.loads(capsys.readouterr().out)["status"] == "error"
        with pytest.raises(CommandError, match="--lock-ttl"):
            management.call_command("authkit_cleanup", "--lock-ttl", "0")
