"""Centres for the frames posed by rotation alone, solved at the end of a run (``System.finish``).

Rotation-only tracking (``slam.rotation_tracking``) holds a frame's centre where the last map-posed frame
left it. That is right for a camera on a tripod, but a hand that pans fast also moves a few centimetres, and
the map cannot see that: the frames look at a region the map never reached, with too little parallax between
neighbours to triangulate it while tracking. Over the whole run there is enough. Each such frame's keypoints
are followed into every kept frame whose optical axis is within ``max_axis_angle_deg`` of its own:

1. ORB matches where the two rotations predict them, kept when a known-rotation two-point RANSAC on the
   translation direction agrees (or the bearings agree as a pure rotation would);
2. each match refined to sub-pixel by Lucas-Kanade against the anchor frame's patch, on the other frame
   warped into the anchor's view by the rotation between them (so the patch compares like with like). ORB
   keypoints sit on FAST's integer grid, about 0.6 px from the true spot; the refined ones are 10x closer;
3. a stretch of consecutive rotation-only frames whose refined matches show no parallax turned in place: it
   keeps its held centres (nothing would fix them: a solve let a rendered tripod pan drift 4-6 cm);
4. one bundle adjustment over the tracks solves every frame they touch (one map-posed frame held), and a
   Sim(3) from its map-posed frames onto their map poses brings them all into the map's frame. A solve that
   puts the map-posed frames far from their map poses is refused.

``System.finish`` gives the solved frames these poses, moves the keyframes among them and lets the rest of the
map settle around those (``slam.mapping.global_bundle_adjustment`` with them held). Images are kept only around rotation-only frames
(``KeptFrames``), within a byte budget. The solve works in undistorted pinhole pixels.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from geometry.align import umeyama_poses
from geometry.bundle_adjustment import BAOptions, BAProblem, bundle_adjust
from geometry.camera_models import project, split_params
from geometry.matching import match_by_projection
from scene.camera import Camera
from scene.errors import ParallaxError
from scene.rigid import Rigid3d
from slam.features import _as_gray
from slam.rotation_tracking import bearings, kabsch_rotations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RotationRefinementOptions:
    enabled: bool = True
    context_frames: int = 45             # frames kept before and after a rotation-only frame (1.5 s at 30 fps)
    max_bytes: int = 256 * 2 ** 20       # kept grey images, at most
    max_axis_angle_deg: float = 40.0     # partner frames: optical axes within this angle of the anchor's
    anchors_per_frame: int = 170         # keypoints followed from each rotation-only frame
    search_radius: float = 25.0          # ORB search window (x keypoint scale) around the predicted position
    max_hamming: int = 50
    epipolar_px: float = 1.5             # RANSAC inlier: off the epipolar plane by at most this (at the focal)
    klt_window: int = 15
    klt_levels: int = 2
    max_refinement_px: float = 2.0       # a refined match further than this from its ORB keypoint is dropped
    # A stretch of rotation-only frames whose neighbours' refined matches sit closer than this (median) to
    # where the rotations alone put them turned in place: its frames keep their held centre.
    min_parallax_px: float = 0.12         # measured: 0.04 on a rendered tripod pan, 0.25-0.35 on fast rotation
    huber_px: float = 1.0
    max_iterations: int = 400
    min_observations: int = 30           # a rotation-only frame with fewer refined ones keeps its pose
    # RMS distance of the solve's map-posed frames from their map poses, as a fraction of the scene depth:
    # beyond it the solve is refused (the rays it gives them would be off by more than about a degree).
    max_alignment_error: float = 0.02


@dataclass
class KeptFrame:
    grey: np.ndarray                     # (H, W) uint8, the frame as given (distorted)
    features: object                     # slam.features.Features
    rotation_only: bool


class KeptFrames:
    """The grey images and features of the frames around rotation-only frames: the last ``context_frames``
    frames are always at hand; a rotation-only frame keeps them, itself and the next ``context_frames``."""

    def __init__(self, options: RotationRefinementOptions):
        self.options = options
        self.kept: dict[int, KeptFrame] = {}
        self._recent: deque = deque(maxlen=options.context_frames)
        self._keep_until = -1
        self._bytes = 0
        self.full = False

    def offer(self, index: int, image: np.ndarray, features, rotation_only: bool) -> None:
        if not self.options.enabled or self.full:
            return
        frame = KeptFrame(_as_gray(image), features, rotation_only)
        if rotation_only:
            while self._recent:
                self._keep(*self._recent.popleft())
            self._keep_until = index + self.options.context_frames
        if rotation_only or index <= self._keep_until:
            self._keep(index, frame)
        else:
            self._recent.append((index, frame))

    def _keep(self, index: int, frame: KeptFrame) -> None:
        size = frame.grey.nbytes + frame.features.descriptors.nbytes + 64 * len(frame.features)
        if self._bytes + size > self.options.max_bytes:
            self.full = True
            self._recent.clear()
            log.info("SLAM: no more frames kept for the rotation-only refinement (%d MB budget reached)",
                     self.options.max_bytes // 2 ** 20)
            return
        self.kept[index] = frame
        self._bytes += size

    @property
    def rotation_only(self) -> list[int]:
        return [i for i, f in self.kept.items() if f.rotation_only]


# --- the solve ------------------------------------------------------------------------------------

@dataclass
class _Tracks:
    """Observations of the tracks: track id, frame index, undistorted pinhole pixel (COLMAP convention)."""
    track: np.ndarray
    frame: np.ndarray
    xy: np.ndarray
    anchor_frame: np.ndarray             # per track
    anchor_ray: np.ndarray               # per track: unit bearing in the anchor camera


def refine_rotation_only_poses(camera: Camera, kept: KeptFrames, poses: dict[int, Rigid3d], depth: float,
                               options: RotationRefinementOptions) -> tuple[dict[int, Rigid3d], dict]:
    """New cam_from_world, in the map's frame, for the rotation-only frames among ``kept`` and the frames their
    tracks reach (``poses``: cam_from_world of the posed frames, the rotation-only ones at their held centre;
    ``depth``: a typical scene depth in map units, to start the points at and to judge the solve by). Returns
    (poses solved, statistics); frames not solved keep theirs."""
    frames = sorted(i for i in kept.kept if i in poses)
    anchors = [i for i in frames if kept.kept[i].rotation_only]
    stats = {"rotation_only_frames": len(anchors)}
    if not anchors or len(frames) - len(anchors) < 3:
        return {}, stats
    pinhole, dist = split_params(camera.model, camera.params)
    fx, fy, cx, cy = (float(v) for v in pinhole)
    k_mat = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    undistort = _undistortion_maps(camera) if np.any(np.asarray(dist) != 0) else None
    greys = {i: _undistorted(kept.kept[i].grey, undistort) for i in frames}
    rot = {i: poses[i].rotation for i in frames}
    tracks = _star_tracks(camera, kept, frames, anchors, rot, k_mat, options)
    if tracks is None:
        return {}, stats
    ok = _refine_sub_pixel(tracks, greys, rot, k_mat, options)
    stats["observations"], stats["refined"] = int(len(ok)), int(ok.sum())
    tracks = _subset(tracks, ok)
    # A stretch turned about one centre (a tripod's pan) shows no parallax: its frames keep the held centre,
    # which is right, where the solve would have nothing to fix their centres with and let them drift.
    parallax = _stretch_parallax(tracks, anchors, k_mat)
    still = [i for i in anchors if parallax.get(i, 0.0) < options.min_parallax_px]
    stats["parallax_px"] = sorted({round(v, 3) for v in parallax.values()})
    if still:
        stats["turned_in_place"] = len(still)
        tracks = _subset(tracks, ~np.isin(tracks.anchor_frame[tracks.track], still) & ~np.isin(tracks.frame, still))
        anchors = [i for i in anchors if i not in set(still)]
        if not anchors:
            return {}, stats
    solved = _adjust(tracks, frames, anchors, poses, depth, k_mat, camera, options, stats)
    return solved, stats


def _stretch_parallax(t: _Tracks, anchors, k_mat, gap: int = 3) -> dict[int, float]:
    """Per rotation-only frame: the median distance (pixels) between its stretch's refined matches in the
    frames up to ``gap`` later and where the best rotation of each pair of frames puts them (the rotation fitted
    to those matches, so only parallax and noise remain). A stretch is a run of consecutive rotation-only frames;
    frames with no such pair get no entry."""
    stretch, label, last = {}, -1, None
    for i in anchors:
        label += last is None or i != last + 1
        stretch[i], last = label, i
    anchor = t.anchor_frame[t.track]
    residuals: dict[int, list] = {}
    focal = 0.5 * (k_mat[0, 0] + k_mat[1, 1])
    for a in anchors:
        for j in range(a + 1, a + gap + 1):
            if stretch.get(j) != stretch[a]:
                break
            sel = (anchor == a) & (t.frame == j)
            if sel.sum() < 20:
                continue
            src = t.anchor_ray[t.track[sel]]
            dst = np.column_stack(((t.xy[sel] - k_mat[:2, 2]) / np.diag(k_mat)[:2], np.ones(int(sel.sum()))))
            dst /= np.linalg.norm(dst, axis=1, keepdims=True)
            rotation = kabsch_rotations(src[None], dst[None])[0]
            angle = np.arccos(np.clip(np.einsum("ij,ij->i", src @ rotation.T, dst), -1.0, 1.0))
            residuals.setdefault(stretch[a], []).append(focal * angle)
    out = {}
    for i, label in stretch.items():
        if label in residuals:
            out[i] = float(np.median(np.concatenate(residuals[label])))
    return out


def _undistortion_maps(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps from the undistorted pinhole image (same fx, fy, cx, cy) to the camera's own pixels."""
    (fx, fy, cx, cy), _ = split_params(camera.model, camera.params)
    u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64), np.arange(camera.height, dtype=np.float64))
    rays = np.stack(((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, np.ones_like(u)), axis=-1).reshape(-1, 3)
    src = project(camera, rays).reshape(camera.height, camera.width, 2) - 0.5
    return src[..., 0].astype(np.float32), src[..., 1].astype(np.float32)


def _undistorted(grey: np.ndarray, maps) -> np.ndarray:
    return grey if maps is None else cv2.remap(grey, maps[0], maps[1], cv2.INTER_LINEAR, borderValue=0)


def _pinhole_pixels(features, k_mat: np.ndarray) -> np.ndarray:
    n = features.normalized_xy
    return np.column_stack((k_mat[0, 0] * n[:, 0] + k_mat[0, 2], k_mat[1, 1] * n[:, 1] + k_mat[1, 2]))


def _anchor_keypoints(features, count: int) -> np.ndarray:
    """Up to ``count`` keypoints with a finite bearing, evenly through the list (the extractor spreads them
    over the image, cell by cell)."""
    usable = np.flatnonzero(np.all(np.isfinite(features.normalized_xy), axis=1))
    if len(usable) <= count:
        return usable
    return usable[np.linspace(0, len(usable) - 1, count).round().astype(np.int64)]


def _star_tracks(camera, kept, frames, anchors, rot, k_mat, options) -> _Tracks | None:
    """Anchor keypoints of each rotation-only frame and their ORB matches in every partner frame."""
    max_cos = np.cos(np.radians(options.max_axis_angle_deg))
    axis = {i: rot[i][2] for i in frames}
    tol = options.epipolar_px / k_mat[0, 0]
    rng = np.random.default_rng(0)
    track, frame, xy, anchor_frame, anchor_ray = [], [], [], [], []
    n_tracks = 0
    for i in anchors:
        fi = kept.kept[i].features
        kp = _anchor_keypoints(fi, options.anchors_per_frame)
        if len(kp) == 0:
            continue
        rays_i = bearings(fi.normalized_xy)[kp]
        world_dirs = rays_i @ rot[i]                     # R_i^T b for each row
        matched: list[tuple[int, np.ndarray, np.ndarray]] = []
        for j in frames:
            if j == i or axis[i] @ axis[j] < max_cos:
                continue
            fj = kept.kept[j].features
            predicted = world_dirs @ rot[j].T
            with np.errstate(invalid="ignore", divide="ignore"):
                uv = project(camera, predicted)
            uv[predicted[:, 2] <= 1e-6] = np.nan
            m, _ = match_by_projection(uv, fi.descriptors[kp], fi.octaves[kp], fj.keypoints_xy, fj.octaves,
                                       fj.descriptors, options.search_radius * fi.plan.level_scales[fi.octaves[kp]],
                                       max_distance=options.max_hamming)
            hit = np.flatnonzero(m >= 0)
            if len(hit) < 8:
                continue
            keep = _translation_consistent(predicted[hit], bearings(fj.normalized_xy)[m[hit]], tol, rng)
            matched.append((j, hit[keep], m[hit[keep]]))
        if not matched:
            continue
        base = n_tracks
        track.append(base + np.arange(len(kp)))
        frame.append(np.full(len(kp), i))
        xy.append(_pinhole_pixels(fi, k_mat)[kp])
        for j, a, m in matched:
            track.append(base + a)
            frame.append(np.full(len(a), j))
            xy.append(_pinhole_pixels(kept.kept[j].features, k_mat)[m])
        anchor_frame.append(np.full(len(kp), i))
        anchor_ray.append(rays_i)
        n_tracks += len(kp)
    if n_tracks == 0:
        return None
    return _Tracks(np.concatenate(track), np.concatenate(frame), np.concatenate(xy), np.concatenate(anchor_frame),
                   np.concatenate(anchor_ray))


def _translation_consistent(rotated_i: np.ndarray, rays_j: np.ndarray, tol: float, rng,
                            hypotheses: int = 100) -> np.ndarray:
    """Matches that a translation t agrees with: the rotated bearing, the new one and t coplanar (2-point
    RANSAC with the rotation known), or the two bearings within ``tol`` (no visible parallax)."""
    rotated_i = rotated_i / np.linalg.norm(rotated_i, axis=1, keepdims=True)
    normals = np.cross(rotated_i, rays_j)
    still = np.einsum("ij,ij->i", rotated_i, rays_j) > np.cos(tol)
    first = rng.integers(0, len(rays_j), hypotheses)
    second = (first + rng.integers(1, len(rays_j), hypotheses)) % len(rays_j)   # two distinct matches
    t = np.cross(normals[first], normals[second])
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-300
    plane = np.cross(t[:, None, :], rotated_i[None, :, :])                    # (H, N, 3)
    plane /= np.linalg.norm(plane, axis=2, keepdims=True) + 1e-15
    inliers = np.abs(np.einsum("hnk,nk->hn", plane, rays_j)) < tol
    return inliers[int(np.argmax(inliers.sum(axis=1)))] | still


def _subset(t: _Tracks, keep: np.ndarray) -> _Tracks:
    counts = np.bincount(t.track[keep], minlength=len(t.anchor_frame))
    keep = keep & (counts[t.track] >= 2)
    return _Tracks(t.track[keep], t.frame[keep], t.xy[keep], t.anchor_frame, t.anchor_ray)


def _refine_sub_pixel(t: _Tracks, greys: dict, rot: dict, k_mat: np.ndarray, options) -> np.ndarray:
    """Lucas-Kanade from each anchor's patch into the partner frame warped into the anchor's view; updates
    ``t.xy`` in place; returns which observations are kept (anchors always)."""
    ok = np.ones(len(t.track), bool)
    anchor_of = t.anchor_frame[t.track]
    is_anchor = t.frame == anchor_of
    anchor_xy = np.full((len(t.anchor_frame), 2), np.nan)
    anchor_xy[t.track[is_anchor]] = t.xy[is_anchor]
    # OpenCV pixels are COLMAP's minus one half.
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    k_inv = np.linalg.inv(k_mat)
    others = np.flatnonzero(~is_anchor)
    order = others[np.lexsort((t.frame[others], anchor_of[others]))]
    pairs = np.column_stack((anchor_of[order], t.frame[order]))
    starts = np.flatnonzero(np.r_[True, np.any(np.diff(pairs, axis=0) != 0, axis=1), True])
    win = options.klt_window
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 0.001)
    for a, b in zip(starts[:-1], starts[1:]):
        sel = order[a:b]
        i, j = pairs[a]
        grey_i = greys[i]
        h, w = grey_i.shape
        homography = np.linalg.inv(shift) @ k_mat @ rot[j] @ rot[i].T @ k_inv @ shift   # OpenCV pixel i -> j
        warped = cv2.warpPerspective(greys[j], homography, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        start = anchor_xy[t.track[sel]] - 0.5
        guess = _apply_homography(np.linalg.inv(homography), t.xy[sel] - 0.5)
        margin = win // 2 + 2
        inside = _inside(start, w, h, margin) & _inside(guess, w, h, margin)
        ok[sel[~inside]] = False
        sel, start, guess = sel[inside], start[inside], guess[inside]
        if len(sel) == 0:
            continue
        found, status, _ = cv2.calcOpticalFlowPyrLK(grey_i, warped, start.astype(np.float32).reshape(-1, 1, 2),
                                                    guess.astype(np.float32).reshape(-1, 1, 2), winSize=(win, win),
                                                    maxLevel=options.klt_levels, criteria=criteria,
                                                    flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        refined = _apply_homography(homography, found.reshape(-1, 2).astype(np.float64)) + 0.5
        good = (status.reshape(-1) == 1) & np.all(np.isfinite(refined), axis=1) \
            & (np.linalg.norm(refined - t.xy[sel], axis=1) <= options.max_refinement_px) \
            & _inside(refined - 0.5, w, h, 0)
        t.xy[sel[good]] = refined[good]
        ok[sel[~good]] = False
    return ok


def _apply_homography(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    q = np.column_stack((xy, np.ones(len(xy)))) @ h.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return q[:, :2] / q[:, 2:3]


def _inside(xy: np.ndarray, w: int, h: int, margin: float) -> np.ndarray:
    return np.all(np.isfinite(xy), axis=1) & (xy[:, 0] >= margin) & (xy[:, 0] < w - 1 - margin) \
        & (xy[:, 1] >= margin) & (xy[:, 1] < h - 1 - margin)


def _adjust(t: _Tracks, frames, anchors, poses, depth, k_mat, camera, options, stats) -> dict[int, Rigid3d]:
    """Bundle-adjust every frame the tracks touch, one map-posed frame held; bring the rotation-only frames
    into the map's frame by the Sim(3) of the map-posed ones onto their poses."""
    used = np.unique(t.frame)
    slot = {int(f): s for s, f in enumerate(used)}
    anchor_set = set(anchors)
    mapped = [int(f) for f in used if int(f) not in anchor_set]
    if len(mapped) < 3:
        return {}
    counts = np.bincount(t.frame, minlength=max(frames) + 1)
    held = max(mapped, key=lambda f: counts[f])
    tracks = np.unique(t.track)
    point_slot = np.full(len(t.anchor_frame), -1, np.int64)
    point_slot[tracks] = np.arange(len(tracks))
    centres = {int(f): poses[int(f)].center() for f in used}
    points = np.array([centres[int(t.anchor_frame[k])] + depth * (poses[int(t.anchor_frame[k])].rotation.T
                                                                  @ t.anchor_ray[k]) for k in tracks])
    pinhole = Camera(camera.camera_id, "PINHOLE", camera.width, camera.height,
                     np.array([k_mat[0, 0], k_mat[1, 1], k_mat[0, 2], k_mat[1, 2]]))
    problem = BAProblem([pinhole], np.zeros(len(used), np.int64), np.array([poses[int(f)].quat_wxyz for f in used]),
                        np.array([poses[int(f)].translation for f in used]), points,
                        np.array([slot[int(f)] for f in t.frame]), point_slot[t.track], t.xy,
                        pose_fixed=np.array([int(f) == held for f in used]))
    result = bundle_adjust(problem, BAOptions(max_iterations=options.max_iterations, loss="huber",
                                              loss_scale_px=options.huber_px))
    stats.update(ba_frames=len(used), ba_tracks=len(tracks), ba_rms_px=float(result.final_rms_px),
                 ba_iterations=int(result.iterations), ba_seconds=float(result.seconds))
    solved = {int(f): result.cam_from_world(slot[int(f)]) for f in used}
    world_from_cam = {f: p.inverse() for f, p in solved.items()}
    try:
        r, tr, s = umeyama_poses([world_from_cam[f].translation for f in mapped],
                                 [world_from_cam[f].rotation for f in mapped],
                                 [poses[f].inverse().translation for f in mapped],
                                 [poses[f].inverse().rotation for f in mapped])
    except ParallaxError:
        return {}
    centres_map = np.array([poses[f].center() for f in mapped])
    moved = np.array([s * r @ world_from_cam[f].translation + tr for f in mapped])
    error = float(np.sqrt(np.mean(np.sum((moved - centres_map) ** 2, axis=1))))
    stats["alignment_error"] = error / depth
    if not error <= options.max_alignment_error * depth:
        log.info("SLAM: rotation-only frames keep their held centres: the refinement puts the map-posed frames "
                 "%.2g of the scene depth from their map poses", stats["alignment_error"])
        return {}
    out = {}
    for f, pose in world_from_cam.items():
        if counts[f] >= options.min_observations:
            out[f] = Rigid3d.from_rotation(r @ pose.rotation, s * r @ pose.translation + tr).inverse()
    stats["solved"] = len(out)
    stats["solved_rotation_only"] = len(anchor_set.intersection(out))
    return out
