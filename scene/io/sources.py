"""Open a video file or a folder of frames as a streamed FrameSource, detecting its layout.

Layouts (checked in this order for folders):
  euroc   folder holding mav0/cam0/ (data.csv + data/), or the mav0 or cam0 folder itself
  kitti   folder holding image_0/ + times.txt (calib.txt, poses/ optional), or image_N/ itself
  tum     folder holding rgb.txt (groundtruth.txt optional), or its rgb/ folder itself
  images  any folder of jpg/jpeg/png/bmp/tif/tiff/webp files (natural order; others skipped),
          or a folder whose images live in an images/ subfolder
  video   a file ending in .mp4/.avi/.mov/.mkv/.m4v/.webm

intrinsics_hint(): KITTI calib.txt, EuRoC sensor.yaml; for images/TUM folders a calib.yaml/.yml/.json,
K.txt or cameras.txt lying beside the frames. ground_truth_path(): TUM groundtruth.txt, KITTI
poses/<seq>.txt (or dataset/poses/<seq>.txt), EuRoC state_groundtruth_estimate0/data.csv or a
groundtruth/ folder beside mav0. Image-file timestamps: TUM/KITTI/EuRoC clocks; a plain folder uses
the frame index as seconds.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..errors import InputNotFound, UnsupportedFormat
from .sources_base import Frame, FrameSource, processed_size
from .sources_decode import IMAGE_SUFFIXES
from .sources_files import natural_key, open_euroc, open_image_folder, open_kitti, open_tum
from .sources_video import VIDEO_SUFFIXES, VideoSource

__all__ = ["Frame", "FrameSource", "IMAGE_SUFFIXES", "LAYOUTS", "VIDEO_SUFFIXES", "detect_layout", "natural_key",
           "open_source", "processed_size"]

LAYOUTS = ("video", "images", "tum", "kitti", "euroc")


def _euroc_camera_dir(folder: Path) -> Optional[Path]:
    for cam in (folder / "mav0" / "cam0", folder / "cam0", folder):
        if (cam / "data.csv").is_file() and (cam / "data").is_dir():
            return cam
    return None


def _kitti_dirs(folder: Path) -> Optional[tuple[Path, Path]]:
    """(sequence root, image folder) for a KITTI sequence or one of its image_N folders."""
    if (folder / "image_0").is_dir() and (folder / "times.txt").is_file():
        return folder, folder / "image_0"
    if re.fullmatch(r"image_[0-3]", folder.name) and (folder.parent / "times.txt").is_file():
        return folder.parent, folder
    return None


def _tum_root(folder: Path) -> Optional[Path]:
    if (folder / "rgb.txt").is_file():
        return folder
    if folder.name == "rgb" and (folder.parent / "rgb.txt").is_file():
        return folder.parent
    return None


def detect_layout(path) -> str:
    """The layout name open_source would use for ``path`` (raises like open_source on bad paths)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputNotFound(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        hint = (" (open the folder that holds it to use it as an image sequence)"
                if path.suffix.lower() in IMAGE_SUFFIXES else "")
        raise UnsupportedFormat(f"{path}: unsupported file type {path.suffix or '(no extension)'}{hint}; "
                                f"frame sources are videos ({', '.join(sorted(VIDEO_SUFFIXES))}) or folders")
    if _euroc_camera_dir(path):
        return "euroc"
    if _kitti_dirs(path):
        return "kitti"
    if _tum_root(path):
        return "tum"
    return "images"


def open_source(path, max_size: Optional[int] = None) -> FrameSource:
    """A streamed FrameSource for ``path``; frames larger than ``max_size`` (longest side) are shrunk on the fly.

    Raises InputNotFound, UnsupportedFormat or CorruptInput (all naming the path) on bad input.
    """
    path = Path(path).expanduser()
    layout = detect_layout(path)
    if layout == "video":
        return VideoSource(path, max_size)
    if layout == "euroc":
        return open_euroc(_euroc_camera_dir(path), max_size)
    if layout == "kitti":
        root, image_dir = _kitti_dirs(path)
        return open_kitti(root, image_dir, max_size)
    if layout == "tum":
        return open_tum(_tum_root(path), max_size)
    return open_image_folder(path, max_size)
