"""Features (OpenCV): SIFT with RootSIFT descriptors (default), or ORB / AKAZE binary descriptors for speed;
a maximum image size and a per-image disk cache.

Descriptors: SIFT -> (N, 128) float32 with unit L2 norm (matched by L2 in sfm.matching); ORB and AKAZE ->
(N, 32) uint8, 256 bits (matched by Hamming distance with geometry.matching's numba kernels). AKAZE is
asked for 256-bit MLDB descriptors so that both binary kinds share those kernels.

Keypoints come back in the pixels of the image's camera (normally the full-resolution frame) in
COLMAP's convention: OpenCV puts pixel centres at integers, so x_ours = (x_cv + 0.5) / scale, where
scale is (processed size / camera size). Each keypoint also carries the colour of its pixel (RGB)
so that 3D points can be coloured without decoding the images again.

Cache: one .npz per image in ``FeatureOptions.cache_dir``, named by a hash of the file's path, its
mtime and size, the frame index (videos), the output scale and every option that changes the result;
a re-run with the same inputs loads it instead of detecting again.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from scene.parallel import ordered_thread_map
from scene.progress import Cancelled

STAGE = "extract"
_CACHE_VERSION = 2  # 2: binary descriptors kept as uint8
DETECTORS = ("sift", "orb", "akaze")


@dataclass(frozen=True)
class FeatureOptions:
    detector: str = "sift"              # "sift" | "orb" | "akaze"
    max_image_size: int = 1600          # longest side the detector sees; larger frames are shrunk first
    max_num_features: int = 8192
    root_sift: bool = True              # L1-normalise, square-root (Arandjelovic & Zisserman 2012)
    contrast_threshold: float = 0.02    # OpenCV's 0.04 is for [0, 1]-scaled DoG of 3 layers; COLMAP uses ~0.0067
    edge_threshold: float = 10.0
    cache_dir: Optional[str] = None     # None: no cache
    workers: Optional[int] = None       # images decoded and detected at once (None: scene.parallel's default)


@dataclass
class ImageFeatures:
    keypoints_xy: np.ndarray            # (N, 2) float64, camera pixels, COLMAP convention
    descriptors: np.ndarray             # SIFT: (N, 128) float32, unit L2 norm; ORB/AKAZE: (N, 32) uint8
    rgb: np.ndarray                     # (N, 3) uint8 colour at each keypoint
    detection_scale: float              # processed pixels per camera pixel (<= 1); 1/scale is the noise gain
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.keypoints_xy)


def is_binary(options: FeatureOptions) -> bool:
    return options.detector in ("orb", "akaze")


def _detector(options: FeatureOptions):
    if options.detector == "sift":
        return cv2.SIFT_create(nfeatures=int(options.max_num_features), contrastThreshold=options.contrast_threshold,
                               edgeThreshold=options.edge_threshold)
    if options.detector == "orb":
        # FAST threshold lowered from 20: small or low-contrast frames otherwise yield few corners.
        return cv2.ORB_create(nfeatures=int(options.max_num_features), scaleFactor=1.2, nlevels=8, fastThreshold=10)
    if options.detector == "akaze":
        return cv2.AKAZE_create(descriptor_type=cv2.AKAZE_DESCRIPTOR_MLDB, descriptor_size=256, threshold=0.0002)
    raise ValueError(f"unknown feature detector {options.detector!r}; use one of {', '.join(DETECTORS)}")


def _empty_descriptors(options: FeatureOptions) -> np.ndarray:
    return np.zeros((0, 32), np.uint8) if is_binary(options) else np.zeros((0, 128), np.float32)


def _strongest(kps, desc, limit: int):
    """AKAZE has no feature budget: keep the ``limit`` strongest responses."""
    if limit <= 0 or len(kps) <= limit:
        return kps, desc
    order = np.argsort([-k.response for k in kps], kind="stable")[:limit]
    return [kps[i] for i in order], desc[order]


def detect(image: np.ndarray, options: FeatureOptions, camera_size: Optional[tuple[int, int]] = None) -> ImageFeatures:
    """Features on a uint8 BGR or gray image of any size; keypoints in pixels of a camera of ``camera_size``
    (width, height; default: the image's own size)."""
    if image is None or image.size == 0:
        raise ValueError("detect: empty image")
    h, w = image.shape[:2]
    cam_w, cam_h = camera_size if camera_size is not None else (w, h)
    longest = max(w, h)
    work = image
    if options.max_image_size and longest > options.max_image_size:
        f = options.max_image_size / longest
        work = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    gray = work if work.ndim == 2 else cv2.cvtColor(work, cv2.COLOR_BGR2GRAY)
    kps, desc = _detector(options).detectAndCompute(gray, None)
    if desc is None or not kps:
        return ImageFeatures(np.zeros((0, 2)), _empty_descriptors(options), np.zeros((0, 3), np.uint8),
                             work.shape[1] / cam_w)
    kps, desc = _strongest(kps, desc, int(options.max_num_features))
    xy_cv = np.array([k.pt for k in kps], dtype=np.float64)
    if is_binary(options):
        desc = np.ascontiguousarray(desc, np.uint8)
    elif options.root_sift:
        desc = desc.astype(np.float32)
        desc /= np.maximum(np.abs(desc).sum(axis=1, keepdims=True), 1e-12)
        desc = np.sqrt(desc)  # now unit L2 norm
    else:
        desc = desc.astype(np.float32)
        desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    # Colours sampled at the nearest processed pixel.
    col = np.clip(np.round(xy_cv).astype(np.int64), 0, [work.shape[1] - 1, work.shape[0] - 1])
    if work.ndim == 2:
        rgb = np.repeat(work[col[:, 1], col[:, 0], None], 3, axis=1)
    else:
        rgb = work[col[:, 1], col[:, 0], ::-1]
    sx, sy = work.shape[1] / cam_w, work.shape[0] / cam_h
    # OpenCV pixel centres are at integers, ours at +0.5: shift, then scale to camera pixels.
    xy = np.column_stack(((xy_cv[:, 0] + 0.5) / sx, (xy_cv[:, 1] + 0.5) / sy))
    return ImageFeatures(xy, np.ascontiguousarray(desc), np.ascontiguousarray(rgb, dtype=np.uint8), float(sx))


_NOT_IN_KEY = ("cache_dir", "workers")  # options that never change the features


def cache_key(path: str, frame_index: Optional[int], camera_size: tuple[int, int], options: FeatureOptions) -> str:
    """Hash of the file identity (path, mtime, size), frame index, output size and result-changing options."""
    p = Path(path)
    try:
        st = p.stat()
        ident = [str(p.resolve()), st.st_mtime_ns, st.st_size]
    except OSError:
        ident = [str(p), 0, 0]
    opts = {k: v for k, v in asdict(options).items() if k not in _NOT_IN_KEY}
    blob = json.dumps([_CACHE_VERSION, ident, frame_index, list(camera_size), opts], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


def load_cached(cache_dir, key: str) -> Optional[ImageFeatures]:
    f = Path(cache_dir) / f"{key}.npz"
    if not f.is_file():
        return None
    try:
        with np.load(f) as z:
            desc = z["desc"]
            desc = desc if desc.dtype == np.uint8 else desc.astype(np.float32)
            return ImageFeatures(z["xy"].astype(np.float64), desc, z["rgb"].astype(np.uint8),
                                 float(z["scale"]), from_cache=True)
    except (OSError, ValueError, KeyError):
        return None  # a torn or foreign file: detect again and overwrite it


def store_cached(cache_dir, key: str, feats: ImageFeatures) -> None:
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp.npz"  # unique per writer
    np.savez(tmp, xy=feats.keypoints_xy, desc=feats.descriptors, rgb=feats.rgb, scale=feats.detection_scale)
    os.replace(tmp, folder / f"{key}.npz")  # atomic: a cancelled run never leaves a half-written entry


def _same_shape(image: np.ndarray, camera_size) -> bool:
    """The image is its camera's frame at some scale (a camera may describe a downscaled or full-size frame)."""
    h, w = image.shape[:2]
    return abs(w / h - camera_size[0] / camera_size[1]) <= 0.01 * camera_size[0] / camera_size[1]


def empty_features(options: FeatureOptions) -> ImageFeatures:
    return ImageFeatures(np.zeros((0, 2)), _empty_descriptors(options), np.zeros((0, 3), np.uint8), 1.0)


def extract_all(frames, options: FeatureOptions, progress=None, failures: Optional[dict] = None
                ) -> list[ImageFeatures]:
    """Features for each item of ``frames``: (path, frame_index, camera_size, read) where ``read()`` returns
    the decoded uint8 image (called only on a cache miss). Reports ``extract`` (done, total, 'n cached').

    ``failures``: when given, an image whose ``read()`` raises ValueError/OSError (or decodes to a size
    other than its camera's) gets no features and ``failures[index] = reason`` instead of stopping the run.
    """
    out: list[ImageFeatures] = []
    total = len(frames)
    cached = 0

    def features_of(frame):
        """(features, from cache, failure reason or None); a read error re-raises when failures is None."""
        path, frame_index, camera_size, read = frame
        key = None
        if options.cache_dir:
            key = cache_key(path, frame_index, camera_size, options)
            feats = load_cached(options.cache_dir, key)
            if feats is not None:
                return feats, True, None
        try:
            image = read()
            if failures is not None and not _same_shape(image, camera_size):
                raise ValueError(f"decoded as {image.shape[1]} x {image.shape[0]} px, which is not the "
                                 f"shape of its camera ({camera_size[0]} x {camera_size[1]} px)")
        except (ValueError, OSError) as exc:
            if failures is None:
                raise
            return empty_features(options), False, str(exc)
        feats = detect(image, options, camera_size)
        if key is not None:
            store_cached(options.cache_dir, key, feats)
        return feats, False, None

    results = ordered_thread_map(features_of, frames, options.workers)
    try:
        for i in range(total):
            if progress is not None and progress.should_stop():
                raise Cancelled(f"feature extraction cancelled after {i} of {total} images")
            feats, from_cache, failure = next(results)
            out.append(feats)
            if failure is not None:
                failures[i] = failure
                continue
            cached += from_cache
            if progress is not None:
                progress.report(STAGE, i + 1, total, f"{len(feats)} keypoints; {cached} from cache")
    finally:
        results.close()
    return out
