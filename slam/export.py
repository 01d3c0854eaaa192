"""Write a SLAM system's result into the shared scene.

- keyframes -> scene ``Image``s with ``cam_from_world``, keypoints and ``point3d_ids``: the frame's own image
  when the scene holds it bare (opened, not registered, no keypoints), otherwise a new image id;
- alive map points observed at least twice -> scene ``Points3D`` appended after the scene's existing points
  (new ids), with CSR tracks (image id, keypoint index), colours sampled at the first keyframe that saw them,
  and the mean reprojection error;
- the trajectory ``"slam"``: world_from_cam of every tracked frame with the frame timestamps;
- the point cloud ``"slam_map"``: the same points.

``SlamResult`` is what the writer reads: the camera and arrays copied from the map and the frame poses, so a
SLAM run in another process (the SLAM tab's) can send it as a pickle-free message (``scene.messages``) to
the process that owns the scene.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from geometry.align import umeyama_poses
from geometry.camera_models import project
from geometry.lie import quat_wxyz_to_rotation, rotation_to_quat_wxyz
from geometry.metrics import Alignment
from scene.camera import Camera
from scene.errors import ParallaxError
from scene.messages import camera_fields, camera_from_fields, frame_ref_fields, frame_ref_from_fields
from scene.model import FrameRef, Image, PointCloud, Points3D, Trajectory
from scene.rigid import Rigid3d

TRAJECTORY_NAME = "slam"
CLOUD_NAME = "slam_map"


@dataclass
class SlamResult:
    """A finished (or stopped) SLAM run: what ``write_result`` puts into a scene. Poses are cam_from_world
    rows (quat_wxyz, translation); per keyframe k: its keypoints and the map point each observes (-1: none)."""
    camera: Camera
    kf_cam_from_world: np.ndarray      # (K, 7)
    kf_names: list                     # (K,) str
    kf_sources: list                   # (K,) FrameRef or None
    kf_xy: list                        # (K,) arrays (N_k, 2) COLMAP pixels
    kf_point_ids: list                 # (K,) arrays (N_k,)
    xyz: np.ndarray                    # (M, 3) map points, culled ones included (ids are row numbers)
    rgb: np.ndarray                    # (M, 3) uint8
    alive: np.ndarray                  # (M,) bool
    observation_counts: np.ndarray     # (M,) alive observations per point
    obs_kf: np.ndarray                 # (O,) one row per observation: keyframe, keypoint, point, alive
    obs_kp: np.ndarray
    obs_pt: np.ndarray
    obs_alive: np.ndarray
    frame_timestamps: np.ndarray       # (F,) every processed frame
    frame_cam_from_world: np.ndarray   # (F, 7), NaN rows for frames without a pose

    def to_fields(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["camera"] = camera_fields(self.camera)
        out["kf_sources"] = [frame_ref_fields(ref) for ref in self.kf_sources]
        return out

    @classmethod
    def from_fields(cls, f: dict) -> "SlamResult":
        values = dict(f)
        values["camera"] = camera_from_fields(f["camera"])
        values["kf_sources"] = [frame_ref_from_fields(ref) for ref in f["kf_sources"]]
        return cls(**values)


def _pose_row(pose: Rigid3d | None) -> np.ndarray:
    return np.full(7, np.nan) if pose is None else np.concatenate((pose.quat_wxyz, pose.translation))


def _pose(row: np.ndarray) -> Rigid3d:
    return Rigid3d(row[:4], row[4:])


def result_of(system) -> SlamResult:
    """The system's result (copies); call it with mapping settled (``System.wait_for_mapping``)."""
    m = system.map
    poses = system.frame_poses()
    return SlamResult(
        system.camera, np.hstack((m.kf_quat, m.kf_trans)).reshape(-1, 7), list(m.kf_names),
        [ref if isinstance(ref, FrameRef) else None for ref in m.kf_refs],
        [xy.copy() for xy in m.kf_xy], [ids.copy() for ids in m.kf_point_ids], m.xyz.copy(), m.rgb.copy(),
        m.alive.copy(), m.observation_counts(), m.obs_kf.copy(), m.obs_kp.copy(), m.obs_pt.copy(),
        m.obs_alive.copy(), np.array([ts for ts, _ in poses], np.float64).reshape(-1),
        np.array([_pose_row(p) for _, p in poses]).reshape(-1, 7))


def write_result(result: SlamResult, scene) -> dict:
    r = result
    camera = r.camera
    if camera.camera_id in scene.cameras and scene.cameras[camera.camera_id] != camera:
        camera_id = scene.next_camera_id()
        camera = replace(camera, camera_id=camera_id)
    scene.add_camera(camera)

    keep = r.alive & (r.observation_counts >= 2)
    point_idx = np.flatnonzero(keep)
    first_id = int(scene.points.ids.max()) + 1 if len(scene.points) else 1
    new_id = np.full(len(r.xyz), -1, np.int64)
    new_id[point_idx] = first_id + np.arange(len(point_idx))

    image_id0 = scene.next_image_id()
    # A keyframe whose frame is already in the scene as a bare image (opened, never registered) becomes
    # that image, so the frame list is not duplicated; anything else gets a new image id.
    bare = {(im.source.path, im.source.frame_index): im.image_id for im in scene.images.values()
            if im.source is not None and not im.registered and len(im.keypoints) == 0}
    kf_image_id = np.empty(len(r.kf_names), np.int64)
    images, next_id = [], image_id0
    for k, source in enumerate(r.kf_sources):
        existing = bare.pop((source.path, source.frame_index), None) if source is not None else None
        if existing is None:
            image_id, name, next_id = next_id, r.kf_names[k], next_id + 1
        else:
            image_id, name = existing, scene.images[existing].name
        kf_image_id[k] = image_id
        ids = r.kf_point_ids[k]
        pid = np.where(ids >= 0, new_id[np.maximum(ids, 0)], -1)
        # keypoints are in the SLAM camera's pixels, so the image takes that camera
        images.append(Image(image_id, name, camera.camera_id, _pose(r.kf_cam_from_world[k]), r.kf_xy[k].copy(), pid,
                            source))
    if images:
        scene.add_images(images)  # replaces the bare images it matched

    # Tracks: alive observations of kept points, grouped by point.
    sel = r.obs_alive & keep[r.obs_pt]
    obs_pt, obs_kf, obs_kp = r.obs_pt[sel], r.obs_kf[sel], r.obs_kp[sel]
    order = np.lexsort((obs_kp, obs_kf, obs_pt))
    obs_pt, obs_kf, obs_kp = obs_pt[order], obs_kf[order], obs_kp[order]
    slot = np.full(len(r.xyz), -1, np.int64)
    slot[point_idx] = np.arange(len(point_idx))
    lengths = np.bincount(slot[obs_pt], minlength=len(point_idx))
    ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    # Mean reprojection error per point.
    errors = np.zeros(len(point_idx))
    if len(obs_pt):
        err = np.empty(len(obs_pt))
        for k in np.unique(obs_kf):
            s = obs_kf == k
            uv = project(camera, _pose(r.kf_cam_from_world[k]).apply(r.xyz[obs_pt[s]]))
            err[s] = np.linalg.norm(uv - r.kf_xy[k][obs_kp[s]], axis=1)
        errors = np.bincount(slot[obs_pt], weights=err, minlength=len(point_idx)) / np.maximum(lengths, 1)
    new_points = Points3D(new_id[point_idx], r.xyz[point_idx].copy(), r.rgb[point_idx].copy(), errors, ptr,
                          kf_image_id[obs_kf], obs_kp)
    old = scene.points
    merged = Points3D(np.concatenate((old.ids, new_points.ids)), np.vstack((old.xyz, new_points.xyz)),
                      np.vstack((old.rgb, new_points.rgb)), np.concatenate((old.error, new_points.error)),
                      np.concatenate((old.track_ptr, old.track_ptr[-1] + new_points.track_ptr[1:])),
                      np.concatenate((old.track_image_ids, new_points.track_image_ids)),
                      np.concatenate((old.track_kp_idx, new_points.track_kp_idx)))
    scene.set_points(merged)
    if len(new_points):
        scene.set_cloud(CLOUD_NAME, PointCloud(new_points.xyz.copy(), new_points.rgb.copy()))

    trajectory = result_trajectory(r)
    if len(trajectory):
        scene.set_trajectory(TRAJECTORY_NAME, trajectory)
    return {"images": len(images), "points": int(len(new_points)), "trajectory_poses": len(trajectory),
            "first_image_id": int(kf_image_id[0]) if len(kf_image_id) else image_id0,
            "keyframe_image_ids": kf_image_id.tolist(), "camera_id": camera.camera_id}


def result_trajectory(result: SlamResult) -> Trajectory:
    """world_from_cam of every frame with a pose, at the frames' timestamps."""
    posed = np.flatnonzero(np.all(np.isfinite(result.frame_cam_from_world), axis=1))
    return Trajectory.from_poses(result.frame_timestamps[posed],
                                 [_pose(result.frame_cam_from_world[i]).inverse() for i in posed])


MIN_SHARED_KEYFRAMES = 3


def _frame_key(ref: FrameRef) -> tuple[str, int | None]:
    return str(Path(ref.path).resolve()), ref.frame_index


def registered_frames_alignment(result: SlamResult, scene) -> Alignment | None:
    """The Sim(3) from the result's world to the frame of the scene's registered images of the same frames
    (a transforms.json or COLMAP model opened with them), fitted on the centres and optical axes of the keyframes
    whose frame is such an image (``umeyama_poses``); None with fewer than MIN_SHARED_KEYFRAMES of them, or all
    of them at one spot."""
    posed = {_frame_key(im.source): im.cam_from_world for im in scene.registered_images() if im.source is not None}
    est, ref = [], []
    for k, source in enumerate(result.kf_sources):
        pose = posed.get(_frame_key(source)) if source is not None else None
        if pose is not None and np.all(np.isfinite(result.kf_cam_from_world[k])):
            est.append(_pose(result.kf_cam_from_world[k]).inverse())
            ref.append(pose.inverse())
    if len(est) < MIN_SHARED_KEYFRAMES:
        return None
    try:  # orientations too: keyframes along a straight path leave the roll about it free
        rotation, translation, scale = umeyama_poses([p.translation for p in est], [p.rotation for p in est],
                                                     [p.translation for p in ref], [p.rotation for p in ref])
    except ParallaxError:  # every keyframe at one spot
        return None
    return Alignment("sim3", rotation, translation, scale)


def transformed(result: SlamResult, alignment) -> SlamResult:
    """The result in another world frame: ``alignment`` (a geometry.metrics.Alignment, for example an ATE's
    gt_from_est) maps old world points to new ones. Every reprojection is unchanged: camera coordinates scale
    with the world."""
    rotation, translation, scale = alignment.rotation, alignment.translation, alignment.scale
    if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation)) and np.isfinite(scale)
            and scale > 0):
        raise ValueError(f"not a similarity: scale {scale}, translation {translation}")

    def poses(rows: np.ndarray) -> np.ndarray:
        out = np.full_like(rows, np.nan)
        ok = np.all(np.isfinite(rows), axis=1)
        if ok.any():
            cam_rot = quat_wxyz_to_rotation(rows[ok, :4]) @ rotation.T  # cam_from_new = cam_from_old old_from_new
            out[ok, :4] = rotation_to_quat_wxyz(cam_rot)
            out[ok, 4:] = scale * rows[ok, 4:] - cam_rot @ translation
        return out

    return replace(result, kf_cam_from_world=poses(result.kf_cam_from_world),
                   xyz=alignment.apply_positions(result.xyz), frame_cam_from_world=poses(result.frame_cam_from_world))
