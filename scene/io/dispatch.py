"""Open anything a user can point Parallax at, and export a scene to any supported format.

Format modules are imported lazily so that opening a PLY does not import video code and so on.
"""
from __future__ import annotations

import logging
from pathlib import Path

import os

from ..errors import InputNotFound, ParallaxError, SaveFailed, UnsupportedFormat
from ..model import Scene, Trajectory

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("project", "colmap-text", "colmap-bin", "nerfstudio", "ply", "tum", "kitti", "euroc")
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}
TRAJECTORY_SUFFIXES = {".txt", ".csv", ".tum"}


def _is_colmap_model(path: Path) -> bool:
    return any((path / f"cameras{ext}").is_file() for ext in (".bin", ".txt")) or (path / "sparse" / "0").is_dir()


def detect_kind(path) -> str:
    """What the path is: project | colmap | transforms | ply | video | trajectory | frames."""
    from ..project import is_project

    path = Path(path)
    if not path.exists():
        raise InputNotFound(f"path not found: {path}")
    if path.is_dir():
        if is_project(path):
            return "project"
        if _is_colmap_model(path):
            return "colmap"
        if (path / "transforms.json").is_file() and not (path / "rgb.txt").is_file():
            return "transforms"
        return "frames"
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "transforms"
    if suffix == ".ply":
        return "ply"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in TRAJECTORY_SUFFIXES or path.name in ("groundtruth.txt",):
        return "trajectory"
    if suffix in (".bin",) and path.parent.is_dir() and _is_colmap_model(path.parent):
        return "colmap"
    raise UnsupportedFormat(f"{path}: unsupported file type {suffix or '(no extension)'}; Parallax opens videos, "
                            "image folders, TUM/KITTI/EuRoC folders, projects, COLMAP models, transforms.json, "
                            "PLY and trajectory files")


def open_path(path, progress=None, calib=None, max_size=None) -> Scene:
    """Build a Scene from any supported path. Raises ParallaxError with a clear message on bad input."""
    path = Path(path).expanduser()
    kind = detect_kind(path)
    if progress is not None:
        progress.report("open", 0, 1, f"{kind}: {path.name}")
    if kind == "project":
        from ..project import load_project
        scene = load_project(path)
    elif kind == "colmap":
        from .colmap import read_colmap_model
        scene = read_colmap_model(path if path.is_dir() else path.parent)
        scene.add_source({"path": str(path), "layout": "colmap"})
    elif kind == "transforms":
        from .nerfstudio import read_transforms
        scene = read_transforms(path if path.is_file() else path / "transforms.json")
        scene.add_source({"path": str(path), "layout": "nerfstudio"})
    elif kind == "ply":
        from .ply import read_ply
        scene = Scene()
        scene.set_cloud(_cloud_name(path.stem), read_ply(path))
    elif kind == "trajectory":
        from .trajectory_io import read_trajectory
        scene = Scene()
        scene.set_trajectory(path.stem, read_trajectory(path))
    else:
        scene = _open_frames(path, progress, calib, max_size)
    if progress is not None:
        progress.report("open", 1, 1, f"{kind}: {path.name}")
    return scene


def _cloud_name(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_-." else "_" for c in stem).lstrip(".")
    return cleaned or "cloud"


def _open_frames(path: Path, progress, calib, max_size) -> Scene:
    from .calibration import add_source_to_scene, resolve_intrinsics
    from .sources import open_source

    source = open_source(path, max_size=max_size)
    camera = resolve_intrinsics(source, calib_path=calib)
    scene = Scene()
    add_source_to_scene(scene, source, camera, progress=progress)
    if path.is_dir():
        # Point clouds kept beside the frames (a reference scan, the demo's true surfaces) open with them.
        from .ply import read_ply
        for ply in sorted(path.glob("*.ply")):
            try:
                scene.set_cloud(_cloud_name(ply.stem), read_ply(ply))
            except ParallaxError as exc:
                log.warning("point cloud beside the source was not loaded: %s", exc)
    gt_path = source.ground_truth_path()
    if gt_path is not None:
        try:
            from .trajectory_io import read_trajectory
            scene.set_trajectory("ground_truth", read_trajectory(gt_path))
            log.info("ground truth loaded from %s", gt_path)
        except ParallaxError as exc:
            log.warning("ground truth beside the source was not loaded: %s", exc)
    return scene


# --- export ------------------------------------------------------------------------------

def _trajectory_for_export(scene: Scene, name: str | None) -> Trajectory:
    if name:
        if name not in scene.trajectories:
            raise ParallaxError(f"no trajectory named {name!r}; the scene has: {', '.join(scene.trajectories) or 'none'}")
        return scene.trajectories[name]
    for preferred in ("slam", "sfm"):
        if preferred in scene.trajectories:
            return scene.trajectories[preferred]
    registered = sorted(scene.registered_images(), key=lambda im: im.image_id)
    if registered:
        stamps = [im.source.timestamp if im.source and im.source.timestamp is not None else float(im.image_id)
                  for im in registered]
        return Trajectory.from_poses(stamps, [im.cam_from_world.inverse() for im in registered])
    if scene.trajectories:
        return next(iter(scene.trajectories.values()))
    raise ParallaxError("the scene has no camera poses or trajectories to export")


def export_scene(scene: Scene, path, fmt: str, name: str | None = None) -> Path:
    """Write ``scene`` to ``path`` in format ``fmt`` (see EXPORT_FORMATS). ``name`` picks a cloud/trajectory."""
    path = Path(path).expanduser()
    try:
        return _export(scene, path, fmt, name)
    except OSError as exc:  # a folder where a file should go, no permission, disk full ...
        raise SaveFailed(f"cannot write {path}: {exc.strerror or exc}") from exc


def _transforms_file_paths(scene: Scene, target: Path) -> dict:
    """file_path of each image relative to the json's folder, so the export works wherever it is written."""
    paths = {}
    for image in scene.images.values():
        if image.source is not None and image.source.frame_index is None and image.source.path:
            paths[image.image_id] = Path(os.path.relpath(Path(image.source.path).resolve(),
                                                         target.parent.resolve())).as_posix()
    return paths


def _export(scene: Scene, path: Path, fmt: str, name: str | None) -> Path:
    if fmt not in EXPORT_FORMATS:
        raise UnsupportedFormat(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "project":
        from ..project import save_project
        return save_project(scene, path)
    if fmt in ("colmap-text", "colmap-bin"):
        from .colmap import write_colmap_model
        if not scene.registered_images():
            raise ParallaxError("the scene has no registered images (camera poses) to write as a COLMAP model")
        path.mkdir(parents=True, exist_ok=True)
        write_colmap_model(scene, path, binary=(fmt == "colmap-bin"))
        return path
    if fmt == "nerfstudio":
        from .nerfstudio import write_transforms
        target = path / "transforms.json" if path.is_dir() or not path.suffix else path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_transforms(scene, target, file_paths=_transforms_file_paths(scene, target))
        return target
    if fmt == "ply":
        from .ply import points3d_to_cloud, write_ply
        if name:
            if name not in scene.clouds:
                raise ParallaxError(f"no point cloud named {name!r}; the scene has: {', '.join(scene.clouds) or 'none'}")
            cloud = scene.clouds[name]
        elif len(scene.points):
            cloud = points3d_to_cloud(scene.points)
        elif scene.clouds:
            cloud = next(iter(scene.clouds.values()))
        else:
            raise ParallaxError("the scene has no 3D points or point clouds to export")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_ply(path, cloud)
        return path
    from .trajectory_io import kitti_times_path_for, write_trajectory
    path.parent.mkdir(parents=True, exist_ok=True)
    times_path = kitti_times_path_for(path) if fmt == "kitti" else None  # KITTI poses carry no timestamps
    write_trajectory(path, _trajectory_for_export(scene, name), fmt, times_path=times_path)
    return path


def describe_frames(path, calib=None) -> dict:
    """Layout, frame count, resolution and intrinsics of a frame source, without reading every frame."""
    from .calibration import resolve_intrinsics_with_origin
    from .sources import open_source

    source = open_source(Path(path))
    camera, origin = resolve_intrinsics_with_origin(source, calib_path=calib)
    gt = source.ground_truth_path()
    return {
        "layout": source.layout,
        "frames": len(source),
        "resolution": list(source.size),
        "intrinsics": [{"camera_id": camera.camera_id, "description": camera.describe(),
                        "source": camera.intrinsics_source}],
        "calibration": origin,
        "ground_truth": None if gt is None else str(gt),
        "poses": 0,
        "points3D": 0,
    }
