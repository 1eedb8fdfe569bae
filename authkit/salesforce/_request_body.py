"""Request bodies the client can send again: after a ``401`` it gets a new token and re-sends the
same bytes, so a body must be readable twice without being held twice in memory.

- :func:`replayable`: any ``data=`` as something that can be sent twice (a one-shot stream is read
  into memory; a seekable file is rewound by the client);
- :class:`SegmentedBody`: a body made of pieces — bytes, and byte ranges of files read in place —
  seekable and sized, so requests streams it with a ``Content-Length``.  A multipart blob upload
  (:mod:`authkit.salesforce._multipart`) and a Bulk API upload (:mod:`authkit.salesforce._bulk_csv`)
  are both one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import IO, Any

__all__ = ["SegmentedBody", "replayable", "seekable"]

#: A piece of a body: bytes, or ``(file, start, end)``, bytes ``start:end`` of an open binary file.
Segment = bytes | tuple[IO[bytes], int, int]


class SegmentedBody(io.RawIOBase):
    """The concatenation of ``segments``, read on demand::

        body = SegmentedBody(b"header\\n", (file, 100, 5000), b"\\n--end--\\n")
        len(body)        # 4916: 7 + 4900 + 9
        session.post(url, data=body)   # streamed; body.seek(0) re-sends the same bytes

    A file is sought before every read, so several bodies can share one open file.  The files in
    ``owned`` are closed with the body.  A file that got shorter than its range is an ``OSError``
    (sending fewer bytes than the ``Content-Length`` announced would corrupt the request).
    """

    def __init__(self, *segments: Segment, owned: Iterable[IO[bytes]] = ()) -> None:
        super().__init__()
        self._segments: list[tuple[int, Segment]] = []  # (offset in the body, segment)
        offset = 0
        for segment in segments:
            self._segments.append((offset, segment))
            offset += len(segment) if isinstance(segment, bytes) else segment[2] - segment[1]
        self._length = offset
        self._pos = 0
        self._owned = list(owned)

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = min(max(base + offset, 0), self._length)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._length - self._pos)
        done = 0
        for offset, segment in self._segments:
            if done >= wanted:
                break
            within = self._pos + done - offset  # where this read starts inside the segment
            size = len(segment) if isinstance(segment, bytes) else segment[2] - segment[1]
            if within >= size:
                continue
            count = min(size - within, wanted - done)
            if isinstance(segment, bytes):
                piece = segment[within:within + count]
            else:
                file, start, _ = segment
                file.seek(start + within)
                piece = file.read(count)
                if len(piece) < count:
                    raise OSError("a file being sent got shorter while it was being sent")
            view[done:done + count] = piece
            done += count
        self._pos += done
        return done

    def close(self) -> None:
        for file in self._owned:
            if not file.closed:
                file.close()
        super().close()


def seekable(data: Any) -> bool:
    """Whether ``data`` (a file object) can be rewound: ``seekable()`` says so and ``tell()`` works."""
    try:
        if not data.seekable():
            return False
        data.tell()
        return True
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return False


def replayable(data: Any) -> Any:
    """``data`` as something that can be sent twice: a one-shot stream is read into memory now.

    Bytes, str, dicts and lists are encoded by requests on each prepare; a seekable
    file is rewound by the caller.  A generator or a pipe cannot be rewound, and
    sending it half on a retry would corrupt the record, so it is buffered.
    """
    if data is None or isinstance(data, (bytes, bytearray, str, Mapping, list, tuple)):
        return data
    if hasattr(data, "read"):
        if seekable(data):
            return data
        content = data.read()
        return content.encode("utf-8") if isinstance(content, str) else bytes(content)
    if isinstance(data, Iterable):
        chunks = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in data]
        return b"".join(chunks)
    raise TypeError(f"data must be bytes, str, a mapping, a file or an iterable of bytes, not {type(data).__name__}")
