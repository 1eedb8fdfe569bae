"""Run every benchmark: ``python -m benchmarks.run`` (add ``--quick`` for a smoke run,
or name modules: ``python -m benchmarks.run sql redis``).

Every ``benchmarks/bench_*.py`` module has ``run(quick: bool) -> None`` which
prints its tables.  A module whose service is down says so and is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="modules to run, e.g. sql redis (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: check the benchmarks run")
    args = parser.parse_args()
    found = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.startswith("bench_"))
    for name in args.names or found:
        if name not in found:
            parser.error(f"no benchmark {name!r}; have {', '.join(found)}")
        importlib.import_module(f"benchmarks.bench_{name}").run(args.quick)


if __name__ == "__main__":
    main()
