"""Every file in examples/ runs, as the README and the file's own docstring say to run it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authkit.testing import FakeSalesforce

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
COVERED: set[str] = set()  # example paths (relative to examples/) some test below runs


def covers(*names: str) -> None:
    COVERED.update(names)


def _env(**extra: str) -> dict[str, str]:
    """A clean environment (none of our AUTHKIT_*/SF_* settings) that finds this checkout's authkit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHKIT_", "SF_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run(args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


covers("quickstart.py")


def test_quickstart() -> None:
    """The README's first command."""
    out = run([sys.executable, "examples/quickstart.py"]).stdout
    for expected in (
        "== 1. Tokens, sessions and key-value data in one store",
        "store_token / get_token     -> AuthToken(token_id='github:alice', user_id='alice', access_token='***', ...)",
        "store_kv / get_kv           -> b'17' (ttl 60 s)",
        "32 queries from 16 threads on 2 clients -> ['Acme', 'Globex']",
        "token requests to Salesforce: 1  (minted once, shared by all)",
        "31 minutes later: get_session('sess-1') -> None",
        "query after the org killed every session -> 2 accounts, no exception",
        "token requests to Salesforce: 2  (one new login, then the retry)",
        "cleanup_expired() -> deleted tokens 0, sessions 1, kv 1",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    assert "demo-access-token" not in out  # the token's secret never printed


covers("multiprocess_workers.py")


def test_multiprocess_workers() -> None:
    out = run([sys.executable, "examples/multiprocess_workers.py", "--workers", "3", "--requests", "3"]).stdout
    assert "round 1: 9 API calls, token_requests == 1" in out, out
    assert "round 2 (after the org expired every session): token_requests == 2" in out, out


covers("jwt_shared_store.py")


def test_jwt_shared_store_logs_in_once_across_runs(tmp_path: Path) -> None:
    with FakeSalesforce() as org:
        app = org.register_jwt_app("integration@example.com")
        assert org.rest is not None and app.private_key_pem is not None
        for name in ("Acme", "Globex"):
            org.rest.insert("Account", {"Name": name})
        key = tmp_path / "server.key"
        key.write_text(app.private_key_pem)
        env = _env(SF_CLIENT_ID=app.client_id, SF_USERNAME="integration@example.com",
                   SF_PRIVATE_KEY_FILE=str(key), SF_LOGIN_URL=org.login_url,
                   AUTHKIT_STORAGE_URL=f"sqlite:///{tmp_path / 'tokens.db'}")
        first = run([sys.executable, str(EXAMPLES / "jwt_shared_store.py")], cwd=tmp_path, env=env).stdout
        second = run([sys.executable, str(EXAMPLES / "jwt_shared_store.py")], cwd=tmp_path, env=env).stdout
        assert re.search(r"^\S+ Acme$", first, re.M) and re.search(r"^\S+ Globex$", first, re.M), first
        assert "API usage today: " in first
        assert second.splitlines()[:2] == first.splitlines()[:2]
        assert org.token_requests == 1  # the second run reused the stored token
    assert app.private_key_pem not in first + second


def test_jwt_shared_store_without_settings_says_what_to_set_and_creates_nothing(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "jwt_shared_store.py")], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("jwt_shared_store.py: set SF_CLIENT_ID, SF_USERNAME, SF_PRIVATE_KEY_FILE (see the top "
                             "of this file); to try authkit without a Salesforce org, run examples/quickstart.py\n")
    assert list(tmp_path.iterdir()) == []  # no authkit.db left behind


covers("crontab")


def test_crontab_line_runs(tmp_path: Path) -> None:
    lines = [line for line in (EXAMPLES / "crontab").read_text().splitlines() if line and not line.startswith("#")]
    settings = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    jobs = [line for line in lines if not re.match(r"^[A-Z_]+=", line)]
    assert set(settings) == {"AUTHKIT_STORAGE_URL"} and len(jobs) == 1
    fields = jobs[0].split(None, 5)
    assert fields[:5] == ["*/15", "*", "*", "*", "*"]
    command = shlex.split(fields[5])
    assert command[0] == "authkit"
    # The same command on a storage of our own (made by `authkit init`, as a deploy would):
    # silent on success, as cron wants it.
    env = _env(AUTHKIT_STORAGE_URL=f"sqlite:///{tmp_path / 'cron.db'}")
    run([sys.executable, "-m", "authkit", "init"], env=env, cwd=tmp_path)
    result = run([sys.executable, "-m", "authkit", *command[1:]], env=env, cwd=tmp_path)
    assert (result.stdout, result.stderr) == ("", "")


covers("authkit-cleanup.service", "authkit-cleanup.timer")


def test_systemd_units(tmp_path: Path) -> None:
    service = (EXAMPLES / "authkit-cleanup.service").read_text()
    timer = (EXAMPLES / "authkit-cleanup.timer").read_text()
    assert "Unit=authkit-cleanup.service" in timer and "OnCalendar=" in timer
    exec_start = re.search(r"^ExecStart=(.+)$", service, re.M)
    assert exec_start is not None
    command = shlex.split(exec_start.group(1))
    assert command[0].endswith("/authkit") and command[1] == "cleanup"
    env_file = tmp_path / "cleanup.env"
    env_file.write_text(f"AUTHKIT_STORAGE_URL=sqlite:///{tmp_path / 'timer.db'}\n")
    # systemd's own checker, on a copy whose paths exist on this machine.
    analyze = shutil.which("systemd-analyze")
    if analyze:
        unit_dir = tmp_path / "units"
        unit_dir.mkdir()
        (unit_dir / "authkit-cleanup.service").write_text(
            service.replace(command[0], sys.executable + " -m authkit", 1)
            .replace("EnvironmentFile=/etc/authkit/cleanup.env", f"EnvironmentFile={env_file}"))
        (unit_dir / "authkit-cleanup.timer").write_text(timer)
        verify = subprocess.run([analyze, "verify", str(unit_dir / "authkit-cleanup.service"),
                                 str(unit_dir / "authkit-cleanup.timer")],
                                capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stderr
    settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    run([sys.executable, "-m", "authkit", "init"], env=_env(**settings), cwd=tmp_path)
    result = run([sys.executable, "-m", "authkit", *command[1:]], env=_env(**settings), cwd=tmp_path)
    assert result.stdout.startswith("cleanup: deleted 0 expired records"), result.stdout


covers("flask_app.py")


def test_flask_app(tmp_path: Path) -> None:
    out = run([sys.executable, "examples/flask_app.py"]).stdout
    assert "token requests to Salesforce: 1" in out and out.rstrip().endswith("self-check passed"), out
    # The cron command its docstring gives, with Flask's own CLI.
    cleanup = run([sys.executable, "-m", "flask", "--app", "examples/flask_app", "authkit", "cleanup"],
                  env=_env(AUTHKIT_STORAGE_URL=f"sqlite:///{tmp_path / 'flask.db'}"))
    assert cleanup.stdout.strip(), cleanup.stderr


covers("django_project/")


def test_django_project(tmp_path: Path) -> None:
    manage = str(EXAMPLES / "django_project" / "manage.py")
    env = _env(AUTHKIT_STORAGE_URL=f"sqlite:///{tmp_path / 'django.db'}")
    run([sys.executable, manage, "check"], env=env, cwd=tmp_path)
    out = run([sys.executable, manage, "selftest"], env=env, cwd=tmp_path).stdout
    assert "token requests to Salesforce: 1" in out and out.rstrip().endswith("self-check passed"), out
    for command in ("authkit_cleanup", "clearsessions"):
        run([sys.executable, manage, command], env=env, cwd=tmp_path)
    assert not (EXAMPLES / "django_project" / "authkit.db").exists()


def test_every_example_is_run_by_a_test() -> None:
    present = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".db"}}
    missing = {p for p in present if not any(p == c or p.startswith(c.rstrip("/") + "/") for c in COVERED)}
    if missing:
        pytest.fail(f"examples no test runs: {sorted(missing)}; add them to tests/test_examples.py")


# -- the README ---------------------------------------------------------------------------

README = (ROOT / "README.md").read_text()


REPO_URL = "https://github.com/authkit-sf/authkit-sf"


def test_readme_links_are_absolute_and_point_to_files_that_exist() -> None:
    """The README is the package index page too, where a relative link leads nowhere."""
    relative = re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#[^)]*)?\)", README)
    assert not relative, f"relative links break on the package index page: {relative}"
    links = re.findall(re.escape(REPO_URL) + r"/blob/main/([^)#\s]+)(?:#[^)]*)?\)", README)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
    assert f"Source = {REPO_URL}" in (ROOT / "setup.cfg").read_text()


def test_readme_commands_are_the_ones_ci_and_the_examples_use() -> None:
    assert "pip install -e . && python examples/quickstart.py" in README
    assert "pip install -e '.[dev]' && python -m pytest -q" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "AUTHKIT_REQUIRE_SERVICES=1" in ci
    # CI may bound the step with timeout(1) and keep a copy of its output with tee(1); the
    # command it runs is still the README's.
    assert re.search(r"^(timeout [-\w= ]+ )?python -m pytest -q( \| tee \S+)?$", ci, re.M), \
        "the CI script must run the README's test command"


def test_readme_storage_example_runs(tmp_path: Path) -> None:
    block = README.split("## Storage in one screen", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "storage_example.py"
    script.write_text(block)
    run([sys.executable, str(script)], cwd=tmp_path)
    assert (tmp_path / "authkit.db").exists()


def test_readme_fake_salesforce_fixture_example(tmp_path: Path) -> None:
    block = README.split("### Testing your code against a fake org", 1)[1].split("```python\n", 1)[1]
    (tmp_path / "test_readme_fixture.py").write_text(block.split("```", 1)[0])
    # The fixture comes from the pytest11 entry point once authkit is installed; load it by name
    # here so the test does not depend on an installed copy.
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "authkit.testing.pytest_plugin",
                  "test_readme_fixture.py"], cwd=tmp_path, env=_env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert "1 passed" in result.stdout, result.stdout
