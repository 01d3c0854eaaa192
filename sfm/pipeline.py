"""The SfM pipeline: extract -> match -> verify -> map, results written into the shared scene.

``run(source, options, progress)`` takes a folder of images / a video path (a new Scene is made) or a
Scene whose images have file or video-frame sources (their cameras are used). Nothing is written into
the scene until mapping has finished, so a cancelled run (scene.progress.Cancelled at any stage
boundary or step) leaves the scene as it was.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from scene.io.calibration import add_source_to_scene, resolve_intrinsics
from scene.io.sources import open_source
from scene.io.sources_decode import decode_image_file
from scene.model import PointCloud, Points3D, Scene
from scene.progress import NullProgress
from sfm.features import FeatureOptions, extract_all
from sfm.mapper import IncrementalMapper, MapperOptions
from sfm.matching import MatchingOptions, match_pairs, select_pairs
from sfm.verification import VerificationOptions, verify_pairs

CLOUD_NAME = "sfm_sparse"


@dataclass(frozen=True)
class SfmOptions:
    features: FeatureOptions = FeatureOptions()
    matching: MatchingOptions = MatchingOptions()
    verification: VerificationOptions = VerificationOptions()
    mapper: MapperOptions = MapperOptions()
    calib_path: Optional[str] = None
    refine_intrinsics: Optional[bool] = None  # None: refine when the intrinsics are EXIF values or a guess


@dataclass
class SfmResult:
    scene: Scene
    image_ids: list                   # scene image id per input image, in input order
    registered: int
    num_images: int
    num_points: int
    mean_track_length: float
    mean_reprojection_error_px: float
    seconds: dict                     # per stage
    reasons: dict                     # image id -> why not registered ("" when registered)
    initial_pair: tuple               # scene image ids
    num_verified_pairs: int
    models: int = 1
    stats: dict = field(default_factory=dict)


def _reader(ref):
    if ref.frame_index is None:
        def read():
            image, reason = decode_image_file(Path(ref.path))
            if image is None:
                raise ValueError(f"{ref.path}: {reason}")
            return image
        return read

    def read_frame():
        with open_source(ref.path) as src:  # a video: decode just this frame
            return src.read(ref.frame_index).image
    return read_frame


def _scene_from_path(path, options: SfmOptions, progress) -> tuple[Scene, list[int]]:
    source = open_source(path)  # full resolution: keypoints are stored in full-resolution pixels
    camera = resolve_intrinsics(source, options.calib_path)
    scene = Scene()
    ids = add_source_to_scene(scene, source, camera, progress)
    return scene, ids


def run(scene_or_images, options: SfmOptions | None = None, progress=None) -> SfmResult:
    opts = options or SfmOptions()
    progress = progress or NullProgress()
    seconds = {}
    t0 = time.perf_counter()
    if isinstance(scene_or_images, Scene):
        scene = scene_or_images
        ids = sorted(i for i, im in scene.images.items() if im.source is not None)
    else:
        scene, ids = _scene_from_path(scene_or_images, opts, progress)
    if len(ids) < 2:
        raise ValueError(f"SfM needs at least two images, got {len(ids)}")
    images = [scene.images[i] for i in ids]
    cam_ids = sorted({im.camera_id for im in images})
    cameras = [scene.cameras[c] for c in cam_ids]
    image_camera = np.array([cam_ids.index(im.camera_id) for im in images])
    seconds["open"] = time.perf_counter() - t0

    t = time.perf_counter()
    frames = [(im.source.path, im.source.frame_index, (cameras[c].width, cameras[c].height), _reader(im.source))
              for im, c in zip(images, image_camera)]
    feats = extract_all(frames, opts.features, progress)
    seconds["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    pairs = select_pairs(len(images), opts.matching)
    matches = match_pairs([f.descriptors for f in feats], pairs, opts.matching, progress)
    seconds["match"] = time.perf_counter() - t

    t = time.perf_counter()
    per_image_cams = [cameras[c] for c in image_camera]
    keypoints = [f.keypoints_xy for f in feats]
    scales = [f.detection_scale for f in feats]
    graph = verify_pairs(per_image_cams, keypoints, scales, matches, opts.verification, progress)
    seconds["verify"] = time.perf_counter() - t

    t = time.perf_counter()
    refine = opts.refine_intrinsics
    if refine is None:
        refine = any(c.intrinsics_source != "calib" for c in cameras)
    mopts = replace(opts.mapper, refine_intrinsics=bool(refine))
    result = IncrementalMapper(cameras, image_camera, keypoints, [f.rgb for f in feats], scales, graph, mopts,
                               progress).run()
    seconds["map"] = time.perf_counter() - t

    t = time.perf_counter()
    _write(scene, ids, images, cam_ids, feats, result)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    n_pts = len(result.points_xyz)
    lengths = np.diff(result.track_ptr)
    reasons = {ids[k]: result.reasons[k] for k in range(len(ids))}
    return SfmResult(scene, ids, int(result.registered.sum()), len(ids), n_pts,
                     float(lengths.mean()) if n_pts else 0.0,
                     float(np.average(result.points_error, weights=lengths)) if n_pts else float("nan"),
                     seconds, reasons, (ids[result.initial_pair[0]], ids[result.initial_pair[1]]), len(graph),
                     stats=result.stats)


def _points_without_images(points: Points3D, image_ids) -> Points3D:
    """The points none of whose observations is in ``image_ids``."""
    touched = np.isin(points.track_image_ids, np.asarray(image_ids, np.int64))
    lengths = points.track_lengths()
    hit = np.add.reduceat(touched.astype(np.int64), points.track_ptr[:-1]) if len(touched) else np.zeros(len(points))
    hit = np.where(lengths > 0, hit, 0) > 0
    keep_obs = np.repeat(~hit, lengths)
    kept_len = lengths[~hit]
    return Points3D(points.ids[~hit], points.xyz[~hit], points.rgb[~hit], points.error[~hit],
                    np.concatenate(([0], np.cumsum(kept_len))).astype(np.int64),
                    points.track_image_ids[keep_obs], points.track_kp_idx[keep_obs])


def _write(scene: Scene, ids, images, cam_ids, feats, result) -> None:
    """Cameras, poses, keypoints, point3d ids, points (appended with new ids) and the cloud, in one go."""
    for cid, cam in zip(cam_ids, result.cameras):
        if scene.cameras.get(cid) != cam:
            scene.add_camera(replace(cam, camera_id=cid))
    first = int(scene.points.ids.max()) + 1 if len(scene.points) else 1
    n_pts = len(result.points_xyz)
    point_ids = first + np.arange(n_pts, dtype=np.int64)
    obs_point = np.repeat(np.arange(n_pts), np.diff(result.track_ptr))
    with scene._lock:
        for k, im in enumerate(images):
            im.keypoints = feats[k].keypoints_xy.copy()
            p3d = np.full(len(im.keypoints), -1, np.int64)
            s = result.track_image == k
            p3d[result.track_kp[s]] = point_ids[obs_point[s]]
            im.point3d_ids = p3d
    scene.set_poses({ids[k]: result.cams_from_world[k] for k in range(len(ids))})
    new = Points3D(point_ids, result.points_xyz, result.points_rgb, result.points_error, result.track_ptr,
                   np.asarray(ids, np.int64)[result.track_image], result.track_kp)
    old = _points_without_images(scene.points, ids)  # a previous reconstruction of these images is replaced
    merged = Points3D(np.concatenate((old.ids, new.ids)), np.vstack((old.xyz, new.xyz)), np.vstack((old.rgb, new.rgb)),
                      np.concatenate((old.error, new.error)),
                      np.concatenate((old.track_ptr, old.track_ptr[-1] + new.track_ptr[1:])),
                      np.concatenate((old.track_image_ids, new.track_image_ids)),
                      np.concatenate((old.track_kp_idx, new.track_kp_idx)))
    scene.set_points(merged)
    scene.set_cloud(CLOUD_NAME, PointCloud(new.xyz.copy(), new.rgb.copy()))
