"""nerfstudio / instant-ngp ``transforms.json`` in and out.

Conventions
- ``transform_matrix`` is OpenGL camera-to-world (camera x right, y up, looking along -z).
  Parallax stores OpenCV ``cam_from_world`` (x right, y down, looking along +z). The ONE place
  that converts is the pair ``opengl_world_from_cam`` / ``cam_from_world_from_opengl``.
- Intrinsics (``camera_model``, ``fl_x fl_y cx cy w h k1 k2 k3 k4 p1 p2``) may sit at the top
  level, in each frame (frame values win), or both. Missing ``fl_x`` is derived from
  ``camera_angle_x`` and the width (NeRF-synthetic); missing ``fl_y`` from ``camera_angle_y``,
  else equals ``fl_x``; missing ``cx``/``cy`` are the image centre; missing ``w``/``h`` are
  measured on the first frame's image. Frames sharing intrinsics share one Camera.
- Camera models: without ``camera_model``, OPENCV when any distortion key is present, else
  PINHOLE. nerfstudio applies k1..p2 to every perspective camera, so PINHOLE with non-zero
  distortion becomes OPENCV, and a non-zero k3 becomes FULL_OPENCV (k4..k6 = 0).
  OPENCV_FISHEYE is kept; other models raise UnsupportedFormat.
- ``file_path`` is kept as given in ``Image.name``; ``Image.source`` holds it resolved against
  the json's folder (a missing extension is completed as NeRF-synthetic's loader does).
- ``applied_transform`` (written by ns-process-data: the transform nerfstudio applied to the
  COLMAP world) is NOT undone: poses stay in the frame of ``transform_matrix``, the frame the
  NeRF is trained in and any ``ply_file_path`` cloud is in. It is kept in
  ``scene.metadata["nerfstudio"]["applied_transform"]`` (3x4) and written back unchanged.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..camera import Camera
from ..errors import CorruptInput, InputNotFound, ParallaxError, UnsupportedFormat
from ..model import FrameRef, Image, Scene
from ..rigid import Rigid3d, matrix_to_quat_wxyz, quat_wxyz_to_matrix

log = logging.getLogger(__name__)

# OpenCV camera axes expressed in OpenGL camera axes (and back): flip y and z.
_GL_FROM_CV = np.diag([1.0, -1.0, -1.0])
RIGID_TOLERANCE = 1e-3  # |det - 1| and max |R^T R - I|: float32 exports sit near 1e-6
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
INTRINSIC_KEYS = ("camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y",
                  *DISTORTION_KEYS)
PERSPECTIVE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


# --- the one OpenGL <-> OpenCV conversion ----------------------------------------------------

def opengl_world_from_cam(cam_from_world: Rigid3d) -> np.ndarray:
    """OpenCV ``cam_from_world`` -> nerfstudio's 4x4 OpenGL camera-to-world ``transform_matrix``."""
    rotation_cw = cam_from_world.rotation
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_cw.T @ _GL_FROM_CV
    matrix[:3, 3] = cam_from_world.center()
    return matrix


def cam_from_world_from_opengl(matrix) -> Rigid3d:
    """nerfstudio's OpenGL camera-to-world matrix (4x4 or 3x4) -> OpenCV ``cam_from_world``.

    Raises ValueError when the matrix is not finite or not a rigid transform. The camera centre
    is kept as given; the rotation is the nearest proper rotation via its quaternion.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"has shape {m.shape}, expected 4x4 (or 3x4)")
    if not np.all(np.isfinite(m)):
        raise ValueError("contains NaN or infinity")
    if m.shape == (4, 4) and np.max(np.abs(m[3] - [0.0, 0.0, 0.0, 1.0])) > RIGID_TOLERANCE:
        raise ValueError(f"last row is {m[3].tolist()}, expected [0, 0, 0, 1]")
    rotation_wc = m[:3, :3] @ _GL_FROM_CV
    det = float(np.linalg.det(rotation_wc))
    orth = float(np.max(np.abs(rotation_wc.T @ rotation_wc - np.eye(3))))
    if abs(det - 1.0) > RIGID_TOLERANCE or orth > RIGID_TOLERANCE:
        raise ValueError(f"is not rigid (rotation determinant {det:.6g}, deviation from orthonormal {orth:.3g})")
    quat_wxyz = matrix_to_quat_wxyz(rotation_wc.T)
    return Rigid3d(quat_wxyz, -quat_wxyz_to_matrix(quat_wxyz) @ m[:3, 3])


# --- reading -----------------------------------------------------------------------------------

def _number(value, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CorruptInput(f"{where}: {key!r} is {value!r}, not a number")
    if not math.isfinite(value):
        raise CorruptInput(f"{where}: {key!r} is {value!r} (NaN or infinite)")
    return float(value)


def _resolve_image(folder: Path, file_path: str) -> Path:
    path = folder / file_path
    if not path.exists() and not path.suffix:
        for suffix in IMAGE_SUFFIXES:
            if path.with_name(path.name + suffix).is_file():
                return path.with_name(path.name + suffix)
    return path


def _image_size(path: Path, where: str) -> tuple[int, int]:
    from PIL import Image as PILImage  # only needed when w/h are absent

    try:
        with PILImage.open(path) as handle:
            return handle.size
    except (OSError, ValueError) as exc:
        raise CorruptInput(f"{where}: 'w'/'h' are absent and the image {path} cannot be opened to measure "
                           f"them ({exc})") from None


def _camera_for(values: dict, where: str, measure) -> tuple[str, int, int, tuple]:
    """(model, width, height, params) from merged top-level + frame intrinsics."""
    numbers = {k: _number(values[k], where, k) for k in INTRINSIC_KEYS if k in values and k != "camera_model"}
    if "w" in numbers and "h" in numbers:
        width, height = numbers["w"], numbers["h"]
    else:
        width, height = measure()
    if width != int(width) or height != int(height) or width <= 0 or height <= 0:
        raise CorruptInput(f"{where}: image size {width} x {height} is not a positive whole number of pixels")
    width, height = int(width), int(height)
    if "fl_x" in numbers:
        fx = numbers["fl_x"]
    elif "camera_angle_x" in numbers:
        fx = 0.5 * width / math.tan(0.5 * numbers["camera_angle_x"])
    else:
        raise CorruptInput(f"{where}: intrinsics missing: neither 'fl_x' nor 'camera_angle_x' is given")
    if "fl_y" in numbers:
        fy = numbers["fl_y"]
    elif "camera_angle_y" in numbers:
        fy = 0.5 * height / math.tan(0.5 * numbers["camera_angle_y"])
    else:
        fy = fx
    if fx <= 0 or fy <= 0:
        raise CorruptInput(f"{where}: focal length {fx} / {fy} is not positive")
    cx, cy = numbers.get("cx", width / 2.0), numbers.get("cy", height / 2.0)
    k1, k2, k3, k4, p1, p2 = (numbers.get(k, 0.0) for k in DISTORTION_KEYS)
    model = values.get("camera_model")
    if model is None:
        model = "OPENCV" if any(k in values for k in DISTORTION_KEYS) else "PINHOLE"
    if model == "OPENCV_FISHEYE":
        return "OPENCV_FISHEYE", width, height, (fx, fy, cx, cy, k1, k2, k3, k4)
    if model not in PERSPECTIVE_MODELS:
        raise UnsupportedFormat(f"{where}: camera_model {model!r} is not supported (use OPENCV, PINHOLE or "
                                "OPENCV_FISHEYE)")
    if k4 != 0.0:
        raise UnsupportedFormat(f"{where}: perspective distortion with k4 = {k4} has no COLMAP camera model")
    if k3 != 0.0:
        return "FULL_OPENCV", width, height, (fx, fy, cx, cy, k1, k2, p1, p2, k3, 0.0, 0.0, 0.0)
    if model == "OPENCV" or any((k1, k2, p1, p2)):
        return "OPENCV", width, height, (fx, fy, cx, cy, k1, k2, p1, p2)
    return "PINHOLE", width, height, (fx, fy, cx, cy)


def looks_like_transforms(doc) -> bool:
    """A parsed JSON document in the nerfstudio / instant-ngp / NeRF-synthetic layout: a ``frames`` list."""
    return isinstance(doc, dict) and isinstance(doc.get("frames"), list)


def transforms_intrinsics(doc: dict, where: str, image_size=None) -> tuple[str, int, int, tuple]:
    """(model, width, height, params) of a transforms document's top-level intrinsics, read as
    ``read_transforms`` reads them; ``image_size`` (width, height) stands in for absent ``w``/``h``."""
    def measure():
        if image_size is None:
            raise CorruptInput(f"{where}: 'w'/'h' are absent and no image size was given")
        return image_size
    return _camera_for({k: doc[k] for k in INTRINSIC_KEYS if k in doc}, where, measure)


def transforms_calibrate(path: Path, folder: Path) -> bool:
    """True when ``path`` is a transforms file with top-level intrinsics whose frames lie in ``folder``: the
    nerfstudio / instant-ngp / NeRF-synthetic layout, where it is the images' calibration."""
    try:
        doc = json.loads(path.read_text(errors="strict"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not looks_like_transforms(doc) or not ("fl_x" in doc or "camera_angle_x" in doc):
        return False
    here = folder.resolve()
    for frame in doc["frames"]:
        file_path = frame.get("file_path") if isinstance(frame, dict) else None
        if isinstance(file_path, str) and _resolve_image(path.parent, file_path).parent.resolve() == here:
            return True
    return False


def read_transforms(path) -> Scene:
    """Read a nerfstudio/instant-ngp ``transforms.json`` (or a folder holding one) into a Scene."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "transforms.json"
    if not path.is_file():
        raise InputNotFound(f"transforms file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CorruptInput(f"{path}: not a text (JSON) file") from None
    except json.JSONDecodeError as exc:
        raise CorruptInput(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise CorruptInput(f"{path}: expected a JSON object at the top level")
    frames = doc.get("frames")
    if not isinstance(frames, list):
        raise CorruptInput(f"{path}: required field 'frames' is missing (or not a list)")
    if not frames:
        raise CorruptInput(f"{path}: 'frames' is empty")
    folder = path.parent
    top = {k: doc[k] for k in INTRINSIC_KEYS if k in doc}
    measured: dict = {}

    def measure_first():  # one measurement serves every frame without w/h (NeRF-synthetic)
        if "size" not in measured:
            first = frames[0] if isinstance(frames[0], dict) else {}
            if not isinstance(first.get("file_path"), str):
                raise CorruptInput(f"{path}: frame 0: required field 'file_path' is missing")
            measured["size"] = _image_size(_resolve_image(folder, first["file_path"]), f"{path}: frame 0")
        return measured["size"]

    cameras: dict[tuple, int] = {}
    images: list[Image] = []
    used_ids: set[int] = set()
    for index, frame in enumerate(frames):
        where = f"{path}: frame {index}"
        if not isinstance(frame, dict):
            raise CorruptInput(f"{where}: expected an object, found {type(frame).__name__}")
        file_path = frame.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            raise CorruptInput(f"{where}: required field 'file_path' is missing")
        where = f"{path}: frame {index} ({file_path})"
        if "transform_matrix" not in frame:
            raise CorruptInput(f"{where}: required field 'transform_matrix' is missing")
        try:
            matrix = np.array(frame["transform_matrix"], dtype=np.float64)
            cam_from_world = cam_from_world_from_opengl(matrix)
        except (ValueError, TypeError) as exc:
            raise CorruptInput(f"{where}: transform_matrix {exc}") from None
        values = dict(top)
        values.update({k: frame[k] for k in INTRINSIC_KEYS if k in frame})
        key = _camera_for(values, where, measure_first)
        if key not in cameras:
            cameras[key] = len(cameras) + 1
        image_id = frame.get("colmap_im_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id <= 0 or image_id in used_ids:
            image_id = max(used_ids, default=0) + 1
        used_ids.add(image_id)
        images.append(Image(image_id, file_path, cameras[key], cam_from_world,
                            source=FrameRef(str(_resolve_image(folder, file_path)))))
    scene = Scene()
    for (model, width, height, params), camera_id in cameras.items():
        scene.add_camera(Camera(camera_id, model, width, height, np.array(params), intrinsics_source="transforms"))
    scene.add_images(images)
    scene.metadata["nerfstudio"] = {"path": str(path), "applied_transform": _applied_transform(doc, path)}
    return scene


def _applied_transform(doc: dict, path: Path):
    if "applied_transform" not in doc:
        return None
    try:
        m = np.array(doc["applied_transform"], dtype=np.float64)
    except (ValueError, TypeError):
        m = np.zeros(0)
    if m.shape not in ((3, 4), (4, 4)) or not np.all(np.isfinite(m)):
        raise CorruptInput(f"{path}: 'applied_transform' must be a finite 3x4 matrix")
    return m[:3].tolist()


# --- writing -----------------------------------------------------------------------------------

def _nerfstudio_intrinsics(camera: Camera) -> dict:
    p = dict(zip(camera.param_names, camera.params.tolist()))
    out = {"w": camera.width, "h": camera.height}
    if camera.model == "OPENCV_FISHEYE":
        out.update(camera_model="OPENCV_FISHEYE", fl_x=p["fx"], fl_y=p["fy"], cx=p["cx"], cy=p["cy"],
                   k1=p["k1"], k2=p["k2"], k3=p["k3"], k4=p["k4"])
        return out
    if camera.model in ("PINHOLE", "SIMPLE_PINHOLE"):
        fx, fy = camera.focal_xy
        out.update(camera_model="PINHOLE", fl_x=fx, fl_y=fy, cx=p["cx"], cy=p["cy"])
        return out
    if camera.model in ("OPENCV", "SIMPLE_RADIAL", "RADIAL") or (
            camera.model == "FULL_OPENCV" and p["k4"] == p["k5"] == p["k6"] == 0.0):
        fx, fy = camera.focal_xy
        out.update(camera_model="OPENCV", fl_x=fx, fl_y=fy, cx=p["cx"], cy=p["cy"],
                   k1=p.get("k1", p.get("k", 0.0)), k2=p.get("k2", 0.0), p1=p.get("p1", 0.0), p2=p.get("p2", 0.0))
        if p.get("k3", 0.0) != 0.0:
            out["k3"] = p["k3"]
        return out
    raise UnsupportedFormat(f"camera {camera.camera_id} ({camera.model}) has no nerfstudio equivalent; "
                            "undistort the images first")


def write_transforms(scene: Scene, path, file_paths: dict | None = None) -> Path:
    """Write the registered images of ``scene`` as a nerfstudio ``transforms.json`` at ``path``.

    ``file_paths`` maps image_id -> the ``file_path`` to write (relative to the json's folder);
    by default the image's name. Shared intrinsics go to the top level, differing ones into
    each frame. Unregistered images are skipped.
    """
    path = Path(path).expanduser()
    snap = scene.snapshot()
    images = [im for im in snap.images.values() if im.registered]
    if not images:
        raise ParallaxError("the scene has no registered images (camera poses) to write as transforms.json")
    if len(images) < len(snap.images):
        log.info("transforms.json: %d unregistered images skipped", len(snap.images) - len(images))
    intrinsics = {cid: _nerfstudio_intrinsics(snap.cameras[cid]) for cid in {im.camera_id for im in images}}
    shared = len({json.dumps(v, sort_keys=True) for v in intrinsics.values()}) == 1
    if not shared and len({v["camera_model"] for v in intrinsics.values()}) > 1:
        # camera_model is one value for the whole file in nerfstudio: promote PINHOLE to OPENCV
        for values in intrinsics.values():
            if values["camera_model"] == "PINHOLE":
                values.update(camera_model="OPENCV", k1=0.0, k2=0.0, p1=0.0, p2=0.0)
    doc: dict = {}
    if shared:
        doc.update(next(iter(intrinsics.values())))
    else:
        doc["camera_model"] = next(iter(intrinsics.values()))["camera_model"]
    frames = []
    for im in images:
        frame = {"file_path": (file_paths or {}).get(im.image_id, im.name),
                 "transform_matrix": opengl_world_from_cam(im.cam_from_world).tolist(),
                 "colmap_im_id": im.image_id}
        if not shared:
            frame.update({k: v for k, v in intrinsics[im.camera_id].items() if k != "camera_model"})
        frames.append(frame)
    doc["frames"] = frames
    applied = (scene.metadata.get("nerfstudio") or {}).get("applied_transform")
    if applied is not None:
        doc["applied_transform"] = applied
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"cannot write {path}: {exc}") from None
    atomic_write_text(path, text + "\n")
    return path
