"""The live check (tests/test_live.py) run against FakeSalesforce, so the check itself is tested in CI
and the fake is held to what the check expects of a real org."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from authkit.testing import FakeSalesforce

ROOT = Path(__file__).resolve().parent.parent


def test_live_check_passes_against_the_fake_and_cleans_up() -> None:
    with FakeSalesforce() as org:
        auth = org.jwt_auth()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SF_")}
        env.update(SF_INSTANCE_URL=auth.instance_url, SF_ACCESS_TOKEN=auth.access_token())
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "live", "-p", "no:cacheprovider", "tests/test_live.py"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert " passed" in done.stdout and "skipped" not in done.stdout
        assert org.rest is not None
        for sobject in ("Account", "Contact", "ContentVersion", "ContentDocument"):
            assert org.rest.records(sobject) == [], f"the live check left {sobject} records behind"
        assert org.rest.executed_apex  # execute_anonymous reached the org
