"""What one session create costs Redis itself: authkit's script, without each index, and a bare SET.

Where the Flask-on-Redis gap against Flask-Session comes from (``python -m benchmarks.run
sessions`` prints the server's part of each side's CPU; this breaks the create down).  On a
private ``redis-server`` (a port of ``AUTHKIT_TEST_PRIVATE_PORTS``), each variant of the
``WRITE_SESSION`` script in create mode, with its indexes filled with 100,000 sessions first
(the steady state of a busy site), runs 10,000 creates in interleaved rounds; the figure is the
server's own time per call (``INFO commandstats``, the script with every command it calls),
median and range of the rounds.  Variants: as shipped; without the ``si`` (paging) index write;
without the ``su:<user>`` (per-user) one; without both; without those and the ``sx`` (expiry)
one.  The baseline is what Flask-Session sends for a create: one ``SET ... EX``::

    python -m benchmarks.redis_session_writes

A diagnostic for deciding what the layout indexes, not a product benchmark: the variants
without indexes would break ``list_user_sessions``, ``iter_session_ids``, counts or cleanup.
"""

from __future__ import annotations

import random
import secrets
import statistics

import redis

from authkit.storage import _redis_scripts as lua
from tests.redis_cluster import RedisServer

CREATES, FILLED, ROUNDS = 10_000, 100_000, 5
RECORD = b'[1,"anonymous",1764547200000000,1764550800000000,1764547200000000,null,null,{"user":"u","n":0}]'
_SI = "      redis.call('ZADD', base .. 'si', 0, id)\n"
_SU = "      redis.call('ZADD', KEYS[2], 0, id)\n"
_SX = "      redis.call('ZADD', sx, ARGV[4], id)\n"
_BASELINE = "SET ... EX (Flask-Session)"


def _without(*lines: str) -> str:
    source = lua.WRITE_SESSION
    for line in lines:
        if line not in source:
            raise SystemExit(f"WRITE_SESSION changed: {line.strip()!r} is not in it; update this diagnostic")
        source = source.replace(line, "")
    return source


VARIANTS = {
    "as shipped": _without(),
    "without si": _without(_SI),
    "without su:<user>": _without(_SU),
    "without si, su:<user>": _without(_SI, _SU),
    "without si, su:<user>, sx": _without(_SI, _SU, _SX),
}


def main() -> None:
    rng = random.Random(1)
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)

        def create(pipe: redis.Redis | redis.client.Pipeline, sha: str, base: bytes) -> None:
            sid = secrets.token_urlsafe(32).encode()
            expires = str(1764550800000000 + rng.randrange(10**10)).encode()
            pipe.evalsha(sha, 2, base + b"s:" + sid, base + b"su:anonymous", base, sid, b"anonymous",
                         expires, b"3600000", RECORD, b"c", b"1764547200000000")

        shas = {name: str(client.script_load(source)) for name, source in VARIANTS.items()}
        for name, sha in shas.items():
            for _ in range(FILLED // 1000):
                pipe = client.pipeline(transaction=False)
                for _ in range(1000):
                    create(pipe, sha, name.encode() + b":")
                pipe.execute()
        costs: dict[str, list[float]] = {name: [] for name in [*VARIANTS, _BASELINE]}
        for round_ in range(ROUNDS):
            order = list(costs) if round_ % 2 == 0 else list(costs)[::-1]
            for name in order:
                client.config_resetstat()
                if name == _BASELINE:
                    for _ in range(CREATES):
                        client.set(b"fs:" + secrets.token_urlsafe(32).encode(), RECORD, ex=3600)
                    command = "cmdstat_set"
                else:
                    for _ in range(CREATES):
                        create(client, shas[name], name.encode() + b":")
                    command = "cmdstat_evalsha"
                costs[name].append(float(client.info("commandstats")[command]["usec_per_call"]))
        client.close()
    print("\n## One session create, Redis's own time per call (median of rounds, range)")
    for name, values in costs.items():
        print(f"{name:28} {statistics.median(values):6.1f} us  ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
