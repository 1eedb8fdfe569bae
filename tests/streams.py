"""Streams for upload tests."""

from __future__ import annotations

import io
from typing import Any


class Pipe(io.RawIOBase):
    """A binary stream that cannot seek, as a pipe or a socket, and gives short reads as they do."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 7))
        buffer[:len(chunk)] = chunk
        return len(chunk)
