"""Where logs are cut into chunks: interval, size cap, final chunk, no overlap."""

from __future__ import annotations

import pytest

from saturn_async.logs.chunker import Chunk, ChunkCursor


def test_nothing_is_cut_before_the_interval_unless_final() -> None:
    cursor = ChunkCursor(interval=60, cap=100, now=0)
    assert cursor.next_chunk(size=10, now=59) is None
    assert cursor.next_chunk(size=10, now=59, final=True) == Chunk(0, 0, 10)
    assert cursor.next_chunk(size=10, now=59, final=True) is None


def test_a_chunk_per_interval_covers_what_is_new() -> None:
    cursor = ChunkCursor(interval=60, cap=100, now=0)
    assert cursor.next_chunk(size=10, now=60) == Chunk(0, 0, 10)
    assert cursor.next_chunk(size=25, now=100) is None  # next one is due at 120
    assert cursor.next_chunk(size=25, now=120) == Chunk(1, 10, 25)


def test_an_idle_interval_cuts_nothing_and_restarts_the_clock() -> None:
    cursor = ChunkCursor(interval=60, cap=100, now=0)
    assert cursor.next_chunk(size=0, now=61) is None
    assert cursor.next_chunk(size=5, now=100) is None
    assert cursor.next_chunk(size=5, now=121) == Chunk(0, 0, 5)


def test_a_backlog_comes_out_as_capped_chunks_at_once() -> None:
    cursor = ChunkCursor(interval=60, cap=100, now=0)
    chunks = []
    while chunk := cursor.next_chunk(size=250, now=1):
        chunks.append(chunk)
    assert chunks == [Chunk(0, 0, 100), Chunk(1, 100, 200)]
    assert cursor.next_chunk(size=250, now=1, final=True) == Chunk(2, 200, 250)


def test_a_truncated_file_yields_nothing_until_it_grows_past_the_shipped_part() -> None:
    cursor = ChunkCursor(interval=1, cap=100, now=0)
    assert cursor.next_chunk(size=50, now=1) == Chunk(0, 0, 50)
    assert cursor.next_chunk(size=20, now=3, final=True) is None
    assert cursor.next_chunk(size=70, now=5) == Chunk(1, 50, 70)


def test_interval_and_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ChunkCursor(interval=0, cap=1, now=0)
