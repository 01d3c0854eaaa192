"""Project folders ``NAME.parallax/``: scene.json (versioned), arrays.npz (no pickle), clouds/*.ply, nerf/.

Saving is crash-safe: every file is first written completely into ``.staging/`` (each fsynced),
``.staging/scene.json`` last. Its presence marks a complete save; only then are the staged files
moved into place, scene.json last. A save killed at any point leaves either the previous project
(no staged scene.json: staging is discarded) or a staged one that ``load_project`` finishes.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import contextlib
import fcntl
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text, fsync_dir
from .camera import Camera
from .errors import CorruptInput, InputNotFound, SaveFailed, SchemaTooNew, UnsafePath
from .model import FrameRef, Image, NerfRun, Points3D, Scene, Trajectory
from .rigid import Rigid3d

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROJECT_SUFFIX = ".parallax"
STAGING = ".staging"
LOCK = ".lock"
_CLOUD_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


def is_project(path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "scene.json").is_file() or (path / STAGING / "scene.json").is_file())


# --- saving ------------------------------------------------------------------------------

def _pose_json(pose: Rigid3d | None):
    if pose is None:
        return None
    return {"quat_wxyz": pose.quat_wxyz.tolist(), "translation": pose.translation.tolist()}


def _arrays_for(snapshot) -> tuple[dict, dict]:
    """Packed arrays and the JSON index that names them."""
    arrays: dict[str, np.ndarray] = {}
    image_ids = sorted(snapshot.images)
    images = [snapshot.images[i] for i in image_ids]
    counts = [len(im.keypoints) for im in images]
    arrays["image_ids"] = np.array(image_ids, dtype=np.int64)
    arrays["kp_ptr"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    arrays["keypoints"] = (np.concatenate([im.keypoints for im in images]) if images else np.zeros((0, 2)))
    arrays["point3d_ids"] = (np.concatenate([im.point3d_ids for im in images]) if images
                             else np.zeros(0, dtype=np.int64))
    pts = snapshot.points
    for field in ("ids", "xyz", "rgb", "error", "track_ptr", "track_image_ids", "track_kp_idx"):
        arrays[f"points_{field}"] = getattr(pts, field)
    trajectory_index = []
    for i, (name, traj) in enumerate(sorted(snapshot.trajectories.items())):
        arrays[f"traj{i}_timestamps"] = traj.timestamps
        arrays[f"traj{i}_quat_wxyz"] = traj.world_from_cam_quat_wxyz
        arrays[f"traj{i}_translation"] = traj.world_from_cam_translation
        trajectory_index.append({"name": name, "key": f"traj{i}"})
    return arrays, {"trajectories": trajectory_index}


def _scene_json(snapshot, index: dict, cloud_files: dict, metadata: dict) -> dict:
    return {
        "format": "parallax-project",
        "schema_version": SCHEMA_VERSION,
        "cameras": [
            {"camera_id": c.camera_id, "model": c.model, "width": c.width, "height": c.height,
             "params": c.params.tolist(), "intrinsics_source": c.intrinsics_source}
            for c in sorted(snapshot.cameras.values(), key=lambda c: c.camera_id)
        ],
        "images": [
            {"image_id": im.image_id, "name": im.name, "camera_id": im.camera_id,
             "cam_from_world": _pose_json(im.cam_from_world),
             "source": None if im.source is None else {"path": im.source.path, "frame_index": im.source.frame_index,
                                                       "timestamp": im.source.timestamp}}
            for im in (snapshot.images[i] for i in sorted(snapshot.images))
        ],
        "trajectories": index["trajectories"],
        "clouds": [{"name": name, "file": rel} for name, rel in sorted(cloud_files.items())],
        "nerf_runs": [
            {"name": r.name, "preset": r.preset, "status": r.status, "checkpoint_dir": r.checkpoint_dir,
             "metrics": r.metrics, "renders": list(r.renders)}
            for r in snapshot.nerf_runs.values()
        ],
        "sources": snapshot.sources,
        "metadata": metadata,
        "arrays": "arrays.npz",
    }


def save_project(scene: Scene, folder) -> Path:
    """Save ``scene`` into ``folder`` (created; ``.parallax`` appended when missing). Crash-safe."""
    folder = Path(folder)
    if folder.suffix != PROJECT_SUFFIX:
        folder = folder.with_name(folder.name + PROJECT_SUFFIX)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaveFailed(f"cannot save the project to {folder}: {exc.strerror or exc}") from exc
    with _exclusive(folder):
        _save_locked(scene, folder)
    return folder


@contextlib.contextmanager
def _exclusive(folder: Path):
    """One save at a time per project folder, across threads (autosave vs Save) and processes."""
    try:
        handle = open(folder / LOCK, "a+")
    except OSError as exc:
        raise SaveFailed(f"cannot save the project to {folder}: {exc.strerror or exc}") from exc
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _save_locked(scene: Scene, folder: Path) -> None:
    snapshot = scene.snapshot()
    for run in snapshot.nerf_runs.values():
        if run.checkpoint_dir:
            _inside(folder, Path("nerf") / run.checkpoint_dir, "NeRF checkpoint folder")
    try:
        staging = folder / STAGING
        if staging.exists():
            shutil.rmtree(staging)
        (staging / "clouds").mkdir(parents=True)
    except OSError as exc:
        raise SaveFailed(f"cannot save the project to {folder}: {exc.strerror or exc}") from exc

    try:
        arrays, index = _arrays_for(snapshot)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(staging / "arrays.npz", buffer.getvalue())
        cloud_files = {}
        if snapshot.clouds:
            from .io.ply import write_ply  # Open3D is imported only when there are clouds
        for name, cloud in snapshot.clouds.items():
            if not _CLOUD_NAME.match(name):
                raise SaveFailed(f"point cloud name {name!r} cannot be used as a file name")
            rel = f"clouds/{name}.ply"
            write_ply(staging / rel, cloud)
            cloud_files[name] = rel
        doc = _scene_json(snapshot, index, cloud_files, dict(scene.metadata))
        # Written last: its presence in .staging/ means the staged save is complete.
        atomic_write_text(staging / "scene.json", json.dumps(doc, indent=1, allow_nan=False))
        fsync_dir(staging)
    except OSError as exc:
        shutil.rmtree(folder / STAGING, ignore_errors=True)
        raise SaveFailed(f"cannot save the project to {folder}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # allow_nan=False: NaN in metadata or metrics
        shutil.rmtree(folder / STAGING, ignore_errors=True)
        raise SaveFailed(f"cannot save the project to {folder}: {exc}") from exc
    try:
        _commit_staging(folder)
    except OSError as exc:  # the staged save stays complete; the next load finishes it
        raise SaveFailed(f"cannot finish saving the project to {folder}: {exc.strerror or exc}") from exc


def _commit_staging(folder: Path) -> None:
    staging = folder / STAGING
    doc = json.loads((staging / "scene.json").read_text(encoding="utf-8"))
    (folder / "clouds").mkdir(exist_ok=True)
    keep = {"clouds/" + Path(c["file"]).name for c in doc.get("clouds", [])}
    for rel in ["arrays.npz", *sorted(keep)]:
        staged = staging / rel
        if staged.exists():  # already moved by an interrupted commit otherwise
            os.replace(staged, folder / rel)
    os.replace(staging / "scene.json", folder / "scene.json")
    fsync_dir(folder)
    for old in (folder / "clouds").glob("*.ply"):
        if f"clouds/{old.name}" not in keep:
            old.unlink()
    shutil.rmtree(staging, ignore_errors=True)


def _recover(folder: Path) -> None:
    staging = folder / STAGING
    if not staging.exists():
        return
    if (staging / "scene.json").is_file():
        log.warning("finishing an interrupted save of %s", folder)
        _commit_staging(folder)
    else:
        log.warning("discarding an incomplete save of %s; the previous version is kept", folder)
        shutil.rmtree(staging, ignore_errors=True)


# --- loading -----------------------------------------------------------------------------

def _inside(folder: Path, rel, what: str) -> Path:
    rel = Path(rel)
    target = (folder / rel).resolve()
    if rel.is_absolute() or not target.is_relative_to(folder.resolve()):
        raise UnsafePath(f"{folder}: {what} path {str(rel)!r} points outside the project folder; refusing it")
    return target


def _pose_from_json(value, where: str):
    if value is None:
        return None
    try:
        return Rigid3d(np.array(value["quat_wxyz"], dtype=np.float64), np.array(value["translation"], dtype=np.float64))
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptInput(f"{where}: invalid pose ({exc})") from exc


def load_project(folder) -> Scene:
    folder = Path(folder)
    if not folder.exists():
        raise InputNotFound(f"project not found: {folder}")
    if not is_project(folder):
        raise CorruptInput(f"{folder} is not a Parallax project (no scene.json)")
    try:
        if (folder / STAGING).exists():
            with _exclusive(folder):  # never finish or discard a save that another thread is writing
                _recover(folder)
    except (OSError, SaveFailed) as exc:
        raise CorruptInput(f"{folder}: an interrupted save could not be finished ({exc})") from exc
    json_path = folder / "scene.json"
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptInput(f"{json_path}: not readable JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != "parallax-project":
        raise CorruptInput(f"{json_path}: not a Parallax project file")
    version = doc.get("schema_version")
    if not isinstance(version, int):
        raise CorruptInput(f"{json_path}: missing schema_version")
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"{json_path} was written by a newer Parallax (schema {version}; this version reads "
                           f"up to {SCHEMA_VERSION}). Update Parallax to open it.")
    try:
        return _scene_from_doc(folder, doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptInput(f"{json_path}: invalid content ({type(exc).__name__}: {exc})") from exc


def _scene_from_doc(folder: Path, doc: dict) -> Scene:
    arrays_path = _inside(folder, doc.get("arrays", "arrays.npz"), "arrays")
    clouds = [(c["name"], _inside(folder, c["file"], "point cloud")) for c in doc.get("clouds", [])]
    runs = doc.get("nerf_runs", [])
    for r in runs:
        if r.get("checkpoint_dir"):
            _inside(folder, Path("nerf") / r["checkpoint_dir"], "NeRF checkpoint folder")
        for render in r.get("renders", []):
            _inside(folder, Path("nerf") / render, "NeRF render")
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptInput(f"{arrays_path}: cannot read arrays ({exc})") from exc

    scene = Scene()
    for c in doc["cameras"]:
        scene.cameras[int(c["camera_id"])] = Camera(c["camera_id"], c["model"], c["width"], c["height"],
                                                    np.array(c["params"], dtype=np.float64),
                                                    c.get("intrinsics_source", "model"))
    by_id = {int(i): k for k, i in enumerate(arrays["image_ids"])}
    ptr, kps, p3d = arrays["kp_ptr"], arrays["keypoints"], arrays["point3d_ids"]
    for entry in doc["images"]:
        image_id = int(entry["image_id"])
        if entry["camera_id"] not in scene.cameras:
            raise CorruptInput(f"{folder}: image {image_id} refers to missing camera {entry['camera_id']}")
        k = by_id.get(image_id)
        if k is None:
            raise CorruptInput(f"{folder}: image {image_id} has no keypoint block in arrays.npz")
        source = entry.get("source")
        ref = None if source is None else FrameRef(source["path"], source.get("frame_index"), source.get("timestamp"))
        scene.images[image_id] = Image(image_id, entry["name"], int(entry["camera_id"]),
                                       _pose_from_json(entry.get("cam_from_world"), f"image {image_id}"),
                                       kps[ptr[k]:ptr[k + 1]].copy(), p3d[ptr[k]:ptr[k + 1]].copy(), ref)
    scene.points = Points3D(*(arrays[f"points_{f}"] for f in
                              ("ids", "xyz", "rgb", "error", "track_ptr", "track_image_ids", "track_kp_idx")))
    for t in doc.get("trajectories", []):
        key = t["key"]
        scene.trajectories[t["name"]] = Trajectory(arrays[f"{key}_timestamps"], arrays[f"{key}_quat_wxyz"],
                                                   arrays[f"{key}_translation"])
    if clouds:
        from .io.ply import read_ply
    for name, path in clouds:
        scene.clouds[name] = read_ply(path)
    for r in runs:
        scene.nerf_runs[r["name"]] = NerfRun(r["name"], r["preset"], r.get("status", "created"),
                                             r.get("checkpoint_dir", ""), dict(r.get("metrics", {})),
                                             list(r.get("renders", [])))
    scene.sources = list(doc.get("sources", []))
    scene.metadata = dict(doc.get("metadata", {}))
    return scene
