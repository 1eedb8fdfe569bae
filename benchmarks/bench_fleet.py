"""The measured fleet: 8 processes x 8 threads of mixed work, with and without faults.

``python -m benchmarks.run fleet`` (``--quick``: one pair of runs, less work per phase).  Each round
runs the fleet of ``tests/fleet.py`` twice on freshly started servers (a Redis master, a replica
and three sentinels; a private PostgreSQL behind PgBouncer; ``FakeSalesforce``): once with nothing
injected (the baseline) and once through the four faults (token expiry, Redis master killed,
PostgreSQL restarted, token expiry), the order alternating between rounds.  Printed: throughput
of each (medians and spread over the rounds) and their ratio, then the last faulted run's figures:
error windows, token mints per expiry, budget use, durability checks, cleanup.

Needs ``redis-server``, ``pgbouncer`` and PostgreSQL's ``initdb``; every server's port comes from
``AUTHKIT_TEST_PRIVATE_PORTS`` (``tests/ports.py``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmarks.harness import Table, summary


def run(quick: bool) -> None:
    try:
        import psycopg  # noqa: F401
        import redis  # noqa: F401

        from tests.fleet import FleetPlan, FleetReport, run_fleet
    except ImportError as exc:
        print(f"\n## fleet: skipped ({exc})")
        return
    rounds = 1 if quick else 3
    plans = {faults: FleetPlan(progress=100 if quick else 400, faults=faults) for faults in (False, True)}
    rates: dict[bool, list[float]] = {False: [], True: []}
    faulted: list[FleetReport] = []
    for round_ in range(rounds):
        for faults in (False, True) if round_ % 2 == 0 else (True, False):
            tmp = Path(tempfile.mkdtemp(prefix="authkit-fleet-"))
            try:
                report = run_fleet(plans[faults], tmp)
            except BaseException as exc:  # pytest's skip when a server binary is missing
                if type(exc).__name__ in ("Skipped", "Failed"):
                    print(f"\n## fleet: skipped ({exc})")
                    return
                raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            rates[faults].append(sum(report.ops.values()) / report.elapsed)
            if faults:
                report.check()
                faulted.append(report)
    table = Table(f"The fleet, 8 processes x 8 threads: throughput through four faults vs none "
                  f"({rounds} interleaved rounds)")
    (clean, clean_spread), (hurt, hurt_spread) = summary(rates[False]), summary(rates[True])
    table.rows.append(("mixed operations, ops/s", f"{hurt:,.0f}/s ±{hurt_spread * 50:.0f}%",
                       f"{clean:,.0f}/s ±{clean_spread * 50:.0f}%", f"{clean / hurt:.2f}x",
                       "time with faults / without"))
    table.rows.append(("rounds, ops/s with faults", ", ".join(f"{r:,.0f}" for r in rates[True]), "", "", ""))
    table.rows.append(("rounds, ops/s without", ", ".join(f"{r:,.0f}" for r in rates[False]), "", "", ""))
    table.print()
    print(f"\n## Each run with faults ({len(faulted)})")
    rows = {
        "Redis error window, s": [f"{r.error_window('redis'):.2f}" for r in faulted],
        "PostgreSQL error window, s": [f"{r.error_window('postgresql'):.2f}" for r in faulted],
        "token mints: start, expiry 1, expiry 2": ["/".join(map(str, r.mints)) for r in faulted],
        "budget: most granted in a window (limit)": [f"{max(r.grants.values())} ({r.plan.budget_limit})"
                                                     for r in faulted],
        "budget: most arriving at the org in a window": [str(max(r.arrivals.values())) for r in faulted],
        "sessions acknowledged, lost": [f"{r.sessions_acked:,}, {r.sessions_missing}" for r in faulted],
        "increments fenced by WAIT, lost": [f"{r.increments_fenced:,}, {r.fenced_lost}" for r in faulted],
        "increments after the fence, lost (not promised)": [f"{r.unfenced_acked}, {r.unfenced_lost}"
                                                            for r in faulted],
    }
    for what, values in rows.items():
        print(f"  {what:<48} {' | '.join(values)}")
    print("\n## The last run with faults")
    for what, value in faulted[-1].table():
        print(f"  {what:<52} {value}")
