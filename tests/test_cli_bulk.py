"""``authkit salesforce query`` / ``load``, run as users run them: a real subprocess against FakeSalesforce."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authkit.testing import FakeSalesforce
from tests.test_cli import _env, authkit, one_error_line


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as fake:
        yield fake


@pytest.fixture
def env(org: FakeSalesforce, tmp_path: Path) -> dict[str, str]:
    app = org.register_jwt_app(org.default_user.username)
    assert app.private_key_pem is not None
    key = tmp_path / "server.key"
    key.write_text(app.private_key_pem)
    return _env(SF_CLIENT_ID=app.client_id, SF_USERNAME=org.default_user.username, SF_PRIVATE_KEY_FILE=str(key),
                SF_LOGIN_URL=org.login_url)


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return path


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_load_insert_with_failed_rows(tmp_path: Path, org: FakeSalesforce, env: dict[str, str]) -> None:
    source = write_csv(tmp_path / "accounts.csv", [["Name", "Description"], ["Acme", 'say "hi", twice'],
                                                   ["", "no name"], ["Zoë", "line\nbreak"]])
    failed = tmp_path / "rejects.csv"
    failed.write_text("old content")
    failed.chmod(0o644)
    result = authkit("salesforce", "load", "insert", "Account", str(source), "--failed", str(failed),
                     cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    line = result.stdout.strip()
    assert line.startswith("failed: insert Account: 2 rows ok, 1 failed, 0 unprocessed in 1 job(s)"), line
    assert line.endswith(f"; rejected rows in {failed}") and result.stderr == ""
    assert read_csv(failed) == [["sf__Error", "Name", "Description"],
                                ["REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --", "", "no name"]]
    assert stat.S_IMODE(failed.stat().st_mode) == 0o600
    assert org.rest is not None
    assert sorted(r["Name"] for r in org.rest.records("Account")) == ["Acme", "Zoë"]


def test_load_upsert_json_all_ok_and_split(tmp_path: Path, org: FakeSalesforce, env: dict[str, str]) -> None:
    assert org.rest is not None
    org.rest.insert("Account", {"Name": "Old", "External_Id__c": "E0"})
    rows = [["External_Id__c", "Name"], *[[f"E{i}", f"Name {i}"] for i in range(40)]]
    source = write_csv(tmp_path / "in.csv", rows)
    result = authkit("salesforce", "load", "upsert", "Account", str(source), "--external-id", "External_Id__c",
                     "--json", "--max-upload-bytes", "200", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok" and (summary["processed"], summary["failed"]) == (40, 0)
    assert len(summary["jobs"]) > 1 and summary["failed_file"] is None
    assert not (tmp_path / "in.csv.failed.csv").exists()
    assert len(org.rest.records("Account")) == 40


def test_load_delete_from_stdin_and_usage_errors(tmp_path: Path, org: FakeSalesforce, env: dict[str, str]) -> None:
    assert org.rest is not None
    ids = org.rest.insert_many("Account", [{"Name": f"A{i}"} for i in range(3)])
    result = subprocess.run([sys.executable, "-m", "authkit", "salesforce", "load", "delete", "Account", "-"],
                            input="Id\n" + "\n".join(ids[:2]) + "\n", capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: delete Account: 2 rows ok, 0 failed")
    assert [r["Id"] for r in org.rest.records("Account")] == [ids[2]]
    bad = authkit("salesforce", "load", "upsert", "Account", "x.csv", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "--external-id" in one_error_line(bad)
    missing = authkit("salesforce", "load", "insert", "Account", "missing.csv", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "cannot read missing.csv" in one_error_line(missing)


def test_load_failed_job_writes_unprocessed_rows(tmp_path: Path, org: FakeSalesforce, env: dict[str, str]) -> None:
    source = write_csv(tmp_path / "in.csv", [["Name", "Nope__x"], ["a", "b"]])
    result = authkit("salesforce", "load", "insert", "Account", str(source), "--json", cwd=tmp_path, env=env)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status"] == "failed" and "Field name not found : Nope__x" in summary["error"]
    assert summary["jobs"][0] in summary["error"]


def test_query_rest_and_bulk_formats(tmp_path: Path, org: FakeSalesforce, env: dict[str, str]) -> None:
    assert org.rest is not None
    org.rest.insert_many("Account", [{"Name": f"A{i}", "Description": ("x, \"y\"\nz" if i == 1 else None)}
                                     for i in range(5)])
    soql = "SELECT Name, Description FROM Account ORDER BY Name"
    expected = [["Name", "Description"], *[[f"A{i}", "x, \"y\"\nz" if i == 1 else ""] for i in range(5)]]
    rest = authkit("salesforce", "query", soql, cwd=tmp_path, env=env)
    assert rest.returncode == 0, rest.stderr
    assert list(csv.reader(io.StringIO(rest.stdout))) == expected
    assert rest.stderr.startswith("ok: 5 rows to stdout")
    out = tmp_path / "out.csv"
    bulk = authkit("salesforce", "query", soql, "--bulk", "--output", str(out), "--json", cwd=tmp_path, env=env)
    assert bulk.returncode == 0, bulk.stderr
    assert json.loads(bulk.stdout)["rows"] == 5 and read_csv(out) == expected
    jsonl = authkit("salesforce", "query", soql, "--bulk", "--format", "jsonl", cwd=tmp_path, env=env)
    assert [json.loads(line) for line in jsonl.stdout.splitlines()] == [dict(zip(expected[0], row, strict=True))
                                                                       for row in expected[1:]]
    assert org.bulk is not None and org.bulk.jobs_created == 2
    bad = authkit("salesforce", "query", "SELEKT Name FROM Account", "--bulk", "--output", "bad.csv",
                  cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "MALFORMED_QUERY" in one_error_line(bad)
    assert not (tmp_path / "bad.csv").exists()


def test_progress_bar_only_on_a_terminal(tmp_path: Path, env: dict[str, str]) -> None:
    source = write_csv(tmp_path / "in.csv", [["Name"], *[[f"N{i}"] for i in range(50)]])
    primary, secondary = os.openpty()
    try:
        process = subprocess.run([sys.executable, "-m", "authkit", "salesforce", "load", "insert", "Account",
                                  str(source)], stdout=subprocess.PIPE, stderr=secondary, cwd=tmp_path, env=env,
                                 timeout=60, text=True)
        os.close(secondary)
        secondary = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if secondary >= 0:
            os.close(secondary)
        os.close(primary)
    assert process.returncode == 0 and process.stdout.startswith("ok: insert Account: 50 rows ok")
    assert b"uploading (bytes) [" in drawn and b"\x1b[K" in drawn
