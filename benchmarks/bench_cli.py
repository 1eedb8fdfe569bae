"""The ``authkit`` command and the quickstart, as users run them: real subprocesses.

- ``authkit cleanup`` of N expired records on a SQLite file, against the same
  ``storage.cleanup_expired()`` (under the same lock) called in-process: the
  ratio is what the command adds (interpreter start, imports, opening the storage).
- ``authkit stats`` against a bare ``python -c "import authkit.storage.sql"``:
  the command's own start-up cost beyond the imports it cannot avoid.
- ``python examples/quickstart.py`` wall time (goal: under 5 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from authkit import AuthToken, SessionData, open_storage
from benchmarks.harness import Table

ROOT = Path(__file__).resolve().parent.parent
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHKIT_", "SF_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _seed(url: str, n: int) -> None:
    with open_storage(url) as storage, open_storage(url, clock=lambda: PAST) as past:
        storage.store_tokens_bulk([AuthToken(f"t{i}", "u", f"a{i}", expires_at=PAST) for i in range(n)])
        storage.store_sessions_bulk([(f"s{i}", SessionData(f"s{i}", "u", expires_at=PAST)) for i in range(n)])
        for i in range(n):
            past.store_kv(f"k{i}", b"v", ttl=1)


def _wall(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def run(quick: bool) -> None:
    n = 2_000 if quick else 20_000
    repeat = 2 if quick else 3
    table = Table(f"authkit command (SQLite file, {n:,} expired records of each kind)")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        url = f"sqlite:///{cwd / 'bench.db'}"
        command, direct = float("inf"), float("inf")
        for _ in range(repeat):
            _seed(url, n)
            command = min(command, _wall([sys.executable, "-m", "authkit", "cleanup", "--storage", url], cwd))
            _seed(url, n)
            with open_storage(url) as storage:
                start = time.perf_counter()
                with storage.lock("authkit-cleanup", timeout=0, ttl=600):
                    report = storage.cleanup_expired()
                direct = min(direct, time.perf_counter() - start)
                assert report.total == 3 * n
        table.seconds("authkit cleanup (subprocess)", command, direct, "baseline: cleanup_expired() in-process")

        stats = min(_wall([sys.executable, "-m", "authkit", "stats", "--storage", url], cwd) for _ in range(repeat))
        imports = min(_wall([sys.executable, "-c", "import authkit.storage.sql"], cwd) for _ in range(repeat))
        table.seconds("authkit stats (subprocess)", stats, imports, "baseline: python -c 'import authkit.storage.sql'")

        quickstart = min(_wall([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd) for _ in range(repeat))
        table.note("python examples/quickstart.py", f"{quickstart:.2f} s", "goal < 5 s")
    table.print()
