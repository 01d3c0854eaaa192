"""The SLAM map: keyframes and map points as packed, growable arrays (no per-point objects).

Keyframes k = 0..K-1 (never removed in this version): pose ``cam_from_world`` as quat_wxyz + translation
rows, and per keyframe its keypoint arrays (positions, normalized rays, octaves, descriptors, colours) with
``kf_point_ids[k]`` (N_k,) giving the map point each keypoint observes (-1: none).

Map points p = 0..M-1: ``xyz``, a representative ``descriptors`` row (the keypoint it was created
from; with ``distinctive_descriptors`` the most distinctive of its observations, ORB-SLAM's rule, kept up to
date whenever observations change), ``rgb``, ``alive`` (culled points
keep their row: ids stay stable), and the counters ORB-SLAM keeps for culling (``n_visible``: predicted
in the frustum of a tracked frame, ``n_found``: matched there).

Observations: one entry per (keyframe, keypoint, point) in ``obs_kf``/``obs_kp``/``obs_pt``, with
``obs_alive`` and the keypoint's descriptor ``obs_descriptors``; they mirror ``kf_point_ids`` and are what
bundle adjustment and export read.
Covisibility: the number of alive points two keyframes share, computed from the observations.
"""
from __future__ import annotations

import numpy as np

from geometry.matching import medoid_descriptors
from scene.rigid import Rigid3d, quat_wxyz_to_matrix


class _Growable:
    """A row-appendable array with amortised doubling; ``view`` is the used part."""

    def __init__(self, tail: tuple, dtype, fill=0):
        self._data = np.full((16,) + tail, fill, dtype)
        self._fill = fill
        self.n = 0

    def append(self, rows) -> np.ndarray:
        rows = np.asarray(rows, self._data.dtype).reshape((-1,) + self._data.shape[1:])
        need = self.n + len(rows)
        if need > len(self._data):
            cap = max(need, 2 * len(self._data))
            grown = np.full((cap,) + self._data.shape[1:], self._fill, self._data.dtype)
            grown[:self.n] = self._data[:self.n]
            self._data = grown
        idx = np.arange(self.n, need)
        self._data[self.n:need] = rows
        self.n = need
        return idx

    @property
    def view(self) -> np.ndarray:
        return self._data[:self.n]


class SlamMap:
    def __init__(self, distinctive_descriptors: bool = False):
        # Off by default: on the returning orbit it cut the loop-closure gain below issue 3's 30 % target.
        self.distinctive_descriptors = distinctive_descriptors
        self.clear()

    def clear(self) -> None:
        # keyframes
        self._kf_quat = _Growable((4,), np.float64)
        self._kf_trans = _Growable((3,), np.float64)
        self._kf_frame = _Growable((), np.int64)
        self._kf_time = _Growable((), np.float64)
        self.kf_xy: list[np.ndarray] = []
        self.kf_normalized: list[np.ndarray] = []
        self.kf_octaves: list[np.ndarray] = []
        self.kf_descriptors: list[np.ndarray] = []
        self.kf_rgb: list[np.ndarray] = []
        self.kf_point_ids: list[np.ndarray] = []
        self.kf_names: list[str] = []
        self.kf_refs: list = []
        # points
        self._xyz = _Growable((3,), np.float64)
        self._desc = _Growable((32,), np.uint8)
        self._rgb = _Growable((3,), np.uint8)
        self._alive = _Growable((), np.bool_)
        self._n_visible = _Growable((), np.int64)
        self._n_found = _Growable((), np.int64)
        self._first_kf = _Growable((), np.int64)
        self._max_distance = _Growable((), np.float64)   # ORB-SLAM's scale-invariance distance (for octaves)
        # observations
        self._obs_kf = _Growable((), np.int64)
        self._obs_kp = _Growable((), np.int64)
        self._obs_pt = _Growable((), np.int64)
        self._obs_alive = _Growable((), np.bool_)
        self._obs_desc = _Growable((32,), np.uint8)

    # --- sizes and views ----------------------------------------------------------------------------
    @property
    def num_keyframes(self) -> int:
        return self._kf_quat.n

    @property
    def num_points_total(self) -> int:
        return self._xyz.n

    @property
    def num_points(self) -> int:
        return int(self.alive.sum())

    kf_quat = property(lambda self: self._kf_quat.view)
    kf_trans = property(lambda self: self._kf_trans.view)
    kf_frame_index = property(lambda self: self._kf_frame.view)
    kf_timestamp = property(lambda self: self._kf_time.view)
    xyz = property(lambda self: self._xyz.view)
    descriptors = property(lambda self: self._desc.view)
    rgb = property(lambda self: self._rgb.view)
    alive = property(lambda self: self._alive.view)
    n_visible = property(lambda self: self._n_visible.view)
    n_found = property(lambda self: self._n_found.view)
    first_kf = property(lambda self: self._first_kf.view)
    max_distance = property(lambda self: self._max_distance.view)
    obs_kf = property(lambda self: self._obs_kf.view)
    obs_kp = property(lambda self: self._obs_kp.view)
    obs_pt = property(lambda self: self._obs_pt.view)
    obs_alive = property(lambda self: self._obs_alive.view)
    obs_descriptors = property(lambda self: self._obs_desc.view)

    def kf_pose(self, k: int) -> Rigid3d:
        return Rigid3d(self.kf_quat[k].copy(), self.kf_trans[k].copy())

    def set_kf_pose(self, k: int, cam_from_world: Rigid3d) -> None:
        self.kf_quat[k] = cam_from_world.quat_wxyz
        self.kf_trans[k] = cam_from_world.translation

    def kf_center(self, k: int) -> np.ndarray:
        return -quat_wxyz_to_matrix(self.kf_quat[k]).T @ self.kf_trans[k]

    # --- mutation -----------------------------------------------------------------------------------
    def add_keyframe(self, cam_from_world: Rigid3d, frame_index: int, timestamp: float, xy, normalized, octaves,
                     descriptors, rgb, name: str = "", ref=None) -> int:
        k = int(self._kf_quat.append(cam_from_world.quat_wxyz)[0])
        self._kf_trans.append(cam_from_world.translation)
        self._kf_frame.append(frame_index)
        self._kf_time.append(timestamp)
        self.kf_xy.append(np.asarray(xy, np.float64))
        self.kf_normalized.append(np.asarray(normalized, np.float64))
        self.kf_octaves.append(np.asarray(octaves, np.int64))
        self.kf_descriptors.append(np.asarray(descriptors, np.uint8))
        self.kf_rgb.append(np.asarray(rgb, np.uint8))
        self.kf_point_ids.append(np.full(len(xy), -1, np.int64))
        self.kf_names.append(name or f"kf_{k:05d}")
        self.kf_refs.append(ref)
        return k

    def add_points(self, xyz, descriptors, rgb, first_kf: int, max_distance) -> np.ndarray:
        """New alive points; returns their indices."""
        xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
        n = len(xyz)
        idx = self._xyz.append(xyz)
        self._desc.append(descriptors)
        self._rgb.append(rgb)
        self._alive.append(np.ones(n, bool))
        self._n_visible.append(np.ones(n, np.int64))
        self._n_found.append(np.ones(n, np.int64))
        self._first_kf.append(np.full(n, first_kf, np.int64))
        self._max_distance.append(np.broadcast_to(np.asarray(max_distance, np.float64), (n,)))
        return idx

    def add_observations(self, kf: int, keypoint_idx, point_idx) -> None:
        """Keypoints of keyframe ``kf`` observe points; keypoints that already observe one are skipped,
        and so is a second observation of a point in the same keyframe."""
        kp = np.asarray(keypoint_idx, np.int64).reshape(-1)
        pt = np.asarray(point_idx, np.int64).reshape(-1)
        ids = self.kf_point_ids[kf]
        free = ids[kp] < 0
        kp, pt = kp[free], pt[free]
        # one observation per point per keyframe
        _, first = np.unique(pt, return_index=True)
        keep = np.zeros(len(pt), bool)
        keep[first] = True
        keep &= ~np.isin(pt, ids[ids >= 0])
        kp, pt = kp[keep], pt[keep]
        ids[kp] = pt
        self._obs_kf.append(np.full(len(kp), kf, np.int64))
        self._obs_kp.append(kp)
        self._obs_pt.append(pt)
        self._obs_alive.append(np.ones(len(kp), bool))
        self._obs_desc.append(self.kf_descriptors[kf][kp])
        self.refresh_descriptors(pt)

    def remove_observations(self, obs_idx) -> None:
        obs_idx = np.asarray(obs_idx, np.int64).reshape(-1)
        obs_idx = obs_idx[self.obs_alive[obs_idx]]
        for e in obs_idx:
            self.kf_point_ids[self.obs_kf[e]][self.obs_kp[e]] = -1
        self.obs_alive[obs_idx] = False
        self.refresh_descriptors(self.obs_pt[obs_idx])

    def remove_points(self, point_idx) -> None:
        """Cull points: they stop being alive and lose every observation."""
        point_idx = np.asarray(point_idx, np.int64).reshape(-1)
        if len(point_idx) == 0:
            return
        self.alive[point_idx] = False
        mask = np.zeros(self.num_points_total, bool)
        mask[point_idx] = True
        self.remove_observations(np.flatnonzero(self.obs_alive & mask[self.obs_pt]))

    def replace_point(self, old: int, new: int) -> None:
        """Fuse a duplicate: ``old``'s observations move to ``new`` (dropped in keyframes that already observe
        ``new``), its counters add up, and ``old`` dies. Loop closing uses it to merge the two copies of a
        place's points."""
        if old == new or not self.alive[old] or not self.alive[new]:
            return
        obs = np.flatnonzero(self.obs_alive & (self.obs_pt == old))
        holders = set(self.obs_kf[self.obs_alive & (self.obs_pt == new)].tolist())
        for e in obs:
            kf = int(self.obs_kf[e])
            if kf in holders:
                self.kf_point_ids[kf][self.obs_kp[e]] = -1
                self.obs_alive[e] = False
            else:
                self.kf_point_ids[kf][self.obs_kp[e]] = new
                self.obs_pt[e] = new
                holders.add(kf)
        self.n_visible[new] += self.n_visible[old]
        self.n_found[new] += self.n_found[old]
        self.alive[old] = False
        self.refresh_descriptors([new])

    def refresh_descriptors(self, point_idx) -> None:
        """Set each alive point's descriptor to its most distinctive observation's (least median Hamming
        distance to the others), so matching compares against the point's typical appearance instead of the
        one view it was created from. Points without an alive observation keep theirs."""
        pts = np.asarray(point_idx, np.int64).reshape(-1)
        if len(pts) == 0 or not self.distinctive_descriptors:
            return
        mask = np.zeros(self.num_points_total, bool)
        mask[pts] = True
        mask &= self.alive
        obs = np.flatnonzero(self.obs_alive & mask[self.obs_pt])
        if len(obs) == 0:
            return
        obs = obs[np.argsort(self.obs_pt[obs], kind="stable")]   # grouped by point, oldest observation first
        groups, starts = np.unique(self.obs_pt[obs], return_index=True)
        rows = medoid_descriptors(self.obs_descriptors[obs], np.append(starts, len(obs)))
        self.descriptors[groups] = self.obs_descriptors[obs[rows]]

    # --- queries ------------------------------------------------------------------------------------
    def covisibility_matrix(self) -> np.ndarray:
        """(K, K) int64: alive points shared by every pair of keyframes (diagonal: each one's count)."""
        from scipy.sparse import csr_matrix

        sel = self.obs_alive
        k, m = self.num_keyframes, self.num_points_total
        incidence = csr_matrix((np.ones(int(sel.sum()), np.int64), (self.obs_kf[sel], self.obs_pt[sel])), shape=(k, m))
        return np.asarray((incidence @ incidence.T).toarray(), np.int64)

    def observation_counts(self) -> np.ndarray:
        """(M,) number of alive observations of every point."""
        return np.bincount(self.obs_pt[self.obs_alive], minlength=self.num_points_total)

    def covisibility(self, k: int) -> np.ndarray:
        """(K,) number of alive points keyframe k shares with every keyframe (entry k: its own count)."""
        ids = self.kf_point_ids[k]
        mask = np.zeros(self.num_points_total, bool)
        mask[ids[ids >= 0]] = True
        sel = self.obs_alive & mask[self.obs_pt]
        return np.bincount(self.obs_kf[sel], minlength=self.num_keyframes)

    def covisible_keyframes(self, k: int, max_count: int, min_shared: int = 1) -> np.ndarray:
        """Keyframes sharing the most points with k (k excluded), best first; ties by newer keyframe."""
        counts = self.covisibility(k)
        counts[k] = 0
        order = np.lexsort((-np.arange(len(counts)), -counts))
        order = order[counts[order] >= max(min_shared, 1)]
        return order[:max_count]

    def observation_keypoints(self, obs_idx) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (E, 2), octaves (E,)) of the keypoints behind observations ``obs_idx``."""
        obs_idx = np.asarray(obs_idx, np.int64)
        if len(obs_idx) == 0 or self.num_keyframes == 0:
            return np.zeros((0, 2)), np.zeros(0, np.int64)
        offsets = np.concatenate(([0], np.cumsum([len(x) for x in self.kf_xy])))
        rows = offsets[self.obs_kf[obs_idx]] + self.obs_kp[obs_idx]
        return np.concatenate(self.kf_xy)[rows], np.concatenate(self.kf_octaves)[rows]

    def points_of_keyframes(self, kfs) -> np.ndarray:
        """Sorted unique alive point indices observed by any of the keyframes."""
        if len(kfs) == 0:
            return np.zeros(0, np.int64)
        ids = np.concatenate([self.kf_point_ids[k] for k in kfs])
        ids = np.unique(ids[ids >= 0])
        return ids[self.alive[ids]]
