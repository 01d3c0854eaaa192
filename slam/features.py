"""ORB features spread over the image the way ORB-SLAM spreads them.

Per pyramid level: FAST at ``fast_threshold``; cells of ``fallback_cell_px`` that found nothing are
searched again at ``fast_min_threshold`` (weak texture still gets features). The candidates are then
thinned to the level's quota by taking the best of every distribution cell first, the second best of
every cell next, and so on, so the kept features cover the image instead of piling up on the most
textured object. Orientation is the intensity-centroid angle; descriptors come from ``cv2.ORB`` (compute
only) on the same level image.

Images of any size: the number of features scales with the image area, and a large frame starts its
pyramid at a downscaled first level (``max_first_level_side``) with extra levels, so a 4K frame needs no
resizing by the caller. ``PyramidPlan`` records every level's size and scale.

Pixel convention: keypoints are returned in COLMAP's (top-left image corner at (0, 0), pixel centres at
+0.5). FAST and ORB work in OpenCV's (pixel centres at integers); the conversion happens in one place,
``_level_to_image``.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
from numba import njit

from geometry.camera_models import pixels_to_normalized, undistort_normalized
from scene.camera import Camera
from scene.errors import ParallaxError

ORB_PATCH_SIZE = 31
HALF_PATCH = ORB_PATCH_SIZE // 2
# FAST reads a circle of radius 3: it reports nothing closer than this to the image it is given.
FAST_RADIUS = 3


@dataclass(frozen=True)
class OrbOptions:
    """Settings of ``extract_orb``. Counts and level numbers are for ``reference_size``; see ``pyramid_plan``."""
    n_features: int = 1000
    reference_size: tuple[int, int] = (640, 480)
    scale_with_area: bool = True        # n_features * (area / reference area)
    max_features: int | None = None     # cap after scaling
    scale_factor: float = 1.2
    n_levels: int = 8                   # at the reference size; larger images get more, smaller fewer
    max_first_level_side: int = 1920    # longer images start the pyramid downscaled to this side
    fast_threshold: int = 20
    fast_min_threshold: int = 7         # for fallback cells where fast_threshold finds nothing
    fallback_cell_px: int = 30
    edge_px: int = 19                   # keypoints keep this far from every level's border (ORB-SLAM's)

    def __post_init__(self):
        if int(self.n_features) < 0:
            raise ValueError(f"n_features must be >= 0, got {self.n_features}")
        if self.max_features is not None and int(self.max_features) < 0:
            raise ValueError(f"max_features must be >= 0, got {self.max_features}")
        if not (self.scale_factor > 1.0 and math.isfinite(self.scale_factor)):
            raise ValueError(f"scale_factor must be > 1, got {self.scale_factor}")
        if int(self.n_levels) < 1:
            raise ValueError(f"n_levels must be >= 1, got {self.n_levels}")
        if not 0 < int(self.fast_min_threshold) <= int(self.fast_threshold) < 256:
            raise ValueError("FAST thresholds must satisfy 0 < fast_min_threshold <= fast_threshold < 256, got "
                             f"{self.fast_min_threshold} and {self.fast_threshold}")
        if int(self.fallback_cell_px) < 8:
            raise ValueError(f"fallback_cell_px must be >= 8, got {self.fallback_cell_px}")
        # The rotated 31 x 31 BRIEF patch and the radius-15 orientation disc need about 16 px around a keypoint.
        if int(self.edge_px) < HALF_PATCH + 1:
            raise ValueError(f"edge_px must be >= {HALF_PATCH + 1}, got {self.edge_px}")
        if int(self.max_first_level_side) < 64:
            raise ValueError(f"max_first_level_side must be >= 64, got {self.max_first_level_side}")


@dataclass(frozen=True)
class PyramidPlan:
    """The pyramid ``extract_orb`` builds for an image size.

    Level l is ``level_sizes[l]`` (width, height) pixels; one of its pixels spans ``level_scales_xy[l]``
    image pixels (exact, from the rounded sizes); ``level_scales[l] = first_level_scale * scale_factor**l``
    is the nominal scale (use it for search radii and measurement sigmas, as ORB-SLAM does).
    """
    image_size: tuple[int, int]
    first_level_scale: float
    scale_factor: float
    level_sizes: np.ndarray        # (L, 2) int64 width, height
    level_scales: np.ndarray       # (L,) float64
    level_scales_xy: np.ndarray    # (L, 2) float64
    level_quotas: np.ndarray       # (L,) int64 features wanted per level
    n_features: int

    @property
    def n_levels(self) -> int:
        return len(self.level_sizes)


@dataclass(frozen=True)
class Features:
    """ORB features of one image. Row i of every array describes keypoint i."""
    keypoints_xy: np.ndarray       # (N, 2) float64, COLMAP pixels of the original image
    normalized_xy: np.ndarray      # (N, 2) float64 undistorted normalized coordinates (NaN: not invertible)
    octaves: np.ndarray            # (N,) int32 pyramid level
    scales: np.ndarray             # (N,) float32 nominal level scale (plan.level_scales[octave])
    angles: np.ndarray             # (N,) float32 degrees in [0, 360), OpenCV's orientation convention
    responses: np.ndarray          # (N,) float32 FAST score
    descriptors: np.ndarray        # (N, 32) uint8 rBRIEF (cv2.ORB)
    plan: PyramidPlan = field(repr=False)

    def __len__(self) -> int:
        return len(self.keypoints_xy)


# --- pyramid plan ---------------------------------------------------------------------------------

def _target_count(width: int, height: int, options: OrbOptions) -> int:
    n = float(options.n_features)
    if options.scale_with_area:
        ref_w, ref_h = options.reference_size
        n *= (width * height) / float(ref_w * ref_h)
    n = int(round(n))
    if options.max_features is not None:
        n = min(n, int(options.max_features))
    return n


def _level_quotas(total: int, n_levels: int, scale_factor: float) -> np.ndarray:
    """ORB-SLAM's split: quota proportional to 1 / scale_factor**level, rounding left to the last level."""
    f = 1.0 / scale_factor
    first = total * (1.0 - f) / (1.0 - f ** n_levels)
    quotas = np.array([int(round(first * f ** level)) for level in range(n_levels)], np.int64)
    quotas[-1] = max(total - int(quotas[:-1].sum()), 0)
    return quotas


def pyramid_plan(width: int, height: int, options: OrbOptions | None = None) -> PyramidPlan:
    """Levels, scales and quotas for a width x height image (no image needed)."""
    options = options or OrbOptions()
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    s = float(options.scale_factor)
    first_scale = max(1.0, max(width, height) / float(options.max_first_level_side))
    base_w, base_h = max(1, int(round(width / first_scale))), max(1, int(round(height / first_scale)))
    # Keep the coarsest level about as large as it is at the reference size: more levels for bigger frames.
    extra = math.log(max(base_w, base_h) / float(max(options.reference_size))) / math.log(s)
    n_levels = max(1, int(options.n_levels) + int(round(extra)))
    sizes = [(base_w, base_h)]
    for level in range(1, n_levels):
        w, h = int(round(base_w / s ** level)), int(round(base_h / s ** level))
        if min(w, h) < 2 * options.edge_px + 2 * FAST_RADIUS + 1:
            break  # too small to hold a single keypoint
        sizes.append((w, h))
    level_sizes = np.array(sizes, np.int64)
    scales = first_scale * s ** np.arange(len(sizes), dtype=np.float64)
    scales_xy = np.column_stack((width / level_sizes[:, 0], height / level_sizes[:, 1])).astype(np.float64)
    total = _target_count(width, height, options)
    return PyramidPlan((width, height), first_scale, s, level_sizes, scales, scales_xy,
                       _level_quotas(total, len(sizes), s), total)


def _level_to_image(xy_level: np.ndarray, scale_xy) -> np.ndarray:
    """OpenCV integer pixel (x, y) of a level -> COLMAP coordinates in the original image.

    cv2.resize maps pixel centres: (x_image + 0.5) = (x_level + 0.5) * scale, with x_image in OpenCV's
    convention; COLMAP's coordinate of that point is x_image + 0.5, hence (x_level + 0.5) * scale.
    """
    return (xy_level.astype(np.float64) + 0.5) * np.asarray(scale_xy, np.float64)


# --- kernels --------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _spread_select(xs, ys, responses, x0, y0, cell_w, cell_h, n_cols, n_rows, quota):
    """Pick ``quota`` candidates spread over the cells: every cell's best first, then every cell's second
    best, and so on; inside a round the stronger responses win.

    Returns (chosen indices, rank of every candidate inside its cell: 0 = the cell's best).
    """
    n = xs.shape[0]
    n_cells = n_cols * n_rows
    cell = np.empty(n, np.int64)
    ptr = np.zeros(n_cells + 1, np.int64)
    for i in range(n):
        cx = min(max(int((xs[i] - x0) / cell_w), 0), n_cols - 1)
        cy = min(max(int((ys[i] - y0) / cell_h), 0), n_rows - 1)
        cell[i] = cy * n_cols + cx
        ptr[cell[i] + 1] += 1
    for c in range(n_cells):
        ptr[c + 1] += ptr[c]
    fill = ptr[:-1].copy()
    members = np.empty(n, np.int64)
    for i in range(n):
        members[fill[cell[i]]] = i
        fill[cell[i]] += 1
    rank = np.empty(n, np.int64)
    max_rank = 0
    for c in range(n_cells):
        # Insertion sort of the cell by response, strongest first (cells hold a few dozen candidates).
        for t in range(ptr[c] + 1, ptr[c + 1]):
            i = members[t]
            u = t - 1
            while u >= ptr[c] and responses[members[u]] < responses[i]:
                members[u + 1] = members[u]
                u -= 1
            members[u + 1] = i
        for t in range(ptr[c], ptr[c + 1]):
            rank[members[t]] = t - ptr[c]
        max_rank = max(max_rank, ptr[c + 1] - ptr[c])
    per_rank = np.zeros(max_rank + 1, np.int64)
    for i in range(n):
        per_rank[rank[i]] += 1
    full_rounds = 0
    taken = 0
    while full_rounds <= max_rank and taken + per_rank[full_rounds] <= quota:
        taken += per_rank[full_rounds]
        full_rounds += 1
    chosen = np.empty(min(quota, n), np.int64)
    k = 0
    for i in range(n):
        if rank[i] < full_rounds:
            chosen[k] = i
            k += 1
    if k < chosen.shape[0]:  # the last, partial round: the strongest of that round
        last = np.empty(per_rank[full_rounds], np.int64)
        m = 0
        for i in range(n):
            if rank[i] == full_rounds:
                last[m] = i
                m += 1
        best = np.argsort(-responses[last], kind="mergesort")
        for t in range(chosen.shape[0] - k):
            chosen[k + t] = last[best[t]]
    return chosen, rank


@njit(cache=True, nogil=True)
def _orientation_kernel(image, xs, ys, umax):
    """Intensity-centroid angle (Rosin; ORB) over a disc of radius HALF_PATCH, degrees in [0, 360)."""
    n = xs.shape[0]
    out = np.empty(n, np.float32)
    half = umax.shape[0] - 1
    for k in range(n):
        x, y = xs[k], ys[k]
        m01 = 0
        m10 = 0
        for u in range(-half, half + 1):
            m10 += u * np.int64(image[y, x + u])
        for v in range(1, half + 1):
            d = umax[v]
            v_sum = 0
            for u in range(-d, d + 1):
                plus = np.int64(image[y + v, x + u])
                minus = np.int64(image[y - v, x + u])
                v_sum += plus - minus
                m10 += u * (plus + minus)
            m01 += v * v_sum
        a = math.degrees(math.atan2(float(m01), float(m10)))
        out[k] = a + 360.0 if a < 0.0 else a
    return out


@lru_cache(maxsize=None)
def _disc_half_widths(half: int = HALF_PATCH) -> np.ndarray:
    """Half width of the orientation disc on every row v = 0..half, made symmetric in u and v (as ORB's)."""
    umax = np.zeros(half + 1, np.int64)
    vmax = int(math.floor(half * math.sqrt(2.0) / 2 + 1))
    vmin = int(math.ceil(half * math.sqrt(2.0) / 2))
    for v in range(vmax + 1):
        umax[v] = int(round(math.sqrt(half * half - v * v)))
    v0 = 0
    for v in range(half, vmin - 1, -1):
        while umax[v0] == umax[v0 + 1]:
            v0 += 1
        umax[v] = v0
        v0 += 1
    umax.setflags(write=False)
    return umax


# --- detection --------------------------------------------------------------------------------------

_RESPONSE = operator.attrgetter("response")


def _fast(detector, image: np.ndarray, x0: int, y0: int) -> tuple[np.ndarray, np.ndarray]:
    """FAST on image -> (integer level coordinates (n, 2) int64 offset by (x0, y0), responses (n,))."""
    keypoints = detector.detect(image)
    if not keypoints:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    xy = cv2.KeyPoint_convert(keypoints).astype(np.int64)  # FAST positions are whole pixels
    xy[:, 0] += x0
    xy[:, 1] += y0
    return xy, np.fromiter(map(_RESPONSE, keypoints), np.float32, len(keypoints))


def _detect_level(image: np.ndarray, options: OrbOptions, strong, weak) -> tuple[np.ndarray, np.ndarray]:
    """FAST candidates of one level inside [edge, size - edge), with the low-threshold fallback per cell."""
    h, w = image.shape
    e, pad = int(options.edge_px), FAST_RADIUS
    inner_w, inner_h = w - 2 * e, h - 2 * e
    if inner_w <= 0 or inner_h <= 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    # FAST skips FAST_RADIUS pixels at the border of what it is given: hand it the region grown by that much.
    xy, resp = _fast(strong, image[e - pad:h - e + pad, e - pad:w - e + pad], e - pad, e - pad)
    n_cols = max(1, int(round(inner_w / options.fallback_cell_px)))
    n_rows = max(1, int(round(inner_h / options.fallback_cell_px)))
    occupied = np.zeros(n_rows * n_cols, bool)
    occupied[((xy[:, 1] - e) * n_rows // inner_h) * n_cols + (xy[:, 0] - e) * n_cols // inner_w] = True
    if occupied.all():
        return xy, resp
    occupied = occupied.reshape(n_rows, n_cols)
    # Cell c spans [e + ceil(c * inner / n), e + ceil((c + 1) * inner / n)): the inverse of the floor above.
    col_edges = e + (np.arange(n_cols + 1) * inner_w + n_cols - 1) // n_cols
    row_edges = e + (np.arange(n_rows + 1) * inner_h + n_rows - 1) // n_rows
    found_xy, found_resp = [xy], [resp]
    for r in np.nonzero(~occupied.all(axis=1))[0]:
        empty = np.concatenate(([False], ~occupied[r], [False]))
        changes = np.flatnonzero(empty[1:] != empty[:-1])
        ya, yb = row_edges[r], row_edges[r + 1]
        for c0, c1 in zip(changes[::2], changes[1::2]):  # runs of empty cells [c0, c1)
            xa, xb = col_edges[c0], col_edges[c1]
            sub_xy, sub_resp = _fast(weak, image[ya - pad:yb + pad, xa - pad:xb + pad], xa - pad, ya - pad)
            inside = (sub_xy[:, 0] >= xa) & (sub_xy[:, 0] < xb) & (sub_xy[:, 1] >= ya) & (sub_xy[:, 1] < yb)
            found_xy.append(sub_xy[inside])
            found_resp.append(sub_resp[inside])
    return np.concatenate(found_xy), np.concatenate(found_resp)


def _spread(xy: np.ndarray, resp: np.ndarray, size, quota: int, edge: int) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rank) of a level's candidates on a distribution grid of about ``quota`` cells (like the
    leaves of ORB-SLAM's quadtree: one feature per cell where the texture allows)."""
    w, h = int(size[0]) - 2 * edge, int(size[1]) - 2 * edge
    cell = math.sqrt(w * h / max(quota, 1))
    n_cols, n_rows = max(1, int(round(w / cell))), max(1, int(round(h / cell)))
    return _spread_select(xy[:, 0], xy[:, 1], resp, float(edge),
                          float(edge), w / n_cols, h / n_rows, n_cols, n_rows, quota)


def _as_gray(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    if img.ndim != 2:
        raise ValueError(f"image must be gray (H, W) or BGR (H, W, 3), got shape {img.shape}")
    return np.ascontiguousarray(img)


def _top_up(per_level: list, deficit: int) -> list:
    """Levels that fell short of their quota (little texture at that scale) are made up from the other
    levels' unused candidates, again best-of-every-cell first, so textured images reach the target count."""
    pool = []
    for level, (xy, resp, rank, kept) in enumerate(per_level):
        unused = np.ones(len(xy), bool)
        unused[kept] = False
        idx = np.nonzero(unused)[0]
        pool.append((np.full(len(idx), level), idx, rank[idx], resp[idx]))
    lv, idx, rank, resp = (np.concatenate([p[k] for p in pool]) for k in range(4))
    best = np.lexsort((-resp, rank))[:deficit]
    out = list(per_level)
    for level in np.unique(lv[best]):
        xy, r, rk, kept = out[level]
        out[level] = (xy, r, rk, np.concatenate((kept, idx[best][lv[best] == level])))
    return out


class _LevelTools:
    """The OpenCV objects an extractor reuses from frame to frame."""

    def __init__(self, o: OrbOptions):
        self.strong = cv2.FastFeatureDetector_create(int(o.fast_threshold), True)
        self.weak = cv2.FastFeatureDetector_create(int(o.fast_min_threshold), True)
        # Descriptors one level at a time (nlevels=1): the image ORB samples is the level FAST ran on, so
        # descriptor, orientation and position come from the same pixels. edgeThreshold only drops keypoints
        # nearer the border than edge_px, and ours never are.
        self.orb = cv2.ORB_create(nfeatures=1, scaleFactor=o.scale_factor, nlevels=1,
                                  edgeThreshold=int(o.edge_px), firstLevel=0, WTA_K=2,
                                  patchSize=ORB_PATCH_SIZE, fastThreshold=int(o.fast_threshold))


def _candidates(tools: _LevelTools, image: np.ndarray, size, quota: int, options: OrbOptions):
    """One level's (candidate xy, responses, rank in distribution cell, chosen indices)."""
    xy, resp = _detect_level(image, options, tools.strong, tools.weak)
    if len(xy) == 0:
        return xy, resp, np.zeros(0, np.int64), np.zeros(0, np.int64)
    chosen, rank = _spread(xy, resp, size, quota, options.edge_px)
    return xy, resp, rank, chosen


def _describe_level(tools: _LevelTools, image: np.ndarray, xy: np.ndarray, level: int):
    """(angles, descriptors) of the kept keypoints of one level, xy in the level's OpenCV pixels."""
    angles = _orientation_kernel(image, xy[:, 0], xy[:, 1], _disc_half_widths())
    keypoints = cv2.KeyPoint_convert(xy.astype(np.float32), float(ORB_PATCH_SIZE))
    for kp, angle in zip(keypoints, angles.tolist()):
        kp.angle = angle
    described, desc = tools.orb.compute(image, keypoints)
    if desc is None or len(described) != len(keypoints):
        raise RuntimeError(f"cv2.ORB dropped keypoints on level {level}: {len(keypoints)} in, "
                           f"{len(described)} out; edge_px and the ORB border disagree")
    return angles, desc


class OrbExtractor:
    """Holds the OpenCV objects for one ``OrbOptions``; ``extract`` is ``extract_orb``.

    Keeps no per-image state. OpenCV algorithm objects are not meant to be shared between threads:
    use one extractor per calling thread.
    """

    def __init__(self, options: OrbOptions | None = None):
        self.options = options or OrbOptions()
        self._tools = _LevelTools(self.options)

    def extract(self, image, camera: Camera) -> Features:
        gray = _as_gray(image)
        h, w = gray.shape
        if (w, h) != (camera.width, camera.height):
            raise ParallaxError(f"frame is {w}x{h} but camera {camera.camera_id} is {camera.width}x{camera.height}; "
                                "the frame size changed or the calibration is for another resolution")
        o = self.options
        plan = pyramid_plan(w, h, o)
        levels = _pyramid(gray, plan)
        per_level = [_candidates(self._tools, img, plan.level_sizes[lv], int(plan.level_quotas[lv]), o)
                     for lv, img in enumerate(levels)]
        deficit = int(plan.level_quotas.sum()) - sum(len(entry[3]) for entry in per_level)
        if deficit > 0:
            per_level = _top_up(per_level, deficit)
        # Kept keypoints in row-major scan order per level: deterministic output.
        kept_xy = [np.ascontiguousarray(xy[np.sort(kept)]) for xy, _, _, kept in per_level]
        kept_resp = [resp[np.sort(kept)] for _, resp, _, kept in per_level]
        described = [_describe_level(self._tools, img, kept_xy[lv], lv) if len(kept_xy[lv]) else None
                     for lv, img in enumerate(levels)]
        present = [lv for lv in range(len(levels)) if described[lv] is not None]
        if not present:
            empty = np.zeros((0, 2))
            return Features(empty, empty.copy(), np.zeros(0, np.int32), np.zeros(0, np.float32),
                            np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((0, 32), np.uint8), plan)
        keypoints_xy = np.concatenate([_level_to_image(kept_xy[lv], plan.level_scales_xy[lv]) for lv in present])
        octaves = np.concatenate([np.full(len(kept_xy[lv]), lv, np.int32) for lv in present])
        normalized = undistort_normalized(camera.model, camera.params, pixels_to_normalized(camera, keypoints_xy))
        return Features(keypoints_xy, normalized, octaves, plan.level_scales[octaves].astype(np.float32),
                        np.concatenate([described[lv][0] for lv in present]),
                        np.concatenate([kept_resp[lv] for lv in present]).astype(np.float32),
                        np.concatenate([described[lv][1] for lv in present]), plan)


def _pyramid(gray: np.ndarray, plan: PyramidPlan) -> list[np.ndarray]:
    base_w, base_h = (int(v) for v in plan.level_sizes[0])
    if (base_w, base_h) == (gray.shape[1], gray.shape[0]):
        levels = [gray]
    else:  # area averaging for the large first step (a 4K frame): no aliasing, same pixel-centre mapping
        levels = [cv2.resize(gray, (base_w, base_h), interpolation=cv2.INTER_AREA)]
    for w, h in plan.level_sizes[1:]:
        # Each level from the previous one, like cv2.ORB; bilinear maps pixel centres onto pixel centres.
        levels.append(cv2.resize(levels[-1], (int(w), int(h)), interpolation=cv2.INTER_LINEAR))
    return levels


def extract_orb(image, camera: Camera, options: OrbOptions | None = None) -> Features:
    """ORB features of a gray or BGR uint8 image taken with ``camera`` (see the module docstring).

    For a stream of frames keep one ``OrbExtractor`` instead: it creates the OpenCV objects once.
    """
    return OrbExtractor(options).extract(image, camera)
