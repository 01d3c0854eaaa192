"""Incremental mapping as COLMAP does it, on tracks built from the view graph.

Tracks: connected components (union-find) of the verified matches over (image, keypoint) nodes. A
component holding two keypoints of one image more than ``track_max_spread_px`` apart chained different
scene points through a false match (repeated or symmetric structure) and is dropped whole, as GLOMAP's
track establishment does; keypoints of one image closer than that are one feature detected twice, and
the first is kept.
A 3D point is a triangulated track; ``obs_in`` says which of its observations belong to it.

Loop: initial pair (many inliers, homography/essential inlier ratio below a limit, median
triangulation angle above a limit; the limits relax step by step when no pair qualifies) ->
next-best view (most visible 3D points, spread over the image) -> PnP RANSAC + refinement ->
triangulation of the tracks it completes (angle, cheirality, reprojection checks) -> local BA ->
filtering; global BA + filtering + retriangulation whenever the model has grown by ``global_ba_ratio``.

Thresholds in pixels are in *detection* pixels and scaled per image by 1 / detection scale, so that a
max image size of 1000 px on a 2832 px photo keeps the same meaning.

Seeding (``seed_cams_from_world``, e.g. SLAM keyframe poses): the posed images form the first model's
start instead of an initial pair: their tracks are triangulated with the given poses, bundle adjusted (the
first posed image fixed; the others refined, as SLAM poses are noisy) and the other images are registered
incrementally as usual. The seed's world frame (and scale) is kept.

Live growth: ``on_model_changed(snapshot)`` is called after the start of a model and after every
registration, with plain arrays (see ``IncrementalMapper.snapshot``); throttling is the caller's job.

Several models, as COLMAP makes them: when no further image registers, a new model starts from the
best initial pair among the images no model holds yet, until no pair qualifies. Each model has its own
world frame, scale and refined intrinsics. Models with fewer than ``min_model_size`` images are dropped
(unless none is larger); the rest come back largest first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geometry.absolute_pose import AbsolutePoseOptions, PoseEstimationFailed, estimate_absolute_pose
from geometry.align import umeyama
from geometry.bundle_adjustment import BAOptions, BAProblem, bundle_adjust
from geometry.camera_models import unproject
from geometry.triangulation import max_triangulation_angles, reprojection_errors, triangulate_multiview
from scene.errors import ParallaxError
from scene.progress import Cancelled
from scene.rigid import Rigid3d, matrix_to_quat_wxyz, quat_wxyz_to_matrix

STAGE = "map"


class NoInitialPair(ParallaxError):
    """No pair of images could start a model."""


@dataclass(frozen=True)
class MapperOptions:
    init_min_num_inliers: int = 100
    init_min_tri_angle_deg: float = 16.0
    init_max_he_ratio: float = 0.8
    init_max_trials: int = 5             # pairs tried per relaxation level
    min_tri_angle_deg: float = 1.5
    max_reproj_px: float = 4.0           # detection pixels
    abs_pose_min_num_inliers: int = 30
    abs_pose_min_inlier_ratio: float = 0.25
    max_registration_trials: int = 2     # per image, reset when the model grows
    local_ba_num_images: int = 6
    local_ba_max_iterations: int = 25
    global_ba_max_iterations: int = 50
    global_ba_ratio: float = 1.2
    loss: str = "cauchy"
    loss_scale_px: float = 1.0           # detection pixels
    refine_intrinsics: bool = False      # focal length in global BA (uncalibrated cameras only) ...
    refine_distortion: bool = True       # ... and the model's distortion (SIMPLE_RADIAL k1), as COLMAP's default
    multiple_models: bool = True         # False: stop after the first model
    max_num_models: int = 50
    min_model_size: int = 3              # registered images; smaller models are dropped unless none is larger
    track_max_spread_px: float = 10.0    # detection pixels between two keypoints of one image in a track (GLOMAP: 10)


@dataclass
class Reconstruction:
    """Images (registered flags, poses), intrinsics and points with CSR tracks over the mapper's input images."""
    registered: np.ndarray               # (n,) bool: registered images
    cams_from_world: list                # Rigid3d or None per image
    cameras: list                        # refined intrinsics (same order as given)
    points_xyz: np.ndarray               # (M, 3)
    points_rgb: np.ndarray               # (M, 3) uint8
    points_error: np.ndarray             # (M,) mean reprojection error, camera pixels
    track_ptr: np.ndarray                # (M + 1,)
    track_image: np.ndarray              # image index per observation
    track_kp: np.ndarray                 # keypoint index per observation
    initial_pair: tuple


@dataclass
class ModelResult(Reconstruction):
    """One model: its images, poses in its own world frame, its intrinsics and its points."""
    track_error: np.ndarray = field(default_factory=lambda: np.zeros(0))  # reprojection error per observation

    @property
    def num_images(self) -> int:
        return int(self.registered.sum())


@dataclass
class MapperResult(Reconstruction):
    """All kept models (``models``, largest first) and their union in the old single-model fields:
    points of every model concatenated (``point_model`` says whose), poses from each image's model,
    ``cameras`` and ``initial_pair`` of the largest model."""
    reasons: list                        # per image: "" when registered, else why not
    inliers: np.ndarray                  # (n,) PnP inliers (initial pair: two-view inliers)
    stats: dict = field(default_factory=dict)
    models: list = field(default_factory=list)        # ModelResult, largest first
    point_model: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) index into models
    image_model: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (n,) index or -1


def build_tracks(keypoints: list, pairs: list, max_spread_px=10.0,
                 stats: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track_ptr, obs_image, obs_kp) from verified pairs (``PairGeometry`` with .image1/.image2/.matches).
    ``keypoints[i]``: (N_i, 2) positions of image i; ``max_spread_px``: a number or one per image. ``stats``
    (optional) receives ``inconsistent_tracks``: the components dropped."""
    num_keypoints = [len(k) for k in keypoints]
    offsets = np.concatenate(([0], np.cumsum(num_keypoints))).astype(np.int64)
    n_nodes = int(offsets[-1])
    if stats is not None:
        stats["inconsistent_tracks"] = 0
    if not pairs or n_nodes == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = np.concatenate([offsets[p.image1] + p.matches[:, 0] for p in pairs])
    b = np.concatenate([offsets[p.image2] + p.matches[:, 1] for p in pairs])
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    node_image = np.repeat(np.arange(len(num_keypoints)), num_keypoints)
    node_kp = np.arange(n_nodes) - offsets[node_image]
    used = np.zeros(n_nodes, bool)
    used[a] = used[b] = True
    nodes = np.flatnonzero(used)  # ascending: per image, by keypoint index
    lab, img = labels[nodes], node_image[nodes]
    xy = np.vstack([np.asarray(k, np.float64).reshape(-1, 2) for k in keypoints])[nodes]
    # Per (component, image): the bounding-box diagonal of its keypoints (their distance when two).
    key = lab.astype(np.int64) * len(num_keypoints) + img
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(key[order]) != 0])
    lo = np.minimum.reduceat(xy[order], starts)
    hi = np.maximum.reduceat(xy[order], starts)
    spread = np.hypot(*(hi - lo).T)
    limit = np.broadcast_to(np.asarray(max_spread_px, np.float64), (len(num_keypoints),))
    bad_lab = np.unique(lab[order][starts][spread > limit[img[order][starts]]])
    if stats is not None:
        stats["inconsistent_tracks"] = int(len(bad_lab))
    first = np.zeros(len(nodes), bool)
    first[order[starts]] = True  # the first (lowest keypoint index) of each image in each component
    keep = first & ~np.isin(lab, bad_lab)
    nodes, lab = nodes[keep], lab[keep]
    _, inv, cnt = np.unique(lab, return_inverse=True, return_counts=True)
    keep = cnt[inv] >= 2
    nodes, lab = nodes[keep], lab[keep]
    order = np.lexsort((node_image[nodes], lab))
    nodes, lab = nodes[order], lab[order]
    _, counts = np.unique(lab, return_counts=True)
    ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return ptr, node_image[nodes].astype(np.int64), node_kp[nodes].astype(np.int64)


@dataclass(frozen=True)
class _Start:
    """How a model started: an initial pair, or the first two of the seeded (posed) images."""
    image1: int
    image2: int
    num_inliers: int


class IncrementalMapper:
    def __init__(self, cameras, image_camera, keypoints, rgb, scales, pairs, options: MapperOptions | None = None,
                 progress=None, names: list | None = None,
                 on_model_changed: Optional[Callable[[dict], None]] = None,
                 seed_cams_from_world: Optional[list] = None):
        self.opts = options or MapperOptions()
        self.on_model_changed = on_model_changed
        self.seed = seed_cams_from_world  # Rigid3d or None per image
        self.names = names  # image names for messages
        # Calibrated cameras keep their intrinsics when others (EXIF, guess) are refined.
        self._calibrated = np.array([c.intrinsics_source == "calib" for c in cameras], bool)
        self.cameras = list(cameras)
        self.image_camera = np.asarray(image_camera, np.int64)
        self.keypoints = keypoints
        self.rgb = rgb
        self.n = len(keypoints)
        self.pairs = pairs
        self.progress = progress
        self.px = 1.0 / np.asarray(scales, np.float64)  # camera pixels per detection pixel, per image
        track_stats: dict = {}
        self.track_ptr, self.obs_image, self.obs_kp = build_tracks(keypoints, pairs,
                                                                   self.opts.track_max_spread_px * self.px, track_stats)
        self.T = len(self.track_ptr) - 1
        self.obs_track = np.repeat(np.arange(self.T), np.diff(self.track_ptr))
        self.obs_xy = np.zeros((len(self.obs_image), 2))
        for i in range(self.n):
            s = self.obs_image == i
            self.obs_xy[s] = keypoints[i][self.obs_kp[s]]
        self.obs_of_image = [np.flatnonzero(self.obs_image == i) for i in range(self.n)]
        self.obs_rgb = np.zeros((len(self.obs_image), 3), np.uint8)
        for i in range(self.n):
            self.obs_rgb[self.obs_of_image[i]] = np.asarray(rgb[i])[self.obs_kp[self.obs_of_image[i]]]
        self._compute_rays()
        self.R = np.repeat(np.eye(3)[None], self.n, axis=0)
        self.t = np.zeros((self.n, 3))
        self.registered = np.zeros(self.n, bool)
        self.xyz = np.zeros((self.T, 3))
        self.valid = np.zeros(self.T, bool)
        self.obs_in = np.zeros(len(self.obs_image), bool)
        self.anchor = -1
        self.reasons = ["not tried"] * self.n
        self.inliers = np.zeros(self.n, np.int64)
        self.stats = {"local_ba": 0, "global_ba": 0, "registration_failures": 0, "refinement_retries": 0,
                      **track_stats}

    # --- helpers ----------------------------------------------------------------------------
    def _compute_rays(self):
        self.obs_rays = np.zeros((len(self.obs_image), 3))
        for i in range(self.n):
            s = self.obs_image == i
            if s.any():
                self.obs_rays[s] = unproject(self.cameras[self.image_camera[i]], self.obs_xy[s])

    def _P(self):
        return np.concatenate((self.R, self.t[:, :, None]), axis=2)

    def _check_stop(self, what: str):
        if self.progress is not None and self.progress.should_stop():
            raise Cancelled(f"mapping cancelled {what}")

    def _report(self, msg: str, taken: np.ndarray | None = None, done: int | None = None):
        if self.progress is not None:
            if done is None:
                done = int(self.registered.sum()) + (0 if taken is None else int((taken & ~self.registered).sum()))
            self.progress.report(STAGE, done, self.n, msg)

    def _csr(self, obs: np.ndarray):
        """obs sorted by track -> (tracks, ptr)."""
        obs = obs[np.argsort(self.obs_track[obs], kind="stable")]
        tracks, counts = np.unique(self.obs_track[obs], return_counts=True)
        return obs, tracks, np.concatenate(([0], np.cumsum(counts))).astype(np.int64)

    def _errors(self, obs: np.ndarray, xyz_per_obs_track: np.ndarray) -> np.ndarray:
        n = len(obs)
        ptr = np.arange(n + 1, dtype=np.int64)
        return reprojection_errors(self.cameras, self._P(), xyz_per_obs_track, self.obs_xy[obs], ptr,
                                   self.obs_image[obs], self.image_camera)

    # --- triangulation and filtering ---------------------------------------------------------
    def triangulate(self, tracks: np.ndarray) -> int:
        """Triangulate the given tracks that have no point yet from their registered observations."""
        tracks = tracks[~self.valid[tracks]]
        if len(tracks) == 0:
            return 0
        want = np.zeros(self.T, bool)
        want[tracks] = True
        obs = np.flatnonzero(want[self.obs_track] & self.registered[self.obs_image])
        P = self._P()
        thr = self.opts.max_reproj_px * self.px
        for attempt in range(2):  # second pass: without the observations the first rejected
            obs, trk, ptr = self._csr(obs)
            keep_t = np.diff(ptr) >= 2
            sel = np.repeat(keep_t, np.diff(ptr))
            obs, trk, ptr = obs[sel], trk[keep_t], np.concatenate(([0], np.cumsum(np.diff(ptr)[keep_t])))
            if len(trk) == 0:
                return 0
            pts, ok = triangulate_multiview(P, ptr, self.obs_image[obs], self.obs_rays[obs])
            pts_obs = np.repeat(np.where(ok[:, None], pts, 0.0), np.diff(ptr), axis=0)
            err = self._errors(obs, pts_obs)
            good = (err <= thr[self.obs_image[obs]]) & np.repeat(ok, np.diff(ptr))
            if good.all() or attempt == 1:
                break
            obs = obs[good]
        angles = np.degrees(max_triangulation_angles(P, ptr, self.obs_image[obs], np.where(ok[:, None], pts, 0.0)))
        accept = ok & (angles >= self.opts.min_tri_angle_deg) & (np.add.reduceat(good, ptr[:-1]) == np.diff(ptr))
        self.xyz[trk[accept]] = pts[accept]
        self.valid[trk[accept]] = True
        self.obs_in[obs[np.repeat(accept, np.diff(ptr))]] = True
        return int(accept.sum())

    def filter_points(self, tracks: np.ndarray | None = None) -> int:
        """Drop observations above the reprojection limit, then points with < 2 observations or too small an angle."""
        sel = self.valid if tracks is None else np.zeros(self.T, bool)
        if tracks is not None:
            sel[tracks] = self.valid[tracks]
        obs = np.flatnonzero(self.obs_in & sel[self.obs_track])
        if len(obs) == 0:
            return 0
        err = self._errors(obs, self.xyz[self.obs_track[obs]])
        bad = ~(err <= self.opts.max_reproj_px * self.px[self.obs_image[obs]])
        self.obs_in[obs[bad]] = False
        obs = obs[~bad]
        obs, trk, ptr = self._csr(obs)
        n_obs = np.diff(ptr)
        angles = np.degrees(max_triangulation_angles(self._P(), ptr, self.obs_image[obs], self.xyz[trk]))
        drop = np.zeros(self.T, bool)
        drop[np.flatnonzero(sel)] = True  # points of the selection left without observations
        drop[trk] = (n_obs < 2) | (angles < self.opts.min_tri_angle_deg)
        drop &= sel
        self.valid[drop] = False
        self.obs_in[drop[self.obs_track]] = False
        return int(bad.sum() + drop.sum())

    # --- bundle adjustment --------------------------------------------------------------------
    def bundle(self, var_images: np.ndarray, tracks: np.ndarray | None, max_iterations: int, refine: bool):
        sel = self.valid.copy() if tracks is None else np.zeros(self.T, bool)
        if tracks is not None:
            sel[tracks] = self.valid[tracks]
        obs = np.flatnonzero(self.obs_in & sel[self.obs_track] & self.registered[self.obs_image])
        if len(obs) == 0:
            return None
        images = np.unique(self.obs_image[obs])
        tracks_used = np.unique(self.obs_track[obs])
        img_slot = np.full(self.n, -1, np.int64)
        img_slot[images] = np.arange(len(images))
        pt_slot = np.full(self.T, -1, np.int64)
        pt_slot[tracks_used] = np.arange(len(tracks_used))
        is_var = np.zeros(self.n, bool)
        is_var[var_images] = True
        pose_fixed = ~is_var[images] | (images == self.anchor)
        scale = float(np.mean(self.px[images])) * self.opts.loss_scale_px
        problem = BAProblem(self.cameras, self.image_camera[images], matrix_to_quat_wxyz_batch(self.R[images]),
                            self.t[images], self.xyz[tracks_used], img_slot[self.obs_image[obs]],
                            pt_slot[self.obs_track[obs]], self.obs_xy[obs], pose_fixed=pose_fixed,
                            intrinsics_fixed=self._calibrated if refine else None)
        options = BAOptions(max_iterations=max_iterations, loss=self.opts.loss, loss_scale_px=scale,
                            refine_focal=refine, refine_principal_point=False,
                            refine_distortion=refine and self.opts.refine_distortion)
        result = bundle_adjust(problem, options)
        for k, i in enumerate(images):
            self.R[i] = quat_wxyz_to_matrix(result.quat_wxyz[k])
            self.t[i] = result.translation[k]
        self.xyz[tracks_used] = result.points_world
        if refine:
            self.cameras = list(result.cameras)
            self._compute_rays()
        return result

    def local_ba(self, image: int):
        obs = self.obs_of_image[image]
        obs = obs[self.obs_in[obs]]
        tracks = np.unique(self.obs_track[obs])
        # Most connected registered images: those sharing the most of these points.
        has = np.zeros(self.T, bool)
        has[tracks] = True
        shared = self.obs_in & has[self.obs_track]
        counts = np.bincount(self.obs_image[shared], minlength=self.n)
        counts[image] = 0
        neighbours = np.argsort(-counts)[:self.opts.local_ba_num_images - 1]
        neighbours = neighbours[counts[neighbours] > 0]
        var = np.concatenate(([image], neighbours))
        # Points seen by any variable image.
        obs_var = np.flatnonzero(self.obs_in & np.isin(self.obs_image, var))
        tracks = np.unique(self.obs_track[obs_var])
        self.bundle(var, tracks, self.opts.local_ba_max_iterations, refine=False)
        self.stats["local_ba"] += 1
        self.filter_points(tracks)

    def global_ba(self):
        var = np.flatnonzero(self.registered)
        self.bundle(var, None, self.opts.global_ba_max_iterations, refine=self.opts.refine_intrinsics)
        self.stats["global_ba"] += 1
        self.filter_points()

    def retriangulate(self) -> int:
        return self.triangulate(np.flatnonzero(~self.valid))

    # --- initialisation and registration ----------------------------------------------------
    def _try_initial_pair(self, pair) -> bool:
        i, j = pair.image1, pair.image2
        self.R[:] = np.eye(3)
        self.t[:] = 0.0
        self.registered[:] = False
        self.valid[:] = False
        self.obs_in[:] = False
        self.R[j] = pair.cam2_from_cam1.rotation
        self.t[j] = pair.cam2_from_cam1.translation
        self.registered[[i, j]] = True
        self.anchor = i
        has_i = np.zeros(self.T, bool)
        has_i[self.obs_track[self.obs_of_image[i]]] = True
        both = np.unique(self.obs_track[self.obs_of_image[j]][has_i[self.obs_track[self.obs_of_image[j]]]])
        n = self.triangulate(both)
        if n < self.opts.abs_pose_min_num_inliers:
            return False
        self.bundle(np.array([i, j]), None, self.opts.global_ba_max_iterations, refine=False)
        self.filter_points()
        return int(self.valid.sum()) >= self.opts.abs_pose_min_num_inliers

    def initialize_from_poses(self, cams_from_world: list) -> _Start:
        """Start the model from the given poses (Rigid3d or None per image): triangulate, bundle adjust, filter."""
        posed = [i for i, p in enumerate(cams_from_world) if p is not None]
        if len(posed) < 2:
            raise NoInitialPair(f"seeding needs at least two posed images, got {len(posed)}")
        self.R[:] = np.eye(3)
        self.t[:] = 0.0
        self.registered[:] = False
        self.valid[:] = False
        self.obs_in[:] = False
        for i in posed:
            self.R[i] = cams_from_world[i].rotation
            self.t[i] = cams_from_world[i].translation
        self.registered[posed] = True
        self.anchor = posed[0]
        self.triangulate(np.arange(self.T))
        if int(self.valid.sum()) < self.opts.abs_pose_min_num_inliers:
            raise NoInitialPair(f"seeding: the {len(posed)} posed images triangulate only {int(self.valid.sum())} "
                                f"points (need {self.opts.abs_pose_min_num_inliers}); are their poses right?")
        self.bundle(np.array(posed), None, self.opts.global_ba_max_iterations, refine=False)
        self.filter_points()
        self.retriangulate()
        counts = np.bincount(self.obs_image[self.obs_in], minlength=self.n)
        for i in posed:
            self.inliers[i] = counts[i]
            self.reasons[i] = ""
        return _Start(posed[0], posed[1], int(counts[posed[0]]))

    def initialize(self, taken: np.ndarray | None = None):
        """The initial pair of a new model among images not in ``taken`` (relaxing the limits level by level)."""
        o = self.opts
        levels = [(o.init_min_num_inliers, o.init_min_tri_angle_deg, o.init_max_he_ratio)]
        for a in (8.0, 4.0, 2.0, 1.0):
            if a < o.init_min_tri_angle_deg:
                levels.append((max(o.abs_pose_min_num_inliers, o.init_min_num_inliers // 2), a, o.init_max_he_ratio))
        levels.append((o.abs_pose_min_num_inliers, o.min_tri_angle_deg, 1.0e9))
        free = np.ones(self.n, bool) if taken is None else ~taken
        ranked = sorted((p for p in self.pairs if p.cam2_from_cam1 is not None and free[p.image1] and free[p.image2]),
                        key=lambda p: -p.num_inliers)
        tried = set()
        for min_inl, min_angle, max_he in levels:
            candidates = [p for p in ranked if p.num_inliers >= min_inl and p.median_angle_deg >= min_angle
                          and p.he_ratio <= max_he and (p.image1, p.image2) not in tried]
            for p in candidates[:o.init_max_trials]:
                self._check_stop("while choosing the initial pair")
                tried.add((p.image1, p.image2))
                if self._try_initial_pair(p):
                    return p
        if not ranked:
            raise NoInitialPair("no initial pair: no image pair passed geometric verification")
        best = ranked[0]
        why = ""
        if best.he_ratio > o.init_max_he_ratio and best.median_angle_deg < o.min_tri_angle_deg:
            why = (" -- the pairs are explained by a homography with almost no parallax (a camera that only "
                   "rotated, or a single plane), so there is nothing to triangulate")
        raise NoInitialPair(f"no initial pair: the best pair ({self._name(best.image1)} and {self._name(best.image2)}) "
                            f"has {best.num_inliers} inliers, median triangulation angle "
                            f"{best.median_angle_deg:.2f} deg (need {o.min_tri_angle_deg:g}), homography/essential "
                            f"inlier ratio {best.he_ratio:.2f}{why}")

    def _name(self, image: int) -> str:
        return self.names[image] if self.names is not None else f"image {image}"

    def next_images(self, taken: np.ndarray | None = None) -> list[int]:
        """Unregistered images ordered by visible 3D points times their spread over a 4 x 4 grid."""
        scores = []
        free = ~self.registered if taken is None else ~(self.registered | taken)
        for i in np.flatnonzero(free):
            obs = self.obs_of_image[i]
            obs = obs[self.valid[self.obs_track[obs]]]
            if len(obs) < self.opts.abs_pose_min_num_inliers:
                continue
            cam = self.cameras[self.image_camera[i]]
            xy = self.obs_xy[obs]
            cells = np.unique(np.clip((xy[:, 0] * 4 / cam.width).astype(int), 0, 3) * 4
                              + np.clip((xy[:, 1] * 4 / cam.height).astype(int), 0, 3))
            scores.append((len(obs) * len(cells), int(i)))
        return [i for _, i in sorted(scores, reverse=True)]

    def register(self, image: int) -> bool:
        obs = self.obs_of_image[image]
        obs = obs[self.valid[self.obs_track[obs]]]
        cam = self.cameras[self.image_camera[image]]
        opts = AbsolutePoseOptions(max_error_px=self.opts.max_reproj_px * self.px[image],
                                   min_num_inliers=self.opts.abs_pose_min_num_inliers)
        try:
            pose, mask, n_in = estimate_absolute_pose(cam, self.xyz[self.obs_track[obs]], self.obs_xy[obs], opts)
        except PoseEstimationFailed as exc:
            self.reasons[image] = str(exc)
            return False
        if n_in < self.opts.abs_pose_min_inlier_ratio * len(obs):
            self.reasons[image] = f"PnP inlier ratio {n_in}/{len(obs)} below {self.opts.abs_pose_min_inlier_ratio:g}"
            return False
        self.R[image] = pose.rotation
        self.t[image] = pose.translation
        self.registered[image] = True
        self.obs_in[obs[mask]] = True
        self.inliers[image] = n_in
        self.reasons[image] = ""
        return True

    def snapshot(self, model: int) -> dict:
        """The model being built, as plain arrays: registered input indices, their world_from_cam (4 x 4 each)
        and the 3D points with the colour of one of their observations."""
        reg = np.flatnonzero(self.registered)
        world_from_cam = []
        for i in reg:
            m = np.eye(4)
            m[:3, :3] = self.R[i].T
            m[:3, 3] = -self.R[i].T @ self.t[i]
            world_from_cam.append(m)
        obs = np.flatnonzero(self.obs_in & self.valid[self.obs_track])
        tracks, first = np.unique(self.obs_track[obs], return_index=True)
        return {"model": int(model), "registered_image_indices": reg.astype(np.int64), "world_from_cam": world_from_cam,
                "points_xyz": self.xyz[tracks].copy(), "points_rgb": self.obs_rgb[obs[first]].copy()}

    def _notify(self, model: int) -> None:
        if self.on_model_changed is not None:
            self.on_model_changed(self.snapshot(model))

    def _grow(self, taken: np.ndarray, model: int = 1) -> None:
        """Register images into the current model until none more can be, then final BA and retriangulation."""
        last_global = max(2, int(self.registered.sum()))
        trials = np.zeros(self.n, np.int64)
        refined = False  # a global refinement since the last registration
        while True:
            registered_any = False
            for i in self.next_images(taken):
                if trials[i] >= self.opts.max_registration_trials:
                    continue
                self._check_stop(f"after {int(self.registered.sum())} images")
                if not self.register(i):
                    trials[i] += 1
                    self.stats["registration_failures"] += 1
                    continue
                registered_any = True
                trials[:] = 0
                self.triangulate(np.unique(self.obs_track[self.obs_of_image[i]]))
                self.local_ba(i)
                if self.registered.sum() >= self.opts.global_ba_ratio * last_global:
                    self.global_ba()
                    self.retriangulate()
                    last_global = int(self.registered.sum())
                self._report(f"registered image {i}: {self.inliers[i]} inliers, {int(self.valid.sum())} points",
                             taken)
                self._notify(model)
                refined = False
                break  # re-rank after every registration
            if not registered_any:
                if refined or not len(self.next_images(taken)):
                    break
                # As COLMAP: when nothing registers, refine the whole model (global BA, retriangulation: more
                # and better points) and give every remaining image its trials again before giving up.
                self._check_stop("before a global refinement")
                self.global_ba()
                self.retriangulate()
                last_global = int(self.registered.sum())
                trials[:] = 0
                refined = True
                self.stats["refinement_retries"] += 1
        self._check_stop("before the final bundle adjustment")
        self.global_ba()
        self.retriangulate()
        self.global_ba()
        if self.seed is not None and model == 1:
            self._align_to_seed()
        self._notify(model)

    def _align_to_seed(self) -> None:
        """Move the model onto the seed poses (Sim(3) of the seeded camera centres): bundle adjustment fixed only
        the first seeded pose, so the others' noise and the free scale would otherwise set the frame."""
        posed = [i for i, p in enumerate(self.seed) if p is not None and self.registered[i]]
        if len(posed) < 3:
            return  # two centres leave the rotation about their line free: keep the first seed's frame
        est = np.array([-self.R[i].T @ self.t[i] for i in posed])
        ref = np.array([self.seed[i].center() for i in posed])
        try:
            rotation, translation, scale = umeyama(est, ref, with_scale=True)
        except ParallaxError:  # collinear seeded centres: keep the first seed's frame
            return
        reg = np.flatnonzero(self.registered)
        centres = scale * (-np.einsum("nji,nj->ni", self.R[reg], self.t[reg])) @ rotation.T + translation
        self.R[reg] = self.R[reg] @ rotation.T
        self.t[reg] = -np.einsum("nij,nj->ni", self.R[reg], centres)
        self.xyz[self.valid] = scale * self.xyz[self.valid] @ rotation.T + translation

    def run(self) -> MapperResult:
        if self.T == 0:
            raise NoInitialPair("no initial pair: no tracks (no verified matches between any two images)")
        self._check_stop("before it started")
        initial_cameras = list(self.cameras)
        taken = np.zeros(self.n, bool)
        models: list[ModelResult] = []
        while True:
            if models:
                if self.cameras != initial_cameras:  # a new model starts from the given intrinsics
                    self.cameras = list(initial_cameras)
                    self._compute_rays()
                try:
                    init = self.initialize(taken)
                except NoInitialPair:
                    break
            elif self.seed is not None:
                init = self.initialize_from_poses(self.seed)
            else:
                init = self.initialize(taken)
            if not (self.seed is not None and not models):
                self.inliers[[init.image1, init.image2]] = init.num_inliers
                self.reasons[init.image1] = self.reasons[init.image2] = ""
            how = (f"seeded by {int(self.registered.sum())} posed images" if self.seed is not None and not models
                   else f"initial pair {init.image1}-{init.image2}")
            self._report(f"model {len(models) + 1}: {how}: {int(self.valid.sum())} points", taken)
            self._notify(len(models) + 1)
            self._grow(taken, len(models) + 1)
            models.append(self._model(init))
            taken |= self.registered
            if not self.opts.multiple_models or len(models) >= self.opts.max_num_models or (~taken).sum() < 2:
                break
        models.sort(key=lambda m: -m.num_images)
        kept = [m for m in models if m.num_images >= self.opts.min_model_size] or models[:1]
        for m in models[len(kept):]:
            for i in np.flatnonzero(m.registered):
                self.reasons[i] = (f"its model had only {m.num_images} images (models under "
                                   f"{self.opts.min_model_size} images are dropped)")
                self.inliers[i] = 0
        for i in range(self.n):
            if self.reasons[i] == "not tried":
                self.reasons[i] = "too few matches to any model's 3D points (not connected to an initial pair?)"
        self.stats["models_started"] = len(models)
        result = _combine(kept, self.n, self.reasons, self.inliers, self.stats)
        self._report(f"done: {int(result.registered.sum())} of {self.n} images in {len(kept)} model(s), "
                     f"{len(result.points_xyz)} points", np.zeros(self.n, bool), done=int(result.registered.sum()))
        return result

    def _model(self, init) -> ModelResult:
        obs = np.flatnonzero(self.obs_in & self.valid[self.obs_track])
        obs, trk, ptr = self._csr(obs)
        err = self._errors(obs, self.xyz[self.obs_track[obs]])
        counts = np.diff(ptr)
        mean_err = np.add.reduceat(err, ptr[:-1]) / counts if len(trk) else np.zeros(0)
        rgb = self.obs_rgb[obs].astype(np.float64)
        mean_rgb = (np.add.reduceat(rgb, ptr[:-1], axis=0) / counts[:, None]) if len(trk) else np.zeros((0, 3))
        poses = [Rigid3d.from_rotation(self.R[i], self.t[i]) if self.registered[i] else None for i in range(self.n)]
        return ModelResult(self.registered.copy(), poses, list(self.cameras), self.xyz[trk].copy(),
                           np.clip(np.round(mean_rgb), 0, 255).astype(np.uint8), mean_err, ptr,
                           self.obs_image[obs].copy(), self.obs_kp[obs].copy(), (init.image1, init.image2),
                           np.asarray(err, np.float64).copy())


def _combine(models: list, n: int, reasons: list, inliers: np.ndarray, stats: dict) -> MapperResult:
    """The union of the kept models in MapperResult's flat fields."""
    registered = np.zeros(n, bool)
    image_model = np.full(n, -1, np.int64)
    poses = [None] * n
    for k, m in enumerate(models):
        for i in np.flatnonzero(m.registered):
            registered[i] = True
            image_model[i] = k
            poses[i] = m.cams_from_world[i]
    ptr = [np.zeros(1, np.int64)]
    for m in models:
        ptr.append(ptr[-1][-1] + m.track_ptr[1:])
    return MapperResult(
        registered, poses, list(models[0].cameras),
        np.vstack([m.points_xyz for m in models]).reshape(-1, 3),
        np.vstack([m.points_rgb for m in models]).reshape(-1, 3).astype(np.uint8),
        np.concatenate([m.points_error for m in models]),
        np.concatenate(ptr).astype(np.int64),
        np.concatenate([m.track_image for m in models]).astype(np.int64),
        np.concatenate([m.track_kp for m in models]).astype(np.int64),
        models[0].initial_pair, list(reasons), inliers.copy(), dict(stats), list(models),
        np.concatenate([np.full(len(m.points_xyz), k, np.int64) for k, m in enumerate(models)]), image_model)


def matrix_to_quat_wxyz_batch(rotations: np.ndarray) -> np.ndarray:
    return np.array([matrix_to_quat_wxyz(r) for r in rotations]).reshape(-1, 4)
