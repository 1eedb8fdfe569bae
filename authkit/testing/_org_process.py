"""A :class:`~authkit.testing.FakeSalesforce` in a child process, for memory measurements.

``tracemalloc`` counts every allocation of the process, the org's included; with
the org in its own process, what is measured is the client alone::

    with OrgProcess(rows=200_000) as org:          # Item__c records Name, Value__c
        sf = SalesforceClient(org.auth())
        tracemalloc.start()
        for row in sf.bulk.query("SELECT Id, Name FROM Item__c"):
            ...
        peak = tracemalloc.get_traced_memory()[1]
        org.count()                                 # live Item__c records in the org

Private to authkit's tests and benchmarks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import TracebackType
from typing import IO, Any

from authkit.salesforce.auth import StaticTokenAuth

SOBJECT = "Item__c"
FIELDS = ("Name", "Value__c")


def _serve(rows: int, options: dict[str, Any], commands: IO[str], answers: IO[str]) -> None:
    """The child: start an org, answer one JSON line per command line until ``stop``."""
    from authkit.testing._fake_records import now
    from authkit.testing.fake_salesforce import FakeSalesforce

    def send(value: Any) -> None:
        answers.write(json.dumps(value) + "\n")
        answers.flush()

    with FakeSalesforce() as org:
        assert org.rest is not None and org.bulk is not None
        org.rest.define_sobject(SOBJECT, list(FIELDS), key_prefix="a01")
        for name, value in options.items():
            setattr(org.bulk, name, value)
        store = org.rest._records[SOBJECT]
        stamp = now()
        for n in range(rows):
            record_id = f"a01{n:012d}AAA"
            store[record_id] = {"Id": record_id, "IsDeleted": False, "CreatedDate": stamp, "LastModifiedDate": stamp,
                                "SystemModstamp": stamp, "Name": f"Item {n}", "Value__c": str(n)}
        send([org.instance_url, org.jwt_auth().access_token()])
        for line in commands:
            command = line.strip()
            if command == "stop" or not command:
                break
            if command == "count":
                send(len(org.rest._records[SOBJECT]))
            elif command == "counters":
                bulk = org.bulk
                send({"jobs_created": bulk.jobs_created, "uploads": bulk.uploads, "job_polls": bulk.job_polls,
                      "result_requests": bulk.result_requests, "requests": org.api_requests,
                      "upload_bytes": bulk.upload_bytes})
            elif command == "clear":
                org.rest._records[SOBJECT].clear()
                send(True)
            else:
                send(None)


class OrgProcess:
    """A started org in a child Python process, driven by JSON lines on its stdin/stdout."""

    def __init__(self, rows: int = 0, **bulk_options: Any) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-m", "authkit.testing._org_process", str(int(rows)), json.dumps(bulk_options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8",
        )
        first = self._read()
        if first is None:
            self.stop()
            raise RuntimeError("the org process did not start")
        self.instance_url, self._token = first

    def _read(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        return json.loads(line) if line else None

    def auth(self) -> StaticTokenAuth:
        return StaticTokenAuth(self._token, self.instance_url)

    def _ask(self, command: str) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read()

    def count(self) -> int:
        return int(self._ask("count"))

    def counters(self) -> dict[str, int]:
        return dict(self._ask("counters"))

    def clear(self) -> None:
        self._ask("clear")

    def stop(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write("stop\n")
                self._process.stdin.close()
            except OSError:
                pass
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> OrgProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), json.loads(sys.argv[2]), sys.stdin, sys.stdout)
