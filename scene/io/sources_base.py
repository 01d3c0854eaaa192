"""The FrameSource interface shared by video files and image-file layouts, and the on-the-fly downscale."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import cv2
import numpy as np

from ..model import FrameRef
from ..progress import Cancelled

if TYPE_CHECKING:
    from ..camera import Camera

SCAN_STAGE = "scan frames"


def scan_stride(total: int) -> int:
    """Frames between progress reports and stop checks while scanning: about 1%, at most 50."""
    return max(1, min(50, total // 100))


def scan_step(progress, done: int, total: int, name: str, path: Path) -> None:
    """Report a scan step and raise Cancelled when asked to stop (call every scan_stride frames)."""
    if progress is None:
        return
    if progress.should_stop():
        raise Cancelled(f"{path}: frame scan cancelled after {done} of {total or '?'} frames")
    progress.report(SCAN_STAGE, done, total, name)


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``image`` is uint8, BGR (H, W, 3) or gray (H, W), already downscaled to max_size."""

    index: int  # position in the source's frame_refs()
    timestamp: float  # seconds
    name: str
    image: np.ndarray
    ref: FrameRef
    scale: float = 1.0  # processed size / original size of this frame


def processed_size(width: int, height: int, max_size: Optional[int]) -> tuple[int, int, float]:
    """(width, height, scale) after shrinking so that max(width, height) <= max_size; never enlarges."""
    if not max_size or max(width, height) <= max_size:
        return int(width), int(height), 1.0
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def downscale(image: np.ndarray, max_size: Optional[int]) -> tuple[np.ndarray, float]:
    """The image shrunk to fit max_size (area interpolation avoids aliasing), and the scale applied."""
    h, w = image.shape[:2]
    new_w, new_h, scale = processed_size(w, h, max_size)
    if scale == 1.0:
        return image, 1.0
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA), scale


class FrameSource(ABC):
    """Frames streamed from disk one at a time; never holds all frames in memory.

    ``size`` is the processed (width, height) of the first readable frame, ``original_size``
    its size on disk and ``scale`` the ratio between them (1.0 without ``max_size``).
    """

    layout: str = ""
    # False when the timestamps are only frame numbers (a plain folder of images): no pace to play them at.
    has_clock: bool = True

    def __init__(self, path: Path, max_size: Optional[int] = None) -> None:
        if max_size is not None and int(max_size) <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self._path = Path(path)
        self.max_size = int(max_size) if max_size else None
        self._original_size: tuple[int, int] = (0, 0)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def original_size(self) -> tuple[int, int]:
        return self._original_size

    @property
    def size(self) -> tuple[int, int]:
        w, h, _ = processed_size(*self._original_size, self.max_size)
        return w, h

    @property
    def scale(self) -> float:
        return processed_size(*self._original_size, self.max_size)[2]

    @abstractmethod
    def __len__(self) -> int:
        """Frame count; exact for image layouts, container metadata (may be approximate) for videos."""

    @abstractmethod
    def frame_refs(self, progress=None) -> list[FrameRef]:
        """One ref per usable frame. The first call may scan the source (reporting SCAN_STAGE to
        ``progress`` and raising scene.progress.Cancelled when it asks to stop); later calls are cached."""

    @abstractmethod
    def frame_names(self) -> list[str]:
        """Frame.name of every frame, in frame_refs() order, without decoding."""

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    @abstractmethod
    def read(self, index: int) -> Frame: ...

    def first_image_path(self) -> Optional[Path]:
        """The image file of the first readable frame (its EXIF describes the camera); None for videos."""
        return None

    def intrinsics_hint(self) -> Optional[Path]:
        """A calibration file that the layout carries (KITTI calib.txt, EuRoC sensor.yaml, K.txt ...), or None."""
        return None

    def published_intrinsics(self) -> Optional[tuple[str, Camera]]:
        """(what they are, camera) when the layout's publisher gives the intrinsics instead of a file
        (TUM RGB-D's Freiburg cameras), or None."""
        return None

    def ground_truth_path(self) -> Optional[Path]:
        """A ground-truth trajectory file found beside the source, or None."""
        return None

    def close(self) -> None:
        """Release open decoders (videos); the source can still be used afterwards."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layout={self.layout!r}, path={str(self.path)!r}, frames={len(self)})"

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame {index} out of range: {self.path} has {n} frames")
        return index % n
