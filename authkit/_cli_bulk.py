"""``authkit salesforce query`` and ``authkit salesforce load``: Bulk API 2.0 for cron and shells.

::

    authkit salesforce query "SELECT Id, Name FROM Account" --bulk --output accounts.csv
    authkit salesforce query "SELECT Id, Email FROM Contact" --format jsonl | jq .Email
    authkit salesforce load upsert Contact contacts.csv --external-id External_Id__c --failed rejects.csv

Credentials as for ``authkit salesforce check`` (options, else ``SF_*`` variables).
``load`` exits 1 when any row failed or was left unprocessed, after writing those
rows (``sf__Error`` first) to ``--failed`` (default ``<FILE>.failed.csv``), mode 0600.
The summary is one line (``--json``: one JSON object) on stdout — on stderr when
query rows go to stdout; the progress bar is drawn on stderr only when it is a terminal.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import IO, Any

from authkit._cli_run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _Failure, _positive_int, _Progress, _Scrubber
from authkit.cli import _FLOWS, _auth_failure, _client_for
from authkit.errors import AuthenticationError

__all__ = ["add_parsers"]

_OPERATIONS = ("insert", "update", "upsert", "delete", "hard-delete")


def add_parsers(sf_commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``query`` and ``load`` under ``authkit salesforce``."""
    query = sf_commands.add_parser(
        "query", parents=[common], help="run SOQL; rows as CSV or JSON lines to stdout or --output",
        description="Run a SOQL query and write every row. --bulk runs it as a Bulk API 2.0 query job "
                    "(millions of rows, flat memory); otherwise the REST query API pages through it.")
    query.add_argument("soql", metavar="SOQL")
    query.add_argument("--bulk", action="store_true", help="use a Bulk API 2.0 query job")
    query.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="output format (default csv)")
    query.add_argument("--output", "-o", metavar="FILE", help="write the rows here (default: stdout)")
    query.add_argument("--all", action="store_true", dest="include_deleted",
                       help="include deleted and archived records (queryAll)")
    query.add_argument("--timeout", type=_seconds_positive, metavar="SECONDS",
                       help="give up waiting for the bulk job after this long (default: wait)")
    _client_options(query)
    query.set_defaults(handler=_cmd_query)

    load = sf_commands.add_parser(
        "load", parents=[common], help="insert/update/upsert/delete records from a CSV file with Bulk API 2.0",
        description="Load a CSV file (header row of field names; '-' for stdin) with Bulk API 2.0 jobs. "
                    "Rows that fail, or that a failed job left unprocessed, go to --failed; the exit status "
                    "is 1 when there are any.")
    load.add_argument("operation", choices=_OPERATIONS)
    load.add_argument("sobject", metavar="SOBJECT")
    load.add_argument("file", metavar="FILE", help="CSV file, '-' for stdin")
    load.add_argument("--external-id", metavar="FIELD", help="upsert: the external id field to match on")
    load.add_argument("--failed", metavar="FILE", help="where failed rows go (default <FILE>.failed.csv)")
    load.add_argument("--delimiter", default="COMMA", choices=("COMMA", "TAB", "SEMICOLON", "PIPE", "CARET",
                                                                "BACKQUOTE"), help="the CSV's column delimiter")
    load.add_argument("--timeout", type=_seconds_positive, metavar="SECONDS",
                      help="give up waiting for the jobs after this long (they keep running; default: wait)")
    load.add_argument("--max-upload-bytes", type=_positive_int, metavar="N", help=argparse.SUPPRESS)
    _client_options(load)
    load.set_defaults(handler=_cmd_load)


def _seconds_positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number of seconds > 0")
    return value


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flow", choices=_FLOWS, help="default: $SF_FLOW, else guessed from the SF_* variables")
    parser.add_argument("--client-id", help="connected app consumer key (default $SF_CLIENT_ID)")
    parser.add_argument("--username", help="Salesforce username (default $SF_USERNAME)")
    parser.add_argument("--private-key-file", metavar="PATH",
                        help="JWT: PEM private key (default $SF_PRIVATE_KEY_FILE)")
    parser.add_argument("--login-url", help="default $SF_LOGIN_URL, else https://login.salesforce.com")
    parser.add_argument("--audience", help="JWT aud claim (default $SF_AUDIENCE, else the login host)")
    parser.add_argument("--domain-url", help="client credentials: the My Domain URL (default $SF_DOMAIN_URL)")
    parser.add_argument("--instance-url", help="static token: the instance URL (default $SF_INSTANCE_URL)")
    parser.add_argument("--api-version", help="default $SF_API_VERSION, else the client's default")
    parser.add_argument("--token-store", action="store_true",
                        help="share the token through the --storage store, as your app would")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


@contextmanager
def _client(args: argparse.Namespace, scrub: _Scrubber) -> Iterator[Any]:
    with ExitStack() as stack:
        flow, auth, client = _client_for(args, scrub, stack)
        try:
            scrub.add(auth.access_token())
            yield client
        except AuthenticationError as exc:
            raise _Failure(_auth_failure(exc, flow)) from exc


def _summary(stream: IO[str], args: argparse.Namespace, line: str, data: dict[str, Any]) -> None:
    stream.write((json.dumps(data, sort_keys=True) if args.json else line) + "\n")
    stream.flush()


# -- query --------------------------------------------------------------------------------


def _cmd_query(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    started = time.monotonic()
    if not args.soql.strip():
        raise _Failure("SOQL must not be empty", EXIT_USAGE)
    created = False
    try:
        with ExitStack() as stack:
            client = stack.enter_context(_client(args, scrub))
            if args.output:
                target: IO[bytes] = stack.enter_context(open(args.output, "wb"))
                created = True
            else:
                out.flush()
                target = getattr(out, "buffer", None) or io.BufferedWriter(_TextSink(out))
            count = _query_rows(client, args, target, _Progress(err, "rows"))
    except BaseException:
        if created:
            os.unlink(args.output)  # a half extract must not pass for a whole one
        raise
    seconds = time.monotonic() - started
    where = args.output or "stdout"
    _summary(out if args.output else err, args, f"ok: {count} rows to {where} in {seconds:.1f} s",
             {"status": "ok", "rows": count, "output": where, "bulk": bool(args.bulk), "seconds": round(seconds, 3)})
    return EXIT_OK


def _query_rows(client: Any, args: argparse.Namespace, target: IO[bytes], progress: _Progress) -> int:
    if args.bulk and args.format == "csv":
        count = int(client.bulk.query_to_file(args.soql, target, args.include_deleted, timeout=args.timeout))
    elif args.bulk:
        rows: Iterable[dict[str, Any]] = client.bulk.query(args.soql, args.include_deleted, timeout=args.timeout)
        count = _write_jsonl(target, rows, progress)
    else:
        records = (_flat(r) for r in client.query(args.soql, include_deleted=args.include_deleted))
        count = (_write_csv(target, records, progress) if args.format == "csv"
                 else _write_jsonl(target, records, progress))
    progress.finish()
    target.flush()
    return count


class _TextSink(io.RawIOBase):
    """Bytes into a text stream that has no ``buffer`` (a test's StringIO)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._stream.write(bytes(data).decode("utf-8"))
        return len(data)


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "attributes"}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _write_csv(target: IO[bytes], rows: Iterable[dict[str, Any]], progress: _Progress) -> int:
    text = io.TextIOWrapper(target, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text, lineterminator="\n")
        count = 0
        header: list[str] | None = None
        for row in rows:
            if header is None:
                header = list(row)
                writer.writerow(header)
            writer.writerow([_text(row.get(name)) for name in header])
            count += 1
            progress.update(count)
        text.flush()
        return count
    finally:
        text.detach()  # the target stays open: stdout, or the caller's file


def _write_jsonl(target: IO[bytes], rows: Iterable[dict[str, Any]], progress: _Progress) -> int:
    count = 0
    for row in rows:
        target.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        count += 1
        progress.update(count)
    return count


# -- load -----------------------------------------------------------------------------------


def _cmd_load(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    from authkit.salesforce.bulk import Bulk, BulkJobError, BulkResult

    operation = "hardDelete" if args.operation == "hard-delete" else args.operation
    if operation == "upsert" and not args.external_id:
        raise _Failure("upsert needs --external-id FIELD", EXIT_USAGE)
    if operation != "upsert" and args.external_id:
        raise _Failure("--external-id is only for upsert", EXIT_USAGE)
    failed_path = args.failed or ("failed.csv" if args.file == "-" else args.file + ".failed.csv")
    started = time.monotonic()
    with ExitStack() as stack:
        client = stack.enter_context(_client(args, scrub))
        if args.file == "-":
            source: IO[bytes] = sys.stdin.buffer
            total = None
        else:
            try:
                source = stack.enter_context(open(args.file, "rb"))
            except OSError as exc:
                raise _Failure(f"cannot read {args.file}: {exc.strerror}", EXIT_USAGE) from exc
            total = os.fstat(source.fileno()).st_size
        options: dict[str, Any] = {}
        if args.max_upload_bytes:
            options["max_upload_bytes"] = args.max_upload_bytes
        bulk = Bulk(client, **options)
        progress = _Progress(err, "uploading (bytes)", total)
        common: dict[str, Any] = {"timeout": args.timeout, "progress": progress.update}
        if operation not in ("delete", "hardDelete"):
            common["column_delimiter"] = args.delimiter
        job_error: BulkJobError | None = None
        try:
            if operation == "upsert":
                result: BulkResult = bulk.upsert(args.sobject, args.external_id, source, **common)
            elif operation == "insert":
                result = bulk.insert(args.sobject, source, **common)
            elif operation == "update":
                result = bulk.update(args.sobject, source, **common)
            elif operation == "delete":
                result = bulk.delete(args.sobject, source, **common)
            else:
                result = bulk.hard_delete(args.sobject, source, **common)
        except BulkJobError as exc:
            if exc.result is None:
                raise
            job_error, result = exc, exc.result
        except (ValueError, TypeError) as exc:
            raise _Failure(str(exc), EXIT_USAGE) from exc
        finally:
            progress.finish()
        written = _write_failed(failed_path, result)
    seconds = time.monotonic() - started
    ok = result.records_processed - result.records_failed
    unprocessed = written - result.records_failed if written else 0
    data: dict[str, Any] = {
        "status": "ok" if not written and job_error is None else "failed", "operation": operation,
        "sobject": args.sobject, "processed": result.records_processed, "successful": ok,
        "failed": result.records_failed, "unprocessed": max(unprocessed, 0), "jobs": result.job_ids,
        "failed_file": failed_path if written else None, "seconds": round(seconds, 3),
    }
    if job_error is not None:
        data["error"] = " ".join(scrub(str(job_error)).split())
    line = (f"{'ok' if data['status'] == 'ok' else 'failed'}: {operation} {args.sobject}: {ok} rows ok, "
            f"{result.records_failed} failed, {data['unprocessed']} unprocessed in {len(result.job_ids)} job(s), "
            f"{seconds:.1f} s")
    if written:
        line += f"; rejected rows in {failed_path}"
    if job_error is not None:
        line += f"; {data['error']}"
    _summary(out, args, line, data)
    return EXIT_OK if data["status"] == "ok" else EXIT_FAILED


def _write_failed(path: str, result: Any) -> int:
    """Failed, then unprocessed, rows into ``path`` (0600: they are the org's data); how many."""
    rows = _rejected(result)
    first = next(rows, None)
    if first is None:
        return 0
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through O_CREAT: set it
    count = 0
    with open(descriptor, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        header = list(first)
        writer.writerow(header)
        row: dict[str, str] | None = first
        while row is not None:
            writer.writerow([row.get(name, "") for name in header])
            count += 1
            row = next(rows, None)
    return count


def _rejected(result: Any) -> Iterator[dict[str, str]]:
    for row in result.failed:
        yield {"sf__Error": row.get("sf__Error", ""), **{k: v for k, v in row.items() if not k.startswith("sf__")}}
    for row in result.unprocessed:
        yield {"sf__Error": "UNPROCESSED: the job ended before this row", **row}
