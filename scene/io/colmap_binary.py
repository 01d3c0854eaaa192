"""COLMAP binary models (cameras.bin, images.bin, points3D.bin, rigs.bin, frames.bin): parse and format.

Layout (little endian) as written by COLMAP 3.12+ / pycolmap 4:
  cameras.bin  u64 n; n x [u32 camera_id, i32 model_id, u64 width, u64 height, f64 params[model]]
  images.bin   u64 n; n x [u32 image_id, f64 qw qx qy qz tx ty tz, u32 camera_id, name\\0,
                            u64 num_points2D, num_points2D x [f64 x, f64 y, u64 point3D_id]]
  points3D.bin u64 n; n x [u64 point3D_id, f64 x y z, u8 r g b, f64 error, u64 track_length,
                            track_length x [u32 image_id, u32 point2D_idx]]
  rigs.bin     u64 n; n x [u32 rig_id, u32 num_sensors, (i32 type, u32 id) ref sensor if num_sensors > 0,
                            (num_sensors - 1) x [i32 type, u32 id, u8 has_pose, f64 qw..tz if has_pose]]
  frames.bin   u64 n; n x [u32 frame_id, u32 rig_id, f64 qw qx qy qz tx ty tz, u32 num_data_ids,
                            num_data_ids x [i32 sensor_type, u32 sensor_id, u64 data_id]]
A point3D_id of 2**64 - 1 means "none" (-1 here). Every read is bounds-checked, so a truncated
file raises CorruptInput naming the file, the record and the byte offset.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from numba import njit

from ..camera import CAMERA_MODELS, MODEL_NAME_FROM_ID, Camera
from ..errors import CorruptInput, InputNotFound
from ..model import Image, Points3D
from ..rigid import Rigid3d
from .colmap_text import (SENSOR_TYPE_IDS, SENSOR_TYPE_NAMES, ParsedModel, check_unique_point_ids, make_camera,
                          pose_from_values, pose_values)

INVALID_POINT3D_ID = 2**64 - 1
_KEYPOINT = np.dtype([("x", "<f8"), ("y", "<f8"), ("point3d_id", "<u8")])
_TRACK = np.dtype([("image_id", "<u4"), ("kp_idx", "<u4")])


class _Reader:
    """Bounds-checked little-endian reads over one file's bytes."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except FileNotFoundError:
            raise InputNotFound(f"{path}: file not found") from None
        self.pos = 0
        self.record = "header"

    def need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise CorruptInput(f"{self.path}: file is truncated: {self.record} needs {size} bytes at offset "
                               f"{self.pos}, file has {len(self.data)} bytes")

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        self.need(size)
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        self.need(dtype.itemsize * count)
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += dtype.itemsize * count
        return out

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise CorruptInput(f"{self.path}: file is truncated: {self.record} name has no terminating NUL")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptInput(f"{self.path}: {self.record}: image name is not valid UTF-8") from None

    def count(self, what: str, min_record_size: int) -> int:
        (n,) = self.unpack("<Q")
        # A plausible count cannot need more bytes than the file has (catches garbage files early).
        if n * min_record_size > len(self.data) - self.pos:
            raise CorruptInput(f"{self.path}: announces {n} {what} but holds only {len(self.data)} bytes "
                               "(truncated or not a COLMAP model)")
        return n

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise CorruptInput(f"{self.path}: {len(self.data) - self.pos} unexpected bytes after the last record")


def _sensor_type(value: int, reader: _Reader) -> str:
    if value not in SENSOR_TYPE_NAMES:
        raise CorruptInput(f"{reader.path}: {reader.record}: unknown sensor type {value}")
    return SENSOR_TYPE_NAMES[value]


def read_cameras_binary(path: Path) -> dict[int, Camera]:
    r = _Reader(path)
    cameras: dict[int, Camera] = {}
    for i in range(r.count("cameras", 24)):
        r.record = f"camera #{i}"
        camera_id, model_id, width, height = r.unpack("<IiQQ")
        where = f"{path}: camera #{i} (id {camera_id})"
        if model_id not in MODEL_NAME_FROM_ID:
            raise CorruptInput(f"{where}: unknown camera model id {model_id}")
        model = MODEL_NAME_FROM_ID[model_id]
        params = r.unpack(f"<{len(CAMERA_MODELS[model][1])}d")
        if camera_id in cameras:
            raise CorruptInput(f"{where}: duplicate camera id {camera_id}")
        cameras[camera_id] = make_camera(camera_id, model, width, height, params, where)
    r.finish()
    return cameras


def read_images_binary(path: Path) -> tuple[list[Image], list[str]]:
    r = _Reader(path)
    images, where_list, seen = [], [], set()
    for i in range(r.count("images", 73)):
        r.record = f"image #{i}"
        (image_id,) = r.unpack("<I")
        r.record = where_short = f"image #{i} (id {image_id})"
        where = f"{path}: {where_short}"
        values = r.unpack("<7d")
        (camera_id,) = r.unpack("<I")
        name = r.cstring()
        (num_points,) = r.unpack("<Q")
        table = r.array(_KEYPOINT, num_points)
        if image_id in seen:
            raise CorruptInput(f"{where}: duplicate image id {image_id}")
        seen.add(image_id)
        pose = pose_from_values(values, where)
        keypoints = np.stack([table["x"], table["y"]], axis=1) if num_points else np.zeros((0, 2))
        if not np.all(np.isfinite(keypoints)):
            raise CorruptInput(f"{where}: POINTS2D contain NaN or infinity")
        raw_ids = table["point3d_id"]
        valid = raw_ids != INVALID_POINT3D_ID
        if np.any(raw_ids[valid] >= 2**63):
            raise CorruptInput(f"{where}: POINT3D_ID out of range")
        point3d_ids = np.where(valid, raw_ids.astype(np.int64, copy=False), -1).astype(np.int64)
        images.append(Image(image_id, name, camera_id, pose, keypoints, point3d_ids))
        where_list.append(where)
    r.finish()
    return images, where_list


POINT_HEADER_BYTES = 51  # u64 id, 3 f64 xyz, 3 u8 rgb, f64 error, u64 track length

# Status codes of the points3D kernel (the failing point's index comes with them).
_OK, _TRUNCATED, _BAD_ID, _NOT_FINITE = 0, 1, 2, 3


@njit(cache=True)
def _u64(data, pos):
    value = np.uint64(0)
    for b in range(8):
        value |= np.uint64(data[pos + b]) << np.uint64(8 * b)
    return value


@njit(cache=True)
def _f64(data, pos):
    return data[pos:pos + 8].copy().view(np.float64)[0]


@njit(cache=True)
def _scan_points3d(data, start, n):
    """First pass: check every record fits and count observations. Returns (status, index, observations)."""
    pos = start
    total = 0
    for i in range(n):
        if pos + POINT_HEADER_BYTES > len(data):
            return _TRUNCATED, i, total
        length = _u64(data, pos + 43)
        if length > np.uint64((len(data) - pos - POINT_HEADER_BYTES) // 8):
            return _TRUNCATED, i, total
        total += np.int64(length)
        pos += POINT_HEADER_BYTES + 8 * np.int64(length)
    return _OK, pos, total


@njit(cache=True)
def _parse_points3d(data, start, n, total, ids, xyz, rgb, error, ptr, image_ids, kp_idx):
    """Second pass: fill the packed arrays. Returns (status, index of the offending point)."""
    pos = start
    k = 0
    ptr[0] = 0
    for i in range(n):
        point_id = _u64(data, pos)
        if point_id >= np.uint64(2**63):
            return _BAD_ID, i
        ids[i] = np.int64(point_id)
        for c in range(3):
            xyz[i, c] = _f64(data, pos + 8 + 8 * c)
            rgb[i, c] = data[pos + 32 + c]
            if not np.isfinite(xyz[i, c]):
                return _NOT_FINITE, i
        error[i] = _f64(data, pos + 35)
        length = np.int64(_u64(data, pos + 43))
        pos += POINT_HEADER_BYTES
        for j in range(length):
            image_ids[k] = np.int64(data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
                                    | (np.int64(data[pos + 3]) << 24))
            kp_idx[k] = np.int64(data[pos + 4] | (data[pos + 5] << 8) | (data[pos + 6] << 16)
                                 | (np.int64(data[pos + 7]) << 24))
            pos += 8
            k += 1
        ptr[i + 1] = k
    return _OK, n


class _PointWhere:
    """Where each 3D point came from, formatted only when an error message needs it."""

    def __init__(self, path: Path, ids: np.ndarray):
        self.path, self.ids = path, ids

    def __getitem__(self, i) -> str:
        return f"{self.path}: 3D point #{int(i)} (id {int(self.ids[int(i)])})"

    def __len__(self) -> int:
        return len(self.ids)


def read_points3d_binary(path: Path) -> tuple[Points3D, "_PointWhere"]:
    """Two numba passes over the bytes: per-point Python work would dominate on large models."""
    r = _Reader(path)
    n = r.count("3D points", POINT_HEADER_BYTES)
    data = np.frombuffer(r.data, dtype=np.uint8)
    status, index, total = _scan_points3d(data, r.pos, n)
    if status == _TRUNCATED:
        raise CorruptInput(f"{path}: file is truncated: 3D point #{index} does not fit in the file's "
                           f"{len(data)} bytes")
    if index != len(data):
        raise CorruptInput(f"{path}: {len(data) - index} unexpected bytes after the last record")
    ids = np.empty(n, dtype=np.int64)
    xyz = np.empty((n, 3), dtype=np.float64)
    rgb = np.empty((n, 3), dtype=np.uint8)
    error = np.empty(n, dtype=np.float64)
    ptr = np.empty(n + 1, dtype=np.int64)
    image_ids = np.empty(total, dtype=np.int64)
    kp_idx = np.empty(total, dtype=np.int64)
    status, index = _parse_points3d(data, r.pos, n, total, ids, xyz, rgb, error, ptr, image_ids, kp_idx)
    if status == _BAD_ID:
        raise CorruptInput(f"{path}: 3D point #{index}: point id out of range")
    if status == _NOT_FINITE:
        raise CorruptInput(f"{path}: 3D point #{index} (id {ids[index]}): NaN or infinite coordinates")
    check_unique_point_ids(path, ids)
    return Points3D(ids, xyz, rgb, error, ptr, image_ids, kp_idx), _PointWhere(path, ids)


def read_rigs_binary(path: Path) -> list[dict]:
    r = _Reader(path)
    rigs = []
    for i in range(r.count("rigs", 8)):
        r.record = f"rig #{i}"
        rig_id, num_sensors = r.unpack("<II")
        rig = {"rig_id": rig_id, "ref_sensor": None, "sensors": []}
        if num_sensors > 0:
            sensor_type, sensor_id = r.unpack("<iI")
            rig["ref_sensor"] = [_sensor_type(sensor_type, r), sensor_id]
        for _ in range(max(num_sensors - 1, 0)):
            sensor_type, sensor_id, has_pose = r.unpack("<iIB")
            sensor = {"type": _sensor_type(sensor_type, r), "id": sensor_id, "sensor_from_rig": None}
            if has_pose:
                sensor["sensor_from_rig"] = pose_values(pose_from_values(r.unpack("<7d"), f"{path}: rig {rig_id}"))
            rig["sensors"].append(sensor)
        rigs.append(rig)
    r.finish()
    return rigs


def read_frames_binary(path: Path) -> list[dict]:
    r = _Reader(path)
    frames = []
    for i in range(r.count("frames", 68)):
        r.record = f"frame #{i}"
        frame_id, rig_id = r.unpack("<II")
        where = f"{path}: frame #{i} (id {frame_id})"
        values = r.unpack("<7d")
        (num,) = r.unpack("<I")
        data_ids = [list(r.unpack("<iIQ")) for _ in range(num)]
        for entry in data_ids:
            entry[0] = _sensor_type(entry[0], r)
        frames.append({"frame_id": frame_id, "rig_id": rig_id, "where": where,
                       "rig_from_world": pose_values(pose_from_values(values, where)), "data_ids": data_ids})
    r.finish()
    return frames


def read_binary_model(folder: Path) -> ParsedModel:
    model = ParsedModel(folder=folder, binary=True)
    model.cameras = read_cameras_binary(folder / "cameras.bin")
    model.images, model.image_where = read_images_binary(folder / "images.bin")
    model.points, model.point_where = read_points3d_binary(folder / "points3D.bin")
    if (folder / "rigs.bin").is_file():
        model.rigs = read_rigs_binary(folder / "rigs.bin")
    if (folder / "frames.bin").is_file():
        model.frames = read_frames_binary(folder / "frames.bin")
    return model


# --- writing -----------------------------------------------------------------------------

def _pose_bytes(pose: Rigid3d) -> bytes:
    return struct.pack("<7d", *pose_values(pose))


def format_cameras_binary(cameras: list[Camera]) -> bytes:
    parts = [struct.pack("<Q", len(cameras))]
    for cam in cameras:
        parts.append(struct.pack("<IiQQ", cam.camera_id, cam.model_id, cam.width, cam.height))
        parts.append(np.asarray(cam.params, dtype="<f8").tobytes())
    return b"".join(parts)


def format_images_binary(images: list[Image]) -> bytes:
    parts = [struct.pack("<Q", len(images))]
    for im in images:
        parts.append(struct.pack("<I", im.image_id) + _pose_bytes(im.cam_from_world)
                     + struct.pack("<I", im.camera_id) + im.name.encode("utf-8") + b"\0")
        table = np.empty(len(im.keypoints), dtype=_KEYPOINT)
        table["x"], table["y"] = im.keypoints[:, 0], im.keypoints[:, 1]
        table["point3d_id"] = np.where(im.point3d_ids < 0, np.uint64(INVALID_POINT3D_ID),
                                       im.point3d_ids.astype(np.uint64))
        parts.append(struct.pack("<Q", len(table)) + table.tobytes())
    return b"".join(parts)


def format_points3d_binary(points: Points3D) -> bytes:
    parts = [struct.pack("<Q", len(points))]
    track = np.empty(len(points.track_image_ids), dtype=_TRACK)
    track["image_id"], track["kp_idx"] = points.track_image_ids, points.track_kp_idx
    ptr = points.track_ptr.tolist()
    for i, (pid, xyz, rgb, err) in enumerate(zip(points.ids.tolist(), points.xyz.tolist(), points.rgb.tolist(),
                                                 points.error.tolist())):
        parts.append(struct.pack("<Q3d3BdQ", pid, *xyz, *rgb, err, ptr[i + 1] - ptr[i]))
        parts.append(track[ptr[i]:ptr[i + 1]].tobytes())
    return b"".join(parts)


def format_rigs_binary(cameras: list[Camera]) -> bytes:
    """Trivial rigs: one per camera (rig id = camera id), the camera its reference sensor."""
    camera_type = SENSOR_TYPE_IDS["CAMERA"]
    return struct.pack("<Q", len(cameras)) + b"".join(
        struct.pack("<IIiI", cam.camera_id, 1, camera_type, cam.camera_id) for cam in cameras)


def format_frames_binary(images: list[Image]) -> bytes:
    """One frame per registered image (frame id = image id, rig id = camera id)."""
    camera_type = SENSOR_TYPE_IDS["CAMERA"]
    return struct.pack("<Q", len(images)) + b"".join(
        struct.pack("<II", im.image_id, im.camera_id) + _pose_bytes(im.cam_from_world)
        + struct.pack("<IiIQ", 1, camera_type, im.camera_id, im.image_id) for im in images)
