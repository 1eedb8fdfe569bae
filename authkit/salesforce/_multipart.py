"""A multipart/form-data body that streams its file part: a blob upload in bounded memory.

requests builds a ``files=`` body in memory (the whole file, then the whole body);
:class:`MultipartBody` is a :class:`~authkit.salesforce._request_body.SegmentedBody` instead —
head bytes, the caller's file read in place, tail bytes — so requests streams it with a
``Content-Length``, and the client can rewind it to resend after a 401.
"""

from __future__ import annotations

import io
import os
import secrets
from typing import IO

from authkit.salesforce._request_body import SegmentedBody, seekable

__all__ = ["MultipartBody"]


class MultipartBody(SegmentedBody):
    """``--boundary`` / JSON part / binary part (``data``, read as it is sent) / ``--boundary--``."""

    def __init__(self, json_name: str, json_text: str, blob_name: str, filename: str, content_type: str,
                 data: bytes | bytearray | IO[bytes]) -> None:
        boundary = "authkit-" + secrets.token_hex(16)
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{json_name}"\r\n'
            "Content-Type: application/json\r\n\r\n"
            f"{json_text}\r\n"
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{blob_name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        blob: IO[bytes]
        if isinstance(data, (bytes, bytearray)):
            blob = io.BytesIO(data)  # shares the bytes until written to: no copy
        elif seekable(data):
            blob = data
        else:  # a pipe or a socket: it cannot be rewound for a resend, so it is read once, here
            blob = io.BytesIO(data.read())
        start = blob.tell()
        end = blob.seek(0, os.SEEK_END)
        blob.seek(start)
        super().__init__(head, (blob, start, end), tail)
        self.boundary = boundary

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"
