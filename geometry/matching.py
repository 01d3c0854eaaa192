"""Matching 256-bit binary descriptors (ORB): Hamming distances, brute force, and guided search.

Descriptors are (N, 32) uint8 rows, as OpenCV's ORB writes them. The kernels read each row as four
uint64 words and count bits with the CPU's popcount instruction (LLVM ``ctpop``).

Guided matching (``match_by_projection``, ``match_in_window``) looks only at frame keypoints inside a
window around each predicted position. A ``KeypointGrid`` (cell -> keypoint indices in CSR form) is built
once per frame by a numba kernel and can be passed to every search against that frame.

Pixel coordinates may be in any convention as long as predictions and keypoints share it (Parallax uses
COLMAP's: pixel centres at +0.5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

DESCRIPTOR_BYTES = 32
# A distance that no pair of 256-bit descriptors reaches: "no candidate".
NO_DISTANCE = 1 << 20
# ORB-SLAM's thresholds: TH_HIGH for tracking searches, TH_LOW for initialization / brute force.
DISTANCE_HIGH = 100
DISTANCE_LOW = 50
DEFAULT_GRID_CELL_PX = 16.0
ORIENTATION_BINS = 30


# --- popcount and Hamming distance ------------------------------------------------------------

@intrinsic
def _popcount64(typingctx, x):
    """LLVM's ctpop on a uint64 (compiles to one POPCNT on x86-64)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64]), "llvm.ctpop.i64")
        return builder.call(fn, [args[0]])

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _hamming(a, i, b, j):
    """Hamming distance between row i of a and row j of b, both (N, 4) uint64."""
    return (_popcount64(a[i, 0] ^ b[j, 0]) + _popcount64(a[i, 1] ^ b[j, 1])
            + _popcount64(a[i, 2] ^ b[j, 2]) + _popcount64(a[i, 3] ^ b[j, 3]))


@njit(cache=True, nogil=True)
def _distance_matrix_kernel(words1, words2):
    out = np.empty((words1.shape[0], words2.shape[0]), np.int32)
    for i in range(words1.shape[0]):
        for j in range(words2.shape[0]):
            out[i, j] = _hamming(words1, i, words2, j)
    return out


@njit(cache=True, nogil=True)
def _paired_distance_kernel(words1, words2):
    out = np.empty(words1.shape[0], np.int32)
    for i in range(words1.shape[0]):
        out[i] = _hamming(words1, i, words2, i)
    return out


def descriptor_words(descriptors, name: str = "descriptors") -> np.ndarray:
    """(N, 32) uint8 descriptors -> (N, 4) uint64 view (copied only if not already contiguous)."""
    d = np.asarray(descriptors)
    if d.ndim != 2 or d.shape[1] != DESCRIPTOR_BYTES or d.dtype != np.uint8:
        if d.size == 0 and d.ndim in (1, 2):
            return np.zeros((0, 4), np.uint64)
        raise ValueError(f"{name} must be (N, {DESCRIPTOR_BYTES}) uint8, got {d.shape} {d.dtype}")
    return np.ascontiguousarray(d).view(np.uint64)


def hamming_distance_matrix(desc1, desc2) -> np.ndarray:
    """(N1, 32) x (N2, 32) uint8 -> (N1, N2) int32 bit distances."""
    return _distance_matrix_kernel(descriptor_words(desc1, "desc1"), descriptor_words(desc2, "desc2"))


def hamming_distances(desc1, desc2) -> np.ndarray:
    """Row-wise distances between two (N, 32) descriptor arrays of the same length -> (N,) int32."""
    w1, w2 = descriptor_words(desc1, "desc1"), descriptor_words(desc2, "desc2")
    if w1.shape[0] != w2.shape[0]:
        raise ValueError(f"desc1 and desc2 must have the same number of rows, got {w1.shape[0]} and {w2.shape[0]}")
    return _paired_distance_kernel(w1, w2)


# --- representative descriptors ----------------------------------------------------------------

@njit(cache=True, nogil=True)
def _medoid_kernel(words, group_ptr):
    n_groups = group_ptr.shape[0] - 1
    out = np.full(n_groups, -1, np.int64)
    for g in range(n_groups):
        start, stop = group_ptr[g], group_ptr[g + 1]
        n = stop - start
        if n <= 0:
            continue
        if n <= 2:  # with two, both medians tie: the first wins
            out[g] = start
            continue
        dist = np.empty((n, n), np.int64)
        for a in range(n):
            dist[a, a] = 0
            for b in range(a + 1, n):
                d = np.int64(_hamming(words, start + a, words, start + b))
                dist[a, b] = d
                dist[b, a] = d
        best_median, best = NO_DISTANCE, -1
        mid = (n - 1) // 2
        for a in range(n):
            row = np.sort(dist[a])
            if row[mid] < best_median:  # strict: the lowest index wins ties
                best_median, best = row[mid], a
        out[g] = start + best
    return out


def medoid_descriptors(descriptors, group_ptr) -> np.ndarray:
    """Row index of the most distinctive descriptor of every group (ORB-SLAM's ComputeDistinctiveDescriptors).

    descriptors (N, 32) uint8, grouped in consecutive rows: group g is rows group_ptr[g]:group_ptr[g + 1].
    The chosen row has the least median Hamming distance to the group's rows (itself included, as ORB-SLAM
    counts it; lowest row on a tie). Returns (G,) int64 row indices, -1 for an empty group.
    """
    words = descriptor_words(descriptors)
    ptr = np.ascontiguousarray(np.asarray(group_ptr, np.int64).reshape(-1))
    if len(ptr) == 0:
        return np.zeros(0, np.int64)
    if ptr[0] < 0 or ptr[-1] > words.shape[0] or np.any(np.diff(ptr) < 0):
        raise ValueError(f"group_ptr must be non-decreasing within [0, {words.shape[0]}]")
    return _medoid_kernel(words, ptr)


# --- brute force ------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _brute_force_kernel(words1, words2, ratio, mutual, max_distance):
    n1, n2 = words1.shape[0], words2.shape[0]
    best_j = np.full(n1, -1, np.int64)
    best_d = np.full(n1, NO_DISTANCE, np.int64)
    second_d = np.full(n1, NO_DISTANCE, np.int64)
    col_best_i = np.full(n2, -1, np.int64)
    col_best_d = np.full(n2, NO_DISTANCE, np.int64)
    for i in range(n1):
        for j in range(n2):
            d = np.int64(_hamming(words1, i, words2, j))
            if d < best_d[i]:
                second_d[i] = best_d[i]
                best_d[i] = d
                best_j[i] = j
            elif d < second_d[i]:
                second_d[i] = d
            if d < col_best_d[j]:  # first (lowest i) wins ties, like the row side
                col_best_d[j] = d
                col_best_i[j] = i
    keep = np.zeros(n1, np.bool_)
    count = 0
    for i in range(n1):
        j = best_j[i]
        if j < 0 or best_d[i] > max_distance:
            continue
        # Ratio test; with no second candidate it passes. Ties between the best two fail for ratio < 1.
        if second_d[i] < NO_DISTANCE and best_d[i] > ratio * second_d[i]:
            continue
        if mutual and col_best_i[j] != i:
            continue
        keep[i] = True
        count += 1
    pairs = np.empty((count, 2), np.int64)
    dist = np.empty(count, np.int32)
    k = 0
    for i in range(n1):
        if keep[i]:
            pairs[k, 0] = i
            pairs[k, 1] = best_j[i]
            dist[k] = best_d[i]
            k += 1
    return pairs, dist


def match_brute_force(desc1, desc2, ratio: float = 0.8, mutual: bool = True,
                      max_distance: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbour of every row of desc1 among desc2 with Lowe's ratio test.

    A pair (i, j) is kept when d(i, j) <= max_distance, d(i, j) <= ratio * (second best distance of i),
    and, with ``mutual``, i is also j's nearest neighbour in desc1. ``ratio >= 1`` disables the ratio test.
    Returns (pairs (K, 2) int64 of (index in desc1, index in desc2), distances (K,) int32), ordered by i.
    """
    w1, w2 = descriptor_words(desc1, "desc1"), descriptor_words(desc2, "desc2")
    return _brute_force_kernel(w1, w2, float(ratio), bool(mutual), int(max_distance))


# --- grid index over frame keypoints ------------------------------------------------------------

@dataclass(frozen=True)
class KeypointGrid:
    """Keypoints bucketed in square cells: indices of cell c are cell_items[cell_ptr[c]:cell_ptr[c + 1]].

    Cell (col, row) covers x in [col * cell_px, (col + 1) * cell_px), same for y; keypoints outside the grid
    are put in the nearest border cell, keypoints with NaN coordinates in none.
    """
    cell_px: float
    n_cols: int
    n_rows: int
    cell_ptr: np.ndarray    # (n_cols * n_rows + 1,) int64
    cell_items: np.ndarray  # (N,) int64 keypoint indices, row-major by cell
    n_keypoints: int


@njit(cache=True, nogil=True)
def _grid_kernel(xy, cell_px, n_cols, n_rows):
    n = xy.shape[0]
    cell_of = np.full(n, -1, np.int64)
    ptr = np.zeros(n_cols * n_rows + 1, np.int64)
    for i in range(n):
        x, y = xy[i, 0], xy[i, 1]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cx = min(max(int(np.floor(x / cell_px)), 0), n_cols - 1)
        cy = min(max(int(np.floor(y / cell_px)), 0), n_rows - 1)
        c = cy * n_cols + cx
        cell_of[i] = c
        ptr[c + 1] += 1
    for c in range(n_cols * n_rows):
        ptr[c + 1] += ptr[c]
    fill = ptr[:-1].copy()
    items = np.empty(ptr[-1], np.int64)
    for i in range(n):  # ascending i inside each cell: searches visit candidates in a fixed order
        c = cell_of[i]
        if c >= 0:
            items[fill[c]] = i
            fill[c] += 1
    return ptr, items


def _as_points(values, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 2))
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {a.shape}")
    return np.ascontiguousarray(a)


def build_keypoint_grid(keypoints_xy, image_size: tuple[int, int] | None = None,
                        cell_px: float = DEFAULT_GRID_CELL_PX) -> KeypointGrid:
    """Bucket (N, 2) keypoint positions; ``image_size`` (width, height) defaults to their extent."""
    xy = _as_points(keypoints_xy, "keypoints_xy")
    if not (np.isfinite(cell_px) and cell_px > 0):
        raise ValueError(f"cell_px must be positive, got {cell_px}")
    if image_size is None:
        finite = xy[np.all(np.isfinite(xy), axis=1)]
        extent = finite.max(axis=0) + 1.0 if len(finite) else np.ones(2)
        width, height = float(max(extent[0], 1.0)), float(max(extent[1], 1.0))
    else:
        width, height = float(image_size[0]), float(image_size[1])
    n_cols = max(1, int(np.ceil(width / cell_px)))
    n_rows = max(1, int(np.ceil(height / cell_px)))
    ptr, items = _grid_kernel(xy, float(cell_px), n_cols, n_rows)
    return KeypointGrid(float(cell_px), n_cols, n_rows, ptr, items, len(xy))


# --- guided search -------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _window_search_kernel(pred_xy, pred_words, pred_octaves, radii, kp_xy, kp_octaves, kp_words,
                          cell_px, n_cols, n_rows, cell_ptr, cell_items,
                          octave_below, octave_above, max_distance, ratio):
    """Best keypoint for every prediction, then each keypoint kept only by its best prediction."""
    m = pred_xy.shape[0]
    n = kp_xy.shape[0]
    match = np.full(m, -1, np.int64)
    dist = np.full(m, NO_DISTANCE, np.int64)
    for p in range(m):
        u, v, r = pred_xy[p, 0], pred_xy[p, 1], radii[p]
        if not (np.isfinite(u) and np.isfinite(v) and r >= 0.0):
            continue
        octave = pred_octaves[p]
        lo_oct = octave - octave_below
        hi_oct = octave + octave_above
        c0 = max(int(np.floor((u - r) / cell_px)), 0)
        c1 = min(int(np.floor((u + r) / cell_px)), n_cols - 1)
        r0 = max(int(np.floor((v - r) / cell_px)), 0)
        r1 = min(int(np.floor((v + r) / cell_px)), n_rows - 1)
        best_d, best_k, best_oct = NO_DISTANCE, -1, -1
        second_d, second_oct = NO_DISTANCE, -1
        r2 = r * r
        for row in range(r0, r1 + 1):
            for col in range(c0, c1 + 1):
                c = row * n_cols + col
                for t in range(cell_ptr[c], cell_ptr[c + 1]):
                    k = cell_items[t]
                    if octave >= 0 and (kp_octaves[k] < lo_oct or kp_octaves[k] > hi_oct):
                        continue
                    dx = kp_xy[k, 0] - u
                    dy = kp_xy[k, 1] - v
                    if dx * dx + dy * dy > r2:
                        continue
                    d = np.int64(_hamming(pred_words, p, kp_words, k))
                    if d < best_d:
                        second_d, second_oct = best_d, best_oct
                        best_d, best_k, best_oct = d, k, kp_octaves[k]
                    elif d < second_d:
                        second_d, second_oct = d, kp_octaves[k]
        if best_k < 0 or best_d > max_distance:
            continue
        # ORB-SLAM's rule: the ratio test only against a runner-up on the same pyramid level, because the
        # same corner detected on two adjacent levels gives two near-identical descriptors.
        if second_oct == best_oct and second_d < NO_DISTANCE and best_d > ratio * second_d:
            continue
        match[p] = best_k
        dist[p] = best_d
    # Each keypoint goes to its closest prediction (lowest index on a tie); the others lose it.
    owner = np.full(n, -1, np.int64)
    for p in range(m):
        k = match[p]
        if k < 0:
            continue
        q = owner[k]
        if q < 0 or dist[p] < dist[q]:
            owner[k] = p
    for p in range(m):
        k = match[p]
        if k >= 0 and owner[k] != p:
            match[p] = -1
            dist[p] = NO_DISTANCE
    out_dist = np.full(m, -1, np.int32)
    for p in range(m):
        if match[p] >= 0:
            out_dist[p] = dist[p]
    return match, out_dist


def _as_octaves(values, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.full(n, -1, np.int64)
    a = np.ascontiguousarray(np.asarray(values, dtype=np.int64).reshape(-1))
    if a.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries, got {a.shape[0]}")
    return a


def _as_radii(radius_px, n: int) -> np.ndarray:
    r = np.asarray(radius_px, dtype=np.float64)
    if r.ndim == 0:
        return np.full(n, float(r))
    r = np.ascontiguousarray(r.reshape(-1))
    if r.shape[0] != n:
        raise ValueError(f"radius_px must be a number or have {n} entries, got {r.shape[0]}")
    return r


def _check_rows(xy: np.ndarray, words: np.ndarray, what: str) -> None:
    if xy.shape[0] != words.shape[0]:
        raise ValueError(f"{what}: {xy.shape[0]} positions but {words.shape[0]} descriptors")


def _grid_for(kp_xy: np.ndarray, grid: KeypointGrid | None) -> KeypointGrid:
    if grid is None:
        return build_keypoint_grid(kp_xy)
    if grid.n_keypoints != kp_xy.shape[0]:
        raise ValueError(f"grid was built over {grid.n_keypoints} keypoints, but {kp_xy.shape[0]} were given")
    return grid


def match_by_projection(projected_xy, point_descriptors, predicted_octaves, frame_keypoints_xy, frame_octaves,
                        frame_descriptors, radius_px, max_distance: int = DISTANCE_HIGH, ratio: float = 0.8,
                        octave_tolerance: tuple[int, int] = (1, 1),
                        grid: KeypointGrid | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Match map points, projected into a frame, to that frame's keypoints (ORB-SLAM's SearchByProjection).

    projected_xy (M, 2) predicted pixel positions (NaN: not visible, never matched); point_descriptors
    (M, 32); predicted_octaves (M,) pyramid level each point should appear at, or -1 / None for any level;
    frame_keypoints_xy (N, 2), frame_octaves (N,), frame_descriptors (N, 32); radius_px a number or (M,)
    per point (callers usually scale it with the predicted level). A candidate must lie within the radius
    and on a level in [octave - octave_tolerance[0], octave + octave_tolerance[1]].

    The best candidate must have distance <= max_distance and, when the runner-up is on the same level,
    distance <= ratio * runner-up. A keypoint claimed by several points goes to the closest one.
    Returns (keypoint index per map point (M,) int64, -1 if none; Hamming distance (M,) int32, -1 if none).
    """
    pred_xy = _as_points(projected_xy, "projected_xy")
    pred_words = descriptor_words(point_descriptors, "point_descriptors")
    kp_xy = _as_points(frame_keypoints_xy, "frame_keypoints_xy")
    kp_words = descriptor_words(frame_descriptors, "frame_descriptors")
    _check_rows(pred_xy, pred_words, "map points")
    _check_rows(kp_xy, kp_words, "frame keypoints")
    m, n = pred_xy.shape[0], kp_xy.shape[0]
    if m == 0 or n == 0:
        return np.full(m, -1, np.int64), np.full(m, -1, np.int32)
    pred_oct = _as_octaves(predicted_octaves, m, "predicted_octaves")
    kp_oct = _as_octaves(frame_octaves, n, "frame_octaves")
    radii = _as_radii(radius_px, m)
    g = _grid_for(kp_xy, grid)
    below, above = int(octave_tolerance[0]), int(octave_tolerance[1])
    return _window_search_kernel(pred_xy, pred_words, pred_oct, radii, kp_xy, kp_oct, kp_words,
                                 g.cell_px, g.n_cols, g.n_rows, g.cell_ptr, g.cell_items,
                                 below, above, int(max_distance), float(ratio))


def _orientation_consistent(angles1, angles2, matches: np.ndarray, bins: int) -> np.ndarray:
    """ORB-SLAM's rotation check: keep matches whose angle change falls in the three fullest bins."""
    ok = matches >= 0
    idx1 = np.nonzero(ok)[0]
    if len(idx1) == 0:
        return ok
    delta = (np.asarray(angles1, np.float64)[idx1] - np.asarray(angles2, np.float64)[matches[idx1]]) % 360.0
    which = np.minimum((delta * bins / 360.0).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    top = np.argsort(-counts, kind="stable")[:3]
    # Like ORB-SLAM, a runner-up bin much smaller than the main one (< 10 %) is noise, not a second mode.
    keep_bins = [top[0]] + [b for b in top[1:] if counts[b] >= 0.1 * counts[top[0]] and counts[b] > 0]
    good = np.isin(which, keep_bins)
    keep = np.zeros_like(ok)
    keep[idx1[good]] = True
    return keep


def match_in_window(keypoints1_xy, descriptors1, keypoints2_xy, descriptors2, prior_xy=None,
                    window_px: float = 100.0, max_distance: int = DISTANCE_LOW, ratio: float = 0.9,
                    octaves1=None, octaves2=None, angles1=None, angles2=None,
                    grid2: KeypointGrid | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two-frame matching with a position prior (ORB-SLAM's SearchForInitialization).

    Each keypoint i of frame 1 looks for a frame-2 keypoint within ``window_px`` of prior_xy[i] (defaults
    to its own position: small motion). With octaves given, only the same level is searched. With angles
    (degrees) given, matches whose orientation change disagrees with the dominant ones are dropped.
    Each frame-2 keypoint is used once. Returns (index in frame 2 per frame-1 keypoint (N1,) int64 or -1,
    distance (N1,) int32 or -1).
    """
    xy1 = _as_points(keypoints1_xy, "keypoints1_xy")
    prior = xy1 if prior_xy is None else _as_points(prior_xy, "prior_xy")
    if prior.shape[0] != xy1.shape[0]:
        raise ValueError(f"prior_xy has {prior.shape[0]} rows for {xy1.shape[0]} keypoints")
    same_level = octaves1 is not None and octaves2 is not None
    matches, dist = match_by_projection(prior, descriptors1, octaves1 if same_level else None, keypoints2_xy,
                                        octaves2 if same_level else None, descriptors2, window_px,
                                        max_distance=max_distance, ratio=ratio, octave_tolerance=(0, 0),
                                        grid=grid2)
    if angles1 is not None and angles2 is not None and len(matches):
        keep = _orientation_consistent(angles1, angles2, matches, ORIENTATION_BINS)
        matches = np.where(keep, matches, -1)
        dist = np.where(keep, dist, -1).astype(np.int32)
    return matches, dist
