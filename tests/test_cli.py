"""The ``authkit`` command, run as users run it: ``python -m authkit`` in a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from authkit import AuthToken, SessionData, open_storage
from authkit.testing import FakeSalesforce
from tests.services import POSTGRES_URL, REDIS_URL, require, unique_prefix

ROOT = Path(__file__).resolve().parent.parent
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)
FUTURE = datetime(2999, 1, 1, tzinfo=timezone.utc)


def _env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no authkit or Salesforce settings leak in from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHKIT_", "SF_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def authkit(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "authkit", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "authkit", *args], cwd=cwd, env=env or _env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's single stderr line (and check there is nothing else: no traceback)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("authkit: error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def seeded(url: str, live: int, expired: int, **options: object) -> None:
    """Store ``live`` and ``expired`` records of each kind (tokens, sessions, kv)."""
    # A storage whose clock says 2020 writes kv entries whose short ttl is long over:
    # expired data without sleeping.
    with open_storage(url, **options) as storage, open_storage(url, clock=lambda: PAST, **options) as past:
        storage.store_tokens_bulk([AuthToken(f"t{i}", "u1", f"access-{i}", expires_at=PAST if i < expired else FUTURE)
                                   for i in range(live + expired)])
        storage.store_sessions_bulk([(f"s{i}", SessionData(f"s{i}", "u1", expires_at=PAST if i < expired else FUTURE))
                                     for i in range(live + expired)])
        for i in range(live):
            storage.store_kv(f"live{i}", b"v", ttl=3600)
        for i in range(expired):
            past.store_kv(f"old{i}", b"v", ttl=1)


# -- basics -----------------------------------------------------------------------


def test_version_and_help(tmp_path: Path) -> None:
    result = authkit("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("authkit ")
    result = authkit("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("init", "stats", "cleanup", "reencrypt", "salesforce"):
        assert command in result.stdout


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = authkit(cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result) == (
        "authkit: error: the following arguments are required: COMMAND (see: authkit --help)")


def test_init_creates_the_default_sqlite_file_in_the_current_directory(tmp_path: Path) -> None:
    result = authkit("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: schema ready at sqlite:///authkit.db (0 records stored)\n"
    assert (tmp_path / "authkit.db").exists()
    again = authkit("init", "--check", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("ok: schema verified")


def test_only_init_creates_a_storage(tmp_path: Path, sqlite_url: str) -> None:
    # A cron job pointed at a mistyped path must fail, not report zeros from a new empty database.
    for command in ("stats", "cleanup", "init --check"):
        result = authkit(*command.split(), "--storage", sqlite_url, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert "create it with `authkit init`" in one_error_line(result)
    assert not (tmp_path / "cli.db").exists()
    seeded(sqlite_url, live=1, expired=0, prefix="other_")  # the file exists, our tables do not
    result = authkit("cleanup", "--storage", sqlite_url, cwd=tmp_path)
    assert result.returncode == 2
    assert "authkit init" in one_error_line(result)
    assert authkit("init", "--storage", sqlite_url, cwd=tmp_path).returncode == 0
    assert authkit("cleanup", "--storage", sqlite_url, cwd=tmp_path).returncode == 0


def test_storage_from_the_environment_and_options_after_the_command(tmp_path: Path, sqlite_url: str) -> None:
    seeded(sqlite_url, live=2, expired=1)
    by_env = authkit("stats", "--json", cwd=tmp_path, env=_env(AUTHKIT_STORAGE_URL=sqlite_url))
    by_option = authkit("--storage", sqlite_url, "stats", "--json", cwd=tmp_path)
    after = authkit("stats", "--json", "--storage", sqlite_url, cwd=tmp_path)
    assert by_env.returncode == by_option.returncode == after.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout) == json.loads(by_option.stdout) == json.loads(after.stdout)
    assert not (tmp_path / "authkit.db").exists()


def test_stats_counts_live_and_expired(tmp_path: Path, sqlite_url: str) -> None:
    seeded(sqlite_url, live=3, expired=2)
    result = authkit("stats", "--json", "--storage", sqlite_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "tokens_live": 3, "tokens_expired": 2, "sessions_live": 3, "sessions_expired": 2,
        "kv_live": 3, "kv_expired": 2,
    }
    table = authkit("stats", "--storage", sqlite_url, cwd=tmp_path)
    assert table.returncode == 0
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines()[2:]}
    assert rows == {"tokens": ["3", "2"], "sessions": ["3", "2"], "kv": ["3", "2"]}


def test_prefix_selects_another_set_of_tables(tmp_path: Path, sqlite_url: str) -> None:
    seeded(sqlite_url, live=1, expired=0, prefix="app1_")
    assert authkit("init", "--storage", sqlite_url, "--prefix", "app2_", cwd=tmp_path).returncode == 0
    mine = authkit("stats", "--json", "--storage", sqlite_url, "--prefix", "app1_", cwd=tmp_path)
    other = authkit("stats", "--json", "--storage", sqlite_url, "--prefix", "app2_", cwd=tmp_path)
    assert json.loads(mine.stdout)["tokens_live"] == 1
    assert json.loads(other.stdout)["tokens_live"] == 0


# -- cleanup ------------------------------------------------------------------------


def test_cleanup_deletes_expired_records_and_prints_one_line(tmp_path: Path, sqlite_url: str) -> None:
    seeded(sqlite_url, live=3, expired=5)
    result = authkit("cleanup", "--storage", sqlite_url, "--batch-size", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"cleanup: deleted 15 expired records \(tokens 5, sessions 5, kv 5\) in \d+\.\d\d s\n",
                        result.stdout), result.stdout
    assert result.stderr == ""  # not a terminal: no progress bar
    after = json.loads(authkit("stats", "--json", "--storage", sqlite_url, cwd=tmp_path).stdout)
    assert after == {"tokens_live": 3, "tokens_expired": 0, "sessions_live": 3, "sessions_expired": 0,
                     "kv_live": 3, "kv_expired": 0}


def test_cleanup_json_and_quiet(tmp_path: Path, sqlite_url: str) -> None:
    seeded(sqlite_url, live=1, expired=2)
    result = authkit("cleanup", "--json", "--storage", sqlite_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "ok"
    assert (data["tokens"], data["sessions"], data["kv"], data["total"]) == (2, 2, 2, 6)
    quiet = authkit("cleanup", "-q", "--storage", sqlite_url, cwd=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_cleanup_draws_a_progress_bar_only_on_a_terminal(tmp_path: Path, sqlite_url: str) -> None:
    pty = pytest.importorskip("pty")
    seeded(sqlite_url, live=0, expired=30)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "authkit", "cleanup", "--batch-size", "5",
                                 "--storage", sqlite_url], cwd=tmp_path, env=_env(),
                                stdout=subprocess.PIPE, stderr=slave, text=True)
        stdout, _ = proc.communicate(timeout=60)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed, all read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "cleanup [" in terminal and "/90" in terminal
    assert stdout.startswith("cleanup: deleted 90 expired records")


def test_cleanup_skips_while_another_run_holds_the_lock(tmp_path: Path, sqlite_url: str) -> None:
    seeded(sqlite_url, live=0, expired=3)
    with open_storage(sqlite_url) as storage, storage.lock("authkit-cleanup", timeout=5, ttl=60):
        skipped = authkit("cleanup", "--storage", sqlite_url, cwd=tmp_path)
        skipped_json = authkit("cleanup", "--json", "--storage", sqlite_url, cwd=tmp_path)
    assert (skipped.returncode, skipped.stdout, skipped.stderr) == (0, "skipped: another cleanup is running\n", "")
    assert json.loads(skipped_json.stdout) == {"status": "skipped", "reason": "another cleanup is running"}
    ran = authkit("cleanup", "--storage", sqlite_url, cwd=tmp_path)
    assert ran.stdout.startswith("cleanup: deleted 9 expired records")


def _contention(url: str, cwd: Path, prefix: str | None) -> None:
    """One run waits for the lock, one skips; then two real runs race; nobody fails."""
    extra = ["--prefix", prefix] if prefix else []
    options = {"prefix": prefix} if prefix else {}
    seeded(url, live=2, expired=4, **options)
    with open_storage(url, **options) as storage:
        held = storage.lock("authkit-cleanup", timeout=5, ttl=60)
        held.__enter__()
        try:
            waiter = start("cleanup", "--wait", "30", "--storage", url, *extra, cwd=cwd)
            skipper = authkit("cleanup", "--storage", url, *extra, cwd=cwd)
            assert (skipper.returncode, skipper.stdout) == (0, "skipped: another cleanup is running\n"), skipper.stderr
            # The waiter cannot finish while the lock is held; below, it ran (not skipped) after.
            assert waiter.poll() is None
        finally:
            held.__exit__(None, None, None)
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        assert out.startswith("cleanup: deleted 12 expired records"), out

        # Two overlapping runs on plenty of rows: each one either works or skips, and every
        # expired row is deleted exactly once.
        seeded(url, live=0, expired=900, **options)
        runs = [start("cleanup", "--json", "--batch-size", "30", "--storage", url, *extra, cwd=cwd)
                for _ in range(2)]
        results = [run.communicate(timeout=120) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], [r[1] for r in results]
        reports = [json.loads(out) for out, _ in results]
        assert {r["status"] for r in reports} <= {"ok", "skipped"}
        assert sum(r.get("total", 0) for r in reports) == 2700
        assert storage.stats()["tokens_expired"] == 0


def test_two_cleanups_at_once_on_sqlite(tmp_path: Path, sqlite_url: str) -> None:
    _contention(sqlite_url, tmp_path, None)


@pytest.fixture
def postgres_prefix() -> Iterator[str]:
    url = require(POSTGRES_URL, "PostgreSQL")
    prefix = unique_prefix("cli")
    yield prefix
    _drop_tables(url, prefix)


def _drop_tables(url: str, prefix: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            for name in sqlalchemy.inspect(conn).get_table_names():
                if name.startswith(prefix):
                    conn.execute(sqlalchemy.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()


def test_two_cleanups_at_once_on_postgresql(tmp_path: Path, postgres_prefix: str) -> None:
    _contention(POSTGRES_URL, tmp_path, postgres_prefix)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    from tests.backends import drop_redis_keys

    url = require(REDIS_URL, "Redis")
    prefix = unique_prefix("cli").rstrip("_") + ":"
    yield prefix
    client = redis.Redis.from_url(url)
    try:
        drop_redis_keys(client, prefix)
    finally:
        client.close()


def test_two_cleanups_at_once_on_redis(tmp_path: Path, redis_prefix: str) -> None:
    _contention(REDIS_URL, tmp_path, redis_prefix)


# -- failures: one line, the right exit status, no secrets ----------------------------


@pytest.mark.parametrize("url", ["foo://somewhere", "no-scheme-at-all"])
def test_bad_url_is_one_line_and_exit_2(tmp_path: Path, url: str) -> None:
    result = authkit("cleanup", "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "storage" in one_error_line(result)


@pytest.mark.parametrize(("url", "commands"), [
    ("postgresql://postgres:hunter2secret@127.0.0.1:1/test", ("init", "stats", "cleanup")),
    ("mysql://root:hunter2secret@127.0.0.1:1/test", ("cleanup",)),
    ("redis://:hunter2secret@127.0.0.1:1/0", ("cleanup",)),
    ("postgresql://postgres:hunter2secret@nosuchhost.invalid/test", ("cleanup",)),
])
def test_unreachable_server_is_one_line_and_exit_1_without_the_password(
        tmp_path: Path, url: str, commands: tuple[str, ...]) -> None:
    for command in commands:
        result = authkit(command, "--storage", url, cwd=tmp_path)
        assert result.returncode == 1, (command, result.stderr)
        line = one_error_line(result)
        assert "hunter2secret" not in result.stdout + result.stderr
        assert "StorageUnavailableError" in line


def test_json_failure_is_also_json_on_stdout(tmp_path: Path) -> None:
    result = authkit("cleanup", "--json", "--storage", "postgresql://postgres@127.0.0.1:1/test", cwd=tmp_path)
    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "error"
    one_error_line(result)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = authkit("--debug", "stats", "--storage", "foo://x", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ConfigurationError" in result.stderr


def test_bad_option_values_are_usage_errors(tmp_path: Path) -> None:
    for args in (["cleanup", "--batch-size", "0"], ["cleanup", "--wait", "-1"], ["cleanup", "--wait", "soon"]):
        result = authkit(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr


# -- reencrypt --------------------------------------------------------------------------


def test_reencrypt_moves_every_record_to_the_newest_key(tmp_path: Path, sqlite_url: str) -> None:
    from authkit.storage import generate_key

    old, new = generate_key(), generate_key()
    seeded(sqlite_url, live=4, expired=1, encryption_keys=[old])
    refused = authkit("reencrypt", "--storage", sqlite_url, cwd=tmp_path)
    assert refused.returncode == 2 and "AUTHKIT_ENCRYPTION_KEYS" in one_error_line(refused)

    result = authkit("reencrypt", "--json", "--batch-size", "2", "--storage", sqlite_url, cwd=tmp_path,
                     env=_env(AUTHKIT_ENCRYPTION_KEYS=f"{new},{old}"))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # 5 tokens (expired included), 4 live sessions, 4 live kv entries
    assert (data["status"], data["records"]) == ("ok", 13)
    assert old not in result.stdout + result.stderr and new not in result.stdout + result.stderr
    with open_storage(sqlite_url, encryption_keys=[new]) as storage:  # the old key is no longer needed
        assert storage.get_token("t4") is not None and storage.get_kv("live0") == b"v"
    again = authkit("reencrypt", "--storage", sqlite_url, cwd=tmp_path, env=_env(AUTHKIT_ENCRYPTION_KEYS=new))
    assert again.stdout.startswith("reencrypt: 0 records moved to the newest key"), again.stdout


def test_wrong_or_malformed_key_is_one_line(tmp_path: Path, sqlite_url: str) -> None:
    from authkit.storage import generate_key

    right, wrong = generate_key(), generate_key()
    seeded(sqlite_url, live=1, expired=0, encryption_keys=[right])
    result = authkit("reencrypt", "--storage", sqlite_url, cwd=tmp_path, env=_env(AUTHKIT_ENCRYPTION_KEYS=wrong))
    assert result.returncode == 1
    assert "EncryptionError" in one_error_line(result)
    assert wrong not in result.stderr and right not in result.stderr
    bad = authkit("stats", "--storage", sqlite_url, cwd=tmp_path, env=_env(AUTHKIT_ENCRYPTION_KEYS="not-a-key"))
    assert bad.returncode == 2
    one_error_line(bad)


def test_reencrypt_on_a_plain_storage_is_refused(tmp_path: Path) -> None:
    from authkit.storage import generate_key

    result = authkit("reencrypt", "--storage", "memory://", cwd=tmp_path,
                     env=_env(AUTHKIT_ENCRYPTION_KEYS=generate_key()))
    # memory:// with keys is encrypted too: it runs and finds nothing to move
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reencrypt: 0 records")


# -- salesforce check ---------------------------------------------------------------------


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as fake:
        yield fake


def _jwt_env(org: FakeSalesforce, tmp_path: Path) -> tuple[dict[str, str], str]:
    app = org.register_jwt_app(org.default_user.username)
    assert app.private_key_pem is not None
    key = tmp_path / "server.key"
    key.write_text(app.private_key_pem)
    env = _env(SF_CLIENT_ID=app.client_id, SF_USERNAME=org.default_user.username,
               SF_PRIVATE_KEY_FILE=str(key), SF_LOGIN_URL=org.login_url)
    return env, app.private_key_pem


def test_salesforce_check_with_jwt_from_the_environment(tmp_path: Path, org: FakeSalesforce) -> None:
    env, private_key = _jwt_env(org, tmp_path)
    result = authkit("salesforce", "check", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"ok: authenticated with the JWT bearer flow in \d+\.\d\d s", lines[0])
    user = org.default_user
    assert lines[1:] == [f"org:      {org.org_id}", f"user:     {user.username} ({user.user_id}) {user.name}",
                         f"instance: {org.instance_url}"]
    assert org.token_requests == 1
    assert private_key.splitlines()[1] not in result.stdout + result.stderr
    assert not (tmp_path / "authkit.db").exists()  # no storage touched without --token-store


def test_salesforce_check_json_and_every_flow(tmp_path: Path, org: FakeSalesforce) -> None:
    user = org.default_user
    app = org.register_app(run_as=user.username)
    flows = {
        "refresh-token": _env(SF_CLIENT_ID=app.client_id, SF_CLIENT_SECRET=app.client_secret,
                              SF_REFRESH_TOKEN=org.issue_refresh_token(app.client_id), SF_LOGIN_URL=org.login_url),
        "password": _env(SF_CLIENT_ID=app.client_id, SF_CLIENT_SECRET=app.client_secret, SF_USERNAME=user.username,
                         SF_PASSWORD=user.password, SF_SECURITY_TOKEN=user.security_token,
                         SF_LOGIN_URL=org.login_url),
        "client-credentials": _env(SF_CLIENT_ID=app.client_id, SF_CLIENT_SECRET=app.client_secret,
                                   SF_DOMAIN_URL=org.login_url),
    }
    for flow, env in flows.items():
        result = authkit("salesforce", "check", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, (flow, result.stderr)
        data = json.loads(result.stdout)
        assert (data["flow"], data["organization_id"], data["username"]) == (flow, org.org_id, user.username)
        assert data["instance_url"] == org.instance_url
        secrets = [app.client_secret, user.password, env.get("SF_REFRESH_TOKEN")]
        assert not [s for s in secrets if s and s in result.stdout + result.stderr]


def test_salesforce_check_shares_the_token_through_the_store(tmp_path: Path, org: FakeSalesforce,
                                                            sqlite_url: str) -> None:
    env, _ = _jwt_env(org, tmp_path)
    env["AUTHKIT_STORAGE_URL"] = sqlite_url
    for _ in range(2):
        result = authkit("salesforce", "check", "--token-store", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert f"token store: {sqlite_url}" in result.stdout
    assert org.token_requests == 1  # the second run reused the stored token
    org.expire_sessions()  # the stored token is now dead: the check logs in again instead of failing
    result = authkit("salesforce", "check", "--token-store", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert org.token_requests == 2


def test_salesforce_check_failures_are_one_line(tmp_path: Path, org: FakeSalesforce) -> None:
    env, _ = _jwt_env(org, tmp_path)
    refused = authkit("salesforce", "check", cwd=tmp_path, env={**env, "SF_USERNAME": "nobody@example.com"})
    assert refused.returncode == 1
    assert "authentication failed: invalid_grant" in one_error_line(refused)

    unapproved = org.register_jwt_app(approved_users=set())
    assert unapproved.private_key_pem is not None
    key = tmp_path / "unapproved.key"
    key.write_text(unapproved.private_key_pem)
    not_approved = authkit("salesforce", "check", cwd=tmp_path,
                           env={**env, "SF_CLIENT_ID": unapproved.client_id, "SF_PRIVATE_KEY_FILE": str(key)})
    assert not_approved.returncode == 1
    assert one_error_line(not_approved).endswith(
        "authentication failed: invalid_grant: user hasn't approved this consumer "
        "(hint: pre-authorize the user: connected app > Manage > Profiles or Permission Sets)")

    missing = authkit("salesforce", "check", cwd=tmp_path, env=_env())
    assert missing.returncode == 2
    assert "no Salesforce credentials" in one_error_line(missing)

    no_user = authkit("salesforce", "check", "--flow", "jwt", cwd=tmp_path,
                      env={k: v for k, v in env.items() if k != "SF_USERNAME"})
    assert no_user.returncode == 2
    assert "SF_USERNAME" in one_error_line(no_user)

    down = authkit("salesforce", "check", cwd=tmp_path, env={**env, "SF_LOGIN_URL": "http://127.0.0.1:1"})
    assert down.returncode == 1
    one_error_line(down)

    insecure = authkit("salesforce", "check", cwd=tmp_path, env={**env, "SF_LOGIN_URL": "http://example.com"})
    assert insecure.returncode == 2
    assert "https" in one_error_line(insecure)


def test_salesforce_check_with_a_dead_static_token_says_why(tmp_path: Path, org: FakeSalesforce) -> None:
    token = org.jwt_auth().access_token()
    env = _env(SF_ACCESS_TOKEN=token, SF_INSTANCE_URL=org.instance_url)
    alive = authkit("salesforce", "check", "--json", cwd=tmp_path, env=env)
    assert alive.returncode == 0, alive.stderr
    assert json.loads(alive.stdout)["flow"] == "static"
    org.revoke(token)
    dead = authkit("salesforce", "check", cwd=tmp_path, env=env)
    assert dead.returncode == 1
    line = one_error_line(dead)
    assert line.startswith("authkit: error: Salesforce refused the access token (403")
    assert "expired or was revoked (hint: get a new SF_ACCESS_TOKEN" in line
    assert token not in dead.stdout + dead.stderr
