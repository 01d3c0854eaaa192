"""The SfM pipeline: extract -> match -> verify -> map, results written into the shared scene.

``run(source, options, progress)`` takes a folder of images / a video path (a new Scene is made, one
camera per kind of picture: see sfm.inputs) or a Scene whose images have file or video-frame sources
(their cameras are used). Nothing is written into the scene until mapping has finished, so a cancelled
run (scene.progress.Cancelled at any stage boundary or step) leaves the scene as it was.

Several models (a disconnected view graph): every kept model's images, poses and points go into the
scene, each model in its own world frame (COLMAP writes them as sparse/0, sparse/1, ...; one scene keeps
them side by side so the GUI can choose). Models are numbered largest first: the cloud "sfm_sparse" is
model 1, "sfm_model_2", "sfm_model_3", ... the others. ``SfmResult.reconstructions`` lists each model's
image and point ids, and ``scene.metadata["sfm"]`` keeps the same partition in the project file.
``model_scene`` cuts one model out as a Scene of its own for export.

Warnings (duplicates, skipped files, other cameras, no parallax, several models) are logged and kept in
``SfmResult.warnings``; a run that cannot start a model raises ``NoInitialPair`` (a ParallaxError) with
the best pair's numbers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from scene.io.sources import open_source
from scene.io.sources_decode import decode_image_file
from scene.model import PointCloud, Points3D, Scene
from scene.progress import NullProgress
from sfm.cloud import OutlierRemovalOptions, statistical_inliers
from sfm.diagnostics import duplicate_of, explain_no_overlap, rotation_warning
from sfm.features import FeatureOptions, empty_features, extract_all
from sfm.inputs import scene_from_path
from sfm.mapper import IncrementalMapper, MapperOptions, NoInitialPair
from sfm.matching import MatchingOptions, match_pairs, select_pairs
from sfm.verification import VerificationOptions, verify_pairs

log = logging.getLogger(__name__)

CLOUD_NAME = "sfm_sparse"
OTHER_CLOUD_PREFIX = "sfm_model_"  # + model number (2, 3, ...)


@dataclass(frozen=True)
class SfmOptions:
    features: FeatureOptions = FeatureOptions()
    matching: MatchingOptions = MatchingOptions()
    verification: VerificationOptions = VerificationOptions()
    mapper: MapperOptions = MapperOptions()
    calib_path: Optional[str] = None
    refine_intrinsics: Optional[bool] = None  # None: refine when the intrinsics are EXIF values or a guess
    outlier_removal: Optional[OutlierRemovalOptions] = None  # None: the clouds hold every 3D point
    # Live growth (GUI): called after a model starts and after every registration with plain arrays:
    # {"model": 1-based model number in start order, "registered_image_indices": input positions,
    #  "world_from_cam": [4 x 4 per registered image], "points_xyz": (M, 3), "points_rgb": (M, 3) uint8}.
    on_model_changed: Optional[Callable[[dict], None]] = None
    # A Scene whose images hold poses (e.g. SLAM keyframes): start the first model from those poses instead
    # of an initial pair (they are refined by bundle adjustment; the rest register incrementally).
    seed_from_poses: bool = False


@dataclass
class SfmModel:
    """One reconstructed model (its own world frame)."""
    index: int                        # 1 = largest
    image_ids: list                   # scene image ids registered in this model
    point_ids: np.ndarray             # scene point ids of this model
    cloud_name: str                   # "sfm_sparse" for model 1, "sfm_model_<index>" for the others
    initial_pair: tuple               # scene image ids
    mean_reprojection_error_px: float
    mean_track_length: float

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_points(self) -> int:
        return len(self.point_ids)


@dataclass
class SfmResult:
    scene: Scene
    image_ids: list                   # scene image id per input image, in input order
    registered: int                   # in all models together
    num_images: int
    num_points: int                   # in all models together
    mean_track_length: float
    mean_reprojection_error_px: float
    seconds: dict                     # per stage
    reasons: dict                     # image id -> why not registered ("" when registered)
    initial_pair: tuple               # scene image ids (model 1)
    num_verified_pairs: int
    models: int = 1
    stats: dict = field(default_factory=dict)
    reconstructions: list = field(default_factory=list)  # SfmModel, largest first
    warnings: list = field(default_factory=list)          # said once each, also logged
    skipped: list = field(default_factory=list)           # "name: reason" of files left out before extraction
    image_model: dict = field(default_factory=dict)       # image id -> model index (1-based), 0 when unregistered
    image_inliers: dict = field(default_factory=dict)     # image id -> PnP (or two-view) inliers
    image_errors: dict = field(default_factory=dict)      # image id -> mean reprojection error (px), NaN if none


def _reader(ref):
    if ref.frame_index is None:
        def read():
            image, reason = decode_image_file(Path(ref.path))
            if image is None:
                raise ValueError(reason)
            return image
        return read

    def read_frame():
        with open_source(ref.path) as src:  # a video: decode just this frame
            return src.read(ref.frame_index).image
    return read_frame


def _warn(warnings: list, text: str) -> None:
    warnings.append(text)
    log.warning("%s", text)


def run(scene_or_images, options: SfmOptions | None = None, progress=None) -> SfmResult:
    opts = options or SfmOptions()
    progress = progress or NullProgress()
    seconds = {}
    warnings: list = []
    skipped: list = []
    t0 = time.perf_counter()
    if isinstance(scene_or_images, Scene):
        scene = scene_or_images
        ids = sorted(i for i, im in scene.images.items() if im.source is not None)
    else:
        made = scene_from_path(scene_or_images, opts.calib_path, progress)
        scene, ids, skipped = made.scene, made.image_ids, made.skipped
        warnings += made.warnings  # already logged by sfm.inputs
    if len(ids) < 2:
        raise NoInitialPair(f"SfM needs at least two readable images, got {len(ids)}")
    images = [scene.images[i] for i in ids]
    seed = None
    if opts.seed_from_poses:
        seed = [im.cam_from_world for im in images]
        n_posed = sum(p is not None for p in seed)
        if n_posed < 2:
            _warn(warnings, f"seed_from_poses: only {n_posed} of the {len(images)} images have a pose (need 2); "
                            f"starting from an initial pair instead")
            seed = None
    names = [im.name for im in images]
    cam_ids = sorted({im.camera_id for im in images})
    cameras = [scene.cameras[c] for c in cam_ids]
    image_camera = np.array([cam_ids.index(im.camera_id) for im in images])
    seconds["open"] = time.perf_counter() - t0

    t = time.perf_counter()
    frames = [(im.source.path, im.source.frame_index, (cameras[c].width, cameras[c].height), _reader(im.source))
              for im, c in zip(images, image_camera)]
    failures: dict = {}
    feats = extract_all(frames, opts.features, progress, failures)
    for k, reason in failures.items():
        _warn(warnings, f"skipped unreadable image {names[k]}: {reason}")
    duplicates = duplicate_of(feats)
    for k, first in duplicates.items():
        _warn(warnings, f"{names[k]} is identical to {names[first]} (duplicate pictures): both are kept, the "
                        f"pair adds no parallax")
    # Duplicates stay in: a closed loop or a paused camera repeats a view, and PnP registers the copy exactly.
    usable = [empty_features(opts.features) if k in failures else f for k, f in enumerate(feats)]
    seconds["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    pairs = select_pairs(len(images), opts.matching, [f.descriptors for f in usable])
    match_counts: dict = {}
    matches = match_pairs([f.descriptors for f in usable], pairs, opts.matching, progress, match_counts)
    seconds["match"] = time.perf_counter() - t

    t = time.perf_counter()
    per_image_cams = [cameras[c] for c in image_camera]
    keypoints = [f.keypoints_xy for f in usable]
    scales = [f.detection_scale for f in usable]
    inlier_counts: dict = {}
    graph = verify_pairs(per_image_cams, keypoints, scales, matches, opts.verification, progress, inlier_counts)
    seconds["verify"] = time.perf_counter() - t
    flat = rotation_warning(graph)
    if flat:
        _warn(warnings, flat)

    t = time.perf_counter()
    refine = opts.refine_intrinsics
    if refine is None:
        refine = any(c.intrinsics_source != "calib" for c in cameras)
    mopts = replace(opts.mapper, refine_intrinsics=bool(refine))
    try:
        if not graph:
            raise NoInitialPair(explain_no_overlap(names, match_counts, inlier_counts, opts.matching.min_num_matches,
                                                   opts.verification.min_num_inliers))
        result = IncrementalMapper(cameras, image_camera, keypoints, [f.rgb for f in usable], scales, graph, mopts,
                                   progress, names=names, on_model_changed=opts.on_model_changed,
                                   seed_cams_from_world=seed).run()
    except NoInitialPair as exc:
        if flat and "homography" not in str(exc):
            exc.args = (f"{exc} ({flat})",)
        exc.warnings = list(warnings)
        raise
    seconds["map"] = time.perf_counter() - t
    for k in duplicates:
        if result.reasons[k]:
            result.reasons[k] += f" (a duplicate of {names[duplicates[k]]})"
    for k, reason in failures.items():
        result.reasons[k] = f"unreadable: {reason}"

    t = time.perf_counter()
    im_model = result.image_model
    between = sum(1 for p in graph if im_model[p.image1] >= 0 and im_model[p.image2] >= 0
                  and im_model[p.image1] != im_model[p.image2])
    stats = dict(result.stats, matched_pairs=len(matches), verified_pairs=len(graph), duplicates=len(duplicates),
                 unreadable=len(failures) + len(skipped), verified_pairs_between_models=between)
    models = _write(scene, ids, images, cam_ids, feats, result, opts.outlier_removal, stats, warnings)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    n_pts = len(result.points_xyz)
    lengths = np.diff(result.track_ptr)
    reasons = {ids[k]: result.reasons[k] for k in range(len(ids))}
    image_errors = {}
    all_err = np.concatenate([m.track_error for m in result.models]) if result.models else np.zeros(0)
    for k in range(len(ids)):
        e = all_err[result.track_image == k]
        image_errors[ids[k]] = float(e.mean()) if len(e) else float("nan")
    return SfmResult(scene, ids, int(result.registered.sum()), len(ids), n_pts,
                     float(lengths.mean()) if n_pts else 0.0,
                     float(np.average(result.points_error, weights=lengths)) if n_pts else float("nan"),
                     seconds, reasons, (ids[result.initial_pair[0]], ids[result.initial_pair[1]]), len(graph),
                     models=len(models), stats=stats, reconstructions=models, warnings=warnings, skipped=skipped,
                     image_model={ids[k]: int(result.image_model[k]) + 1 for k in range(len(ids))},
                     image_inliers={ids[k]: int(result.inliers[k]) for k in range(len(ids))},
                     image_errors=image_errors)


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


def cloud_name(index: int) -> str:
    return CLOUD_NAME if index == 1 else f"{OTHER_CLOUD_PREFIX}{index}"


def _model_cameras(scene: Scene, cam_ids, model, first_model, image_camera_ids, ids) -> dict:
    """scene camera id per camera index for ``model``: model 1's refined cameras keep the ids; another model's
    intrinsics, when refined differently, get new camera ids (each model has its own, as in COLMAP)."""
    out = {}
    used = {image_camera_ids[k] for k in np.flatnonzero(model.registered)}
    for c, cid in enumerate(cam_ids):
        cam = model.cameras[c]
        if model is first_model or cid not in used or cam == first_model.cameras[c]:
            out[c] = cid
        else:
            new_id = scene.next_camera_id()
            scene.add_camera(replace(cam, camera_id=new_id))
            out[c] = new_id
    return out


def _write(scene: Scene, ids, images, cam_ids, feats, result, outlier_removal, stats: dict, warnings: list) -> list:
    """Cameras, poses, keypoints, point3d ids, points (appended with new ids) and the clouds, in one go."""
    for cid, cam in zip(cam_ids, result.cameras):
        if scene.cameras.get(cid) != cam:
            scene.add_camera(replace(cam, camera_id=cid))
    image_cam_index = [cam_ids.index(im.camera_id) for im in images]
    first = int(scene.points.ids.max()) + 1 if len(scene.points) else 1
    n_pts = len(result.points_xyz)
    point_ids = first + np.arange(n_pts, dtype=np.int64)
    obs_point = np.repeat(np.arange(n_pts), np.diff(result.track_ptr))
    remap = {}
    for model in result.models[1:]:
        remap[id(model)] = _model_cameras(scene, cam_ids, model, result.models[0], image_cam_index, ids)
    with scene._lock:
        for k, im in enumerate(images):
            im.keypoints = feats[k].keypoints_xy.copy()
            p3d = np.full(len(im.keypoints), -1, np.int64)
            s = result.track_image == k
            p3d[result.track_kp[s]] = point_ids[obs_point[s]]
            im.point3d_ids = p3d
            m = result.image_model[k]
            if m > 0:
                im.camera_id = remap[id(result.models[m])][image_cam_index[k]]
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
    return _write_models(scene, ids, result, point_ids, outlier_removal, stats, warnings)


def _write_models(scene: Scene, ids, result, point_ids, outlier_removal, stats: dict, warnings: list) -> list:
    models = []
    removal = []
    lengths = np.diff(result.track_ptr)
    for k, model in enumerate(result.models):
        index = k + 1
        sel = result.point_model == k
        xyz, rgb = result.points_xyz[sel], result.points_rgb[sel]
        name = cloud_name(index)
        if outlier_removal is not None:
            keep = statistical_inliers(xyz, outlier_removal)
            removal.append({"cloud": name, "points": int(len(xyz)), "removed": int((~keep).sum())})
            xyz, rgb = xyz[keep], rgb[keep]
        scene.set_cloud(name, PointCloud(xyz.copy(), rgb.copy()))
        n = int(sel.sum())
        models.append(SfmModel(index, [ids[i] for i in np.flatnonzero(model.registered)], point_ids[sel].copy(), name,
                               (ids[model.initial_pair[0]], ids[model.initial_pair[1]]),
                               float(np.average(result.points_error[sel], weights=lengths[sel])) if n else float("nan"),
                               float(lengths[sel].mean()) if n else 0.0))
    for stale in [c for c in scene.clouds if c.startswith(OTHER_CLOUD_PREFIX) and c[len(OTHER_CLOUD_PREFIX):].isdigit()
                  and int(c[len(OTHER_CLOUD_PREFIX):]) > len(models)]:
        scene.remove_cloud(stale)  # from an earlier run that found more models
    if outlier_removal is not None:
        stats["outlier_removal"] = {"nb_neighbors": int(outlier_removal.nb_neighbors),
                                    "std_ratio": float(outlier_removal.std_ratio), "clouds": removal,
                                    "removed": int(sum(r["removed"] for r in removal))}
        # Asked for, so not a warning; but never silent: in stats, the project metadata and the log.
        log.info("statistical outlier removal (nb_neighbors=%d, std_ratio=%g) dropped %d of %d points from the "
                 "clouds (the scene's 3D points and tracks keep them all)", outlier_removal.nb_neighbors,
                 outlier_removal.std_ratio, stats["outlier_removal"]["removed"], len(result.points_xyz))
    if len(models) > 1:
        between = stats.get("verified_pairs_between_models", 0)
        why = ("the view graph is disconnected" if not between else
               f"{between} verified image pairs link the models, but no image of one could be registered into "
               f"another (the pairs are weak, or match repeated texture)")
        _warn(warnings, f"{why}: {len(models)} models (" +
              ", ".join(f"model {m.index}: {m.num_images} images" for m in models) +
              f"); each has its own world frame. Cloud {CLOUD_NAME!r} is model 1.")
    scene.metadata = dict(scene.metadata, sfm={
        "models": [{"index": m.index, "image_ids": [int(i) for i in m.image_ids], "cloud": m.cloud_name,
                    "points": m.num_points} for m in models],
        "warnings": list(warnings), "outlier_removal": stats.get("outlier_removal")})
    return models


def model_scene(scene: Scene, model: SfmModel) -> Scene:
    """One model cut out as its own Scene (its cameras, registered images, points and cloud), for export."""
    out = Scene()
    image_ids = set(int(i) for i in model.image_ids)
    images = [scene.images[i] for i in sorted(image_ids)]
    for cid in sorted({im.camera_id for im in images}):
        out.add_camera(scene.cameras[cid])
    pts = scene.points
    keep = np.isin(pts.ids, np.asarray(model.point_ids, np.int64))
    lengths = pts.track_lengths()
    keep_obs = np.repeat(keep, lengths)
    sub = Points3D(pts.ids[keep], pts.xyz[keep], pts.rgb[keep], pts.error[keep],
                   np.concatenate(([0], np.cumsum(lengths[keep]))).astype(np.int64),
                   pts.track_image_ids[keep_obs], pts.track_kp_idx[keep_obs])
    own = set(sub.ids.tolist())
    copies = []
    for im in images:
        p3d = np.where(np.isin(im.point3d_ids, list(own)), im.point3d_ids, -1) if len(own) else \
            np.full(len(im.point3d_ids), -1, np.int64)
        copies.append(replace(im, keypoints=im.keypoints.copy(), point3d_ids=p3d))
    out.add_images(copies)
    out.set_points(sub)
    if model.cloud_name in scene.clouds:
        out.set_cloud(CLOUD_NAME, scene.clouds[model.cloud_name].copy())
    out.sources = [dict(s) for s in scene.sources]
    return out
