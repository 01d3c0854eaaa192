"""Camera intrinsics from calibration files, EXIF or a documented guess, and frame sources into a Scene.

Supported calibration files (detected from content, not only the extension):
  * KITTI calib.txt (``P0:`` or ``P_rect_00:`` 3x4 projection) -> PINHOLE
  * YAML/JSON with fx fy cx cy [k1 k2 p1 p2 k3 k4 k5 k6] (aliases fl_x/fl_y, w/h, ORB-SLAM
    ``Camera.fx`` ...): PINHOLE when all distortion is zero or absent, OPENCV for k1 k2 p1 p2,
    FULL_OPENCV as soon as k3..k6 is non-zero (nothing is dropped silently)
  * YAML/JSON in COLMAP style: model, width, height, params
  * EuRoC sensor.yaml (intrinsics, distortion_coefficients, resolution) -> OPENCV / OPENCV_FISHEYE
  * OpenCV FileStorage YAML (%YAML:1.0, camera_matrix [+ distortion_coefficients], image_width/height)
  * COLMAP cameras.txt (first camera)
  * a plain 3x3 K matrix in a text file (e.g. openMVG's K.txt)
Files without a resolution need ``image_size``. A file whose resolution differs from
``image_size`` by a uniform scale is scaled to it; other mismatches are refused.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..camera import CAMERA_MODELS, Camera, guess_camera
from ..errors import CorruptInput, InputNotFound
from ..model import Image, Scene
from .nerfstudio import looks_like_transforms, transforms_intrinsics

log = logging.getLogger(__name__)

_DISTORTION_NAMES = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")
_KEY_ALIASES = {"fl_x": "fx", "fl_y": "fy", "focal_x": "fx", "focal_y": "fy", "w": "width", "h": "height",
                "image_width": "width", "image_height": "height"}

# Sensor widths (mm) for cameras whose EXIF lacks FocalLengthIn35mmFilm or reports it coarsely.
# (make word, model word, width in mm); widths are the sensor format's nominal size.
SENSOR_WIDTH_MM: tuple[tuple[str, str, float], ...] = (
    ("kodak", "z612", 5.76),  # 1/2.5"
    ("canon", "a10", 5.27),  # PowerShot A10, 1/2.7"
    ("canon", "5d mark ii", 36.0),
    ("canon", "5d mark iii", 36.0),
    ("canon", "600d", 22.3),
    ("nikon", "d800", 35.9),
    ("nikon", "d7000", 23.6),
    ("sony", "ilce-7m3", 35.6),
    ("gopro", "hero4", 6.17),  # 1/2.3"
    ("dji", "fc330", 6.17),  # Phantom 4, 1/2.3"
)


# --- loading calibration files ---------------------------------------------------------------

def _finite_params(path: Path, values, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CorruptInput(f"{path}: {what} are not numbers: {values!r}") from None
    if not np.all(np.isfinite(array)):
        raise CorruptInput(f"{path}: {what} contain NaN or infinity: {array.tolist()}")
    return array


def _scaled_copy(size, target) -> bool:
    """Whether ``target`` (width, height) is ``size`` scaled, its two ratios within 1 % of each other."""
    sx, sy = target[0] / size[0], target[1] / size[1]
    return abs(sx - sy) <= 0.01 * max(sx, sy)


def _make_camera(path: Path, model: str, size, params, source: str, image_size, camera_id: int) -> Camera:
    """Build and validate the camera, then fit it to image_size."""
    params = _finite_params(path, params, f"{model} parameters")
    if size is None:
        if image_size is None:
            raise CorruptInput(f"{path}: the file gives no image resolution; pass the image size")
        size = image_size
    width, height = (int(round(float(v))) for v in size)
    try:
        camera = Camera(camera_id, model, width, height, params, intrinsics_source=source)
    except ValueError as exc:
        raise CorruptInput(f"{path}: {exc}") from None
    fx, fy = camera.focal_xy
    if fx <= 0 or fy <= 0:
        raise CorruptInput(f"{path}: focal length must be positive, got fx={fx:g} fy={fy:g}")
    if image_size is not None and tuple(image_size) != (width, height):
        target_w, target_h = (int(v) for v in image_size)
        if not _scaled_copy((width, height), (target_w, target_h)):
            raise CorruptInput(f"{path}: calibrated for {width}x{height}, which is not a scaled version of the "
                               f"images' {target_w}x{target_h}")
        camera = camera.scaled(target_w, target_h)
    return camera


def _kitti_projection(path: Path, text: str) -> Optional[np.ndarray]:
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() in ("P0", "P_rect_00"):
            values = _finite_params(path, rest.split(), f"{key.strip()} values")
            if values.size != 12:
                raise CorruptInput(f"{path}: {key.strip()} has {values.size} values, expected 12 (3x4 matrix)")
            return values.reshape(3, 4)
    return None


def _colmap_cameras_txt(path: Path, text: str):
    """(model, width, height, params) of the first camera line, or None if the text is not COLMAP's."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) >= 5 and fields[0].isdigit() and fields[1] in CAMERA_MODELS:
            return fields[1], fields[2:4], fields[4:]
        return None
    return None


def _matrix_3x3(text: str) -> Optional[np.ndarray]:
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(rows) != 3 or any(len(r) != 3 for r in rows):
        return None
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        return None


def _parse_mapping(path: Path, text: str) -> Optional[dict]:
    """JSON or YAML (including OpenCV's %YAML:1.0 dialect) as a dict, or None if it is neither."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CorruptInput(f"{path}: invalid JSON ({exc})") from None
        return data if isinstance(data, dict) else None
    import yaml

    # OpenCV writes a %YAML:1.0 directive PyYAML rejects and !!opencv-matrix tags it does not know.
    text = re.sub(r"^%YAML:?\s*1\.0.*$", "", text, count=1, flags=re.MULTILINE)
    text = re.sub(r"!!opencv-[a-z-]+", "", text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CorruptInput(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    return data if isinstance(data, dict) else None


def _opencv_matrix(path: Path, value, what: str) -> np.ndarray:
    data = value.get("data") if isinstance(value, dict) else value
    if data is None:
        raise CorruptInput(f"{path}: {what} has no data")
    return _finite_params(path, data, what)


def _normalised_keys(data: dict) -> dict:
    """Lower-case keys without prefixes such as ORB-SLAM's 'Camera.' / 'Camera1.'; aliases resolved."""
    out = {}
    for key, value in data.items():
        name = str(key).split(".")[-1].lower()
        out[_KEY_ALIASES.get(name, name)] = value
    return out


def _distortion_model(path: Path, coefficients: dict) -> tuple[str, list[float]]:
    """(model, extra params) choosing the smallest COLMAP model that keeps every non-zero coefficient."""
    values = {name: float(coefficients.get(name, 0.0) or 0.0) for name in _DISTORTION_NAMES}
    bad = [name for name, v in values.items() if not math.isfinite(v)]
    if bad:
        raise CorruptInput(f"{path}: distortion {', '.join(bad)} is NaN or infinite")
    if all(v == 0.0 for v in values.values()):
        return "PINHOLE", []
    if all(values[name] == 0.0 for name in ("k3", "k4", "k5", "k6")):
        return "OPENCV", [values[n] for n in ("k1", "k2", "p1", "p2")]
    return "FULL_OPENCV", [values[n] for n in _DISTORTION_NAMES]


def _camera_from_mapping(path: Path, data: dict, image_size, camera_id: int) -> Camera:
    keys = _normalised_keys(data)
    if "camera" in keys and isinstance(keys["camera"], dict) and not ({"fx", "model", "intrinsics"} & keys.keys()):
        keys = _normalised_keys(keys["camera"])
    size = (keys["width"], keys["height"]) if "width" in keys and "height" in keys else None

    if "model" in keys and "params" in keys:  # COLMAP style
        model = str(keys["model"]).upper()
        if model not in CAMERA_MODELS:
            raise CorruptInput(f"{path}: unknown camera model {keys['model']!r}; known: {', '.join(CAMERA_MODELS)}")
        return _make_camera(path, model, size, keys["params"], "calib", image_size, camera_id)

    if "intrinsics" in keys:  # EuRoC / Kalibr sensor.yaml
        intrinsics = _finite_params(path, keys["intrinsics"], "intrinsics")
        if intrinsics.size != 4:
            raise CorruptInput(f"{path}: intrinsics must be [fu, fv, cu, cv], got {intrinsics.size} values")
        size = keys.get("resolution", size)
        coeffs = _finite_params(path, keys.get("distortion_coefficients", []), "distortion_coefficients")
        kind = str(keys.get("distortion_model", "radial-tangential")).lower()
        if not np.any(coeffs):
            model, extra = "PINHOLE", []
        elif kind in ("equidistant", "fisheye") and coeffs.size == 4:
            model, extra = "OPENCV_FISHEYE", list(coeffs)
        elif kind in ("radial-tangential", "radtan", "plumb_bob") and coeffs.size in (4, 5):
            model, extra = _distortion_model(path, dict(zip(("k1", "k2", "p1", "p2", "k3"), coeffs)))
        else:
            raise CorruptInput(f"{path}: unsupported distortion model {kind!r} with {coeffs.size} coefficients")
        return _make_camera(path, model, size, [*intrinsics, *extra], "sensor_yaml", image_size, camera_id)

    if "camera_matrix" in keys:  # OpenCV FileStorage (calibrateCamera sample output)
        k = _opencv_matrix(path, keys["camera_matrix"], "camera_matrix")
        if k.size != 9:
            raise CorruptInput(f"{path}: camera_matrix must be 3x3, got {k.size} values")
        k = k.reshape(3, 3)
        dist_value = keys.get("distortion_coefficients", keys.get("dist_coeffs", keys.get("distortion_coeffs")))
        dist = _opencv_matrix(path, dist_value, "distortion_coefficients") if dist_value is not None else []
        model, extra = _distortion_model(path, dict(zip(_DISTORTION_NAMES[:4] + ("k3", "k4", "k5", "k6"), dist)))
        return _make_camera(path, model, size, [k[0, 0], k[1, 1], k[0, 2], k[1, 2], *extra], "calib",
                            image_size, camera_id)

    missing = [name for name in ("fx", "fy", "cx", "cy") if name not in keys]
    if missing:
        raise CorruptInput(f"{path}: missing intrinsics {', '.join(missing)} (expected fx fy cx cy, COLMAP "
                           f"model/params, EuRoC intrinsics or OpenCV camera_matrix)")
    model, extra = _distortion_model(path, {n: keys[n] for n in _DISTORTION_NAMES if n in keys})
    pinhole = [keys["fx"], keys["fy"], keys["cx"], keys["cy"]]
    return _make_camera(path, model, size, [*pinhole, *extra], "calib", image_size, camera_id)


def load_calibration(path, image_size: Optional[tuple[int, int]] = None, camera_id: int = 1) -> Camera:
    """Camera from a calibration file; ``image_size`` (width, height) fills in or checks the resolution.

    Raises InputNotFound for a missing file and CorruptInput (naming the file) for anything unreadable.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFound(f"{path}: calibration file not found")
    try:
        text = path.read_text(errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptInput(f"{path}: cannot read calibration file as text ({exc})") from None

    projection = _kitti_projection(path, text)
    if projection is not None:
        p = projection
        return _make_camera(path, "PINHOLE", None, [p[0, 0], p[1, 1], p[0, 2], p[1, 2]], "calib", image_size,
                            camera_id)
    colmap = _colmap_cameras_txt(path, text)
    if colmap is not None:
        model, size, params = colmap
        # A cameras.txt handed over as the calibration is a calibration like any other: "calib", which bundle
        # adjustment keeps fixed ("colmap" marks cameras of an imported model).
        return _make_camera(path, model, size, params, "calib", image_size, camera_id)
    k = _matrix_3x3(text)
    if k is not None:
        return _make_camera(path, "PINHOLE", None, [k[0, 0], k[1, 1], k[0, 2], k[1, 2]], "calib", image_size,
                            camera_id)
    data = _parse_mapping(path, text) if path.suffix.lower() in (".yaml", ".yml", ".json") or ":" in text else None
    if data is None:
        raise CorruptInput(f"{path}: unknown calibration format (expected KITTI calib.txt, COLMAP cameras.txt, "
                           f"a 3x3 K matrix, YAML/JSON intrinsics or a transforms.json)")
    if looks_like_transforms(data):  # nerfstudio / instant-ngp / NeRF synthetic: their conventions, one reader
        model, width, height, params = transforms_intrinsics(data, str(path), image_size)
        return _make_camera(path, model, (width, height), params, "calib", image_size, camera_id)
    return _camera_from_mapping(path, data, image_size, camera_id)


# --- EXIF ---------------------------------------------------------------------------------------

def _sensor_width_mm(make: str, model: str) -> Optional[float]:
    make, model = make.lower(), model.lower()
    for make_word, model_word, width in SENSOR_WIDTH_MM:
        if make_word in make and re.search(rf"(?<![\w-]){re.escape(model_word)}(?![\w-])", model):
            return width
    return None


# FocalPlaneResolutionUnit -> millimetres (EXIF: 1 none, 2 inch (default), 3 cm; TIFF/EP adds 4 mm, 5 um).
_FOCAL_PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
_PLAUSIBLE_SENSOR_MM = (1.0, 80.0)  # from 1/10" chips to medium format; outside means broken tags


def _focal_plane_sensor_width_mm(details, stored_width: int) -> Optional[float]:
    """Sensor width along the stored image's x axis from FocalPlaneXResolution and its unit, or None.

    The resolution counts pixels of the image as captured, whose width is PixelXDimension when the
    camera wrote it (a later resize may have kept it), else the stored width.
    """
    x_resolution = _positive(details.get(0xA20E))
    unit_mm = _FOCAL_PLANE_UNIT_MM.get(details.get(0xA210, 2))
    if not x_resolution or unit_mm is None:
        return None
    captured_width = _positive(details.get(0xA002)) or stored_width
    sensor_mm = captured_width / x_resolution * unit_mm
    if not _PLAUSIBLE_SENSOR_MM[0] <= sensor_mm <= _PLAUSIBLE_SENSOR_MM[1]:
        log.info("ignoring EXIF focal-plane resolution: it implies a %.3g mm wide sensor", sensor_mm)
        return None
    return sensor_mm


def camera_from_exif(image_path, camera_id: int = 1) -> Optional[Camera]:
    """SIMPLE_RADIAL camera from EXIF focal length, or None when EXIF cannot give one.

    Uses FocalLength with the sensor width from SENSOR_WIDTH_MM when the camera is known, else with
    the sensor width implied by FocalPlaneXResolution/FocalPlaneResolutionUnit (f_px = f / sensor width
    * stored width), else FocalLengthIn35mmFilm: f_px = f35 / 36 * max(w, h). Size is the displayed
    (EXIF-rotated) one.
    """
    from PIL import Image as PILImage, UnidentifiedImageError

    try:
        with PILImage.open(image_path) as image:
            width, height = image.size
            exif = image.getexif()
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    details = exif.get_ifd(0x8769)  # Exif sub-IFD holds the focal lengths
    stored_width = width
    if exif.get(0x0112) in (5, 6, 7, 8):  # rotated by 90 degrees when displayed (and by cv2.imread)
        width, height = height, width
    focal_mm = _positive(details.get(0x920A))
    focal_35 = _positive(details.get(0xA405))
    sensor_mm = _sensor_width_mm(str(exif.get(0x010F) or ""), str(exif.get(0x0110) or ""))
    plane_mm = _focal_plane_sensor_width_mm(details, stored_width) if focal_mm and not sensor_mm else None
    if focal_mm and sensor_mm:
        f_px = focal_mm / sensor_mm * max(width, height)
    elif focal_mm and plane_mm:
        f_px = focal_mm / plane_mm * stored_width  # the resolution is along the stored x axis
    elif focal_35:
        f_px = focal_35 / 36.0 * max(width, height)
    else:
        return None
    return Camera(camera_id, "SIMPLE_RADIAL", width, height, np.array([f_px, width / 2.0, height / 2.0, 0.0]),
                  intrinsics_source="exif")


def _positive(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


# --- choosing the intrinsics for a source -------------------------------------------------------

def resolve_intrinsics(source, calib_path=None, processed_size: Optional[tuple[int, int]] = None,
                       camera_id: int = 1) -> Camera:
    """Intrinsics for the frames ``source`` yields, by priority:
    ``calib_path`` > the layout's own file (KITTI calib.txt, EuRoC sensor.yaml) > the intrinsics its publisher
    gives (TUM RGB-D) > EXIF of the first frame > guess.

    Everything is resolved at the source's original resolution, then scaled to ``processed_size``
    (default: ``source.size``, i.e. after its max_size downscale).
    """
    return resolve_intrinsics_with_origin(source, calib_path, processed_size, camera_id)[0]


def resolve_intrinsics_with_origin(source, calib_path=None, processed_size: Optional[tuple[int, int]] = None,
                                   camera_id: int = 1) -> tuple[Camera, str]:
    """``resolve_intrinsics`` and, in words, where it took them from: a file, the publisher's values, the
    EXIF of a picture or a guess."""
    original = tuple(source.original_size)
    target = tuple(processed_size) if processed_size is not None else tuple(source.size)
    camera, origin = None, ""
    if calib_path is not None:
        camera, origin = load_calibration(calib_path, image_size=original, camera_id=camera_id), str(calib_path)
    elif source.intrinsics_hint() is not None:
        camera = load_calibration(source.intrinsics_hint(), image_size=original, camera_id=camera_id)
        origin = str(source.intrinsics_hint())
    elif source.published_intrinsics() is not None:
        origin, published = source.published_intrinsics()
        camera = _fit_published(source, origin, replace(published, camera_id=camera_id), original)
    elif source.first_image_path() is not None:  # not frame_refs(): that scans every file
        camera = camera_from_exif(source.first_image_path(), camera_id)
        origin = f"the EXIF of {Path(source.first_image_path()).name}"
        if camera is not None and (camera.width, camera.height) != original:
            camera = None  # EXIF of a different picture than the frames we decode; do not trust it
    if camera is None:
        camera, origin = guess_camera(camera_id, *original), "a guess (focal = 1.2 x max(w, h))"
        log.warning("%s: no calibration found; GUESSING intrinsics (focal = 1.2 x max(w, h)). "
                    "Pass a calibration file for metric accuracy.", source.path)
    if (camera.width, camera.height) != target:
        camera = camera.scaled(*target)
    return camera, origin


def _fit_published(source, what: str, camera: Camera, original: tuple[int, int]) -> Optional[Camera]:
    """The published camera at the frames' size, or None (with a warning) when they are not a scaled copy of
    the size it was published for."""
    if (camera.width, camera.height) == original:
        log.info("%s: %s", source.path, what)
        return camera
    if not _scaled_copy((camera.width, camera.height), original):
        log.warning("%s: %s are for %dx%d, not the frames' %dx%d; not used", source.path, what, camera.width,
                    camera.height, *original)
        return None
    log.info("%s: %s, scaled to %dx%d", source.path, what, *original)
    return camera.scaled(*original)


def add_source_to_scene(scene: Scene, source, camera: Camera, progress=None) -> list[int]:
    """Add ``camera`` and one unposed Image per usable frame of ``source``; record the source. Returns the image ids.

    Listing the frames scans the source (a video's every frame, each image file's structure, dropping
    truncated ones), reporting "scan frames" to ``progress``. When ``progress`` asks to stop,
    scene.progress.Cancelled is raised and the scene is left unchanged: nothing is added before the scan ends.
    """
    refs = source.frame_refs(progress=progress)
    names = source.frame_names()
    existing = scene.cameras.get(camera.camera_id)
    if existing is not None and existing != camera:
        camera = replace(camera, camera_id=scene.next_camera_id())
    if existing != camera:
        scene.add_camera(camera)
    first_id = scene.next_image_id()
    images = [Image(first_id + i, name, camera.camera_id, source=ref) for i, (ref, name) in enumerate(zip(refs, names))]
    scene.add_images(images)
    width, height = source.size
    scene.add_source({"path": str(source.path), "layout": source.layout, "frames": len(refs),
                      "width": width, "height": height})
    return [image.image_id for image in images]
