"""COLMAP sparse models in and out: ``read_colmap_model(path) -> Scene``, ``write_colmap_model``.

Reading finds the model (the folder itself, ``sparse/0`` or ``sparse`` below it), prefers binary
when both formats are present (as COLMAP does), and checks the files against each other: every
image's camera exists, every track entry names an existing image and keypoint, keypoints and
tracks agree, frames name existing rigs and images. Any failure is a CorruptInput naming the
file and the record (line for text).

Rigs and frames (COLMAP 3.12+ / pycolmap 4): when present, an image's ``cam_from_world`` is
taken from its frame (``sensor_from_rig * rig_from_world``; the reference sensor's pose is the
frame's, verbatim), exactly as COLMAP does; the rigs are kept JSON-friendly in
``scene.metadata["colmap"]["rigs"]``. Models without them load as COLMAP's "legacy" models.

Writing stores registered images only (COLMAP models hold nothing else) plus trivial rigs and
frames (one rig per camera, one frame per image), so COLMAP/pycolmap 4 read them natively.
Text models refuse image names with whitespace (COLMAP would cut them). Each file is
written atomically; model files of the other format in the same folder are
removed so the folder holds exactly the model just written.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import CorruptInput, InputNotFound, UnsupportedFormat
from ..model import Image, Points3D, Scene
from . import colmap_binary as cb
from . import colmap_text as ct
from .colmap_text import ParsedModel

log = logging.getLogger(__name__)

MODEL_STEMS = ("cameras", "images", "points3D")
EXTRA_STEMS = ("rigs", "frames")


def find_model_folder(path) -> tuple[Path, bool]:
    """(folder holding the model, is_binary). Accepts the model folder or a folder holding sparse/0."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputNotFound(f"COLMAP model folder not found: {path}")
    if path.is_file():
        path = path.parent
    for folder in (path, path / "sparse" / "0", path / "sparse"):
        for binary, ext in ((True, ".bin"), (False, ".txt")):
            present = [stem for stem in MODEL_STEMS if (folder / f"{stem}{ext}").is_file()]
            if not present:
                continue
            missing = [f"{stem}{ext}" for stem in MODEL_STEMS if stem not in present]
            if missing:
                raise InputNotFound(f"{folder}: incomplete COLMAP model, {', '.join(missing)} missing")
            return folder, binary
    raise InputNotFound(f"{path}: no COLMAP model (cameras/images/points3D .bin or .txt) here or in sparse/0")


def read_colmap_model(path) -> Scene:
    folder, binary = find_model_folder(path)
    model = cb.read_binary_model(folder) if binary else ct.read_text_model(folder)
    _check_cameras(model)
    _apply_frames(model)
    _validate(model)
    scene = Scene()
    for camera in model.cameras.values():
        scene.add_camera(camera)
    scene.add_images(model.images)
    scene.set_points(model.points)
    scene.metadata["colmap"] = {"path": str(folder), "format": "binary" if binary else "text",
                                "rigs": model.rigs or []}
    return scene


def _apply_frames(model: ParsedModel) -> None:
    """Take each image's pose from its frame, as COLMAP does when rigs and frames are present."""
    if not model.frames and not model.rigs:
        return  # legacy model (no or empty rigs/frames files): poses come from the images file
    rigs_file, frames_file = model.file("rigs"), model.file("frames")
    if model.frames is None or model.rigs is None:
        present, absent = (rigs_file, frames_file) if model.frames is None else (frames_file, rigs_file)
        raise CorruptInput(f"{present.parent}: has {present.name} but no {absent.name}")
    rigs = {}
    for rig in model.rigs:
        if rig["rig_id"] in rigs:
            raise CorruptInput(f"{rigs_file}: duplicate rig id {rig['rig_id']}")
        rigs[rig["rig_id"]] = rig
    images = {im.image_id: (i, im) for i, im in enumerate(model.images)}
    framed: set[int] = set()
    for frame in model.frames:
        where = frame.pop("where")
        rig = rigs.get(frame["rig_id"])
        if rig is None:
            raise CorruptInput(f"{where}: refers to rig {frame['rig_id']}, which {rigs_file.name} does not hold")
        rig_from_world = ct.pose_from_values(frame["rig_from_world"], where)
        for sensor_type, sensor_id, data_id in frame["data_ids"]:
            if sensor_type != "CAMERA":
                continue
            if data_id not in images:
                raise CorruptInput(f"{where}: refers to image {data_id}, which {model.file('images').name} "
                                   "does not hold")
            index, image = images[data_id]
            if image.camera_id != sensor_id:
                raise CorruptInput(f"{where}: image {data_id} uses camera {image.camera_id} but the frame "
                                   f"lists it under camera {sensor_id}")
            if rig["ref_sensor"] == ["CAMERA", sensor_id]:
                image.cam_from_world = rig_from_world
            else:
                sensor = next((s for s in rig["sensors"] if s["type"] == "CAMERA" and s["id"] == sensor_id), None)
                if sensor is None:
                    raise CorruptInput(f"{where}: camera {sensor_id} is not a sensor of rig {rig['rig_id']}")
                if sensor["sensor_from_rig"] is not None:
                    image.cam_from_world = ct.pose_from_values(sensor["sensor_from_rig"], where) * rig_from_world
            framed.add(data_id)
    for image, where in zip(model.images, model.image_where):
        if image.image_id not in framed:
            raise CorruptInput(f"{where}: image {image.image_id} belongs to no frame in {frames_file.name}")


def _check_cameras(model: ParsedModel) -> None:
    for image, where in zip(model.images, model.image_where):
        if image.camera_id not in model.cameras:
            raise CorruptInput(f"{where}: image {image.image_id} ({image.name}) refers to camera "
                               f"{image.camera_id}, which {model.file('cameras').name} does not hold")


def _validate(model: ParsedModel) -> None:
    """Cross-file consistency: cameras of images, images and keypoints of tracks, keypoint <-> track."""
    _check_cameras(model)
    images_file, points_file = model.file("images"), model.file("points3D")
    points = model.points
    point_of_obs = np.repeat(np.arange(len(points)), points.track_lengths())
    kp_counts = np.array([len(im.keypoints) for im in model.images], dtype=np.int64)
    obs_image = _positions_of(np.array([im.image_id for im in model.images], dtype=np.int64), points.track_image_ids)
    bad = np.flatnonzero(obs_image < 0)
    if len(bad):
        k = bad[0]
        raise CorruptInput(f"{model.point_where[point_of_obs[k]]}: track refers to image "
                           f"{points.track_image_ids[k]}, which {images_file.name} does not hold")
    bad = np.flatnonzero(points.track_kp_idx >= kp_counts[obs_image])
    if len(bad):
        k = bad[0]
        raise CorruptInput(f"{model.point_where[point_of_obs[k]]}: track refers to keypoint "
                           f"{points.track_kp_idx[k]} of image {points.track_image_ids[k]}, which has only "
                           f"{kp_counts[obs_image[k]]} keypoints")
    # Keypoint -> point ids must match the tracks exactly (each observation listed once on both sides).
    kp_ptr = np.concatenate([[0], np.cumsum(kp_counts)])
    from_tracks = np.full(int(kp_ptr[-1]), -1, dtype=np.int64)
    flat_index = kp_ptr[obs_image] + points.track_kp_idx
    # bincount, not np.unique: linear time on millions of observations
    if len(flat_index) and np.bincount(flat_index, minlength=int(kp_ptr[-1])).max() > 1:
        k = _first_duplicate(flat_index)
        raise CorruptInput(f"{model.point_where[point_of_obs[k]]}: keypoint {points.track_kp_idx[k]} of image "
                           f"{points.track_image_ids[k]} is observed by more than one 3D point")
    from_tracks[flat_index] = points.ids[point_of_obs]
    from_images = (np.concatenate([im.point3d_ids for im in model.images]) if model.images
                   else np.zeros(0, dtype=np.int64))
    mismatch = np.flatnonzero(from_tracks != from_images)
    if len(mismatch):
        k = int(mismatch[0])
        i = int(np.searchsorted(kp_ptr, k, side="right") - 1)
        image = model.images[i]
        claimed, tracked = int(from_images[k]), int(from_tracks[k])
        if claimed >= 0 and claimed not in set(points.ids.tolist()):
            problem = f"refers to 3D point {claimed}, which {points_file.name} does not hold"
        else:
            problem = (f"says 3D point {claimed} but {points_file.name} says "
                       f"{'none' if tracked < 0 else tracked}")
        raise CorruptInput(f"{model.image_where[i]}: keypoint {k - kp_ptr[i]} of image {image.image_id} {problem}")


def _positions_of(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in ``keys`` (unique ids), or -1 where absent; vectorised dictionary lookup."""
    if len(keys) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    top = int(keys.max())
    if keys.min() >= 0 and top <= 16 * len(keys) + 1024:  # ids are small: a lookup table beats a binary search
        table = np.full(top + 2, -1, dtype=np.int64)
        table[keys] = np.arange(len(keys))
        return table[np.where((values >= 0) & (values <= top), values, top + 1)]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    slot = np.clip(np.searchsorted(sorted_keys, values), 0, len(keys) - 1)
    return np.where(sorted_keys[slot] == values, order[slot], -1).astype(np.int64)


def _first_duplicate(values: np.ndarray) -> int:
    seen: set[int] = set()
    for k, v in enumerate(values.tolist()):
        if v in seen:
            return k
        seen.add(v)
    return 0


# --- writing -----------------------------------------------------------------------------

def _registered_content(scene: Scene) -> tuple[list, list[Image], Points3D]:
    """Cameras, registered images and points, with observations in unregistered images dropped."""
    snap = scene.snapshot()
    images = [im for im in snap.images.values() if im.cam_from_world is not None]
    skipped = {im.image_id for im in snap.images.values() if im.cam_from_world is None}
    points = snap.points
    if skipped:
        log.info("COLMAP export: %d unregistered images are not written (COLMAP models hold registered "
                 "images only)", len(skipped))
        keep = ~np.isin(points.track_image_ids, list(skipped))
        if not keep.all():
            owner = np.repeat(np.arange(len(points)), points.track_lengths())
            lengths = np.bincount(owner[keep], minlength=len(points))
            points = Points3D(points.ids, points.xyz, points.rgb, points.error,
                              np.concatenate([[0], np.cumsum(lengths)]), points.track_image_ids[keep],
                              points.track_kp_idx[keep])
    cameras = list(snap.cameras.values())
    return cameras, images, points


def write_colmap_model(scene: Scene, path, binary: bool = True) -> Path:
    """Write ``scene`` as a COLMAP model into folder ``path`` (created if needed). Returns the folder."""
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    cameras, images, points = _registered_content(scene)
    check = ParsedModel(folder=folder, binary=binary, cameras={c.camera_id: c for c in cameras}, images=images,
                        image_where=[f"image {im.image_id}" for im in images], points=points,
                        point_where=[f"3D point {pid}" for pid in points.ids.tolist()])
    try:
        _validate(check)
    except CorruptInput as exc:  # the scene itself is inconsistent: a caller bug, not bad input
        raise ValueError(f"cannot write an inconsistent scene as a COLMAP model: {exc}") from None
    if not binary:
        spaced = next((im.name for im in images if any(c.isspace() for c in im.name)), None)
        if spaced is not None:  # COLMAP's text reader splits the line on spaces and would cut the name
            raise UnsupportedFormat(f"image name {spaced!r} contains whitespace, which a COLMAP text model "
                                    "cannot hold; export the binary model instead")
    if binary:
        files = {"cameras": cb.format_cameras_binary(cameras), "images": cb.format_images_binary(images),
                 "points3D": cb.format_points3d_binary(points), "rigs": cb.format_rigs_binary(cameras),
                 "frames": cb.format_frames_binary(images)}
        for stem, data in files.items():
            atomic_write_bytes(folder / f"{stem}.bin", data)
    else:
        num_obs = int(sum(int((im.point3d_ids >= 0).sum()) for im in images))
        files = {"cameras": ct.format_cameras_text(cameras), "images": ct.format_images_text(images, num_obs),
                 "points3D": ct.format_points3d_text(points), "rigs": ct.format_rigs_text(cameras),
                 "frames": ct.format_frames_text(images)}
        for stem, text in files.items():
            atomic_write_text(folder / f"{stem}.txt", text)
    stale_ext = ".txt" if binary else ".bin"
    for stem in MODEL_STEMS + EXTRA_STEMS:
        stale = folder / f"{stem}{stale_ext}"
        if stale.is_file():
            stale.unlink()
            log.info("removed %s: the folder now holds the %s model just written", stale,
                     "binary" if binary else "text")
    return folder
