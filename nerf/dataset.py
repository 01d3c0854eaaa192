"""Scene -> a nerfstudio dataset folder (``RunLayout.dataset_dir``). No torch here: the parent process writes it.

What gets written
- ``images/<name>.png``: every posed image, undistorted (cv2) to PINHOLE, shrunk so its longest side is at
  most ``max_size``, alpha composited onto the background colour.
- ``transforms.json`` through ``scene.io.nerfstudio.write_transforms`` (the one OpenGL <-> OpenCV conversion),
  in the SCENE's world frame, plus three keys nerfstudio understands or ignores:
  ``train_filenames``/``val_filenames``/``test_filenames`` (every tenth image from the sixth held out, as the
  NeRF-synthetic benchmark does; below 10 images the first image doubles as the evaluation view) and
  ``parallax_bounds`` (centre and radius of the sparse points) that ``nerf.plugin``'s DataParser uses to
  centre and scale the scene. Without sparse points nerfstudio's default (centre and scale by the poses) applies.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scene.atomic import atomic_write_bytes, atomic_write_text
from scene.camera import Camera
from scene.errors import CorruptInput, InputNotFound, ParallaxError, UnsupportedFormat
from scene.model import FrameRef, Image, Scene
from scene.progress import NullProgress

log = logging.getLogger(__name__)

MIN_IMAGES = 3
MIN_POINTS_FOR_BOUNDS = 20
ASPECT_TOLERANCE = 0.01      # relative: a file whose aspect differs more than this from its camera is refused
WHITE_LEVEL = 245            # a border pixel at or above this on every channel counts as white
WHITE_BORDER_FRACTION = 0.9  # share of white border pixels that marks a dataset as "on white"
BACKGROUNDS = ("auto", "white", "black")

# COLMAP distortion parameters -> OpenCV's (k1, k2, p1, p2, k3, k4, k5, k6)
_CV_DISTORTION = {
    "SIMPLE_RADIAL": lambda p: [p["k"], 0, 0, 0],
    "RADIAL": lambda p: [p["k1"], p["k2"], 0, 0],
    "OPENCV": lambda p: [p["k1"], p["k2"], p["p1"], p["p2"]],
    "FULL_OPENCV": lambda p: [p["k1"], p["k2"], p["p1"], p["p2"], p["k3"], p["k4"], p["k5"], p["k6"]],
}


@dataclass
class DatasetInfo:
    transforms: Path
    num_images: int
    sizes: list            # distinct (width, height) written
    background: str        # "white" | "black" | "scene"
    had_alpha: bool
    bounds: dict | None    # {"center": [x, y, z], "radius": r, "points": n} or None
    held_out: list = field(default_factory=list)  # file_paths of the evaluation views
    resized: list = field(default_factory=list)   # names of images whose file size differed from the camera's

    def as_json(self) -> dict:
        return {"transforms": str(self.transforms), "num_images": self.num_images,
                "sizes": [list(s) for s in self.sizes], "background": self.background, "had_alpha": self.had_alpha,
                "bounds": self.bounds, "held_out": list(self.held_out), "resized": list(self.resized)}


# --- loading the source --------------------------------------------------------------------------

def load_source(source) -> Scene:
    """A Scene, a ``.parallax`` project folder, or a transforms.json (file or the folder holding it)."""
    if isinstance(source, Scene):
        return source
    from scene.io.nerfstudio import read_transforms
    from scene.project import is_project, load_project

    path = Path(source).expanduser()
    if not path.exists():
        raise InputNotFound(f"NeRF training source not found: {path}")
    if is_project(path):
        return load_project(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return read_transforms(path)
    if path.is_dir() and (path / "transforms.json").is_file():
        return read_transforms(path / "transforms.json")
    raise UnsupportedFormat(f"{path}: not a Parallax project (NAME.parallax/) or a nerfstudio transforms.json; "
                            "NeRF training needs posed cameras from one of those")


# --- validation ----------------------------------------------------------------------------------

def posed_images(scene: Scene, where: str = "the scene") -> list[Image]:
    """The registered images, checked: at least MIN_IMAGES, finite rigid poses, not all at one spot."""
    images = sorted(scene.registered_images(), key=lambda im: im.image_id)
    if len(images) < MIN_IMAGES:
        raise ParallaxError(f"{where}: NeRF training needs at least {MIN_IMAGES} images with camera poses; "
                            f"found {len(images)} (of {len(scene.images)} images). Run SfM or SLAM first.")
    centers = []
    for im in images:
        pose = im.cam_from_world
        rotation = pose.rotation
        ok = (np.all(np.isfinite(pose.quat_wxyz)) and np.all(np.isfinite(pose.translation))
              and abs(np.linalg.norm(pose.quat_wxyz) - 1.0) < 1e-6
              and abs(np.linalg.det(rotation) - 1.0) < 1e-6)
        if not ok:
            raise CorruptInput(f"{where}: image {im.image_id} ({im.name}) has a NaN or degenerate camera pose "
                               f"(quaternion {np.asarray(pose.quat_wxyz).tolist()})")
        centers.append(pose.center())
    centers = np.array(centers)
    spread = float(np.max(np.linalg.norm(centers - centers.mean(axis=0), axis=1)))
    if not spread > 1e-9:
        raise CorruptInput(f"{where}: all {len(images)} cameras sit at the same position {centers[0].tolist()}; "
                           "a NeRF needs views from different places (degenerate poses)")
    for im in images:
        if im.camera_id not in scene.cameras:
            raise CorruptInput(f"{where}: image {im.image_id} ({im.name}) refers to missing camera {im.camera_id}")
    return images


def _check_sources_exist(images: list[Image], where: str) -> None:
    missing = [im for im in images if im.source is None or not Path(im.source.path).is_file()]
    if missing:
        shown = ", ".join(str(im.source.path if im.source else im.name) for im in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputNotFound(f"{where}: {len(missing)} of {len(images)} images are missing on disk: {shown}{more}")


# --- pixels ----------------------------------------------------------------------------------------

def _read_pixels(ref: FrameRef, where: str) -> np.ndarray:
    """uint8 BGR or BGRA (alpha kept: it decides the background)."""
    if ref.frame_index is not None:  # a video frame
        from scene.io.sources import open_source

        with open_source(ref.path) as source:
            return source.read(ref.frame_index).image
    image = cv2.imread(str(ref.path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise CorruptInput(f"{where}: image {ref.path} cannot be decoded")
    if image.dtype != np.uint8:
        image = (image.astype(np.float64) * (255.0 / max(float(np.iinfo(image.dtype).max), 1.0))).round()
        image = image.clip(0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def fit_to_camera(image: np.ndarray, camera: Camera, where: str) -> tuple[np.ndarray, bool]:
    """The image at its camera's size: a file saved at another size of the same aspect is resized."""
    h, w = image.shape[:2]
    if (w, h) == (camera.width, camera.height):
        return image, False
    if abs((w / h) / (camera.width / camera.height) - 1.0) > ASPECT_TOLERANCE:
        raise CorruptInput(f"{where}: the image is {w}x{h} but its camera {camera.camera_id} is "
                           f"{camera.width}x{camera.height} (a different aspect ratio); recalibrate or crop it")
    interpolation = cv2.INTER_AREA if w > camera.width else cv2.INTER_LINEAR
    return cv2.resize(image, (camera.width, camera.height), interpolation=interpolation), True


class Undistorter:
    """Per camera: cv2 remap maps from a distorted camera to a PINHOLE one of the same size."""

    def __init__(self, camera: Camera):
        self.source = camera
        p = dict(zip(camera.param_names, camera.params.tolist()))
        size = (camera.width, camera.height)
        fx, fy = camera.focal_xy
        cx, cy = camera.principal_point
        k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
        self.maps = None
        if camera.model in ("PINHOLE", "SIMPLE_PINHOLE"):
            new_k = k
        elif camera.model == "OPENCV_FISHEYE":
            d = np.array([p["k1"], p["k2"], p["k3"], p["k4"]], dtype=np.float64)
            new_k = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(k, d, size, np.eye(3), balance=0.0)
            self.maps = cv2.fisheye.initUndistortRectifyMap(k, d, np.eye(3), new_k, size, cv2.CV_32FC1)
        elif camera.model in _CV_DISTORTION:
            d = np.array(_CV_DISTORTION[camera.model](p), dtype=np.float64)
            if np.any(d != 0):
                new_k, _ = cv2.getOptimalNewCameraMatrix(k, d, size, 0.0, size)  # alpha 0: no black borders
                self.maps = cv2.initUndistortRectifyMap(k, d, None, new_k, size, cv2.CV_32FC1)
            else:
                new_k = k
        else:
            raise UnsupportedFormat(f"camera {camera.camera_id}: model {camera.model} cannot be undistorted for "
                                    "NeRF training (supported: PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, "
                                    "FULL_OPENCV, OPENCV_FISHEYE)")
        self.camera = Camera(camera.camera_id, "PINHOLE", camera.width, camera.height,
                             np.array([new_k[0, 0], new_k[1, 1], new_k[0, 2], new_k[1, 2]]),
                             intrinsics_source=camera.intrinsics_source)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.maps is None:
            return image
        return cv2.remap(image, self.maps[0], self.maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def target_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    if not max_size or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def composite(image: np.ndarray, background: str) -> np.ndarray:
    """BGRA -> BGR over white or black; BGR passes through."""
    if image.ndim != 3 or image.shape[2] != 4:
        return image
    alpha = image[:, :, 3:4].astype(np.float32) / 255.0
    fill = 255.0 if background == "white" else 0.0
    out = image[:, :, :3].astype(np.float32) * alpha + fill * (1.0 - alpha)
    return out.round().clip(0, 255).astype(np.uint8)


def white_border_fraction(image: np.ndarray) -> float:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).reshape(-1, image.shape[-1])
    return float(np.mean(np.all(border[:, :3] >= WHITE_LEVEL, axis=1)))


# --- bounds ----------------------------------------------------------------------------------------

def bounds_from_points(scene: Scene) -> dict | None:
    """Centre (median) and radius (95th percentile distance) of the sparse points; None when too few."""
    xyz = np.asarray(scene.points.xyz, dtype=np.float64).reshape(-1, 3)
    xyz = xyz[np.all(np.isfinite(xyz), axis=1)]
    if len(xyz) < MIN_POINTS_FOR_BOUNDS:
        return None
    center = np.median(xyz, axis=0)
    radius = float(np.percentile(np.linalg.norm(xyz - center, axis=1), 95))
    if not radius > 0:
        return None
    return {"center": center.tolist(), "radius": radius, "points": int(len(xyz))}


def held_out_indices(count: int) -> list[int]:
    """Every tenth view from the sixth (5, 15, ...) as in the NeRF-synthetic protocol; index 0 below 10 views."""
    return list(range(5, count, 10)) if count >= 10 else [0]


# --- writing ---------------------------------------------------------------------------------------

def _safe_stem(name: str) -> str:
    stem = Path(name).stem or "image"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem)


def prepare_dataset(source, dataset_dir, max_size: int | None = None, background: str = "auto",
                    progress=None) -> DatasetInfo:
    """Write the nerfstudio dataset of ``source`` into ``dataset_dir`` (replacing transforms.json last).

    Every check runs before anything is written, so a bad input leaves the folder as it was.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    progress = progress or NullProgress()
    where = "the scene" if isinstance(source, Scene) else str(source)
    scene = load_source(source)
    images = posed_images(scene, where)
    _check_sources_exist(images, where)
    dataset_dir = Path(dataset_dir)

    undistorters = {cid: Undistorter(scene.cameras[cid]) for cid in sorted({im.camera_id for im in images})}
    # Pass 1: pixels in memory at the target size (small by design: the preset caps max_size).
    processed, resized, had_alpha = [], [], False
    for done, im in enumerate(images):
        image_where = f"{where}: image {im.image_id} ({im.name})"
        pixels = _read_pixels(im.source, image_where)
        pixels, was_resized = fit_to_camera(pixels, scene.cameras[im.camera_id], image_where)
        if was_resized:
            resized.append(im.name)
        undistort = undistorters[im.camera_id]
        pixels = undistort(pixels)
        w, h = target_size(undistort.camera.width, undistort.camera.height, max_size)
        if (w, h) != (undistort.camera.width, undistort.camera.height):
            pixels = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA)
        had_alpha |= pixels.ndim == 3 and pixels.shape[2] == 4
        processed.append((im, pixels, undistort.camera.scaled(w, h)))
        progress.report("prepare dataset", done + 1, len(images), im.name)
        if progress.should_stop():
            from scene.progress import Cancelled
            raise Cancelled("dataset preparation stopped")
    if resized:
        log.warning("%d images differ in size from their camera and were resized: %s", len(resized),
                    ", ".join(resized[:5]))

    if background == "auto":
        if had_alpha:
            background = "white"
        else:
            share = np.mean([white_border_fraction(p) for _, p, _ in processed])
            background = "white" if share >= WHITE_BORDER_FRACTION else "scene"
    fill = "white" if background in ("white", "scene") else "black"

    out = Scene()
    names: dict[int, str] = {}
    used: set[str] = set()
    (dataset_dir / "images").mkdir(parents=True, exist_ok=True)
    camera_ids: dict[tuple, int] = {}
    for im, pixels, camera in processed:
        key = (camera.width, camera.height, camera.params.tobytes())
        if key not in camera_ids:
            camera_ids[key] = len(camera_ids) + 1
            out.add_camera(Camera(camera_ids[key], "PINHOLE", camera.width, camera.height, camera.params,
                                  intrinsics_source=camera.intrinsics_source))
        stem = _safe_stem(im.name)
        if stem in used:
            stem = f"{im.image_id:06d}_{stem}"
        used.add(stem)
        rel = f"images/{stem}.png"
        ok, data = cv2.imencode(".png", composite(pixels, fill))
        if not ok:
            raise CorruptInput(f"{where}: cannot encode image {im.name} as PNG")
        atomic_write_bytes(dataset_dir / rel, data.tobytes())
        names[im.image_id] = rel
        out.add_images([Image(im.image_id, im.name, camera_ids[key], im.cam_from_world,
                              source=FrameRef(str(dataset_dir / rel)))])
    out.metadata = {k: v for k, v in scene.metadata.items() if k == "nerfstudio"}

    from scene.io.nerfstudio import write_transforms

    transforms = dataset_dir / "transforms.json"
    write_transforms(out, transforms, file_paths=names)
    doc = json.loads(transforms.read_text(encoding="utf-8"))
    all_files = [frame["file_path"] for frame in doc["frames"]]
    held = [all_files[i] for i in held_out_indices(len(all_files))]
    doc["train_filenames"] = [f for f in all_files if f not in held] if len(all_files) >= 10 else all_files
    doc["val_filenames"] = held
    doc["test_filenames"] = held
    bounds = bounds_from_points(scene)
    if bounds is not None:
        doc["parallax_bounds"] = bounds
    atomic_write_text(transforms, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    sizes = sorted({(c.width, c.height) for c in out.cameras.values()})
    return DatasetInfo(transforms, len(processed), sizes, background, had_alpha, bounds, held, resized)
