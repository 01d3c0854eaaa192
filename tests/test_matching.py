"""geometry/matching.py: Hamming kernels against numpy, brute force, grid index, guided (projection) search."""
from __future__ import annotations

import numpy as np
import pytest

from geometry.matching import (build_keypoint_grid, hamming_distance_matrix, hamming_distances, match_brute_force,
                               match_by_projection, match_in_window)


def random_descriptors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)


def flip_bits(desc: np.ndarray, n_bits: int, seed: int) -> np.ndarray:
    """Copy of desc with exactly n_bits different bits per row."""
    rng = np.random.default_rng(seed)
    bits = np.unpackbits(desc, axis=1)
    for row in bits:
        row[rng.choice(256, n_bits, replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def reference_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)


def test_hamming_kernel_equals_numpy_reference_exactly():
    a, b = random_descriptors(60, 1), random_descriptors(45, 2)
    a[0], b[0] = 0, 255  # all 256 bits differ
    a[1], b[1] = 0xAA, 0xAA  # identical
    d = hamming_distance_matrix(a, b)
    assert d.dtype == np.int32
    np.testing.assert_array_equal(d, reference_distances(a, b))
    assert d[0, 0] == 256 and d[1, 1] == 0
    np.testing.assert_array_equal(hamming_distances(a[:45], b), np.diag(reference_distances(a[:45], b)))
    # Non-contiguous input (every other row) gives the same numbers.
    np.testing.assert_array_equal(hamming_distance_matrix(a[::2], b), reference_distances(a[::2], b))


def test_brute_force_recovers_a_permutation_among_distractors():
    desc1 = random_descriptors(300, 3)
    perm = np.random.default_rng(4).permutation(300)
    desc2 = np.concatenate([flip_bits(desc1, 20, 5)[perm], random_descriptors(200, 6)])
    pairs, dist = match_brute_force(desc1, desc2, ratio=0.8, mutual=True, max_distance=64)
    assert len(pairs) == 300
    np.testing.assert_array_equal(perm[pairs[:, 1]], pairs[:, 0])
    assert np.all(dist == 20)
    # max_distance below the true distance rejects everything.
    assert len(match_brute_force(desc1, desc2, max_distance=19)[0]) == 0


def flip_these(desc: np.ndarray, bit_indices) -> np.ndarray:
    bits = np.unpackbits(desc.reshape(1, 32), axis=1)
    bits[0, list(bit_indices)] ^= 1
    return np.packbits(bits, axis=1)[0]


def test_brute_force_ratio_and_mutual_checks():
    base = random_descriptors(2, 7)
    query = np.stack([flip_these(base[0], range(10)), base[1]])
    # Row 0 of the query: 10 bits from base[0], 12 bits from its twin -> 10 > 0.8 * 12, ambiguous.
    desc2 = np.stack([base[0], flip_these(base[0], (100, 101)), base[1]])
    np.testing.assert_array_equal(reference_distances(query[:1], desc2[:2]), [[10, 12]])
    pairs, dist = match_brute_force(query, desc2, ratio=0.8, mutual=True, max_distance=64)
    np.testing.assert_array_equal(pairs, [[1, 2]])
    pairs, dist = match_brute_force(query, desc2, ratio=0.9, mutual=True, max_distance=64)
    np.testing.assert_array_equal(pairs, [[0, 0], [1, 2]])
    np.testing.assert_array_equal(dist, [10, 0])
    # Mutual: two query rows that both prefer the same row of desc2; only the closer keeps it.
    query = np.stack([base[0], flip_these(base[0], range(5))])
    pairs, _ = match_brute_force(query, base[:1], ratio=1.0, mutual=True, max_distance=64)
    np.testing.assert_array_equal(pairs, [[0, 0]])
    pairs, _ = match_brute_force(query, base[:1], ratio=1.0, mutual=False, max_distance=64)
    np.testing.assert_array_equal(pairs, [[0, 0], [1, 0]])


def test_empty_inputs_return_empty_outputs():
    empty = np.zeros((0, 32), np.uint8)
    some = random_descriptors(5, 10)
    assert hamming_distance_matrix(empty, some).shape == (0, 5)
    for a, b in ((empty, some), (some, empty), (empty, empty)):
        pairs, dist = match_brute_force(a, b)
        assert pairs.shape == (0, 2) and dist.shape == (0,)
    xy = np.zeros((5, 2))
    idx, dist = match_by_projection(np.zeros((0, 2)), empty, None, xy, None, some, 10.0)
    assert idx.shape == (0,) and dist.shape == (0,)
    idx, dist = match_by_projection(xy, some, None, np.zeros((0, 2)), None, empty, 10.0)
    np.testing.assert_array_equal(idx, -1)
    np.testing.assert_array_equal(dist, -1)
    grid = build_keypoint_grid(np.zeros((0, 2)), (640, 480))
    assert grid.cell_items.shape == (0,) and grid.cell_ptr[-1] == 0
    with pytest.raises(ValueError):
        hamming_distance_matrix(np.zeros((3, 31), np.uint8), some)


def test_grid_index_matches_a_numpy_bucketing():
    rng = np.random.default_rng(11)
    xy = rng.uniform(0, [640, 480], (500, 2))
    xy[0] = [np.nan, 3.0]
    xy[1] = [-5.0, 700.0]  # outside: clamped into the border cell (col 0, last row)
    grid = build_keypoint_grid(xy, (640, 480), cell_px=16.0)
    assert (grid.n_cols, grid.n_rows) == (40, 30)
    cols = np.clip(np.floor(xy[:, 0] / 16), 0, 39)
    rows = np.clip(np.floor(xy[:, 1] / 16), 0, 29)
    for c in range(grid.n_cols * grid.n_rows):
        members = grid.cell_items[grid.cell_ptr[c]:grid.cell_ptr[c + 1]]
        expected = np.nonzero((rows * 40 + cols == c) & np.isfinite(xy[:, 0]))[0]
        np.testing.assert_array_equal(members, expected)
    assert grid.cell_ptr[-1] == 499


def projection_scene(seed: int = 12):
    """Frame keypoints; map points whose projections are 0-3 px from their true keypoint; distractors around."""
    rng = np.random.default_rng(seed)
    n_true, n_distract = 200, 800
    kp_xy = np.concatenate([rng.uniform(20, [620, 460], (n_true, 2)), rng.uniform(0, [640, 480], (n_distract, 2))])
    kp_desc = random_descriptors(n_true + n_distract, seed + 1)
    kp_oct = rng.integers(0, 8, n_true + n_distract)
    offset = rng.normal(size=(n_true, 2))
    offset *= (rng.uniform(0, 3, n_true) / np.linalg.norm(offset, axis=1))[:, None]
    proj_xy = kp_xy[:n_true] + offset
    point_desc = flip_bits(kp_desc[:n_true], 15, seed + 2)
    return proj_xy, point_desc, kp_oct[:n_true].copy(), kp_xy, kp_oct, kp_desc


def test_projection_matching_finds_the_true_keypoints():
    proj_xy, point_desc, pred_oct, kp_xy, kp_oct, kp_desc = projection_scene()
    # A decoy with the exact descriptor of point 0 but 30 px away: outside the radius, must not be chosen.
    kp_xy = np.concatenate([kp_xy, proj_xy[:1] + [30.0, 0.0]])
    kp_desc = np.concatenate([kp_desc, point_desc[:1]])
    kp_oct = np.concatenate([kp_oct, pred_oct[:1]])
    idx, dist = match_by_projection(proj_xy, point_desc, pred_oct, kp_xy, kp_oct, kp_desc, radius_px=5.0)
    np.testing.assert_array_equal(idx, np.arange(len(proj_xy)))
    np.testing.assert_array_equal(dist, 15)
    # The same with a prebuilt grid and per-point radii.
    grid = build_keypoint_grid(kp_xy, (640, 480), cell_px=10.0)
    idx2, _ = match_by_projection(proj_xy, point_desc, pred_oct, kp_xy, kp_oct, kp_desc,
                                  radius_px=np.full(len(proj_xy), 5.0), grid=grid)
    np.testing.assert_array_equal(idx2, idx)


def test_projection_matching_respects_radius_octave_and_visibility():
    proj_xy, point_desc, pred_oct, kp_xy, kp_oct, kp_desc = projection_scene(seed=20)
    dist_to_true = np.linalg.norm(proj_xy - kp_xy[:len(proj_xy)], axis=1)
    radius = 1.5
    idx, _ = match_by_projection(proj_xy, point_desc, pred_oct, kp_xy, kp_oct, kp_desc, radius_px=radius)
    inside = dist_to_true <= radius
    np.testing.assert_array_equal(idx[inside], np.nonzero(inside)[0])
    # Outside the radius a point may only take a keypoint within the radius, never its true one.
    found = idx >= 0
    assert np.all(np.linalg.norm(kp_xy[idx[found]] - proj_xy[found], axis=1) <= radius)
    assert not np.any(idx[~inside] == np.nonzero(~inside)[0])
    # Predicted two levels away from the keypoint's level: not searched (tolerance is one level each way).
    far = pred_oct + 2
    idx, _ = match_by_projection(proj_xy, point_desc, far, kp_xy, kp_oct, kp_desc, radius_px=5.0)
    assert not np.any(idx == np.arange(len(proj_xy)))
    idx, _ = match_by_projection(proj_xy, point_desc, pred_oct + 1, kp_xy, kp_oct, kp_desc, radius_px=5.0)
    np.testing.assert_array_equal(idx, np.arange(len(proj_xy)))
    # Points behind the camera (NaN projections) are never matched.
    proj_xy[::2] = np.nan
    idx, dist = match_by_projection(proj_xy, point_desc, pred_oct, kp_xy, kp_oct, kp_desc, radius_px=5.0)
    assert np.all(idx[::2] == -1) and np.all(dist[::2] == -1)
    np.testing.assert_array_equal(idx[1::2], np.arange(1, len(proj_xy), 2))


def test_each_keypoint_is_used_once_by_the_closest_point():
    kp_desc = random_descriptors(1, 30)
    kp_xy = np.array([[100.0, 100.0]])
    points = np.concatenate([flip_bits(kp_desc, 12, 31), flip_bits(kp_desc, 7, 32), flip_bits(kp_desc, 9, 33)])
    proj = np.array([[101.0, 100.0], [100.0, 102.0], [99.0, 99.0]])
    idx, dist = match_by_projection(proj, points, None, kp_xy, None, kp_desc, radius_px=5.0)
    np.testing.assert_array_equal(idx, [-1, 0, -1])
    np.testing.assert_array_equal(dist, [-1, 7, -1])


def test_ratio_test_applies_against_a_runner_up_on_the_same_level():
    kp_desc = random_descriptors(1, 40)[0]
    both = np.stack([kp_desc, flip_these(kp_desc, (200, 201))])  # the corner and a near twin
    kp_xy = np.array([[50.0, 50.0], [52.0, 50.0]])
    point = flip_these(kp_desc, range(10))[None]  # 10 bits from the first, 12 from the twin
    same_level = match_by_projection([[51.0, 50.0]], point, [0], kp_xy, [0, 0], both, radius_px=4.0)
    assert same_level[0][0] == -1  # 10 > 0.8 * 12: ambiguous
    # ORB-SLAM's rule: the same corner found on the next level is not a rival.
    other_level = match_by_projection([[51.0, 50.0]], point, [0], kp_xy, [0, 1], both, radius_px=4.0)
    np.testing.assert_array_equal(other_level[0], [0])
    no_ratio = match_by_projection([[51.0, 50.0]], point, [0], kp_xy, [0, 0], both, radius_px=4.0, ratio=1.0)
    np.testing.assert_array_equal(no_ratio[0], [0])


def test_match_in_window_with_prior_and_orientation_check():
    rng = np.random.default_rng(50)
    n = 150
    xy1 = rng.uniform(0, [640, 480], (n, 2))
    desc1 = random_descriptors(n, 51)
    shift = np.array([12.0, -7.0])
    xy2 = np.concatenate([xy1 + shift + rng.normal(0, 0.5, (n, 2)), rng.uniform(0, [640, 480], (300, 2))])
    desc2 = np.concatenate([flip_bits(desc1, 10, 52), random_descriptors(300, 53)])
    # Without a prior the window around each keypoint's own position must be big enough for the motion.
    idx, dist = match_in_window(xy1, desc1, xy2, desc2, window_px=20.0)
    np.testing.assert_array_equal(idx, np.arange(n))
    idx, _ = match_in_window(xy1, desc1, xy2, desc2, window_px=5.0)
    assert np.mean(idx == np.arange(n)) < 0.1
    idx, _ = match_in_window(xy1, desc1, xy2, desc2, prior_xy=xy1 + shift, window_px=5.0)
    np.testing.assert_array_equal(idx, np.arange(n))
    # Angles: everything rotates by about 10 degrees except 5 matches that claim 180: those are dropped.
    angles1 = rng.uniform(0, 360, n)
    angles2 = np.concatenate([(angles1 + 10.0) % 360.0, rng.uniform(0, 360, 300)])
    angles2[:5] = (angles1[:5] + 180.0) % 360.0
    idx, dist = match_in_window(xy1, desc1, xy2, desc2, window_px=20.0, angles1=angles1, angles2=angles2)
    np.testing.assert_array_equal(idx[:5], -1)
    np.testing.assert_array_equal(dist[:5], -1)
    np.testing.assert_array_equal(idx[5:], np.arange(5, n))


def test_mismatched_shapes_are_refused():
    desc = random_descriptors(4, 60)
    with pytest.raises(ValueError, match="descriptors"):
        match_by_projection(np.zeros((3, 2)), desc, None, np.zeros((4, 2)), None, desc, 5.0)
    with pytest.raises(ValueError, match="same number of rows"):
        hamming_distances(desc, desc[:2])
    with pytest.raises(ValueError, match="grid"):
        match_by_projection(np.zeros((4, 2)), desc, None, np.zeros((4, 2)), None, desc, 5.0,
                            grid=build_keypoint_grid(np.zeros((2, 2))))
