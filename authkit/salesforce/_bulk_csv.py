"""CSV streaming for :mod:`authkit.salesforce.bulk`: upload bodies that can be re-read, and result rows.

- :class:`_Body`: one job's upload, the header plus a byte range of a file, seekable so the
  client's retry after a ``401`` re-sends exactly the same bytes;
- :func:`_spool_records`: dict records -> CSV temporary files of at most ``limit`` bytes;
- :func:`_file_uploads` and :class:`_RowScanner`: a CSV file cut at row boundaries
  (quoted newlines respected) without copying it, or spooled when it is a pipe;
- :func:`_csv_rows`: a streamed CSV response -> dict rows, one at a time.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

from authkit.salesforce._names import check_name
from authkit.salesforce._request_body import SegmentedBody, seekable

if TYPE_CHECKING:
    import requests

_BLOCK = 256 * 1024  # bytes read from a CSV source (or a response) at a time: the memory bound
_BATCH = 1000  # dict records encoded together
_BOM = b"\xef\xbb\xbf"


class _Body(SegmentedBody):
    """One job's upload: ``header`` then bytes ``start:end`` of ``file``, re-readable from the start.

    It is what the client streams; on a ``401`` the client seeks it back to 0 and
    sends the same bytes again.  It seeks ``file`` before every read, so several
    bodies (and the scanner cutting them) can share one open file.  ``on_read``
    hears the position after each read (upload progress).
    """

    def __init__(self, file: IO[bytes], header: bytes, start: int, end: int, *, delimiter: str,
                 line_ending: str, owned: bool = False) -> None:
        super().__init__(header, (file, start, end), owned=[file] if owned else [])
        self.delimiter = delimiter
        self.line_ending = line_ending
        self.on_read: Callable[[int], None] | None = None

    def readinto(self, buffer: Any) -> int:
        done = super().readinto(buffer)
        if done and self.on_read is not None:
            self.on_read(self.tell())
        return done


def _spool_records(records: Iterable[Any], fields: Sequence[str] | None, limit: int) -> list[_Body]:
    """Write dict records as CSV into temporary files of at most ``limit`` bytes each.

    Everything is checked and written before the first job is created.  Files are
    removed when their body is closed (and all of them if this fails).
    """
    spooled: list[tuple[IO[bytes], int]] = []  # each full temporary file and its size
    current: IO[bytes] | None = None
    size = 0
    try:
        rows = iter(records)
        first = next(rows, None)
        if first is None:
            raise ValueError("records is empty: nothing to load")
        header = _header(first, fields)
        allowed = frozenset(header)
        blanks = ("",) * len(header)  # the value of a missing key: not set
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        header_bytes = buffer.getvalue().encode("utf-8")
        if len(header_bytes) + 1 > limit:
            raise ValueError("the CSV header alone is larger than the upload limit")

        def flush_batch(batch: list[list[str]]) -> None:
            nonlocal current, size
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(batch)
            data = buffer.getvalue().encode("utf-8")
            if current is not None and size + len(data) <= limit:
                current.write(data)
                size += len(data)
                return
            if len(batch) > 1:  # it does not fit whole: place the rows one by one
                for row in batch:
                    flush_batch([row])
                return
            if len(header_bytes) + len(data) > limit:
                raise ValueError(f"a record of {len(data)} bytes does not fit in one upload of {limit} bytes")
            if current is not None:
                spooled.append((current, size))  # the previous file is full
            current = tempfile.TemporaryFile()
            current.write(header_bytes + data)
            size = len(header_bytes) + len(data)

        batch: list[list[str]] = []
        record: Any = first
        while record is not None:
            batch.append(_row(record, header, allowed, blanks))
            if len(batch) >= _BATCH:
                flush_batch(batch)
                batch = []
            record = next(rows, None)
        if batch:
            flush_batch(batch)
        assert current is not None  # records was not empty
        spooled.append((current, size))
        for file, _ in spooled:
            file.flush()
        return [_Body(file, b"", 0, length, delimiter="COMMA", line_ending="LF", owned=True)
                for file, length in spooled]
    except BaseException:
        for file in [f for f, _ in spooled] + ([current] if current is not None else []):
            file.close()  # a temporary file: closing removes it
        raise


def _each_then_close(bodies: list[_Body]) -> Iterator[_Body]:
    """The bodies one by one; closing the iterator early closes (and so deletes) the rest."""
    try:
        yield from bodies
    finally:
        for body in bodies:
            body.close()


def _header(first: Any, fields: Sequence[str] | None) -> list[str]:
    if fields is not None:
        if isinstance(fields, str):
            raise TypeError("fields must be a list of field names, not a str")
        header = list(fields)
    else:
        if not isinstance(first, Mapping):
            raise TypeError(f"records must be dicts, got {type(first).__name__}")
        header = list(first)
    if not header:
        raise ValueError("no fields: the first record is empty and fields= is not given")
    for name in header:
        check_name(name, "field")
    if len({name.lower() for name in header}) != len(header):
        raise ValueError("field names must be unique (they are case-insensitive)")
    return header


def _row(record: Any, header: list[str], allowed: frozenset[str], blanks: tuple[str, ...]) -> list[str]:
    if record.__class__ is not dict and not isinstance(record, Mapping):
        raise TypeError(f"records must be dicts, got {type(record).__name__}")
    if not allowed.issuperset(record):
        unknown = sorted(str(k) for k in record if k not in allowed)
        raise ValueError(f"a record has field(s) {', '.join(unknown)} not in the header ({', '.join(header)}); "
                         "pass fields= with every field")
    # The common case, a str, skips the call: this runs once per value of millions of rows.
    return [value if value.__class__ is str else _cell(value) for value in map(record.get, header, blanks)]


def _cell(value: Any) -> str:
    if value.__class__ is str:
        return str(value)
    if value is None:
        return "#N/A"  # Bulk API: set to null (an empty value leaves the field unchanged)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} cannot be loaded into Salesforce")
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: give it a timezone (Salesforce stores UTC)")
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} into a bulk CSV; give str, numbers, bools, dates "
                    "or None")


def _file_uploads(path: str | None, stream: IO[bytes] | None, limit: int, delimiter: str) -> Iterator[_Body]:
    """A CSV file cut into uploads at row boundaries: byte ranges of the file when it can be
    re-read (a path, a seekable file), spooled pieces when it cannot (a pipe)."""
    handle: IO[bytes]
    if path is not None:
        handle = open(path, "rb")
    else:
        assert stream is not None
        handle = stream
    try:
        rewindable = seekable(handle)
        position = handle.tell() if rewindable else 0
        scanner = _RowScanner(handle, position if rewindable else None)
        header = scanner.first_row()
        if header.startswith(_BOM):
            header = header[len(_BOM):]
        if not header.strip():
            raise ValueError("the CSV input is empty: it needs a header row")
        if not header.endswith(b"\n"):
            header += b"\n"
        line_ending = "CRLF" if header.endswith(b"\r\n") else "LF"
        capacity = limit - len(header)
        if capacity <= 0:
            raise ValueError("the CSV header alone is larger than the upload limit")
        while True:
            start = scanner.offset
            size = 0
            spool: IO[bytes] | None = None if rewindable else tempfile.TemporaryFile()
            try:
                while size < capacity:
                    piece = scanner.next_piece(min(capacity - size, _BLOCK))
                    if piece is None:
                        if size == 0:
                            raise ValueError(f"a CSV row does not fit in one upload of {limit} bytes")
                        break
                    if not piece:
                        break
                    if spool is not None:
                        spool.write(piece)
                    size += len(piece)
            except BaseException:
                if spool is not None:
                    spool.close()
                raise
            if size == 0:
                if spool is not None:
                    spool.close()
                return
            if spool is None:
                yield _Body(handle, header, start, start + size, delimiter=delimiter, line_ending=line_ending)
            else:
                yield _Body(spool, header, 0, size, delimiter=delimiter, line_ending=line_ending, owned=True)
    finally:
        if path is not None:
            handle.close()


class _RowScanner:
    """Reads CSV bytes and hands them out in pieces that end at row boundaries.

    A newline ends a row unless it is inside quotes; since an escaped quote is
    written twice, "inside" is "after an odd number of quotes since the row began".
    Every piece starts at a row boundary, so the parity starts even each time.
    """

    def __init__(self, handle: IO[bytes], position: int | None) -> None:
        self._handle = handle
        self._position = position  # where to seek before each read; None for a stream
        self._buffer = b""
        self._eof = False
        self.offset = position or 0  # file offset of the first byte not yet handed out

    def _read(self, size: int) -> bytes:
        if self._position is not None:
            self._handle.seek(self._position)
        data = self._handle.read(size)
        if data is None:
            data = b""
        if not isinstance(data, bytes):
            raise TypeError("the CSV file must be opened in binary mode ('rb')")
        if self._position is not None:
            self._position += len(data)
        return data

    def _fill(self, size: int) -> None:
        while not self._eof and len(self._buffer) < size:
            data = self._read(max(size - len(self._buffer), _BLOCK))
            if data:
                self._buffer += data
            else:
                self._eof = True

    def _take(self, end: int) -> bytes:
        piece, self._buffer = self._buffer[:end], self._buffer[end:]
        self.offset += len(piece)
        return piece

    def first_row(self) -> bytes:
        size = _BLOCK
        while True:
            self._fill(size)
            end = _first_boundary(self._buffer)
            if end or self._eof:
                return self._take(end or len(self._buffer))
            size *= 2

    def next_piece(self, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes`` of whole rows; ``b""`` at the end; ``None`` if the next row is longer."""
        self._fill(max_bytes + 1)
        if not self._buffer:
            return b""
        if self._eof and len(self._buffer) <= max_bytes:
            rest = self._take(len(self._buffer))
            return rest if rest.strip() else b""
        end = _last_boundary(self._buffer[:max_bytes])
        return self._take(end) if end else None


def _first_boundary(data: bytes) -> int:
    """Index just past the first row-ending newline in ``data`` (0 if none)."""
    offset = 0
    for i, part in enumerate(data.split(b'"')):
        if i % 2 == 0:
            found = part.find(b"\n")
            if found >= 0:
                return offset + found + 1
        offset += len(part) + 1
    return 0


def _last_boundary(data: bytes) -> int:
    """Index just past the last row-ending newline in ``data`` (0 if none)."""
    if b'"' not in data:
        return data.rfind(b"\n") + 1
    parts = data.split(b'"')
    offset = len(data) + 1
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        offset -= len(part) + 1
        if i % 2 == 0:
            found = part.rfind(b"\n")
            if found >= 0:
                return offset + found + 1
    return 0


# -- reading result CSVs ------------------------------------------------------------------


class _ResponseStream(io.RawIOBase):
    """A streamed response body as a file (decompressed, as ``iter_content`` gives it)."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__()
        self._chunks = response.iter_content(_BLOCK)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _csv_rows(response: requests.Response, delimiter: str) -> Iterator[dict[str, str]]:
    try:
        text = io.TextIOWrapper(io.BufferedReader(_ResponseStream(response), _BLOCK), encoding="utf-8",
                                newline="")
        reader = csv.reader(text, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            if row:
                yield dict(zip(header, row, strict=False))
    finally:
        response.close()
