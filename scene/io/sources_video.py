"""Frames streamed from a video file through cv2.VideoCapture.

Frame count comes from CAP_PROP_FRAME_COUNT, which container metadata can get wrong: ``len()``
is exact once ``frame_refs()`` (or a full iteration) has walked the file, approximate before.

Mid-stream resolution changes: OpenCV's FFmpeg backend silently rescales every frame to the
first frame's size (distorting geometry). We detect the change with PyAV (keyframes only,
cheap) and refuse the frames of a different native size with CorruptInput naming the frame;
the frames before it are delivered. Without PyAV the check is skipped with a warning.
"""
from __future__ import annotations

import logging
import math
import threading
from functools import cached_property
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from ..errors import CorruptInput
from ..model import FrameRef
from .sources_base import SCAN_STAGE, Frame, FrameSource, downscale, scan_step, scan_stride

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"})


def probe_native_sizes(path: Path) -> Optional[list[tuple[float, int, int]]]:
    """[(seconds from stream start, width, height)] at every keyframe where the coded size changes.

    None when PyAV is missing or cannot read the file (the check is then skipped).
    """
    try:
        import av  # optional; nerfstudio depends on it
    except ImportError:
        log.warning("PyAV is not installed: mid-stream resolution changes in %s cannot be detected", path)
        return None
    changes: list[tuple[float, int, int]] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"  # sizes only change at keyframes
            start = stream.start_time or 0
            for frame in container.decode(stream):
                size = (frame.width, frame.height)
                if changes and size == changes[-1][1:]:
                    continue
                pts = frame.pts if frame.pts is not None else start
                changes.append((float((pts - start) * stream.time_base), *size))
    except Exception as exc:  # PyAV raises many error types; the check is best-effort
        log.warning("could not probe frame sizes of %s (%s); resolution changes go undetected", path, exc)
        return None
    return changes


class VideoSource(FrameSource):
    layout = "video"

    def __init__(self, path: Path, max_size: Optional[int] = None) -> None:
        super().__init__(path, max_size)
        if path.stat().st_size == 0:
            raise CorruptInput(f"{path}: the video file is empty (0 bytes)")
        capture = self._open_capture()
        ok, first = capture.read()
        if not ok or first is None or first.size == 0:
            capture.release()
            raise CorruptInput(f"{path}: no frame could be decoded (corrupt or unsupported video)")
        self._original_size = (first.shape[1], first.shape[0])
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self._reported_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._exact_count: Optional[int] = None
        self._refs: Optional[list[FrameRef]] = None
        # One capture kept open for read(); iterators open their own so both can run at once.
        self._random = capture
        self._random_next = 1  # frame index the next plain capture.read() returns
        self._lock = threading.Lock()

    def _open_capture(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise CorruptInput(f"{self.path}: cannot open the video (corrupt file or unsupported codec)")
        return capture

    def _timestamp(self, capture: cv2.VideoCapture, index: int) -> float:
        """Seconds of the frame just read: the decoder's position, else index / fps."""
        seconds = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if math.isfinite(seconds) and (index == 0 or seconds > 0):
            return seconds
        return index / self.fps if self.fps > 0 else float(index)

    @cached_property
    def _native_sizes(self) -> Optional[list[tuple[float, int, int]]]:
        return probe_native_sizes(self.path)

    def _check_native_size(self, index: int, timestamp: float, image: np.ndarray) -> None:
        width, height = self._original_size
        got = (image.shape[1], image.shape[0])
        if got != (width, height):
            raise CorruptInput(f"{self.path}: frame {index} is {got[0]}x{got[1]}, but the video started at "
                               f"{width}x{height}; re-encode it at one resolution")
        sizes = self._native_sizes
        if not sizes:
            return
        # Compare coded sizes with the first coded size, not with OpenCV's output: OpenCV applies
        # rotation metadata (phone videos), so its frames may be the coded size transposed.
        tolerance = 0.5 / self.fps if self.fps > 0 else 1e-3
        active = [s for s in sizes if s[0] <= timestamp + tolerance]
        (_, coded_w, coded_h), (_, now_w, now_h) = sizes[0], (active[-1] if active else sizes[0])
        if (now_w, now_h) != (coded_w, coded_h):
            raise CorruptInput(f"{self.path}: the resolution changes mid-stream at frame {index} "
                               f"(t={timestamp:.3f} s) from {coded_w}x{coded_h} to {now_w}x{now_h}; "
                               f"re-encode the video at one resolution (e.g. ffmpeg -vf scale={coded_w}:{coded_h})")

    def _frame(self, index: int, timestamp: float, image: np.ndarray) -> Frame:
        self._check_native_size(index, timestamp, image)
        image, scale = downscale(image, self.max_size)
        return Frame(index, timestamp, self._name(index), image, FrameRef(str(self.path), index, timestamp), scale)

    def _name(self, index: int) -> str:
        return f"{self.path.stem}_{index:06d}"

    def frame_names(self) -> list[str]:
        return [self._name(ref.frame_index) for ref in self.frame_refs()]

    def __len__(self) -> int:
        if self._exact_count is not None:
            return self._exact_count
        if self._reported_count > 0:
            return self._reported_count
        return len(self.frame_refs())

    def frame_refs(self, progress=None) -> list[FrameRef]:
        """One ref per frame; walks the file once (grab, no colour conversion) and caches the result.

        The walk reports SCAN_STAGE against the container's frame count and stops with Cancelled
        when ``progress`` asks; nothing is cached then.
        """
        if self._refs is None:
            total = max(self._reported_count, 0)
            stride = scan_stride(total) if total else 50
            capture = self._open_capture()
            refs = []
            try:
                while capture.grab():
                    index = len(refs)
                    if index % stride == 0:
                        scan_step(progress, index, total, self._name(index), self.path)
                    refs.append(FrameRef(str(self.path), index, self._timestamp(capture, index)))
            finally:
                capture.release()
            if progress is not None:
                progress.report(SCAN_STAGE, len(refs), len(refs), "")
            self._refs = refs
            self._exact_count = len(refs)
        return list(self._refs)

    def __iter__(self) -> Iterator[Frame]:
        capture = self._open_capture()
        try:
            index = 0
            while True:
                ok, image = capture.read()
                if not ok or image is None:
                    break
                yield self._frame(index, self._timestamp(capture, index), image)
                index += 1
            self._exact_count = index
        finally:
            capture.release()

    def read(self, index: int) -> Frame:
        index = self._check_index(index)
        with self._lock:
            if self._random is None:
                self._random = self._open_capture()
                self._random_next = 0
            if index != self._random_next:  # sequential reads skip the (slow) seek
                self._random.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, image = self._random.read()
            self._random_next = index + 1 if ok else -1
            if not ok or image is None:
                raise CorruptInput(f"{self.path}: frame {index} could not be decoded")
            timestamp = self._timestamp(self._random, index)
        return self._frame(index, timestamp, image)

    def close(self) -> None:
        with self._lock:
            if self._random is not None:
                self._random.release()
                self._random = None
