"""Local mapping (ORB-SLAM's LocalMapping): keyframe policy, new points, culling, local bundle adjustment.

``process_keyframe`` runs the steps for one new keyframe, in ORB-SLAM's order:

1. cull recently created points that tracking does not find (found / visible < 0.25), or that no third
   keyframe observed two keyframes after their creation;
2. triangulate new points between the new keyframe and its best covisible keyframes: brute-force Hamming
   matching of keypoints without a point, epipolar gate, DLT triangulation, parallax, cheirality,
   reprojection and scale-consistency checks;
3. search the neighbours' points in the new keyframe and the new keyframe's points in the neighbours
   (``match_by_projection``) so tracks get longer (ORB-SLAM's SearchInNeighbors, without point fusion);
4. local bundle adjustment (``geometry.bundle_adjustment``, Huber) over the new keyframe and its covisible
   window; keyframes outside the window that see its points are held fixed, and when fewer than two are,
   the oldest keyframes of the window are fixed too (monocular gauge: pose and scale); observations whose
   error exceeds the per-level gate afterwards are dropped, and points left with < 2 observations culled.

The steps take a ``lock`` (``slam.map_lock``): synchronously (Step mode, deterministic) it is ``NO_LOCK``;
on the local-mapping thread of Play mode it is the map's ``MapLock``, held by the caller, handed to tracking
between neighbours and dropped during bundle adjustment's solve, which works on copies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from geometry.bundle_adjustment import BAOptions, BAProblem, bundle_adjust
from geometry.camera_models import project
from geometry.matching import descriptor_words, match_by_projection
from geometry.triangulation import triangulate_two_view
from scene.camera import Camera
from scene.rigid import Rigid3d
from slam.map import SlamMap
from slam.map_lock import NO_LOCK
from slam.tracking import POSE_GATE_PX, Frame, project_points

_CHI2_1DOF = 3.841


@dataclass(frozen=True)
class MappingOptions:
    keyframe_tracked_ratio: float = 0.9    # new keyframe when tracked < ratio * points of the reference keyframe
    keyframe_min_tracked: int = 15
    keyframe_max_frames: int = 30          # ... or this many frames since the last one, if tracking is thinning
    # With mapping run synchronously it is never busy, so ORB-SLAM's rule would insert on almost every frame
    # of a forward motion; like a real mapping thread, wait a few frames unless tracking is thinning fast.
    # 0 (off) by default: a gap of 3 cut keyframes 2-3x but also the orbit's loop-closure gain (< 30 %).
    keyframe_min_frames: int = 0
    keyframe_urgent_ratio: float = 0.5     # below this fraction of the reference's points: insert now
    # Tracking fails under TrackingOptions.min_tracked (30). A frame this close to it asks for a keyframe (and
    # in Play, mapping being busy, waits for one) whatever the reference holds: on a thin map 0.9 x few
    # points is too late, the next frames lose the map before the ratio rule fires.
    keyframe_thin_tracked: int = 60
    triangulation_neighbours: int = 10
    triangulation_ratio: float = 0.8
    triangulation_max_hamming: int = 50    # ORB-SLAM's TH_LOW
    min_parallax_cos: float = 0.9998       # rays must differ by more than ~1.15 degrees
    search_neighbours: int = 10
    search_radius: float = 3.0             # x keypoint scale
    ba_window: int = 10                    # covisible keyframes optimised with the new one
    ba_max_fixed: int = 20
    ba_iterations: int = 10
    # Global BA after every loop closure (0: none); it stops earlier once converged. At 20, some Play runs on
    # the orbit ended unconverged (RMS 4.9 and 2.5 px against about 0.75, ATE 0.63 and 0.56 %); at 60, 20 of 20
    # logged runs converged (<= 0.83 px, ATE <= 0.37 %).
    global_ba_iterations: int = 60
    min_found_ratio: float = 0.25
    distinctive_descriptors: bool = False  # SlamMap keeps each point's most distinctive observation descriptor


def keyframe_needed(slam_map: SlamMap, frame: Frame, reference_kf: int, frames_since_keyframe: int,
                    options: MappingOptions) -> bool:
    """ORB-SLAM's monocular rule: the frame tracks noticeably fewer points than the reference keyframe holds
    (counting points seen at least 3 times once the map has 3 keyframes), and at least
    ``keyframe_min_frames`` have passed since the last keyframe unless it tracks under the urgent ratio.
    A frame tracking under ``keyframe_thin_tracked`` points always asks."""
    tracked = frame.num_tracked
    if tracked < options.keyframe_min_tracked or reference_kf < 0:
        return False
    if tracked < options.keyframe_thin_tracked:
        return True
    ref_points, ref_ids = _reference_points(slam_map, reference_kf)
    ratio = options.keyframe_tracked_ratio
    if frames_since_keyframe >= options.keyframe_max_frames:
        return tracked < ratio * ref_points or tracked < 0.5 * ref_ids
    if frames_since_keyframe < options.keyframe_min_frames:
        return tracked < options.keyframe_urgent_ratio * ref_points
    return tracked < ratio * ref_points


def keyframe_urgent(slam_map: SlamMap, frame: Frame, reference_kf: int, options: MappingOptions) -> bool:
    """The frame tracks under the urgent ratio of the reference keyframe's points, or under
    ``keyframe_thin_tracked``: the map is slipping out of view, and a keyframe cannot wait for long."""
    if reference_kf < 0:
        return False
    tracked = frame.num_tracked
    return (tracked < options.keyframe_thin_tracked
            or tracked < options.keyframe_urgent_ratio * _reference_points(slam_map, reference_kf)[0])


def _reference_points(slam_map: SlamMap, reference_kf: int) -> tuple[int, int]:
    """(points of the reference keyframe seen at least 3 times, or twice while the map has 2 keyframes; all its
    points)."""
    ids = slam_map.kf_point_ids[reference_kf]
    ids = ids[ids >= 0]
    min_obs = 3 if slam_map.num_keyframes > 2 else 2
    return int(np.count_nonzero(slam_map.observation_counts()[ids] >= min_obs)), len(ids)


def insert_keyframe(slam_map: SlamMap, frame: Frame, name: str = "", ref=None) -> int:
    f = frame.features
    k = slam_map.add_keyframe(frame.cam_from_world, frame.index, frame.timestamp, f.keypoints_xy, f.normalized_xy,
                              f.octaves, f.descriptors, frame.rgb, name=name, ref=ref)
    kp = np.flatnonzero(frame.point_ids >= 0)
    slam_map.add_observations(k, kp, frame.point_ids[kp])
    return k


# --- 1. culling ---------------------------------------------------------------------------------------

def cull_recent_points(slam_map: SlamMap, k: int, options: MappingOptions) -> int:
    first = slam_map.first_kf
    recent = np.flatnonzero(slam_map.alive & (first >= 2) & (first >= k - 3))
    if len(recent) == 0:
        return 0
    counts = slam_map.observation_counts()[recent]
    ratio = slam_map.n_found[recent] / np.maximum(slam_map.n_visible[recent], 1)
    bad = (ratio < options.min_found_ratio) | ((k - first[recent] >= 2) & (counts <= 2))
    slam_map.remove_points(recent[bad])
    return int(bad.sum())


# --- 2. triangulation ------------------------------------------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def _popcount(x):
    # SWAR bit count of a uint64 (Hacker's Delight); the unsigned constants keep every step in uint64.
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


# Cells of the grid over a keyframe's free keypoints that the epipolar search visits (normalized coordinates).
_EPIPOLAR_GRID = (12, 8)


@njit(cache=True, nogil=True)
def _epipolar_grid(xy, n_cols, n_rows):
    """Keypoints bucketed by cell: (cell_ptr, cell_items sorted by index within a cell, cell centres x and y,
    a cell's half diagonal)."""
    x0, x1, y0, y1 = xy[0, 0], xy[0, 0], xy[0, 1], xy[0, 1]
    for b in range(xy.shape[0]):
        x0, x1 = min(x0, xy[b, 0]), max(x1, xy[b, 0])
        y0, y1 = min(y0, xy[b, 1]), max(y1, xy[b, 1])
    cw = (x1 - x0) / n_cols + 1e-12
    ch = (y1 - y0) / n_rows + 1e-12
    cell = np.empty(xy.shape[0], np.int64)
    ptr = np.zeros(n_cols * n_rows + 1, np.int64)
    for b in range(xy.shape[0]):
        c = min(int((xy[b, 1] - y0) / ch), n_rows - 1) * n_cols + min(int((xy[b, 0] - x0) / cw), n_cols - 1)
        cell[b] = c
        ptr[c + 1] += 1
    for c in range(n_cols * n_rows):
        ptr[c + 1] += ptr[c]
    items = np.empty(xy.shape[0], np.int64)
    fill = ptr[:-1].copy()
    for b in range(xy.shape[0]):
        items[fill[cell[b]]] = b
        fill[cell[b]] += 1
    cx = np.empty(n_cols * n_rows)
    cy = np.empty(n_cols * n_rows)
    for r in range(n_rows):
        for c in range(n_cols):
            cx[r * n_cols + c] = x0 + (c + 0.5) * cw
            cy[r * n_cols + c] = y0 + (r + 0.5) * ch
    return ptr, items, cx, cy, 0.5 * math.sqrt(cw * cw + ch * ch)


@njit(cache=True, nogil=True)
def _epipolar_match_kernel(rays_k, rays_j, words_k, words_j, essential, max_sq_px, focal_sq, max_distance, ratio,
                           n_cols, n_rows):
    nk, nj = rays_k.shape[0], rays_j.shape[0]
    best_j = np.full(nk, -1, np.int64)
    best_d = np.full(nk, 1 << 20, np.int64)
    col_best_i = np.full(nj, -1, np.int64)
    col_best_d = np.full(nj, 1 << 20, np.int64)
    ptr, items, cx, cy, half_diagonal = _epipolar_grid(rays_j, n_cols, n_rows)
    # A cell whose centre lies farther from the line than the widest band plus its half diagonal holds no
    # candidate, so the grid visits exactly the candidates a scan of every keypoint would.
    reach = (math.sqrt(max(max_sq_px.max(), 0.0) / focal_sq) + half_diagonal) * (1.0 + 1e-9)
    for a in range(nk):
        l0 = essential[0, 0] * rays_k[a, 0] + essential[0, 1] * rays_k[a, 1] + essential[0, 2]
        l1 = essential[1, 0] * rays_k[a, 0] + essential[1, 1] * rays_k[a, 1] + essential[1, 2]
        l2 = essential[2, 0] * rays_k[a, 0] + essential[2, 1] * rays_k[a, 1] + essential[2, 2]
        norm_sq = l0 * l0 + l1 * l1
        if not norm_sq > 0.0:
            continue
        reach_sq = reach * reach * norm_sq
        d1, d2, j1 = np.int64(1 << 20), np.int64(1 << 20), -1
        for c in range(cx.shape[0]):
            centre = l0 * cx[c] + l1 * cy[c] + l2
            if centre * centre > reach_sq:
                continue
            for t in range(ptr[c], ptr[c + 1]):
                b = items[t]
                num = l0 * rays_j[b, 0] + l1 * rays_j[b, 1] + l2
                if num * num / norm_sq * focal_sq >= max_sq_px[b]:
                    continue
                d = np.int64(_popcount(words_k[a, 0] ^ words_j[b, 0]) + _popcount(words_k[a, 1] ^ words_j[b, 1])
                             + _popcount(words_k[a, 2] ^ words_j[b, 2]) + _popcount(words_k[a, 3] ^ words_j[b, 3]))
                # The best and the runner-up distance do not depend on the order candidates come in; the best
                # one's index matters only when it is unique (a tie fails the ratio test).
                if d < d1:
                    d2 = d1
                    d1, j1 = d, b
                elif d < d2:
                    d2 = d
                if d < col_best_d[b]:
                    col_best_d[b] = d
                    col_best_i[b] = a
        if j1 >= 0 and d1 <= max_distance and (d2 >= (1 << 20) or d1 < ratio * d2):
            best_j[a] = j1
            best_d[a] = d1
    count = 0
    for a in range(nk):
        if best_j[a] >= 0 and col_best_i[best_j[a]] == a:
            count += 1
    out = np.empty((count, 2), np.int64)
    c = 0
    for a in range(nk):
        if best_j[a] >= 0 and col_best_i[best_j[a]] == a:
            out[c, 0] = a
            out[c, 1] = best_j[a]
            c += 1
    return out


def epipolar_match(normalized_k, normalized_j, descriptors_k, descriptors_j, sigma_j, j_from_k: Rigid3d,
                   focal: float, max_distance: int, ratio: float) -> np.ndarray:
    """Matches (P, 2) of (row in k, row in j) between two keyframes' free keypoints: for each keypoint of k
    the nearest descriptor among the keypoints of j within the chi2(1 dof, 95 %) band around its epipolar
    line (sigma_j: per keypoint of j, in pixels), with a ratio test among those candidates, and mutual
    best. The band replaces ORB-SLAM's bag-of-words pre-selection of candidates."""
    if len(normalized_k) == 0 or len(normalized_j) == 0:
        return np.zeros((0, 2), np.int64)
    t = j_from_k.translation
    essential = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ j_from_k.rotation
    max_sq = _CHI2_1DOF * np.asarray(sigma_j, np.float64) ** 2
    return _epipolar_match_kernel(np.ascontiguousarray(normalized_k, np.float64),
                                  np.ascontiguousarray(normalized_j, np.float64),
                                  descriptor_words(descriptors_k), descriptor_words(descriptors_j),
                                  np.ascontiguousarray(essential), np.ascontiguousarray(max_sq), float(focal) ** 2,
                                  int(max_distance), float(ratio), *_EPIPOLAR_GRID)


def _rays(normalized: np.ndarray) -> np.ndarray:
    return np.column_stack((normalized, np.ones(len(normalized))))


def triangulate_new_points(slam_map: SlamMap, camera: Camera, k: int, scale_factor: float, level_scales,
                           options: MappingOptions, lock=NO_LOCK) -> int:
    pose_k = slam_map.kf_pose(k)
    center_k = pose_k.center()
    focal = float(np.mean(camera.focal_xy))
    level_scales = np.asarray(level_scales)
    created = 0
    for j in slam_map.covisible_keyframes(k, options.triangulation_neighbours):
        lock.yield_to_tracking()
        pose_j = slam_map.kf_pose(int(j))
        center_j = pose_j.center()
        # Baseline against the neighbour's median depth: too short a baseline gives no usable depth.
        pts_j = slam_map.points_of_keyframes([int(j)])
        if len(pts_j) == 0:
            continue
        depth_j = float(np.median(pose_j.apply(slam_map.xyz[pts_j])[:, 2]))
        if np.linalg.norm(center_k - center_j) / max(depth_j, 1e-12) < 0.01:
            continue
        free_k = np.flatnonzero((slam_map.kf_point_ids[k] < 0) & np.all(np.isfinite(slam_map.kf_normalized[k]), axis=1))
        free_j = np.flatnonzero((slam_map.kf_point_ids[j] < 0) & np.all(np.isfinite(slam_map.kf_normalized[j]), axis=1))
        if len(free_k) == 0 or len(free_j) == 0:
            continue
        j_from_k = pose_j * pose_k.inverse()
        pairs = epipolar_match(slam_map.kf_normalized[k][free_k], slam_map.kf_normalized[j][free_j],
                               slam_map.kf_descriptors[k][free_k], slam_map.kf_descriptors[j][free_j],
                               level_scales[slam_map.kf_octaves[j][free_j]], j_from_k, focal,
                               options.triangulation_max_hamming, options.triangulation_ratio)
        if len(pairs) == 0:
            continue
        ik, ij = free_k[pairs[:, 0]], free_j[pairs[:, 1]]
        nk, nj = slam_map.kf_normalized[k][ik], slam_map.kf_normalized[j][ij]
        oct_k, oct_j = slam_map.kf_octaves[k][ik], slam_map.kf_octaves[j][ij]
        rk, rj = _rays(nk), _rays(nj)
        # Parallax between the two viewing rays in the world frame.
        wk = rk @ pose_k.rotation
        wj = rj @ pose_j.rotation
        cos = np.einsum("ij,ij->i", wk, wj) / (np.linalg.norm(wk, axis=1) * np.linalg.norm(wj, axis=1))
        xyz = triangulate_two_view(pose_k, pose_j, rk, rj)
        with np.errstate(invalid="ignore"):
            ck, cj = pose_k.apply(xyz), pose_j.apply(xyz)
            ek = np.linalg.norm(project(camera, ck) - slam_map.kf_xy[k][ik], axis=1)
            ej = np.linalg.norm(project(camera, cj) - slam_map.kf_xy[j][ij], axis=1)
            dk = np.linalg.norm(xyz - center_k, axis=1)
            dj = np.linalg.norm(xyz - center_j, axis=1)
            ratio_dist = dk / dj
            ratio_oct = level_scales[oct_k] / level_scales[oct_j]
            good = (np.all(np.isfinite(xyz), axis=1) & (cos < options.min_parallax_cos) & (cos > 0)
                    & (ck[:, 2] > 0) & (cj[:, 2] > 0)
                    & (ek ** 2 < 5.991 * level_scales[oct_k] ** 2) & (ej ** 2 < 5.991 * level_scales[oct_j] ** 2)
                    & (ratio_dist * scale_factor * 1.5 > ratio_oct) & (ratio_dist < ratio_oct * scale_factor * 1.5))
        if not good.any():
            continue
        ik, ij, xyz, dk, oct_k = ik[good], ij[good], xyz[good], dk[good], oct_k[good]
        new = slam_map.add_points(xyz, slam_map.kf_descriptors[k][ik], slam_map.kf_rgb[k][ik], k,
                                  dk * level_scales[oct_k])
        slam_map.add_observations(k, ik, new)
        slam_map.add_observations(int(j), ij, new)
        created += len(new)
    return created


# --- 3. search in neighbours -------------------------------------------------------------------------

def _project_into_keyframe(slam_map: SlamMap, camera: Camera, kf: int, points: np.ndarray, radius: float,
                           scale_factor: float, level_scales: np.ndarray) -> int:
    ids = slam_map.kf_point_ids[kf]
    already = np.zeros(slam_map.num_points_total, bool)
    already[ids[ids >= 0]] = True
    points = points[~already[points] & slam_map.alive[points]]
    if len(points) == 0:
        return 0
    uv, octave, visible = project_points(camera, slam_map.kf_pose(kf), slam_map.xyz[points],
                                         slam_map.max_distance[points], scale_factor, len(level_scales))
    vis = np.flatnonzero(visible)
    if len(vis) == 0:
        return 0
    match, _ = match_by_projection(uv[vis], slam_map.descriptors[points[vis]], octave[vis], slam_map.kf_xy[kf],
                                   slam_map.kf_octaves[kf], slam_map.kf_descriptors[kf],
                                   radius * level_scales[octave[vis]], max_distance=50)
    ok = match >= 0
    kp, pt = match[ok], points[vis[ok]]
    # Only the reprojection-consistent ones (gate of the pose optimisation, per level).
    err = np.linalg.norm(uv[vis[ok]] - slam_map.kf_xy[kf][kp], axis=1)
    keep = err <= POSE_GATE_PX * level_scales[slam_map.kf_octaves[kf][kp]]
    before = int(np.count_nonzero(ids >= 0))
    slam_map.add_observations(kf, kp[keep], pt[keep])
    return int(np.count_nonzero(slam_map.kf_point_ids[kf] >= 0)) - before


def search_in_neighbours(slam_map: SlamMap, camera: Camera, k: int, scale_factor: float, level_scales,
                         options: MappingOptions, lock=NO_LOCK) -> int:
    level_scales = np.asarray(level_scales)
    neighbours = slam_map.covisible_keyframes(k, options.search_neighbours)
    added = 0
    if len(neighbours):
        added += _project_into_keyframe(slam_map, camera, k, slam_map.points_of_keyframes(neighbours),
                                        options.search_radius, scale_factor, level_scales)
        own = slam_map.points_of_keyframes([k])
        for j in neighbours:
            lock.yield_to_tracking()
            added += _project_into_keyframe(slam_map, camera, int(j), own, options.search_radius, scale_factor,
                                            level_scales)
    return added


# --- 4. local bundle adjustment ------------------------------------------------------------------------

def local_bundle_adjustment(slam_map: SlamMap, camera: Camera, k: int, level_scales, options: MappingOptions,
                            lock=NO_LOCK, interrupt=None) -> dict:
    """``interrupt``: a progress object; when its ``should_stop`` turns true the solve ends after the current
    iteration and keeps the best state so far (tracking wants the mapper back for a new keyframe)."""
    level_scales = np.asarray(level_scales)
    local = np.concatenate(([k], slam_map.covisible_keyframes(k, options.ba_window, min_shared=15))).astype(np.int64)
    points = slam_map.points_of_keyframes(local)
    if len(points) == 0:
        return {"ba_ms": 0.0}
    in_points = np.zeros(slam_map.num_points_total, bool)
    in_points[points] = True
    obs = np.flatnonzero(slam_map.obs_alive & in_points[slam_map.obs_pt])
    is_local = np.zeros(slam_map.num_keyframes, bool)
    is_local[local] = True
    # Fixed: keyframes outside the window that see its points, most shared first.
    outside = slam_map.obs_kf[obs][~is_local[slam_map.obs_kf[obs]]]
    counts = np.bincount(outside, minlength=slam_map.num_keyframes)
    fixed = np.flatnonzero(counts)
    fixed = fixed[np.lexsort((-fixed, -counts[fixed]))][:options.ba_max_fixed]
    pose_kfs = np.concatenate((np.sort(local), np.sort(fixed)))
    pose_fixed = np.concatenate((np.zeros(len(local), bool), np.ones(len(fixed), bool)))
    if pose_fixed.sum() < 2:  # gauge: the oldest keyframes of the window are held
        order = np.argsort(pose_kfs[:len(local)], kind="stable")
        need = min(2 - int(pose_fixed.sum()), len(local) - 1)
        pose_fixed[order[:need]] = True
    if pose_fixed.all():
        return {"ba_ms": 0.0}
    stats = _adjust(slam_map, camera, pose_kfs, pose_fixed, points, obs, level_scales, options.ba_iterations, lock,
                    interrupt)
    stats["ba_keyframes"] = int(len(local))
    return stats


def global_bundle_adjustment(slam_map: SlamMap, camera: Camera, level_scales, options: MappingOptions,
                             lock=NO_LOCK, interrupt=None, iterations: int | None = None, held=None) -> dict:
    """Every keyframe and point, the first keyframe held (ORB-SLAM's global BA after a loop closure: the
    essential graph spread the loop's correction over the keyframes; this refines points with them).
    ``iterations``: at most this many (default ``options.global_ba_iterations``). ``held`` (bool per keyframe):
    these keyframes held instead, so the map settles around keyframes moved from outside."""
    kfs = np.arange(slam_map.num_keyframes, dtype=np.int64)
    points = np.flatnonzero(slam_map.alive)
    if len(kfs) < 2 or len(points) == 0:
        return {"ba_ms": 0.0}
    obs = np.flatnonzero(slam_map.obs_alive & slam_map.alive[slam_map.obs_pt])
    pose_fixed = kfs == 0 if held is None else np.asarray(held, bool)
    return _adjust(slam_map, camera, kfs, pose_fixed, points, obs, np.asarray(level_scales),
                   options.global_ba_iterations if iterations is None else iterations, lock, interrupt)


def _adjust(slam_map: SlamMap, camera: Camera, pose_kfs, pose_fixed, points, obs, level_scales, iterations: int,
            lock, interrupt) -> dict:
    """Bundle-adjust keyframes ``pose_kfs`` (``pose_fixed`` held) and ``points`` over observations ``obs``,
    write the result back, drop observations beyond the per-level gate and points left with < 2."""
    slot = np.full(slam_map.num_keyframes, -1, np.int64)
    slot[pose_kfs] = np.arange(len(pose_kfs))
    obs = obs[slot[slam_map.obs_kf[obs]] >= 0]
    point_slot = np.full(slam_map.num_points_total, -1, np.int64)
    point_slot[points] = np.arange(len(points))
    obs_kf, obs_pt = slam_map.obs_kf[obs], slam_map.obs_pt[obs]
    obs_xy, octs = slam_map.observation_keypoints(obs)
    problem = BAProblem([camera], np.zeros(len(pose_kfs), np.int64), slam_map.kf_quat[pose_kfs].copy(),
                        slam_map.kf_trans[pose_kfs].copy(), slam_map.xyz[points].copy(), slot[obs_kf],
                        point_slot[obs_pt], obs_xy, pose_fixed=pose_fixed)
    # Tracking may run meanwhile: it reads the map and bumps point counters, but while mapping is busy it
    # adds no keyframe or observation, so every row written back below still means what it meant here.
    with lock.released():
        result = bundle_adjust(problem, BAOptions(max_iterations=iterations, loss="huber",
                                                  loss_scale_px=POSE_GATE_PX), progress=interrupt)
    slam_map.kf_quat[pose_kfs] = result.quat_wxyz
    slam_map.kf_trans[pose_kfs] = result.translation
    slam_map.xyz[points] = result.points_world
    bad = ~result.observations_used | ~(result.residual_norms_px <= POSE_GATE_PX * level_scales[octs])
    slam_map.remove_observations(obs[bad])
    counts = slam_map.observation_counts()[points]
    slam_map.remove_points(points[counts < 2])
    return {"ba_ms": result.seconds * 1000.0, "ba_fixed": int(pose_fixed.sum()), "ba_points": int(len(points)),
            "ba_observations": int(len(obs)), "ba_removed_obs": int(bad.sum()), "ba_rms_px": float(result.final_rms_px)}


def process_keyframe(slam_map: SlamMap, camera: Camera, k: int, scale_factor: float, level_scales,
                     options: MappingOptions, lock=NO_LOCK, interrupt=None, points_ready=None) -> dict:
    """Local mapping of keyframe k. ``points_ready()`` is called once its new points are triangulated and
    fused, before local BA refines them: a tracker waiting for them can go on from there."""
    stats = {"culled": cull_recent_points(slam_map, k, options)}
    stats["triangulated"] = triangulate_new_points(slam_map, camera, k, scale_factor, level_scales, options, lock)
    lock.yield_to_tracking()
    stats["fused_observations"] = search_in_neighbours(slam_map, camera, k, scale_factor, level_scales, options,
                                                       lock)
    if points_ready is not None:
        points_ready()
    lock.yield_to_tracking()
    stats.update(local_bundle_adjustment(slam_map, camera, k, level_scales, options, lock, interrupt))
    return stats
