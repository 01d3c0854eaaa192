"""MP4 (H.264) writing through PyAV: no ffmpeg binary needed.

Frames are uint8 HxWx3 RGB, consumed one at a time (a render generator can feed them directly).
H.264 in yuv420p needs even sides: an odd width or height is padded by repeating the last column
or row, so the video is at most one pixel larger than the frames.
"""
from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from scene.errors import ParallaxError, SaveFailed
from scene.progress import Cancelled, NullProgress


def even_size(width: int, height: int) -> tuple[int, int]:
    return width + width % 2, height + height % 2


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(frames: Iterable[np.ndarray], path, fps: float = 24.0, total: Optional[int] = None, progress=None,
              quality_crf: int = 18) -> Path:
    """Encode ``frames`` to ``path`` (written to a temporary file first, then moved into place).

    Raises Cancelled (and leaves no file) when ``progress.should_stop()`` turns true between frames.
    """
    import av

    progress = progress or NullProgress()
    path = Path(path).expanduser()
    if path.suffix.lower() != ".mp4":
        raise ParallaxError(f"videos are written as MP4: {path.name!r} should end in .mp4")
    if not path.parent.is_dir():
        raise ParallaxError(f"the output folder {path.parent} does not exist")
    if not fps > 0:
        raise ParallaxError(f"frames per second must be positive, got {fps}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.mp4")
    count = 0
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = None
            for frame in frames:
                if progress.should_stop():
                    raise Cancelled("video stopped")
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if frame.ndim != 3 or frame.shape[2] != 3:
                    raise ValueError(f"video frames must be HxWx3 RGB, got shape {frame.shape}")
                frame = _pad_even(frame)
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(quality_crf)}
                elif (frame.shape[1], frame.shape[0]) != (stream.width, stream.height):
                    raise ValueError(f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, the video is "
                                     f"{stream.width}x{stream.height}")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                count += 1
                progress.report("video", count, total or 0, path.name)
            if stream is None:
                raise ParallaxError("no frames to write: the camera path is empty")
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except OSError as exc:
        raise SaveFailed(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def read_mp4(path) -> list[np.ndarray]:
    """Decode every frame of a video as uint8 HxWx3 RGB (for checks and previews of short clips)."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
