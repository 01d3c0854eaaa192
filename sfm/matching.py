"""Pair selection (exhaustive, sequential with a window) and descriptor matching.

SIFT descriptors are unit-norm float32 (RootSIFT): exact nearest neighbours from one BLAS matrix product
per pair (|a - b|^2 = 2 - 2 a.b for unit vectors; default) or FLANN kd-trees (approximate), with the two
nearest neighbours, Lowe's ratio test and a mutual nearest-neighbour check. Measured on KITTI frames
(~3000 features) on the loaded 2-core machine: the product and one pass over it take ~0.1 s a pair, FLANN
with 64 checks ~0.35 s (it searches twice: forward and back for the mutual check) and finds fewer.
Exact matching runs pairs on ``workers`` threads, each with one BLAS thread and a serial pass: OpenBLAS's
threads spin after a product and fought the parallel pass that followed (lego pair of 2126 x 2713: 28 ms
for product + pass where the two alone take 9 + 5.5 ms).
Binary descriptors (ORB, AKAZE: (N, 32) uint8) go to geometry.matching's numba Hamming brute force with the same three checks.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba
import numpy as np
from numba import njit, prange

from geometry.matching import match_brute_force
from scene.parallel import ordered_thread_map
from scene.progress import Cancelled

STAGE = "match"


@dataclass(frozen=True)
class MatchingOptions:
    method: str = "exhaustive"      # "exhaustive" | "sequential"
    window: int = 10                # sequential: match each frame with the next `window` frames
    loop_candidates: int = 0        # sequential: also its k most similar images outside the window (sfm.retrieval)
    ratio: float = 0.8              # Lowe's ratio on L2 distances
    mutual: bool = True
    max_distance: float = 0.7       # L2 distance between unit descriptors (COLMAP's default)
    max_hamming_distance: int = 64  # binary descriptors: bits of 256
    min_num_matches: int = 15       # pairs with fewer matches are dropped
    exact: bool = True              # True: exact, by a matrix product (BLAS); False: FLANN kd-trees (approximate)
    flann_trees: int = 4
    flann_checks: int = 64
    workers: int | None = None      # pairs matched at once (None: scene.parallel's default)


def exhaustive_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def sequential_pairs(n: int, window: int) -> list[tuple[int, int]]:
    if window < 1:
        raise ValueError(f"sequential matching needs a window >= 1, got {window}")
    return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + 1 + window))]


_BLOCK_ROWS = 2048  # rows of the similarity matrix held at once: 2048 x 8192 float32 = 64 MB


@njit(cache=True, nogil=True)
def _scan_rows(sim, start, stop, row0, best_row_sim, best_row_idx, second_row_sim, col_sim, col_idx):
    """Rows start..stop of ``sim`` (rows row0.. of the full matrix): each row's best and second-best similarity
    and best column, and every column's best similarity and row in ``col_sim``/``col_idx`` (strictly greater
    wins, so ties keep the first row)."""
    n_cols = sim.shape[1]
    for r in range(start, stop):
        b1 = -2.0
        b2 = -2.0
        i1 = -1
        for c in range(n_cols):
            v = sim[r, c]
            if v > b1:
                b2 = b1
                b1 = v
                i1 = c
            elif v > b2:
                b2 = v
            if v > col_sim[c]:
                col_sim[c] = v
                col_idx[c] = row0 + r
        best_row_sim[row0 + r] = b1
        best_row_idx[row0 + r] = i1
        second_row_sim[row0 + r] = b2


@njit(cache=True, parallel=True)
def _best_two_of_block(sim, row0, best_row_sim, best_row_idx, second_row_sim, best_col_sim, best_col_idx, threads):
    """Per row of ``sim`` (rows row0..): the best and second-best similarity and the best column; per column the
    best similarity and its row over all blocks seen so far. One pass over the block, rows split over threads;
    each thread keeps its own column bests, merged in row order (ties keep the first row, as a serial scan)."""
    n_rows, n_cols = sim.shape
    chunks = max(1, min(threads, n_rows))
    step = (n_rows + chunks - 1) // chunks
    col_sim = np.full((chunks, n_cols), -2.0, np.float32)
    col_idx = np.full((chunks, n_cols), -1, np.int64)
    for t in prange(chunks):
        _scan_rows(sim, t * step, min(n_rows, (t + 1) * step), row0, best_row_sim, best_row_idx, second_row_sim,
                   col_sim[t], col_idx[t])
    for t in range(chunks):
        for c in range(n_cols):
            if col_sim[t, c] > best_col_sim[c]:
                best_col_sim[c] = col_sim[t, c]
                best_col_idx[c] = col_idx[t, c]


def _exact_best_two(desc1: np.ndarray, desc2: np.ndarray, serial: bool = False):
    """(nn12, d1, d2, nn21): exact nearest neighbour of each desc1 row in desc2 with its L2 distance and the
    second distance, and the nearest desc1 row of each desc2 row (for the mutual check)."""
    a = np.ascontiguousarray(desc1, np.float32)
    b = np.ascontiguousarray(desc2, np.float32)
    n1, n2 = len(a), len(b)
    best_sim = np.full(n1, -2.0, np.float32)
    best_idx = np.full(n1, -1, np.int64)
    second_sim = np.full(n1, -2.0, np.float32)
    col_sim = np.full(n2, -2.0, np.float32)
    col_idx = np.full(n2, -1, np.int64)
    bt = np.ascontiguousarray(b.T)
    for row0 in range(0, n1, _BLOCK_ROWS):
        sim = a[row0:row0 + _BLOCK_ROWS] @ bt
        if serial:  # the caller runs pairs on threads of their own
            _scan_rows(sim, 0, len(sim), row0, best_sim, best_idx, second_sim, col_sim, col_idx)
        else:
            _best_two_of_block(sim, row0, best_sim, best_idx, second_sim, col_sim, col_idx, numba.get_num_threads())
    # Unit vectors: |a - b|^2 = 2 - 2 a.b (clipped: rounding can make it slightly negative).
    d1 = np.sqrt(np.maximum(2.0 - 2.0 * best_sim.astype(np.float64), 0.0))
    d2 = np.where(second_sim > -2.0, np.sqrt(np.maximum(2.0 - 2.0 * second_sim.astype(np.float64), 0.0)), np.inf)
    return best_idx, d1, d2, col_idx


def _flann_index(desc: np.ndarray, opts: MatchingOptions):
    # FLANN_INDEX_KDTREE = 1: randomised kd-trees, approximate nearest neighbours.
    return cv2.flann_Index(np.ascontiguousarray(desc, np.float32), dict(algorithm=1, trees=opts.flann_trees))


def _flann_knn(index, query: np.ndarray, k: int, opts: MatchingOptions) -> tuple[np.ndarray, np.ndarray]:
    idx, dist_sq = index.knnSearch(np.ascontiguousarray(query, np.float32), k, params=dict(checks=opts.flann_checks))
    # FLANN's L2 returns squared distances.
    return idx.astype(np.int64).reshape(len(query), k), np.sqrt(np.maximum(dist_sq, 0)).reshape(len(query), k)


def match_descriptors(desc1: np.ndarray, desc2: np.ndarray, options: MatchingOptions | None = None,
                      index1=None, index2=None, serial: bool = False) -> np.ndarray:
    """(K, 2) int64 index pairs (row in desc1, row in desc2) passing ratio, distance and mutual checks.

    ``index1``/``index2``: FLANN indices of desc1/desc2 built earlier (``build_index``), reused across pairs.
    ``serial``: exact matching's pass stays on the calling thread (the caller runs pairs in parallel).
    """
    opts = options or MatchingOptions()
    if len(desc1) < 2 or len(desc2) < 2:
        return np.zeros((0, 2), np.int64)
    if desc1.dtype == np.uint8:
        pairs, _ = match_brute_force(desc1, desc2, opts.ratio, opts.mutual, opts.max_hamming_distance)
        return pairs
    if opts.exact:
        nn12, d1, d2, nn21 = _exact_best_two(desc1, desc2, serial)
    else:
        index2 = index2 if index2 is not None else _flann_index(desc2, opts)
        nn, dist = _flann_knn(index2, desc1, 2, opts)
        nn12, d1, d2 = nn[:, 0], dist[:, 0], dist[:, 1]
    keep = (nn12 >= 0) & (d1 <= opts.max_distance) & (d1 < opts.ratio * d2)
    if opts.mutual and keep.any():
        # Mutual check: only the candidates' nearest neighbour back is needed.
        cand = np.flatnonzero(keep)
        if opts.exact:
            back = nn21[nn12[cand]]
        else:
            index1 = index1 if index1 is not None else _flann_index(desc1, opts)
            back = _flann_knn(index1, desc2[nn12[cand]], 1, opts)[0][:, 0]
        keep[cand] = back == cand
    i = np.flatnonzero(keep)
    return np.column_stack((i, nn12[i])).astype(np.int64)


def build_index(desc: np.ndarray, options: MatchingOptions):
    """A FLANN index of one image's descriptors (None for exact matching or too few descriptors)."""
    if options.exact or len(desc) < 2 or desc.dtype == np.uint8:
        return None
    return _flann_index(desc, options)


def match_pairs(descriptors: list, pairs, options: MatchingOptions | None = None, progress=None,
                counts: dict | None = None) -> dict[tuple[int, int], np.ndarray]:
    """Matches for each (i, j) pair of indices into ``descriptors``; pairs below ``min_num_matches`` are left out.
    ``counts``: when given, receives the number of matches of every pair (kept or not), for diagnostics."""
    opts = options or MatchingOptions()
    threaded = opts.exact and not any(d.dtype == np.uint8 for d in descriptors)
    results = _threaded_matches(descriptors, pairs, opts, progress) if threaded else \
        _indexed_matches(descriptors, pairs, opts, progress)
    out: dict[tuple[int, int], np.ndarray] = {}
    total = len(pairs)
    for k, ((i, j), m) in enumerate(zip(pairs, results)):
        if counts is not None:
            counts[(i, j)] = len(m)
        if len(m) >= opts.min_num_matches:
            out[(i, j)] = m
        if progress is not None:
            progress.report(STAGE, k + 1, total, f"{len(out)} pairs with >= {opts.min_num_matches} matches")
    return out


def _check_cancel(progress, done: int, total: int) -> None:
    if progress is not None and progress.should_stop():
        raise Cancelled(f"matching cancelled after {done} of {total} pairs")


def _threaded_matches(descriptors: list, pairs, opts: MatchingOptions, progress):
    """Exact matches of every pair, in order, pairs on ``opts.workers`` threads with one BLAS thread each."""
    from geometry.bundle_adjustment import one_blas_thread

    def match(item):
        k, (i, j) = item
        _check_cancel(progress, k, len(pairs))
        return match_descriptors(descriptors[i], descriptors[j], opts, serial=True)

    with one_blas_thread():
        yield from ordered_thread_map(match, enumerate(pairs), opts.workers)


def _indexed_matches(descriptors: list, pairs, opts: MatchingOptions, progress):
    """Matches of every pair, in order, on this thread; FLANN indices built once per image and dropped when
    no later pair needs them."""
    indices: dict[int, object] = {}
    last_use = {}
    for k, (i, j) in enumerate(pairs):
        last_use[i] = last_use[j] = k
    for k, (i, j) in enumerate(pairs):
        _check_cancel(progress, k, len(pairs))
        for a in (i, j):
            if a not in indices:
                indices[a] = build_index(descriptors[a], opts)
        yield match_descriptors(descriptors[i], descriptors[j], opts, indices[i], indices[j])
        for a in (i, j):
            if last_use[a] == k:
                del indices[a]


def select_pairs(n: int, options: MatchingOptions, descriptors: list | None = None) -> list[tuple[int, int]]:
    """Pairs to match; sequential loop candidates need ``descriptors`` (one array per image)."""
    if options.method == "exhaustive":
        return exhaustive_pairs(n)
    if options.method == "sequential":
        pairs = sequential_pairs(n, options.window)
        if options.loop_candidates > 0 and descriptors is not None:
            from sfm.retrieval import loop_candidate_pairs
            pairs = sorted(set(pairs) | set(loop_candidate_pairs(descriptors, options.window,
                                                                 options.loop_candidates)))
        return pairs
    raise ValueError(f"unknown matcher {options.method!r}; use 'exhaustive' or 'sequential'")
