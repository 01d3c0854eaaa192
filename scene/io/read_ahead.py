"""Decode a source's frames on a worker thread, ahead of the caller.

Decoding a 640 x 480 PNG takes about 8 ms, and OpenCV releases the GIL while it decodes: a player that asks
for frame i + 1 while it works on frame i gets it without waiting. Every read of the source, ahead or not,
runs on the one worker thread, so a source (a video capture object) is never read from two threads at once.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from scene.io.sources_base import Frame, FrameSource


class ReadAhead:
    """``prefetch(i)`` starts decoding frame i; ``read(i)`` returns it, decoded ahead or read now. A read
    error is raised by the ``read`` of that frame, as reading it directly would. Frames read ahead and not
    asked for are dropped at the next ``read``."""

    def __init__(self, source: FrameSource):
        self._source = source
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parallax-read-ahead")
        self._pending: dict[int, Future] = {}

    def __len__(self) -> int:
        return len(self._source)

    def prefetch(self, index: int) -> None:
        if 0 <= index < len(self._source) and index not in self._pending:
            self._pending[index] = self._worker.submit(self._source.read, index)

    def pending(self) -> list[int]:
        return sorted(self._pending)

    def read(self, index: int) -> Frame:
        future = self._pending.pop(index, None)
        for stale in self._pending.values():  # another frame was asked for: the player seeked or restarted
            stale.cancel()
        self._pending.clear()
        if future is None:
            future = self._worker.submit(self._source.read, index)
        return future.result()

    def close(self) -> None:
        """Waits for a decode in progress, then closes nothing else: the source belongs to the caller."""
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
