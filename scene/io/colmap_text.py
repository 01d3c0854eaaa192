"""COLMAP text models (cameras.txt, images.txt, points3D.txt, rigs.txt, frames.txt): parse and format.

Parsing is lenient about whitespace (COLMAP itself splits on single spaces) and strict about
content: every malformed line raises CorruptInput naming the file and the line. Floats are
written with ``repr`` (shortest string that parses back to the same double), so a
write -> read round trip is bit-exact. Cross-file checks (dangling ids) live in ``colmap.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import warnings
from pathlib import Path

import numpy as np

from ..camera import CAMERA_MODELS, Camera
from ..errors import CorruptInput
from ..model import Image, Points3D
from ..rigid import Rigid3d

SENSOR_TYPE_NAMES = {-1: "INVALID", 0: "CAMERA", 1: "IMU"}
SENSOR_TYPE_IDS = {name: value for value, name in SENSOR_TYPE_NAMES.items()}


@dataclass
class ParsedModel:
    """One COLMAP model as read from disk, before cross-file validation.

    ``image_where`` / ``point_where`` say where each record came from (for error messages);
    rigs and frames are JSON-friendly dicts (see ``colmap.py`` for their use).
    """

    folder: Path
    binary: bool
    cameras: dict = field(default_factory=dict)  # camera_id -> Camera
    images: list = field(default_factory=list)  # [Image] in file order
    image_where: list = field(default_factory=list)  # [str] parallel to images
    points: Points3D = field(default_factory=Points3D)
    point_where: list = field(default_factory=list)  # [str] parallel to points
    rigs: list | None = None  # None: no rigs file
    frames: list | None = None  # None: no frames file

    def file(self, stem: str) -> Path:
        return self.folder / f"{stem}{'.bin' if self.binary else '.txt'}"


def pose_from_values(values, where: str) -> Rigid3d:
    """QW QX QY QZ TX TY TZ -> Rigid3d, keeping the quaternion verbatim; bad values -> CorruptInput."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise CorruptInput(f"{where}: pose contains NaN or infinity ({' '.join(map(repr, v.tolist()))})")
    if np.linalg.norm(v[:4]) < 1e-12:
        raise CorruptInput(f"{where}: pose quaternion is zero")
    return Rigid3d(v[:4], v[4:7])


def pose_values(pose: Rigid3d) -> list[float]:
    return pose.quat_wxyz.tolist() + pose.translation.tolist()


def make_camera(camera_id: int, model: str, width: int, height: int, params, where: str) -> Camera:
    if model not in CAMERA_MODELS:
        raise CorruptInput(f"{where}: unknown camera model {model!r}")
    expected = len(CAMERA_MODELS[model][1])
    if len(params) != expected:
        raise CorruptInput(f"{where}: camera {camera_id} model {model} takes {expected} parameters, "
                           f"found {len(params)}")
    try:
        return Camera(camera_id, model, width, height, np.asarray(params, dtype=np.float64),
                      intrinsics_source="colmap")
    except ValueError as exc:
        raise CorruptInput(f"{where}: {exc}") from None


# --- reading -----------------------------------------------------------------------------

def _data_lines(path: Path):
    """(line number, stripped text) of every non-empty, non-comment line."""
    for number, line in _all_lines(path):
        if line and not line.startswith("#"):
            yield number, line


def _all_lines(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line.strip()
    except UnicodeDecodeError:
        raise CorruptInput(f"{path}: not a text file (is it a binary COLMAP model named .txt?)") from None


def _int(token: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{what} {token!r} is not an integer") from None


def read_cameras_text(path: Path) -> dict[int, Camera]:
    cameras: dict[int, Camera] = {}
    for number, line in _data_lines(path):
        where = f"{path}: line {number}"
        tokens = line.split()
        try:
            if len(tokens) < 4:
                raise ValueError("expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
            camera_id = _int(tokens[0], "camera id")
            width, height = _int(tokens[2], "width"), _int(tokens[3], "height")
            params = [float(t) for t in tokens[4:]]
        except ValueError as exc:
            raise CorruptInput(f"{where}: {exc}") from None
        if camera_id in cameras:
            raise CorruptInput(f"{where}: duplicate camera id {camera_id}")
        cameras[camera_id] = make_camera(camera_id, tokens[1], width, height, params, where)
    return cameras


def read_images_text(path: Path) -> tuple[list[Image], list[str]]:
    """Two lines per image: the header and the POINTS2D line (which may be empty)."""
    images: list[Image] = []
    where_list: list[str] = []
    seen: set[int] = set()
    lines = _all_lines(path)
    for number, line in lines:
        if not line or line.startswith("#"):
            continue
        where = f"{path}: line {number}"
        tokens = line.split(maxsplit=9)
        try:
            if len(tokens) < 10:
                raise ValueError("expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
            image_id = _int(tokens[0], "image id")
            values = [float(t) for t in tokens[1:8]]
            camera_id = _int(tokens[8], "camera id")
        except ValueError as exc:
            raise CorruptInput(f"{where}: {exc}") from None
        if image_id in seen:
            raise CorruptInput(f"{where}: duplicate image id {image_id}")
        seen.add(image_id)
        pose = pose_from_values(values, where)
        points_line = next(lines, None)
        if points_line is None:
            raise CorruptInput(f"{where}: image {image_id} has no POINTS2D line (file truncated?)")
        pnumber, ptext = points_line
        tokens2 = ptext.split()
        if len(tokens2) % 3:
            raise CorruptInput(f"{path}: line {pnumber}: POINTS2D of image {image_id} has {len(tokens2)} "
                               "values, not a multiple of 3 (X Y POINT3D_ID)")
        try:
            keypoints, point3d_ids = _parse_points2d(ptext, tokens2)
        except (ValueError, OverflowError) as exc:
            raise CorruptInput(f"{path}: line {pnumber}: bad POINTS2D value ({exc})") from None
        if not np.all(np.isfinite(keypoints)):
            raise CorruptInput(f"{path}: line {pnumber}: POINTS2D of image {image_id} contain NaN or infinity")
        if np.any(point3d_ids < -1):
            raise CorruptInput(f"{path}: line {pnumber}: negative POINT3D_ID other than -1")
        images.append(Image(image_id, tokens[9].strip(), camera_id, pose, keypoints, point3d_ids))
        where_list.append(where)
    return images, where_list


def _parse_points2d(text: str, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """X Y POINT3D_ID triplets. NumPy's C parser (correctly rounded, like float()) does the bulk work;
    the per-token path only runs for ids beyond 2**53 or malformed text, to keep ids exact and errors clear."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        values = np.fromstring(text, dtype=np.float64, sep=" ") if tokens else np.zeros(0)
    if len(values) == len(tokens):
        table = values.reshape(-1, 3)
        ids = table[:, 2]
        if np.all(np.abs(ids) < 2.0**53) and np.array_equal(ids, np.round(ids)):
            return table[:, :2].copy(), ids.astype(np.int64)
    table = np.array(tokens, dtype=object).reshape(-1, 3)
    return table[:, :2].astype(np.float64), np.array([int(t) for t in table[:, 2]], dtype=np.int64)


def _parse_track_tokens(path: Path, rests: list[str], numbers: list[int], lengths: list[int]) -> np.ndarray:
    """All tracks' (IMAGE_ID, POINT2D_IDX) integers in one C-level parse; per line only to explain an error."""
    expected = 2 * sum(lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        flat = np.fromstring(" ".join(rests), dtype=np.int64, sep=" ") if expected else np.zeros(0, np.int64)
    if len(flat) == expected:
        # fromstring reads "1.5" as 1: the float parse of the same text must agree for every entry
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            as_float = np.fromstring(" ".join(rests), dtype=np.float64, sep=" ") if expected else np.zeros(0)
        if len(as_float) == expected and np.array_equal(as_float, flat):
            return flat
    for number, rest in zip(numbers, rests):
        for token in rest.split():
            try:
                _int(token, "track entry")
            except ValueError as exc:
                raise CorruptInput(f"{path}: line {number}: {exc}") from None
    raise CorruptInput(f"{path}: track entries could not be read")


def read_points3d_text(path: Path) -> tuple[Points3D, list[str]]:
    ids, xyz, rgb, error, lengths, rests, numbers, where_list = [], [], [], [], [], [], [], []
    for number, line in _data_lines(path):
        where = f"{path}: line {number}"
        tokens = line.split(maxsplit=8)
        try:
            if len(tokens) < 8:
                raise ValueError("expected POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)")
            rest = tokens[8] if len(tokens) == 9 else ""
            entries = len(rest.split())
            if entries % 2:
                raise ValueError("expected POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)")
            ids.append(_int(tokens[0], "point id"))
            xyz.append([float(t) for t in tokens[1:4]])
            colour = [_int(t, "colour") for t in tokens[4:7]]
            if min(colour) < 0 or max(colour) > 255:
                raise ValueError(f"colour {colour} outside 0..255")
            rgb.append(colour)
            error.append(float(tokens[7]))
        except ValueError as exc:
            raise CorruptInput(f"{where}: {exc}") from None
        if not np.all(np.isfinite(xyz[-1])):
            raise CorruptInput(f"{where}: point {ids[-1]} has NaN or infinite coordinates")
        lengths.append(entries // 2)
        rests.append(rest)
        numbers.append(number)
        where_list.append(where)
    obs = _parse_track_tokens(path, rests, numbers, lengths)
    return packed_points(path, ids, xyz, rgb, error, lengths, obs), where_list


def check_unique_point_ids(path: Path, ids: np.ndarray) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if len(values) != len(ids):
        raise CorruptInput(f"{path}: duplicate 3D point id {int(values[np.argmax(counts)])}")


def packed_points(path: Path, ids, xyz, rgb, error, lengths, obs) -> Points3D:
    flat = np.asarray(obs, dtype=np.int64).reshape(-1, 2)
    if np.any(flat < 0):
        raise CorruptInput(f"{path}: negative image id or keypoint index in a track")
    ptr = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)
    id_array = np.asarray(ids, dtype=np.int64)
    check_unique_point_ids(path, id_array)
    return Points3D(id_array, np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
                    np.asarray(rgb, dtype=np.uint8).reshape(-1, 3), np.asarray(error, dtype=np.float64),
                    ptr, flat[:, 0], flat[:, 1])


def _sensor_type(token: str, where: str) -> str:
    if token not in SENSOR_TYPE_IDS:
        raise CorruptInput(f"{where}: unknown sensor type {token!r}")
    return token


def read_rigs_text(path: Path) -> list[dict]:
    rigs = []
    for number, line in _data_lines(path):
        where = f"{path}: line {number}"
        tokens = line.split()
        try:
            rig = {"rig_id": _int(tokens[0], "rig id"), "ref_sensor": None, "sensors": []}
            num_sensors = _int(tokens[1], "number of sensors")
            pos = 2
            if num_sensors > 0:
                rig["ref_sensor"] = [_sensor_type(tokens[pos], where), _int(tokens[pos + 1], "sensor id")]
                pos += 2
            for _ in range(max(num_sensors - 1, 0)):
                sensor = {"type": _sensor_type(tokens[pos], where), "id": _int(tokens[pos + 1], "sensor id"),
                          "sensor_from_rig": None}
                has_pose = tokens[pos + 2] == "1"
                pos += 3
                if has_pose:
                    values = [float(t) for t in tokens[pos:pos + 7]]
                    if len(values) != 7:
                        raise IndexError
                    sensor["sensor_from_rig"] = pose_values(pose_from_values(values, where))
                    pos += 7
                rig["sensors"].append(sensor)
        except IndexError:
            raise CorruptInput(f"{where}: rig line ends early (expected RIG_ID NUM_SENSORS REF_SENSOR_TYPE "
                               "REF_SENSOR_ID SENSORS[])") from None
        except ValueError as exc:
            raise CorruptInput(f"{where}: {exc}") from None
        if pos != len(tokens):
            raise CorruptInput(f"{where}: {len(tokens) - pos} unexpected values after the rig's sensors")
        rigs.append(rig)
    return rigs


def read_frames_text(path: Path) -> list[dict]:
    frames = []
    for number, line in _data_lines(path):
        where = f"{path}: line {number}"
        tokens = line.split()
        try:
            if len(tokens) < 10:
                raise ValueError("expected FRAME_ID RIG_ID QW QX QY QZ TX TY TZ NUM_DATA_IDS DATA_IDS[]")
            frame = {"frame_id": _int(tokens[0], "frame id"), "rig_id": _int(tokens[1], "rig id"),
                     "where": where}
            frame["rig_from_world"] = pose_values(pose_from_values([float(t) for t in tokens[2:9]], where))
            num = _int(tokens[9], "number of data ids")
            if len(tokens) != 10 + 3 * num:
                raise ValueError(f"{num} data ids announced, {(len(tokens) - 10) / 3:g} found")
            frame["data_ids"] = [[_sensor_type(tokens[10 + 3 * k], where), _int(tokens[11 + 3 * k], "sensor id"),
                                  _int(tokens[12 + 3 * k], "data id")] for k in range(num)]
        except ValueError as exc:
            raise CorruptInput(f"{where}: {exc}") from None
        frames.append(frame)
    return frames


def read_text_model(folder: Path) -> ParsedModel:
    model = ParsedModel(folder=folder, binary=False)
    model.cameras = read_cameras_text(folder / "cameras.txt")
    model.images, model.image_where = read_images_text(folder / "images.txt")
    model.points, model.point_where = read_points3d_text(folder / "points3D.txt")
    if (folder / "rigs.txt").is_file():
        model.rigs = read_rigs_text(folder / "rigs.txt")
    if (folder / "frames.txt").is_file():
        model.frames = read_frames_text(folder / "frames.txt")
    return model


# --- writing -----------------------------------------------------------------------------

def _floats(values) -> str:
    return " ".join(map(repr, np.asarray(values, dtype=np.float64).reshape(-1).tolist()))


def format_cameras_text(cameras: list[Camera]) -> str:
    out = ["# Camera list with one line of data per camera:\n",
           "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n",
           f"# Number of cameras: {len(cameras)}\n"]
    for cam in cameras:
        out.append(f"{cam.camera_id} {cam.model} {cam.width} {cam.height} {_floats(cam.params)}\n")
    return "".join(out)


def format_images_text(images: list[Image], num_observations: int) -> str:
    mean = num_observations / len(images) if images else 0.0
    out = ["# Image list with two lines of data per image:\n",
           "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n",
           "#   POINTS2D[] as (X, Y, POINT3D_ID)\n",
           f"# Number of images: {len(images)}, mean observations per image: {mean!r}\n"]
    for im in images:
        out.append(f"{im.image_id} {_floats(pose_values(im.cam_from_world))} {im.camera_id} {im.name}\n")
        table = np.empty((len(im.keypoints), 3), dtype=object)  # repr per value, in C, no Python loop
        table[:, 0], table[:, 1] = im.keypoints[:, 0].tolist(), im.keypoints[:, 1].tolist()
        table[:, 2] = im.point3d_ids.tolist()
        out.append(" ".join(map(repr, table.ravel().tolist())) + "\n")
    return "".join(out)


def format_points3d_text(points: Points3D) -> str:
    lengths = points.track_lengths()
    mean = float(lengths.mean()) if len(lengths) else 0.0
    out = ["# 3D point list with one line of data per point:\n",
           "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n",
           f"# Number of points: {len(points)}, mean track length: {mean!r}\n"]
    pairs = np.stack([points.track_image_ids, points.track_kp_idx], axis=1).ravel()
    entries = list(map(str, pairs.tolist()))
    ptr = (2 * points.track_ptr).tolist()
    for i, (pid, xyz, rgb, err) in enumerate(zip(points.ids.tolist(), points.xyz.tolist(), points.rgb.tolist(),
                                                 points.error.tolist())):
        track = " ".join(entries[ptr[i]:ptr[i + 1]])
        out.append(f"{pid} {xyz[0]!r} {xyz[1]!r} {xyz[2]!r} {rgb[0]} {rgb[1]} {rgb[2]} {err!r}"
                   f"{' ' + track if track else ''}\n")
    return "".join(out)


def format_rigs_text(cameras: list[Camera]) -> str:
    """Trivial rigs: one per camera, the camera its only (reference) sensor; rig id = camera id."""
    out = ["# Rig calib list with one line of data per calib:\n",
           "#   RIG_ID, NUM_SENSORS, REF_SENSOR_TYPE, REF_SENSOR_ID, SENSORS[] as (SENSOR_TYPE, SENSOR_ID, "
           "HAS_POSE, [QW, QX, QY, QZ, TX, TY, TZ])\n",
           f"# Number of rigs: {len(cameras)}\n"]
    out.extend(f"{cam.camera_id} 1 CAMERA {cam.camera_id}\n" for cam in cameras)
    return "".join(out)


def format_frames_text(images: list[Image]) -> str:
    """One frame per registered image: frame id = image id, rig id = camera id, rig_from_world = cam_from_world."""
    out = ["# Frame list with one line of data per frame:\n",
           "#   FRAME_ID, RIG_ID, RIG_FROM_WORLD[QW, QX, QY, QZ, TX, TY, TZ], NUM_DATA_IDS, DATA_IDS[] as "
           "(SENSOR_TYPE, SENSOR_ID, DATA_ID)\n",
           f"# Number of frames: {len(images)}\n"]
    out.extend(f"{im.image_id} {im.camera_id} {_floats(pose_values(im.cam_from_world))} 1 CAMERA "
               f"{im.camera_id} {im.image_id}\n" for im in images)
    return "".join(out)
