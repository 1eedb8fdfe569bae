"""A multipart/form-data body that streams its file part: a blob upload in bounded memory.

requests builds a ``files=`` body in memory (the whole file, then the whole body);
:class:`MultipartBody` is a seekable, sized file object instead — head bytes, the
caller's file read in place, tail bytes — so requests streams it with a
``Content-Length``, and the client can rewind it to resend after a 401.
"""

from __future__ import annotations

import io
import os
import secrets
from typing import IO

__all__ = ["MultipartBody"]


class MultipartBody(io.RawIOBase):
    """``--boundary`` / JSON part / binary part (``data``, read as it is sent) / ``--boundary--``."""

    def __init__(self, json_name: str, json_text: str, blob_name: str, filename: str, content_type: str,
                 data: bytes | bytearray | IO[bytes]) -> None:
        super().__init__()
        self.boundary = "authkit-" + secrets.token_hex(16)
        head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{json_name}"\r\n'
            "Content-Type: application/json\r\n\r\n"
            f"{json_text}\r\n"
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{blob_name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{self.boundary}--\r\n".encode()
        blob: IO[bytes]
        if isinstance(data, (bytes, bytearray)):
            blob = io.BytesIO(data)  # shares the bytes until written to: no copy
        elif _seekable(data):
            blob = data
        else:  # a pipe or a socket: it cannot be rewound for a resend, so it is read once, here
            blob = io.BytesIO(data.read())
        start = blob.tell()
        size = blob.seek(0, os.SEEK_END) - start
        blob.seek(start)
        self._parts: list[tuple[int, IO[bytes] | bytes, int]] = [  # (offset in body, part, part start)
            (0, head, 0), (len(head), blob, start), (len(head) + size, tail, 0)]
        self._length = len(head) + size + len(tail)
        self._pos = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

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

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._length - self._pos
        out = []
        while size > 0 and self._pos < self._length:
            offset, part, part_start = next(p for p in reversed(self._parts) if p[0] <= self._pos)
            within = self._pos - offset
            if isinstance(part, bytes):
                piece = part[within:within + size]
            else:
                part.seek(part_start + within)
                end = next((p[0] for p in self._parts if p[0] > offset), self._length)
                piece = part.read(min(size, end - self._pos))
                if not piece:
                    raise OSError("the file passed as data got shorter while it was being sent")
            out.append(piece)
            self._pos += len(piece)
            size -= len(piece)
        return b"".join(out)


def _seekable(data: IO[bytes]) -> bool:
    try:
        if not data.seekable():
            return False
        data.tell()
        return True
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
