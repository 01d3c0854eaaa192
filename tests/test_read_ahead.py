"""ReadAhead: frames decoded on a worker thread are the source's frames, errors reach the frame's own read,
and the source is only ever read from the one worker thread."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from scene.errors import CorruptInput
from scene.io.read_ahead import ReadAhead
from scene.io.sources import open_source
from tests.test_bad_sources import _folder_with_one_truncated
from tests.test_sources import make_video, pattern, write


class ThreadLog:
    """Wraps a source's read: which thread read which frame."""

    def __init__(self, source):
        self.source, self.reads = source, []
        self._read = source.read
        source.read = self.read

    def read(self, index):
        self.reads.append((index, threading.get_ident()))
        return self._read(index)


def _folder(tmp_path, n=6):
    for i in range(n):
        write(tmp_path / f"f{i}.png", pattern(i, 96, 72))
    return tmp_path


def test_frames_read_ahead_are_the_sources_frames_read_on_one_worker_thread(tmp_path):
    source = open_source(_folder(tmp_path))
    log = ThreadLog(source)
    reader = ReadAhead(source)
    try:
        frames = []
        for i in range(len(source)):
            frames.append(reader.read(i))
            reader.prefetch(i + 1)
            reader.prefetch(i + 1)  # asked twice: decoded once
            assert reader.pending() == ([i + 1] if i + 1 < len(source) else [])
    finally:
        reader.close()
    assert [f.index for f in frames] == list(range(6))
    for i, frame in enumerate(frames):
        assert np.array_equal(frame.image, pattern(i, 96, 72))
    assert sorted(i for i, _ in log.reads) == list(range(6))
    threads = {t for _, t in log.reads}
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_a_seek_drops_the_frames_read_ahead(tmp_path):
    source = open_source(_folder(tmp_path))
    reader = ReadAhead(source)
    try:
        reader.prefetch(4)
        reader.prefetch(5)
        frame = reader.read(1)
        assert frame.index == 1 and np.array_equal(frame.image, pattern(1, 96, 72))
        assert reader.pending() == []
        reader.prefetch(len(source))  # past the end: nothing to read
        reader.prefetch(-1)
        assert reader.pending() == []
    finally:
        reader.close()


def test_a_corrupt_frame_read_ahead_raises_at_its_own_read_and_the_next_frames_still_come(tmp_path):
    folder, _ = _folder_with_one_truncated(tmp_path, ".png")  # f2.png truncated
    source = open_source(folder)
    reader = ReadAhead(source)
    try:
        reader.prefetch(2)
        assert reader.read(1).index == 1
        reader.prefetch(2)
        reader.prefetch(3)  # not asked for before the bad frame: dropped, read again below
        with pytest.raises(CorruptInput, match="f2.png"):
            reader.read(2)
        assert reader.read(3).index == 3
    finally:
        reader.close()


def test_a_video_read_ahead_matches_its_sequential_decode(tmp_path):
    video = make_video(tmp_path / "clip.avi", n=10)
    with open_source(video) as source:
        sequential = [f.image for f in source]
    with open_source(video) as source:
        reader = ReadAhead(source)
        try:
            images = []
            for i in range(len(source)):
                images.append(reader.read(i).image)
                reader.prefetch(i + 1)
        finally:
            reader.close()
    assert len(images) == len(sequential) == 10
    assert all(np.array_equal(a, b) for a, b in zip(images, sequential))


def test_close_waits_for_a_decode_in_progress(tmp_path):
    source = open_source(_folder(tmp_path))
    started, release = threading.Event(), threading.Event()
    read = source.read

    def slow_read(index):
        started.set()
        release.wait(5)
        return read(index)

    source.read = slow_read
    reader = ReadAhead(source)
    reader.prefetch(0)
    assert started.wait(5)
    closer = threading.Thread(target=reader.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # the source is not closed under a decode
    release.set()
    closer.join(5)
    assert not closer.is_alive()
