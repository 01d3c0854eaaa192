"""The scene model: plain data over numpy shared by SLAM, SfM, NeRF and the GUI.

Vocabulary follows COLMAP: cameras and images keyed by id, 3D points as packed arrays
with tracks in CSR form (track_ptr, track_image_ids, track_kp_idx).
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from . import events as ev
from .camera import Camera
from .rigid import Rigid3d


@dataclass(frozen=True)
class FrameRef:
    """Where an image's pixels come from: a file, or a video frame."""

    path: str
    frame_index: Optional[int] = None  # set for video frames
    timestamp: Optional[float] = None  # seconds


@dataclass
class Image:
    image_id: int
    name: str
    camera_id: int
    cam_from_world: Optional[Rigid3d] = None  # None: not registered
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (N, 2) pixels, float64
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (N,), -1 = none
    source: Optional[FrameRef] = None

    def __post_init__(self):
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64).reshape(-1, 2)
        if self.point3d_ids is None or len(self.point3d_ids) == 0:
            self.point3d_ids = np.full(len(self.keypoints), -1, dtype=np.int64)
        self.point3d_ids = np.asarray(self.point3d_ids, dtype=np.int64).reshape(-1)
        if len(self.point3d_ids) != len(self.keypoints):
            raise ValueError(f"image {self.image_id}: {len(self.keypoints)} keypoints but "
                             f"{len(self.point3d_ids)} point3d_ids")

    @property
    def registered(self) -> bool:
        return self.cam_from_world is not None


@dataclass
class Points3D:
    """M points as packed arrays; tracks in CSR form.

    Observations of point i are track_image_ids[track_ptr[i]:track_ptr[i+1]] and the
    matching keypoint indices track_kp_idx[...].
    """

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint8))
    error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    track_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    track_image_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    track_kp_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(-1, 3)
        self.rgb = np.asarray(self.rgb, dtype=np.uint8).reshape(-1, 3)
        self.error = np.asarray(self.error, dtype=np.float64).reshape(-1)
        self.track_ptr = np.asarray(self.track_ptr, dtype=np.int64).reshape(-1)
        self.track_image_ids = np.asarray(self.track_image_ids, dtype=np.int64).reshape(-1)
        self.track_kp_idx = np.asarray(self.track_kp_idx, dtype=np.int64).reshape(-1)
        self.validate()

    def validate(self) -> None:
        m = len(self.ids)
        for name in ("xyz", "rgb", "error"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"points3D: {name} has {len(getattr(self, name))} rows, expected {m}")
        if len(self.track_ptr) != m + 1 or self.track_ptr[0] != 0 or np.any(np.diff(self.track_ptr) < 0):
            raise ValueError("points3D: track_ptr is not a valid CSR offset array")
        if self.track_ptr[-1] != len(self.track_image_ids) or len(self.track_image_ids) != len(self.track_kp_idx):
            raise ValueError("points3D: track arrays do not match track_ptr")
        if len(np.unique(self.ids)) != m:
            raise ValueError("points3D: duplicate point ids")

    def __len__(self) -> int:
        return len(self.ids)

    def track(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.track_ptr[index], self.track_ptr[index + 1]
        return self.track_image_ids[a:b], self.track_kp_idx[a:b]

    def track_lengths(self) -> np.ndarray:
        return np.diff(self.track_ptr)

    def index_of(self) -> dict[int, int]:
        return {int(pid): i for i, pid in enumerate(self.ids)}

    @classmethod
    def from_tracks(cls, ids, xyz, rgb, error, tracks: list[list[tuple[int, int]]]) -> "Points3D":
        lengths = np.array([len(t) for t in tracks], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.array([obs for t in tracks for obs in t], dtype=np.int64).reshape(-1, 2)
        return cls(ids, xyz, rgb, error, ptr, flat[:, 0], flat[:, 1])

    def copy(self) -> "Points3D":
        return Points3D(*(getattr(self, f).copy() for f in
                          ("ids", "xyz", "rgb", "error", "track_ptr", "track_image_ids", "track_kp_idx")))


@dataclass
class Trajectory:
    """Timestamped poses, each ``world_from_cam`` (camera centre and orientation in the world)."""

    timestamps: np.ndarray
    world_from_cam_quat_wxyz: np.ndarray  # (N, 4)
    world_from_cam_translation: np.ndarray  # (N, 3) = camera centres

    def __post_init__(self):
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        self.world_from_cam_quat_wxyz = np.asarray(self.world_from_cam_quat_wxyz, dtype=np.float64).reshape(-1, 4)
        self.world_from_cam_translation = np.asarray(self.world_from_cam_translation, dtype=np.float64).reshape(-1, 3)
        n = len(self.timestamps)
        if len(self.world_from_cam_quat_wxyz) != n or len(self.world_from_cam_translation) != n:
            raise ValueError("trajectory arrays differ in length")
        for name in ("timestamps", "world_from_cam_quat_wxyz", "world_from_cam_translation"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"trajectory {name} contains NaN or infinity")

    def __len__(self) -> int:
        return len(self.timestamps)

    def pose(self, i: int) -> Rigid3d:
        return Rigid3d(self.world_from_cam_quat_wxyz[i], self.world_from_cam_translation[i])

    @classmethod
    def from_poses(cls, timestamps, world_from_cam: list[Rigid3d]) -> "Trajectory":
        q = np.array([p.quat_wxyz for p in world_from_cam]).reshape(-1, 4)
        t = np.array([p.translation for p in world_from_cam]).reshape(-1, 3)
        return cls(timestamps, q, t)

    def matrices(self) -> np.ndarray:
        """(N, 4, 4) world_from_cam matrices."""
        return np.array([self.pose(i).matrix() for i in range(len(self))]).reshape(-1, 4, 4)

    def path_length(self) -> float:
        return float(np.linalg.norm(np.diff(self.world_from_cam_translation, axis=0), axis=1).sum())

    def copy(self) -> "Trajectory":
        return Trajectory(self.timestamps.copy(), self.world_from_cam_quat_wxyz.copy(),
                          self.world_from_cam_translation.copy())


@dataclass
class PointCloud:
    """Open3D-compatible arrays: xyz (float64), rgb (uint8), optional normals."""

    xyz: np.ndarray
    rgb: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None

    def __post_init__(self):
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(-1, 3)
        if self.rgb is not None:
            self.rgb = np.asarray(self.rgb, dtype=np.uint8).reshape(-1, 3)
            if len(self.rgb) != len(self.xyz):
                raise ValueError("point cloud colours do not match its points")
        if self.normals is not None:
            self.normals = np.asarray(self.normals, dtype=np.float64).reshape(-1, 3)
            if len(self.normals) != len(self.xyz):
                raise ValueError("point cloud normals do not match its points")

    def __len__(self) -> int:
        return len(self.xyz)

    def copy(self) -> "PointCloud":
        return PointCloud(self.xyz.copy(), None if self.rgb is None else self.rgb.copy(),
                          None if self.normals is None else self.normals.copy())


@dataclass
class NerfRun:
    name: str
    preset: str
    status: str = "created"  # created | training | stopped | finished | failed
    checkpoint_dir: str = ""  # relative to the project's nerf/ folder
    metrics: dict = field(default_factory=dict)
    renders: list = field(default_factory=list)  # relative paths


@dataclass
class SceneSnapshot:
    """Copies handed to readers on other threads; never mutated by the scene."""

    cameras: dict
    images: dict
    points: Points3D
    trajectories: dict
    clouds: dict
    nerf_runs: dict
    sources: list
    version: int


class Scene:
    """One scene shared by every part of Parallax. Mutations emit events.

    Mutations take a lock so that a worker thread can write while the GUI takes snapshots.
    """

    def __init__(self) -> None:
        self.cameras: dict[int, Camera] = {}
        self.images: dict[int, Image] = {}
        self.points = Points3D()
        self.trajectories: dict[str, Trajectory] = {}
        self.clouds: dict[str, PointCloud] = {}
        self.nerf_runs: dict[str, NerfRun] = {}
        self.sources: list[dict] = []  # {"path", "layout", ...} as opened by the user
        self.metadata: dict = {}
        self.events = ev.EventEmitter()
        self.version = 0
        self._lock = threading.RLock()

    # --- mutation -----------------------------------------------------------------
    def _changed(self, kind: str, names=(), **payload) -> None:
        with self._lock:
            self.version += 1
        self.events.emit(ev.SceneEvent(kind, tuple(names), payload))

    def add_camera(self, camera: Camera) -> None:
        with self._lock:
            self.cameras[camera.camera_id] = camera
        self._changed(ev.CAMERAS_CHANGED, (camera.camera_id,))

    def next_camera_id(self) -> int:
        return max(self.cameras, default=0) + 1

    def next_image_id(self) -> int:
        return max(self.images, default=0) + 1

    def add_images(self, images: list[Image]) -> None:
        with self._lock:
            for image in images:
                if image.camera_id not in self.cameras:
                    raise ValueError(f"image {image.image_id} ({image.name}) refers to unknown camera "
                                     f"{image.camera_id}")
            for image in images:
                self.images[image.image_id] = image
        self._changed(ev.IMAGES_ADDED, tuple(i.image_id for i in images))

    def remove_images(self, image_ids) -> None:
        with self._lock:
            for image_id in image_ids:
                self.images.pop(image_id, None)
        self._changed(ev.IMAGES_REMOVED, tuple(image_ids))

    def set_poses(self, cam_from_world: dict[int, Optional[Rigid3d]]) -> None:
        with self._lock:
            for image_id, pose in cam_from_world.items():
                self.images[image_id].cam_from_world = pose
        self._changed(ev.POSES_UPDATED, tuple(cam_from_world))

    def set_points(self, points: Points3D) -> None:
        points.validate()
        with self._lock:
            self.points = points
        self._changed(ev.POINTS_CHANGED)

    def set_trajectory(self, name: str, trajectory: Trajectory) -> None:
        with self._lock:
            self.trajectories[name] = trajectory
        self._changed(ev.TRAJECTORY_CHANGED, (name,))

    def remove_trajectory(self, name: str) -> None:
        with self._lock:
            self.trajectories.pop(name, None)
        self._changed(ev.TRAJECTORY_REMOVED, (name,))

    def set_cloud(self, name: str, cloud: PointCloud) -> None:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"invalid point cloud name {name!r}")
        with self._lock:
            self.clouds[name] = cloud
        self._changed(ev.CLOUD_CHANGED, (name,))

    def remove_cloud(self, name: str) -> None:
        with self._lock:
            self.clouds.pop(name, None)
        self._changed(ev.CLOUD_REMOVED, (name,))

    def set_nerf_run(self, run: NerfRun) -> None:
        with self._lock:
            self.nerf_runs[run.name] = run
        self._changed(ev.NERF_RUN_CHANGED, (run.name,))

    def add_source(self, source: dict) -> None:
        with self._lock:
            self.sources.append(dict(source))
        self._changed(ev.SOURCE_CHANGED)

    def replace_with(self, other: "Scene") -> None:
        """Take over another scene's content (used when loading a project into an open window)."""
        with self._lock:
            for name in ("cameras", "images", "points", "trajectories", "clouds", "nerf_runs", "sources", "metadata"):
                setattr(self, name, getattr(other, name))
        self._changed(ev.SCENE_RESET)

    def clear(self) -> None:
        self.replace_with(Scene())

    # --- reading ------------------------------------------------------------------
    def snapshot(self) -> SceneSnapshot:
        with self._lock:
            return SceneSnapshot(
                cameras=dict(self.cameras),  # Camera is immutable
                images={k: copy.deepcopy(v) for k, v in self.images.items()},
                points=self.points.copy(),
                trajectories={k: v.copy() for k, v in self.trajectories.items()},
                clouds={k: v.copy() for k, v in self.clouds.items()},
                nerf_runs={k: replace(v, metrics=dict(v.metrics), renders=list(v.renders))
                           for k, v in self.nerf_runs.items()},
                sources=[dict(s) for s in self.sources],
                version=self.version,
            )

    def registered_images(self) -> list[Image]:
        return [im for im in self.images.values() if im.registered]

    def summary(self) -> dict:
        return {
            "cameras": len(self.cameras),
            "images": len(self.images),
            "registered": len(self.registered_images()),
            "points3D": len(self.points),
            "trajectories": {k: len(v) for k, v in self.trajectories.items()},
            "clouds": {k: len(v) for k, v in self.clouds.items()},
            "nerf_runs": list(self.nerf_runs),
        }
