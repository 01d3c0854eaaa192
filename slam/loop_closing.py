"""Loop closing (ORB-SLAM's LoopClosing), run inline after local mapping for each new keyframe.

For a new keyframe k:

1. **Candidates** (``detect_candidates``): keyframes sharing bag-of-words with k that are neither
   connected to k nor to its connected keyframes in the covisibility graph (two hops, >= 15 shared
   points: what tracking and local mapping already tie together is no loop), scoring at least a fraction
   of k's lowest score among its connected keyframes; each candidate's covisibility group accumulates the
   scores, and the best keyframe of every group within 75 % of the best group is tried, best first.
2. **Sim(3)** (``compute_sim3``): descriptor matches between k's and the candidate l's keypoints that
   observe map points give 3D-3D matches; ``geometry.sim3.estimate_sim3`` (RANSAC on two-way reprojection,
   then refinement) estimates ``k_from_l`` with scale -- monocular scale drifts along the loop. A guided
   search with that similarity adds matches and the similarity is refined again.
3. **Consistency**: the loop group (l and its covisible keyframes) must project onto k with the corrected
   pose and match at least ``min_loop_matches`` keypoints, and the correction must hold for k's covisible
   keyframes too: at least ``consistent_neighbours`` of them (when k has that many) must each match
   ``min_neighbour_matches`` of the loop group's points with their corrected poses.
4. **Correction** (``LoopCloser._correct``): k's covisible group gets the corrected similarities, its
   points move with them; duplicated points are fused (the loop side's copy survives); the essential graph
   (spanning tree, covisibility >= 100, past loop edges, the new loop connections) is optimised in Sim(3)
   (``geometry.pose_graph``) with the loop keyframe fixed; every keyframe takes its optimised pose
   (translation divided by its scale) and every point follows the keyframe that references it.

Deterministic: fixed RANSAC seeds, no threads. The caller (``slam.system``) re-derives the current frame's
pose from its reference keyframe afterwards, so tracking continues on the corrected map.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from geometry.matching import match_brute_force, match_by_projection
from geometry.pose_graph import PoseGraphOptions, optimize_pose_graph
from geometry.sim3 import estimate_sim3, refine_sim3, sim3_matrix, sim3_parts
from scene.camera import Camera
from scene.rigid import Rigid3d, quat_wxyz_to_matrix
from slam.map import SlamMap
from slam.map_lock import NO_LOCK
from slam.place_recognition import PlaceRecognizer
from slam.tracking import project_points


@dataclass(frozen=True)
class LoopOptions:
    enabled: bool = True
    min_keyframes: int = 10              # no loop search in a smaller map
    keyframes_between_loops: int = 5     # no new loop within this many keyframes of the last one
    connected_min_shared: int = 15       # covisibility that makes two keyframes 'connected'
    min_score_ratio: float = 0.8         # candidates score >= ratio * k's lowest score to its connected keyframes
    common_words_ratio: float = 0.8      # ... and share >= ratio * the most words any candidate shares
    group_size: int = 10                 # covisible keyframes forming a candidate's group
    group_score_ratio: float = 0.75
    max_candidates: int = 3              # Sim(3) attempts per keyframe
    match_ratio: float = 0.75
    match_max_hamming: int = 50          # ORB-SLAM's TH_LOW
    min_matches: int = 20                # descriptor matches needed to try a Sim(3)
    ransac_iterations: int = 300
    min_sim3_inliers: int = 20
    sim3_search_radius: float = 7.5      # guided search with the Sim(3) (x keypoint scale)
    loop_search_radius: float = 10.0     # loop group projected into k
    min_loop_matches: int = 40
    consistent_neighbours: int = 1       # k's covisible keyframes that must confirm the correction
    min_neighbour_matches: int = 30
    fuse_radius: float = 4.0
    essential_min_shared: int = 100      # covisibility edges of the essential graph
    pose_graph: PoseGraphOptions = field(default_factory=PoseGraphOptions)


@dataclass
class LoopEvent:
    current_kf: int
    loop_kf: int
    current_frame: int
    loop_frame: int
    sim3_inliers: int
    loop_matches: int
    scale: float                         # of the k_from_l similarity
    fused_points: int
    corrected_keyframes: int
    pose_graph_edges: int
    pose_graph_cost: tuple               # (initial, final)
    keyframe_scales: np.ndarray          # (K,) scale of every keyframe's correction (camera units shrink by it)
    timings_ms: dict

    def as_dict(self) -> dict:
        return {"current_kf": self.current_kf, "loop_kf": self.loop_kf, "current_frame": self.current_frame,
                "loop_frame": self.loop_frame, "sim3_inliers": self.sim3_inliers, "loop_matches": self.loop_matches,
                "scale": self.scale, "fused_points": self.fused_points,
                "corrected_keyframes": self.corrected_keyframes, "pose_graph_edges": self.pose_graph_edges,
                "pose_graph_cost": list(self.pose_graph_cost), "timings_ms": dict(self.timings_ms)}


# --- helpers -----------------------------------------------------------------------------------------

def kf_sim3(slam_map: SlamMap, k: int) -> np.ndarray:
    """Keyframe k's cam_from_world as a 4x4 similarity of scale 1."""
    return sim3_matrix(quat_wxyz_to_matrix(slam_map.kf_quat[k]), slam_map.kf_trans[k])


def rigid_of(sim3: np.ndarray) -> Rigid3d:
    """The rigid camera pose of a cam_from_world similarity: rotation kept, translation divided by scale."""
    rotation, translation, scale = sim3_parts(sim3)
    return Rigid3d.from_rotation(rotation, translation / scale)


def _transform(sim3: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ sim3[:3, :3].T + sim3[:3, 3]


def _connected(covisibility_row: np.ndarray, k: int, min_shared: int) -> np.ndarray:
    row = covisibility_row.copy()
    row[k] = 0
    return np.flatnonzero(row >= min_shared)


def local_window(covisibility: np.ndarray, k: int, min_shared: int) -> np.ndarray:
    """(K,) bool: k, its connected keyframes and theirs -- what tracking and local mapping already tie to k."""
    near = np.zeros(len(covisibility), bool)
    near[k] = True
    connected = _connected(covisibility[k], k, min_shared)
    near[connected] = True
    for j in connected:
        near[_connected(covisibility[j], int(j), min_shared)] = True
    return near


def loop_group(covisibility: np.ndarray, l: int, near: np.ndarray, options: LoopOptions) -> np.ndarray:
    """l and its best connected keyframes, none of them in k's local window."""
    row = covisibility[l].copy()
    row[l] = 0
    order = np.lexsort((-np.arange(len(row)), -row))
    order = order[(row[order] >= options.connected_min_shared) & ~near[order]][:options.group_size]
    return np.concatenate(([l], order)).astype(np.int64)


# --- 1. candidates -----------------------------------------------------------------------------------

def detect_candidates(slam_map: SlamMap, recognizer: PlaceRecognizer, k: int, covisibility: np.ndarray,
                      near: np.ndarray, options: LoopOptions) -> list[int]:
    """Loop candidates for keyframe k, best group first (see the module doc)."""
    vector = recognizer.vector(k)
    if vector is None or len(vector) == 0:
        return []
    connected = _connected(covisibility[k], k, options.connected_min_shared)
    connected = connected[connected < k]  # newer keyframes (queued for background mapping) are not indexed yet
    min_score = min((recognizer.score(k, int(j)) for j in connected), default=0.0)
    kfs, common = recognizer.database.common_words(vector)
    keep = (kfs < k) & ~near[np.clip(kfs, 0, slam_map.num_keyframes - 1)]
    kfs, common = kfs[keep], common[keep]
    if len(kfs) == 0:
        return []
    keep = common >= options.common_words_ratio * common.max()
    kfs = kfs[keep]
    scores = {int(j): recognizer.score(k, int(j)) for j in kfs}
    scores = {j: s for j, s in scores.items() if s >= options.min_score_ratio * min_score}
    if not scores:
        return []
    groups = []
    for j, s in scores.items():
        best, best_score, acc = j, s, s
        for n in loop_group(covisibility, j, near, options)[1:].tolist():
            if n in scores:
                acc += scores[n]
                if scores[n] > best_score:
                    best, best_score = n, scores[n]
        groups.append((acc, best))
    top = max(acc for acc, _ in groups)
    out: list[int] = []
    for acc, best in sorted(groups, key=lambda g: (-g[0], g[1])):
        if acc >= options.group_score_ratio * top and best not in out:
            out.append(best)
    return out[:options.max_candidates]


# --- 2. Sim(3) -----------------------------------------------------------------------------------------

@dataclass
class LoopMatch:
    loop_kf: int
    k_from_l: np.ndarray             # 4x4 similarity
    k_from_world: np.ndarray         # 4x4 similarity: corrected pose of k
    sim3_inliers: int
    kp_current: np.ndarray           # keypoints of k matched to ...
    pt_loop: np.ndarray              # ... these loop-side map points
    loop_points: np.ndarray          # alive points of the loop group
    loop_group: np.ndarray           # l and its connected keyframes


def _sim3_inputs(slam_map: SlamMap, camera: Camera, k: int, l: int, kp_k, kp_l, level_scales):
    focal = float(np.mean(camera.focal_xy))
    pts_k = slam_map.kf_point_ids[k][kp_k]
    pts_l = slam_map.kf_point_ids[l][kp_l]
    p_k = slam_map.kf_pose(k).apply(slam_map.xyz[pts_k])
    p_l = slam_map.kf_pose(l).apply(slam_map.xyz[pts_l])
    return (p_k, p_l, slam_map.kf_normalized[k][kp_k], slam_map.kf_normalized[l][kp_l],
            level_scales[slam_map.kf_octaves[k][kp_k]] / focal, level_scales[slam_map.kf_octaves[l][kp_l]] / focal)


def _project_sim3(camera: Camera, slam_map: SlamMap, cam_from_world_sim3: np.ndarray, points: np.ndarray,
                  scale_factor: float, level_scales: np.ndarray):
    """Pixels / predicted octave / visibility of world points for a camera given as a similarity."""
    return project_points(camera, rigid_of(cam_from_world_sim3), slam_map.xyz[points], slam_map.max_distance[points],
                          scale_factor, len(level_scales))


def _match_projected(camera: Camera, slam_map: SlamMap, kf: int, cam_from_world_sim3: np.ndarray, points: np.ndarray,
                     radius: float, scale_factor: float, level_scales: np.ndarray, keypoints=None,
                     max_hamming: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints of kf, points) matched by projecting ``points`` with the similarity; ``keypoints``
    restricts the keypoints searched. Each keypoint appears at most once."""
    if len(points) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    uv, octave, visible = _project_sim3(camera, slam_map, cam_from_world_sim3, points, scale_factor, level_scales)
    vis = np.flatnonzero(visible)
    kps = np.arange(len(slam_map.kf_xy[kf])) if keypoints is None else np.asarray(keypoints, np.int64)
    if len(vis) == 0 or len(kps) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    match, _ = match_by_projection(uv[vis], slam_map.descriptors[points[vis]], octave[vis], slam_map.kf_xy[kf][kps],
                                   slam_map.kf_octaves[kf][kps], slam_map.kf_descriptors[kf][kps],
                                   radius * level_scales[octave[vis]], max_distance=max_hamming)
    ok = match >= 0
    return kps[match[ok]], points[vis[ok]]


def compute_sim3(slam_map: SlamMap, camera: Camera, k: int, l: int, group: np.ndarray, level_scales,
                 scale_factor: float, options: LoopOptions, seed: int = 0) -> LoopMatch | None:
    """Similarity k_from_l from 3D-3D matches, verified by projecting the loop ``group``'s points into k."""
    level_scales = np.asarray(level_scales)
    ids_k, ids_l = slam_map.kf_point_ids[k], slam_map.kf_point_ids[l]
    kp_k = np.flatnonzero(ids_k >= 0)
    kp_l = np.flatnonzero(ids_l >= 0)
    kp_k = kp_k[slam_map.alive[ids_k[kp_k]]]
    kp_l = kp_l[slam_map.alive[ids_l[kp_l]]]
    if len(kp_k) < options.min_matches or len(kp_l) < options.min_matches:
        return None
    pairs, _ = match_brute_force(slam_map.kf_descriptors[k][kp_k], slam_map.kf_descriptors[l][kp_l],
                                 ratio=options.match_ratio, mutual=True, max_distance=options.match_max_hamming)
    if len(pairs) < options.min_matches:
        return None
    mk, ml = kp_k[pairs[:, 0]], kp_l[pairs[:, 1]]
    estimate = estimate_sim3(*_sim3_inputs(slam_map, camera, k, l, mk, ml, level_scales),
                             iterations=options.ransac_iterations, seed=seed, min_inliers=options.min_sim3_inliers)
    if estimate is None:
        return None
    # Guided search: l's points projected into k with the similarity, among k's keypoints with points.
    k_from_l = estimate.one_from_two
    k_from_world_l = k_from_l @ kf_sim3(slam_map, l)
    gk, gp = _match_projected(camera, slam_map, k, k_from_world_l, ids_l[kp_l], options.sim3_search_radius,
                              scale_factor, level_scales, keypoints=kp_k, max_hamming=options.match_max_hamming)
    # point -> keypoint of l observing it
    kp_of_point = {int(p): int(q) for q, p in zip(kp_l, ids_l[kp_l])}
    mk = np.concatenate([mk[estimate.inliers], gk])
    ml = np.concatenate([ml[estimate.inliers], np.array([kp_of_point[int(p)] for p in gp], np.int64)])
    _, first = np.unique(mk, return_index=True)
    mk, ml = mk[np.sort(first)], ml[np.sort(first)]
    refined = refine_sim3(k_from_l, *_sim3_inputs(slam_map, camera, k, l, mk, ml, level_scales))
    if refined.inliers.sum() < options.min_sim3_inliers:
        return None
    k_from_l = refined.one_from_two
    k_from_world = k_from_l @ kf_sim3(slam_map, l)
    # The loop group's points projected into k with the corrected pose (points k already sees are no loop).
    loop_points = slam_map.points_of_keyframes(group)
    loop_points = loop_points[~np.isin(loop_points, ids_k)]
    kp, pt = _match_projected(camera, slam_map, k, k_from_world, loop_points, options.loop_search_radius,
                              scale_factor, level_scales, max_hamming=options.match_max_hamming)
    if len(kp) < options.min_loop_matches:
        return None
    return LoopMatch(l, k_from_l, k_from_world, int(refined.inliers.sum()), kp, pt, loop_points, group)


def neighbours_confirm(slam_map: SlamMap, camera: Camera, k: int, match: LoopMatch, connected: np.ndarray,
                       level_scales, scale_factor: float, options: LoopOptions) -> bool:
    """Covisibility consistency: k's best connected keyframes also see the loop group where the corrected
    pose puts it."""
    need = min(options.consistent_neighbours, len(connected))
    if need <= 0:
        return True
    level_scales = np.asarray(level_scales)
    k_old_inv = np.linalg.inv(kf_sim3(slam_map, k))
    confirmed = 0
    for j in connected[:max(need, 3)]:
        j_corrected = kf_sim3(slam_map, int(j)) @ k_old_inv @ match.k_from_world
        kp, _ = _match_projected(camera, slam_map, int(j), j_corrected, match.loop_points, options.loop_search_radius,
                                 scale_factor, level_scales, max_hamming=options.match_max_hamming)
        confirmed += len(kp) >= options.min_neighbour_matches
        if confirmed >= need:
            return True
    return False


# --- 3. the essential graph -------------------------------------------------------------------------------

def essential_edges(covisibility: np.ndarray, min_shared: int) -> tuple[np.ndarray, np.ndarray]:
    """(edge_i, edge_j) of the spanning tree (each keyframe to the older keyframe it shares most points
    with; the previous keyframe when it shares none) and of the strong covisibility pairs (>= min_shared)."""
    n = len(covisibility)
    pairs = set()
    for i in range(1, n):
        row = covisibility[i, :i]
        j = int(np.argmax(row)) if row.max() > 0 else i - 1
        pairs.add((i, j))
    strong_i, strong_j = np.nonzero(np.tril(covisibility, -1) >= min_shared)
    pairs.update(zip(strong_i.tolist(), strong_j.tolist()))
    pairs = sorted(pairs)
    return (np.array([p[0] for p in pairs], np.int64).reshape(-1),
            np.array([p[1] for p in pairs], np.int64).reshape(-1))


# --- 4. the loop closer -----------------------------------------------------------------------------------

class LoopCloser:
    """State across keyframes: past loop edges, the number of loops closed."""

    def __init__(self, options: LoopOptions | None = None):
        self.options = options or LoopOptions()
        self.loop_edges: list[tuple[int, int]] = []
        self.loop_closures = 0
        self._last_loop_kf = -(10 ** 9)

    def process(self, slam_map: SlamMap, camera: Camera, recognizer: PlaceRecognizer, k: int, level_scales,
                scale_factor: float, lock=NO_LOCK) -> tuple[LoopEvent | None, dict]:
        """Detect and close a loop at the new keyframe k. Returns (event or None, statistics).

        ``lock`` (``slam.map_lock``): detection hands the map to tracking between candidates; the correction
        holds it throughout, so tracking never sees a half-corrected map."""
        o = self.options
        stats: dict = {"loop_candidates": 0}
        if (not o.enabled or not recognizer.ready or slam_map.num_keyframes < o.min_keyframes
                or k - self._last_loop_kf < o.keyframes_between_loops):
            return None, stats
        t0 = time.perf_counter()
        covisibility = slam_map.covisibility_matrix()
        near = local_window(covisibility, k, o.connected_min_shared)
        candidates = detect_candidates(slam_map, recognizer, k, covisibility, near, o)
        stats["loop_candidates"] = len(candidates)
        match = None
        connected = slam_map.covisible_keyframes(k, slam_map.num_keyframes, min_shared=o.connected_min_shared)
        for l in candidates:
            lock.yield_to_tracking()  # tracking inserts no keyframe while mapping is busy: covisibility holds
            group = loop_group(covisibility, l, near, o)
            found = compute_sim3(slam_map, camera, k, l, group, level_scales, scale_factor, o, seed=k)
            if found is not None and neighbours_confirm(slam_map, camera, k, found, connected, level_scales,
                                                         scale_factor, o):
                match = found
                break
        t1 = time.perf_counter()
        stats["loop_detect_ms"] = 1000 * (t1 - t0)
        if match is None:
            return None, stats
        event = self._correct(slam_map, camera, k, match, covisibility, connected, level_scales, scale_factor)
        event.timings_ms["detect"] = 1000 * (t1 - t0)
        event.timings_ms["total"] = 1000 * (time.perf_counter() - t0)
        self.loop_closures += 1
        self._last_loop_kf = k
        return event, stats

    def _correct(self, slam_map: SlamMap, camera: Camera, k: int, match: LoopMatch, covisibility: np.ndarray,
                 connected: np.ndarray, level_scales, scale_factor: float) -> LoopEvent:
        o = self.options
        t0 = time.perf_counter()
        level_scales = np.asarray(level_scales)
        n_kf = slam_map.num_keyframes
        l = match.loop_kf
        group = [k] + [int(j) for j in connected if int(j) not in set(match.loop_group.tolist())]
        in_group = np.zeros(n_kf, bool)
        in_group[group] = True
        before = np.stack([kf_sim3(slam_map, i) for i in range(n_kf)])     # non-corrected, scale 1
        edge_i, edge_j = essential_edges(covisibility, o.essential_min_shared)
        connected_before = covisibility >= o.connected_min_shared

        # Corrected similarities of k's group: each keeps its pose relative to k.
        k_old_inv = np.linalg.inv(before[k])
        corrected = before.copy()
        for i in group:
            corrected[i] = before[i] @ k_old_inv @ match.k_from_world
        # Points seen by the group move with the first group keyframe that sees them.
        reference = slam_map.first_kf.copy()
        corrected_by = np.full(slam_map.num_points_total, -1, np.int64)
        for i in group:
            ids = slam_map.kf_point_ids[i]
            ids = ids[(ids >= 0)]
            ids = ids[slam_map.alive[ids] & (corrected_by[ids] < 0)]
            corrected_by[ids] = i
            world_from_corrected = np.linalg.inv(corrected[i])
            slam_map.xyz[ids] = _transform(world_from_corrected @ before[i], slam_map.xyz[ids])
            slam_map.max_distance[ids] /= sim3_parts(corrected[i])[2]
        moved = corrected_by >= 0
        reference[moved] = corrected_by[moved]
        for i in group:
            slam_map.set_kf_pose(i, rigid_of(corrected[i]))
        t1 = time.perf_counter()

        # Fuse: k's matched keypoints take the loop points, then the loop group is searched in every group keyframe.
        fused = 0
        for kp, pt in zip(match.kp_current, match.pt_loop):
            fused += self._fuse_one(slam_map, k, int(kp), int(pt))
        for i in group:
            kp, pt = _match_projected(camera, slam_map, i, corrected[i], match.loop_points, o.fuse_radius,
                                      scale_factor, level_scales, max_hamming=o.match_max_hamming)
            for a, b in zip(kp, pt):
                fused += self._fuse_one(slam_map, i, int(a), int(b))
        t2 = time.perf_counter()

        # Loop connections: pairs that became connected through the fusion.
        after = slam_map.covisibility_matrix()
        new_pairs = []
        for i in group:
            for j in np.flatnonzero((after[i] >= o.connected_min_shared) & ~connected_before[i] & ~in_group):
                new_pairs.append((i, int(j)))
        self.loop_edges.extend((i, j) for i, j in new_pairs if (i, j) not in self.loop_edges)
        if (k, l) not in self.loop_edges:
            self.loop_edges.append((k, l))

        # Essential graph: the new loop edges measured with the corrected poses; every other edge with the
        # poses from before this correction (past loop edges included).
        initial = corrected
        pair_set = {(int(a), int(b)) for a, b in zip(edge_i, edge_j)}
        ei, ej, z = [], [], []
        for a, b in sorted(pair_set):
            if (a, b) in self.loop_edges or (b, a) in self.loop_edges:
                continue
            ei.append(a), ej.append(b), z.append(before[a] @ np.linalg.inv(before[b]))
        new_set = set(new_pairs) | {(k, l)}
        for a, b in self.loop_edges:
            pose = initial if (a, b) in new_set else before
            ei.append(a), ej.append(b), z.append(pose[a] @ np.linalg.inv(pose[b]))
        fixed = np.zeros(n_kf, bool)
        fixed[l] = True
        result = optimize_pose_graph(initial, np.array(ei, np.int64), np.array(ej, np.int64), np.stack(z), fixed,
                                     options=o.pose_graph)
        t3 = time.perf_counter()

        # Poses and points follow the optimised similarities.
        optimised = result.poses
        scales = np.array([sim3_parts(s)[2] for s in optimised])
        for i in range(n_kf):
            slam_map.set_kf_pose(i, rigid_of(optimised[i]))
        pts = np.flatnonzero(slam_map.alive)
        ref = reference[pts]
        for i in np.unique(ref):
            sel = pts[ref == i]
            correction = np.linalg.inv(optimised[i]) @ initial[i]
            slam_map.xyz[sel] = _transform(correction, slam_map.xyz[sel])
            slam_map.max_distance[sel] /= sim3_parts(optimised[i])[2] / sim3_parts(initial[i])[2]
        t4 = time.perf_counter()
        return LoopEvent(k, l, int(slam_map.kf_frame_index[k]), int(slam_map.kf_frame_index[l]), match.sim3_inliers,
                         len(match.kp_current), float(sim3_parts(match.k_from_l)[2]), fused, len(group), len(ei),
                         (result.initial_cost, result.final_cost), scales,
                         {"correct_group": 1000 * (t1 - t0), "fuse": 1000 * (t2 - t1), "pose_graph": 1000 * (t3 - t2),
                          "apply": 1000 * (t4 - t3)})

    @staticmethod
    def _fuse_one(slam_map: SlamMap, kf: int, kp: int, loop_point: int) -> int:
        """Keypoint kp of kf observes ``loop_point``: replace its own point by it, or add the observation."""
        if not slam_map.alive[loop_point]:
            return 0
        own = int(slam_map.kf_point_ids[kf][kp])
        if own == loop_point:
            return 0
        if own >= 0 and slam_map.alive[own]:
            slam_map.replace_point(own, loop_point)
            return 1
        if own >= 0:
            return 0
        ids = slam_map.kf_point_ids[kf]
        if np.any(ids == loop_point):
            return 0
        slam_map.add_observations(kf, [kp], [loop_point])
        return 1
