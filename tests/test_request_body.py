"""SegmentedBody: the re-sendable body under multipart blob uploads and Bulk API uploads."""

from __future__ import annotations

import io
import tempfile

import pytest

from authkit.salesforce._request_body import SegmentedBody, replayable


def _read_in(body: SegmentedBody, size: int) -> bytes:
    pieces = []
    while True:
        piece = body.read(size)
        if not piece:
            return b"".join(pieces)
        pieces.append(piece)


def test_segments_read_whole_in_any_chunk_size_and_again_after_seek() -> None:
    file = io.BytesIO(b"0123456789" * 10)
    body = SegmentedBody(b"head|", (file, 3, 47), b"|tail")
    expected = b"head|" + (b"0123456789" * 10)[3:47] + b"|tail"
    assert len(body) == len(expected)
    for size in (1, 3, 7, 64, 1000):
        body.seek(0)
        assert _read_in(body, size) == expected
    body.seek(10)
    assert body.tell() == 10 and body.read(4) == expected[10:14]
    body.seek(-5, io.SEEK_END)
    assert body.read() == b"|tail" and body.read() == b""


def test_bodies_sharing_one_file_read_their_own_ranges() -> None:
    file = io.BytesIO(b"aaaabbbbcccc")
    first, second = SegmentedBody((file, 0, 4)), SegmentedBody(b"h", (file, 8, 12))
    assert first.read(2) == b"aa" and second.read(3) == b"hcc" and first.read() == b"aa"
    assert second.read() == b"cc"


def test_a_file_that_shrank_is_an_error_not_a_short_body() -> None:
    with tempfile.TemporaryFile() as file:
        file.write(b"x" * 100)
        body = SegmentedBody(b"h", (file, 0, 100))
        file.truncate(50)
        with pytest.raises(OSError, match="shorter"):
            body.read()


def test_owned_files_close_with_the_body() -> None:
    owned, shared = io.BytesIO(b"abc"), io.BytesIO(b"def")
    body = SegmentedBody((owned, 0, 3), (shared, 0, 3), owned=[owned])
    body.close()
    assert owned.closed and not shared.closed


def test_replayable_buffers_one_shot_streams_only() -> None:
    seekable = io.BytesIO(b"abc")
    assert replayable(seekable) is seekable
    assert replayable(iter([b"a", "b"])) == b"ab"
    assert replayable(b"raw") == b"raw"
    with pytest.raises(TypeError):
        replayable(42)
