"""Write a SLAM system's result into the shared scene.

- keyframes -> scene ``Image``s with ``cam_from_world``, keypoints and ``point3d_ids``: the frame's own image
  when the scene holds it bare (opened, not registered, no keypoints), otherwise a new image id;
- alive map points observed at least twice -> scene ``Points3D`` appended after the scene's existing points
  (new ids), with CSR tracks (image id, keypoint index), colours sampled at the first keyframe that saw them,
  and the mean reprojection error;
- the trajectory ``"slam"``: world_from_cam of every tracked frame with the frame timestamps;
- the point cloud ``"slam_map"``: the same points.

``SlamResult`` is what the writer reads: plain data (the camera, the map, the frame poses) that pickles, so a
SLAM run in another process (the SLAM tab's) can hand its result to the process that owns the scene.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.camera_models import project
from scene.model import FrameRef, Image, PointCloud, Points3D, Trajectory

TRAJECTORY_NAME = "slam"
CLOUD_NAME = "slam_map"


@dataclass
class SlamResult:
    """A finished (or stopped) SLAM run: what ``write_result`` puts into a scene."""
    camera: object                 # scene.camera.Camera
    map: object                    # slam.map.SlamMap
    frame_poses: list              # (timestamp, cam_from_world or None) of every processed frame


def result_of(system) -> SlamResult:
    """The system's result; call it with mapping settled (``System.wait_for_mapping``)."""
    return SlamResult(system.camera, system.map, system.frame_poses())


def to_scene(system, scene) -> dict:
    return write_result(result_of(system), scene)


def write_result(result: SlamResult, scene) -> dict:
    m = result.map
    camera = result.camera
    if camera.camera_id in scene.cameras and scene.cameras[camera.camera_id] != camera:
        camera_id = scene.next_camera_id()
        from dataclasses import replace
        camera = replace(camera, camera_id=camera_id)
    scene.add_camera(camera)

    counts = m.observation_counts()
    keep = m.alive & (counts >= 2)
    point_idx = np.flatnonzero(keep)
    first_id = int(scene.points.ids.max()) + 1 if len(scene.points) else 1
    new_id = np.full(m.num_points_total, -1, np.int64)
    new_id[point_idx] = first_id + np.arange(len(point_idx))

    image_id0 = scene.next_image_id()
    # A keyframe whose frame is already in the scene as a bare image (opened, never registered) becomes
    # that image, so the frame list is not duplicated; anything else gets a new image id.
    bare = {(im.source.path, im.source.frame_index): im.image_id for im in scene.images.values()
            if im.source is not None and not im.registered and len(im.keypoints) == 0}
    kf_image_id = np.empty(m.num_keyframes, np.int64)
    images, next_id = [], image_id0
    for k in range(m.num_keyframes):
        ref = m.kf_refs[k]
        source = ref if isinstance(ref, FrameRef) else None
        existing = bare.pop((source.path, source.frame_index), None) if source is not None else None
        if existing is None:
            image_id, name, next_id = next_id, m.kf_names[k], next_id + 1
        else:
            image_id, name = existing, scene.images[existing].name
        kf_image_id[k] = image_id
        ids = m.kf_point_ids[k]
        pid = np.where(ids >= 0, new_id[np.maximum(ids, 0)], -1)
        # keypoints are in the SLAM camera's pixels, so the image takes that camera
        images.append(Image(image_id, name, camera.camera_id, m.kf_pose(k), m.kf_xy[k].copy(), pid, source))
    if images:
        scene.add_images(images)  # replaces the bare images it matched

    # Tracks: alive observations of kept points, grouped by point.
    sel = m.obs_alive & keep[m.obs_pt]
    obs_pt, obs_kf, obs_kp = m.obs_pt[sel], m.obs_kf[sel], m.obs_kp[sel]
    order = np.lexsort((obs_kp, obs_kf, obs_pt))
    obs_pt, obs_kf, obs_kp = obs_pt[order], obs_kf[order], obs_kp[order]
    slot = np.full(m.num_points_total, -1, np.int64)
    slot[point_idx] = np.arange(len(point_idx))
    lengths = np.bincount(slot[obs_pt], minlength=len(point_idx))
    ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    # Mean reprojection error per point.
    errors = np.zeros(len(point_idx))
    if len(obs_pt):
        err = np.empty(len(obs_pt))
        for k in np.unique(obs_kf):
            s = obs_kf == k
            uv = project(camera, m.kf_pose(int(k)).apply(m.xyz[obs_pt[s]]))
            err[s] = np.linalg.norm(uv - m.kf_xy[k][obs_kp[s]], axis=1)
        errors = np.bincount(slot[obs_pt], weights=err, minlength=len(point_idx)) / np.maximum(lengths, 1)
    new_points = Points3D(new_id[point_idx], m.xyz[point_idx].copy(), m.rgb[point_idx].copy(), errors, ptr,
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

    poses = [(ts, p) for ts, p in result.frame_poses if p is not None]
    if poses:
        trajectory = Trajectory.from_poses([ts for ts, _ in poses], [p.inverse() for _, p in poses])
        scene.set_trajectory(TRAJECTORY_NAME, trajectory)
    return {"images": len(images), "points": int(len(new_points)), "trajectory_poses": len(poses),
            "first_image_id": int(kf_image_id[0]) if len(kf_image_id) else image_id0,
            "keyframe_image_ids": kf_image_id.tolist(), "camera_id": camera.camera_id}
