"""The fleet, measured: 8 processes x 8 threads of mixed work through four faults (tests/fleet.py).

Redis behind Sentinel (master killed just after a ``WAIT`` fence), PostgreSQL behind PgBouncer
(restarted in ``immediate`` mode), the Salesforce org expiring its sessions twice, a cron process
cleaning up throughout.  Checked: no acknowledged write lost where the server's configuration
promises it, one token mint per expiry for the whole fleet, the request budget never exceeded.
``pytest -s`` prints the figures; ``python -m benchmarks.run fleet`` is the longer run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("redis")
pytest.importorskip("psycopg")

from tests.fleet import FleetPlan, run_fleet


@pytest.mark.slow
def test_eight_processes_through_failover_restart_and_token_expiry(tmp_path: Path) -> None:
    report = run_fleet(FleetPlan(processes=8, threads=8), tmp_path)
    print("\n" + "\n".join(f"{what:<52} {value}" for what, value in report.table()))
    report.check()
