"""Frame sources backed by one image file per frame: plain folders, TUM, KITTI and EuRoC layouts.

Each layout only differs in how the file list and timestamps are found; decoding, skipping
unreadable files and downscaling are shared by FileListSource.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..camera import Camera
from ..errors import CorruptInput, InputNotFound, UnsupportedFormat
from ..model import FrameRef
from .nerfstudio import transforms_calibrate
from .published_intrinsics import tum_camera, tum_freiburg_camera
from .sources_base import SCAN_STAGE, Frame, FrameSource, downscale, scan_step, scan_stride
from .sources_decode import IMAGE_SUFFIXES, decode_image_file, file_problem

log = logging.getLogger(__name__)


def natural_key(name: str) -> list:
    """Sort key putting img2 before img10; case-insensitive."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class FileEntry:
    path: Path
    timestamp: float  # seconds
    name: str


class FileListSource(FrameSource):
    """Frames from a list of image files.

    The first ``frame_refs()`` call checks every file's structure (headers and tail, no decoding)
    and drops truncated files with one warning naming them all; ``len()`` and frame indices then
    follow the checked list. Files that still fail to decode are skipped (with a warning) while
    iterating; ``Frame.index`` is the position in ``frame_refs()``, so a skipped file leaves a gap.
    """

    def __init__(self, layout: str, path: Path, entries: list[FileEntry], max_size: Optional[int] = None,
                 calibration: Optional[Path] = None, ground_truth: Optional[Path] = None,
                 published: Optional[tuple[str, Camera]] = None, has_clock: bool = True) -> None:
        super().__init__(path, max_size)
        self.layout = layout
        self.has_clock = has_clock
        self._entries = list(entries)
        self._calibration = calibration
        self._ground_truth = ground_truth
        self._published = published
        self._checked = False  # True once frame_refs() has dropped the truncated files
        if not self._entries:
            raise InputNotFound(f"{path}: no frames found ({layout} layout)")
        self._first_image, self._original_size = self._first_readable()

    def _first_readable(self) -> tuple[Path, tuple[int, int]]:
        for entry in self._entries:
            image, reason = decode_image_file(entry.path)
            if image is not None:
                return entry.path, (image.shape[1], image.shape[0])
            log.warning("skipping unreadable image %s: %s", entry.path, reason)
        raise CorruptInput(f"{self.path}: none of its {len(self._entries)} images could be read")

    def __len__(self) -> int:
        return len(self._entries)

    def frame_refs(self, progress=None) -> list[FrameRef]:
        if not self._checked:
            self._entries = self._complete_entries(progress)
            self._checked = True
        return [FrameRef(str(e.path), None, e.timestamp) for e in self._entries]

    def _complete_entries(self, progress) -> list[FileEntry]:
        """The entries whose files are structurally complete; one warning names every dropped file."""
        total = len(self._entries)
        stride = scan_stride(total)
        complete, broken = [], []
        for i, entry in enumerate(self._entries):
            if i % stride == 0:
                scan_step(progress, i, total, entry.name, self.path)
            problem = file_problem(entry.path)
            if problem:
                broken.append(f"{entry.name} ({problem})")
            else:
                complete.append(entry)
        if progress is not None:
            progress.report(SCAN_STAGE, total, total, "")
        if broken:
            log.warning("%s: skipping %d truncated or unreadable image(s): %s", self.path, len(broken),
                        ", ".join(broken))
        if not complete:
            raise CorruptInput(f"{self.path}: none of its {total} images is complete")
        return complete

    def frame_names(self) -> list[str]:
        return [e.name for e in self._entries]

    def _frame(self, index: int, image) -> Frame:
        entry = self._entries[index]
        image, scale = downscale(image, self.max_size)
        return Frame(index, entry.timestamp, entry.name, image, FrameRef(str(entry.path), None, entry.timestamp), scale)

    def __iter__(self) -> Iterator[Frame]:
        for index, entry in enumerate(self._entries):
            image, reason = decode_image_file(entry.path)
            if image is None:
                log.warning("skipping unreadable image %s: %s", entry.path, reason)
                continue
            yield self._frame(index, image)

    def read(self, index: int) -> Frame:
        index = self._check_index(index)
        entry = self._entries[index]
        image, reason = decode_image_file(entry.path)
        if image is None:
            raise CorruptInput(f"{entry.path}: {reason}")
        return self._frame(index, image)

    def first_image_path(self) -> Optional[Path]:
        return self._first_image

    def intrinsics_hint(self) -> Optional[Path]:
        return self._calibration

    def published_intrinsics(self) -> Optional[tuple[str, Camera]]:
        return self._published

    def ground_truth_path(self) -> Optional[Path]:
        return self._ground_truth


# --- plain image folders ---------------------------------------------------------------------

def _visible_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural order; other files are skipped with one warning."""
    files = _visible_files(folder)
    images = sorted((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))
    others = sorted(p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES)
    if others and images:
        log.warning("%s: skipping %d non-image file(s): %s", folder, len(others), ", ".join(others[:10]))
    return images


# Calibration files a folder of frames may carry beside its images (openMVG's K.txt, our own calib.*).
CALIBRATION_NAMES = ("calib.yaml", "calib.yml", "calib.json", "K.txt", "cameras.txt")


def find_calibration(folder: Path) -> Optional[Path]:
    """A calibration file beside the images: one of CALIBRATION_NAMES in the folder, else a nerfstudio /
    instant-ngp / NeRF-synthetic transforms file (in the folder or the one above) whose frames are these images."""
    found = next((folder / name for name in CALIBRATION_NAMES if (folder / name).is_file()), None)
    if found is not None:
        return found
    for candidate in (*sorted(folder.glob("transforms*.json")), *sorted(folder.parent.glob("transforms*.json"))):
        if candidate.is_file() and transforms_calibrate(candidate, folder):
            log.info("%s: intrinsics from %s", folder, candidate)
            return candidate
    return None


def open_image_folder(folder: Path, max_size: Optional[int]) -> FileListSource:
    images = list_images(folder)
    if not images:
        files = _visible_files(folder)
        if (folder / "images").is_dir():  # a dataset/project folder whose pictures live in images/
            log.info("%s holds no images; opening its images/ folder", folder)
            return open_image_folder(folder / "images", max_size)
        if not files:
            raise InputNotFound(f"{folder}: the folder is empty (no images to open)")
        names = ", ".join(sorted(p.name for p in files)[:5])
        raise UnsupportedFormat(f"{folder}: no images found (supported: {', '.join(sorted(IMAGE_SUFFIXES))}); "
                                f"it holds {len(files)} other file(s): {names}")
    # No clock in a plain folder: the frame index stands in for seconds.
    entries = [FileEntry(p, float(i), p.name) for i, p in enumerate(images)]
    return FileListSource("images", folder, entries, max_size, calibration=find_calibration(folder), has_clock=False)


# --- TUM RGB-D: rgb.txt lists "timestamp filename" -------------------------------------------

def open_tum(root: Path, max_size: Optional[int]) -> FileListSource:
    listing = root / "rgb.txt"
    entries = []
    for line_no, line in enumerate(listing.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            timestamp = float(fields[0])
            rel = fields[1]
        except (ValueError, IndexError):
            raise CorruptInput(f"{listing}: line {line_no} is not 'timestamp filename': {line[:80]!r}") from None
        path = root / rel
        if not path.is_file():
            log.warning("%s: line %d lists %s, which does not exist; skipped", listing, line_no, path)
            continue
        entries.append(FileEntry(path, timestamp, rel))
    if not entries:
        raise InputNotFound(f"{listing}: lists no existing image files")
    gt = root / "groundtruth.txt"
    number = tum_freiburg_camera(root)
    published = (f"TUM RGB-D Freiburg {number} colour camera, published intrinsics", tum_camera(number)) \
        if number is not None else None
    return FileListSource("tum", root, entries, max_size, calibration=find_calibration(root),
                          ground_truth=gt if gt.is_file() else None, published=published)


# --- KITTI odometry: image_0/%06d.png + times.txt (+ calib.txt, poses/NN.txt) -----------------

def _read_kitti_times(path: Path) -> list[float]:
    times = []
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            times.append(float(line.split()[0]))
        except ValueError:
            raise CorruptInput(f"{path}: line {line_no} is not a time in seconds: {line[:80]!r}") from None
    return times


def _kitti_ground_truth(root: Path) -> Optional[Path]:
    local = sorted((root / "poses").glob("*.txt")) if (root / "poses").is_dir() else []
    named = root / "poses" / f"{root.name}.txt"
    if named.is_file():
        return named
    if len(local) == 1:
        return local[0]
    standard = root.parent.parent / "poses" / f"{root.name}.txt"  # dataset/sequences/07 -> dataset/poses/07.txt
    return standard if standard.is_file() else None


def open_kitti(root: Path, image_dir: Path, max_size: Optional[int]) -> FileListSource:
    times_path = root / "times.txt"
    times = _read_kitti_times(times_path)
    images = list_images(image_dir)
    if not images:
        raise InputNotFound(f"{image_dir}: no images found (KITTI layout)")
    numbered = all(p.stem.isdigit() for p in images)
    if not numbered and len(images) != len(times):
        raise CorruptInput(f"{times_path}: {len(times)} times for {len(images)} images in {image_dir}")
    entries = []
    for position, path in enumerate(images):
        frame_no = int(path.stem) if numbered else position  # KITTI names frames by their line in times.txt
        if frame_no >= len(times):
            raise CorruptInput(f"{times_path}: has {len(times)} lines, no time for frame {path.name}")
        entries.append(FileEntry(path, times[frame_no], path.name))
    calib = root / "calib.txt"
    return FileListSource("kitti", root, entries, max_size, calibration=calib if calib.is_file() else None,
                          ground_truth=_kitti_ground_truth(root))


# --- EuRoC / ASL: mav0/cam0/{data.csv, data/, sensor.yaml} ------------------------------------

def _ns_to_seconds(ns: int) -> float:
    return float(ns // 1_000_000_000) + (ns % 1_000_000_000) * 1e-9


def _euroc_ground_truth(mav: Path) -> Optional[Path]:
    asl = mav / "state_groundtruth_estimate0" / "data.csv"
    if asl.is_file():
        return asl
    folder = mav.parent / "groundtruth"
    if not folder.is_dir():
        return None
    # TUM-format text first; OpenVINS' "vicon2gt" re-estimate covers every camera frame of V1_01.
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".csv")]
    files.sort(key=lambda p: ("vicon2gt" not in p.name.lower(), p.suffix.lower() != ".txt", p.name))
    return files[0] if files else None


def open_euroc(cam: Path, max_size: Optional[int]) -> FileListSource:
    listing = cam / "data.csv"
    entries = []
    for line_no, line in enumerate(listing.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            ns = int(fields[0])
            name = fields[1]
        except (ValueError, IndexError):
            raise CorruptInput(f"{listing}: line {line_no} is not 'timestamp_ns,filename': {line[:80]!r}") from None
        path = cam / "data" / name
        if not path.is_file():
            log.warning("%s: line %d lists %s, which does not exist; skipped", listing, line_no, path)
            continue
        entries.append(FileEntry(path, _ns_to_seconds(ns), name))
    if not entries:
        raise InputNotFound(f"{listing}: lists no existing image files")
    sensor = cam / "sensor.yaml"
    return FileListSource("euroc", cam, entries, max_size, calibration=sensor if sensor.is_file() else None,
                          ground_truth=_euroc_ground_truth(cam.parent))
