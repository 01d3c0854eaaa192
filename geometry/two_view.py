"""Relative pose of two views from point correspondences (SLAM initialisation, SfM verification).

Pipeline: undistort through the camera models -> USAC estimators from OpenCV (essential matrix,
homography, optionally fundamental matrix) -> model selection as ORB-SLAM does it (scores from
symmetric transfer errors, homography when R_H = S_H / (S_H + S_E) > 0.45) -> decomposition of
the chosen model with cheirality -> DLT triangulation of the inliers -> conditioning checks.

Matrices returned, and the coordinates they relate:

- ``essential``: normalized undistorted coordinates, x2n^T E x1n = 0 (x = (x/z, y/z, 1)).
- ``homography``: normalized undistorted coordinates, x2n ~ H x1n.
- ``fundamental``: undistorted pixels in COLMAP's convention (``camera_models.undistort_pixels``),
  x2p^T F x1p = 0.

They are USAC's raw output (|E| = sqrt(2), |F| = 1, det H = 1), good to ~1e-4 px on exact data.
The pose is refined further (Sampson error, Levenberg-Marquardt) and is exact to machine
precision there; ``hat(t) @ R`` of ``cam2_from_cam1`` is the polished essential matrix.

Pixel convention: inputs are COLMAP pixels (pixel centres at +0.5). Essential and homography are
estimated on normalized coordinates (scaled by a common focal length so that OpenCV's threshold
stays in pixels, as OpenCV's own two-camera overload does), so no pixel shift is involved there.
The fundamental matrix is estimated on OpenCV pixels (ours - 0.5) and converted back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from geometry.camera_models import pixels_to_normalized, project, split_params, undistort_normalized
from geometry.lie import hat, so3_exp
from geometry.triangulation import triangulate_two_view, triangulation_angles
from scene.camera import Camera
from scene.rigid import Rigid3d

_USAC_METHODS = {"magsac": cv2.USAC_MAGSAC, "accurate": cv2.USAC_ACCURATE}
# ORB-SLAM's chi-square thresholds (95 %) for 1 and 2 degrees of freedom.
_CHI2_1DOF = 3.841
_CHI2_2DOF = 5.991


@dataclass(frozen=True)
class TwoViewOptions:
    max_error_px: float = 2.0                 # RANSAC threshold and reprojection limit for triangulated points
    confidence: float = 0.9999
    max_iterations: int = 10000
    method: str = "magsac"                    # "magsac" (cv2.USAC_MAGSAC) or "accurate" (cv2.USAC_ACCURATE)
    sigma_px: float = 1.0                     # keypoint noise used by the ORB-SLAM model scores
    homography_score_threshold: float = 0.45  # choose the homography when R_H exceeds this
    estimate_fundamental: bool = True         # also estimate F (uncalibrated use, SfM's view graph)
    min_num_inliers: int = 50
    min_median_angle_deg: float = 1.0
    min_angle_deg: float = 1.0                # a point is well triangulated above this angle ...
    min_num_well_triangulated: int = 50       # ... and at least this many must be
    ambiguity_ratio: float = 0.7              # a second decomposition with this share of the best's good points is ambiguous


@dataclass
class TwoViewResult:
    """Outcome of ``estimate_two_view``. Per-correspondence arrays have length N (the input's)."""

    cam2_from_cam1: Rigid3d                   # unit-norm translation (zero if none was found)
    model: str                                # "essential", "homography" or "none"
    well_conditioned: bool
    reason: str                               # why not well conditioned; "" when it is
    inlier_mask: np.ndarray                   # inliers of the chosen model
    triangulated_mask: np.ndarray             # inliers triangulated in front of both cameras within max_error_px
    points_cam1: np.ndarray                   # (N, 3), NaN where not triangulated; scale: |t| = 1
    triangulation_angles_deg: np.ndarray      # (N,), NaN where not triangulated
    median_triangulation_angle_deg: float
    num_inliers: int
    num_triangulated: int
    homography_score_ratio: float             # ORB-SLAM's R_H = S_H / (S_H + S_E)
    homography_essential_inlier_ratio: float  # COLMAP's H inliers / E inliers
    essential: np.ndarray | None = None
    essential_inlier_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    num_essential_inliers: int = 0
    homography: np.ndarray | None = None
    homography_inlier_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    num_homography_inliers: int = 0
    fundamental: np.ndarray | None = None
    fundamental_inlier_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    num_fundamental_inliers: int = 0


# --- helpers ----------------------------------------------------------------------------------

def _calibration(camera: Camera) -> np.ndarray:
    (fx, fy, cx, cy), _ = split_params(camera.model, camera.params)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _normalized(camera: Camera, xy: np.ndarray) -> np.ndarray:
    return undistort_normalized(camera.model, camera.params, pixels_to_normalized(camera, xy))


def _homogeneous(xy: np.ndarray) -> np.ndarray:
    return np.column_stack((xy, np.ones(len(xy))))


def _mask(raw, n: int) -> np.ndarray:
    return np.zeros(n, bool) if raw is None else np.asarray(raw).reshape(-1).astype(bool)


def _point_line_sq(F: np.ndarray, x1h: np.ndarray, x2h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances of x2 to the line F x1 and of x1 to the line F^T x2."""
    l2 = x1h @ F.T
    l1 = x2h @ F
    num = np.einsum("ij,ij->i", x2h, l2) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / (l1[:, 0] ** 2 + l1[:, 1] ** 2), num / (l2[:, 0] ** 2 + l2[:, 1] ** 2)


def _transfer_sq(H: np.ndarray, x1h: np.ndarray, x2h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared transfer errors x1 -> image 2 and x2 -> image 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p2 = x1h @ H.T
        p2 = p2[:, :2] / p2[:, 2:]
        p1 = x2h @ np.linalg.inv(H).T
        p1 = p1[:, :2] / p1[:, 2:]
    return ((p2 - x2h[:, :2]) ** 2).sum(1), ((p1 - x1h[:, :2]) ** 2).sum(1)


def _orbslam_score(errors_sq: tuple[np.ndarray, np.ndarray], sigma: float, threshold: float, score_threshold: float) -> float:
    """ORB-SLAM's model score: sum over points and directions of (score_threshold - chi2) where chi2 < threshold."""
    total = 0.0
    for e in errors_sq:
        chi2 = np.nan_to_num(e / sigma ** 2, nan=np.inf)
        total += float(np.sum(np.where(chi2 <= threshold, score_threshold - chi2, 0.0)))
    return total


def _good_points(rotation, translation, n1, n2, inliers, max_error_norm):
    """Triangulate inliers with a candidate cam2_from_cam1; returns points and the good mask
    (finite, in front of both cameras, normalized-plane reprojection error below the limit)."""
    n = len(n1)
    points = np.full((n, 3), np.nan)
    good = np.zeros(n, bool)
    if not np.any(inliers) or np.linalg.norm(translation) == 0.0:
        return points, good
    cam1 = np.hstack([np.eye(3), np.zeros((3, 1))])
    cam2 = np.hstack([rotation, np.reshape(translation, (3, 1))])
    idx = np.flatnonzero(inliers)
    pts = triangulate_two_view(cam1, cam2, _homogeneous(n1[idx]), _homogeneous(n2[idx]))
    pts2 = pts @ rotation.T + translation
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.all(np.isfinite(pts), axis=1) & (pts[:, 2] > 0) & (pts2[:, 2] > 0)
        e1 = np.linalg.norm(pts[:, :2] / pts[:, 2:] - n1[idx], axis=1)
        e2 = np.linalg.norm(pts2[:, :2] / pts2[:, 2:] - n2[idx], axis=1)
        ok &= (e1 <= max_error_norm) & (e2 <= max_error_norm)
    points[idx] = pts
    good[idx] = ok
    return points, good


def _select(candidates, n1, n2, inliers, max_error_norm, ambiguity_ratio):
    """Pick the candidate (R, t) with the most good points; ambiguous when another comes close."""
    scored = []
    for rotation, translation in candidates:
        _, good = _good_points(rotation, translation, n1, n2, inliers, max_error_norm)
        scored.append(int(good.sum()))
    order = np.argsort(scored)[::-1]
    best = int(order[0])
    second = scored[order[1]] if len(order) > 1 else 0
    ambiguous = scored[best] == 0 or second > ambiguity_ratio * scored[best]
    return best, scored[best], second, ambiguous


def _sampson(rotation, translation, x1h, x2h) -> np.ndarray:
    """Signed Sampson distances (normalized units) of the correspondences to E = [t]x R."""
    E = hat(translation) @ rotation
    ex1 = x1h @ E.T
    etx2 = x2h @ E
    num = np.einsum("ij,ij->i", x2h, ex1)
    return num / np.sqrt(ex1[:, 0] ** 2 + ex1[:, 1] ** 2 + etx2[:, 0] ** 2 + etx2[:, 1] ** 2)


def _refine_relative_pose(rotation, translation, n1, n2, max_iterations: int = 30):
    """Levenberg-Marquardt on the Sampson error of the inliers over R (3 DoF) and the direction of t
    (2 DoF), as COLMAP's RefineRelativePose does. RANSAC's model is only as good as its sample and
    local optimisation; this takes it to the least-squares optimum (machine precision on exact data).
    """
    x1h, x2h = _homogeneous(n1), _homogeneous(n2)
    R, t = rotation.copy(), translation / np.linalg.norm(translation)

    def update(R, t, delta):
        # t moves in the plane orthogonal to itself, then back onto the unit sphere.
        basis = np.linalg.svd(t.reshape(1, 3))[2][1:]
        t_new = t + delta[3:] @ basis
        return so3_exp(delta[:3]) @ R, t_new / np.linalg.norm(t_new)

    r = _sampson(R, t, x1h, x2h)
    cost = float(r @ r)
    lam = 1e-4
    h = 1e-7
    for _ in range(max_iterations):
        J = np.empty((len(r), 5))
        for k in range(5):
            d = np.zeros(5)
            d[k] = h
            J[:, k] = (_sampson(*update(R, t, d), x1h, x2h) - _sampson(*update(R, t, -d), x1h, x2h)) / (2 * h)
        A, g = J.T @ J, J.T @ r
        improved = False
        for _try in range(8):
            step = np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-12), -g)
            R_new, t_new = update(R, t, step)
            r_new = _sampson(R_new, t_new, x1h, x2h)
            c = float(r_new @ r_new)
            if np.isfinite(c) and c <= cost:
                converged = cost - c <= 1e-12 * cost or np.linalg.norm(step) < 1e-12
                R, t, r, cost = R_new, t_new, r_new, c
                lam = max(lam / 10, 1e-12)
                improved = not converged
                break
            lam *= 10
        if not improved:
            break
    return R, t


def _empty_result(n: int, reason: str, **extra) -> TwoViewResult:
    return TwoViewResult(
        cam2_from_cam1=Rigid3d(), model="none", well_conditioned=False, reason=reason,
        inlier_mask=np.zeros(n, bool), triangulated_mask=np.zeros(n, bool),
        points_cam1=np.full((n, 3), np.nan), triangulation_angles_deg=np.full(n, np.nan),
        median_triangulation_angle_deg=0.0, num_inliers=0, num_triangulated=0,
        homography_score_ratio=float("nan"), homography_essential_inlier_ratio=float("nan"), **extra)


# --- public API -------------------------------------------------------------------------------

def estimate_two_view(camera1: Camera, camera2: Camera, xy1, xy2, options: TwoViewOptions | None = None) -> TwoViewResult:
    """Relative pose ``cam2_from_cam1`` from (N, 2) pixel correspondences (COLMAP convention).

    Never raises on degenerate geometry: the result says ``well_conditioned=False`` and why.
    Rows whose pixels are not finite or cannot be undistorted are never inliers.
    """
    opts = options or TwoViewOptions()
    if opts.method not in _USAC_METHODS:
        raise ValueError(f"unknown two-view method {opts.method!r}; use one of {', '.join(_USAC_METHODS)}")
    p1 = np.asarray(xy1, dtype=np.float64)
    p2 = np.asarray(xy2, dtype=np.float64)
    if p1.ndim != 2 or p1.shape[1] != 2 or p1.shape != p2.shape:
        raise ValueError(f"xy1 and xy2 must both have shape (N, 2), got {p1.shape} and {p2.shape}")
    n = len(p1)
    with np.errstate(invalid="ignore"):
        n1 = _normalized(camera1, p1) if n else np.zeros((0, 2))
        n2 = _normalized(camera2, p2) if n else np.zeros((0, 2))
    valid = np.all(np.isfinite(n1), axis=1) & np.all(np.isfinite(n2), axis=1)
    vidx = np.flatnonzero(valid)
    if len(vidx) < 8:
        return _empty_result(n, f"too few correspondences: {len(vidx)} valid of {n} (need at least 8)")

    method = _USAC_METHODS[opts.method]
    K1, K2 = _calibration(camera1), _calibration(camera2)
    # Common focal length: normalized coordinates times f0 keep OpenCV's thresholds in pixels.
    f0 = float(np.mean([K1[0, 0], K1[1, 1], K2[0, 0], K2[1, 1]]))
    K0 = np.diag([f0, f0, 1.0])
    s1, s2 = n1[vidx] * f0, n2[vidx] * f0

    def scatter(raw):
        m = np.zeros(n, bool)
        m[vidx] = _mask(raw, len(vidx))
        return m

    essential, e_mask = None, np.zeros(n, bool)
    E_raw, E_inl = cv2.findEssentialMat(s1, s2, K0, method=method, prob=opts.confidence,
                                        threshold=opts.max_error_px, maxIters=opts.max_iterations)
    if E_raw is not None and E_raw.shape[0] >= 3 and np.all(np.isfinite(E_raw[:3])):
        essential = E_raw[:3].astype(np.float64)
        essential *= np.sqrt(2.0) / np.linalg.norm(essential)  # the scale of [t]x R with |t| = 1
        e_mask = scatter(E_inl)

    homography, h_mask = None, np.zeros(n, bool)
    H_raw, H_inl = cv2.findHomography(s1, s2, method, opts.max_error_px, maxIters=opts.max_iterations,
                                      confidence=opts.confidence)
    if H_raw is not None and H_raw.shape == (3, 3) and np.all(np.isfinite(H_raw)) and abs(np.linalg.det(H_raw)) > 0:
        homography = np.linalg.inv(K0) @ H_raw @ K0
        homography /= np.cbrt(np.linalg.det(homography))
        h_mask = scatter(H_inl)

    fundamental, f_mask = None, np.zeros(n, bool)
    u1 = (_homogeneous(n1) @ K1.T)[:, :2]  # undistorted pixels, COLMAP convention
    u2 = (_homogeneous(n2) @ K2.T)[:, :2]
    if opts.estimate_fundamental:
        # OpenCV puts pixel centres at integers: shift ours by -0.5 in, and map F back:
        # x_cv = S x with S = [[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], so F = S^T F_cv S.
        F_raw, F_inl = cv2.findFundamentalMat(u1[vidx] - 0.5, u2[vidx] - 0.5, method, opts.max_error_px,
                                              opts.confidence, opts.max_iterations)
        if F_raw is not None and F_raw.shape[0] >= 3 and np.all(np.isfinite(F_raw[:3])):
            S = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
            fundamental = S.T @ F_raw[:3] @ S
            fundamental /= np.linalg.norm(fundamental)
            f_mask = scatter(F_inl)

    extra = dict(essential=essential, essential_inlier_mask=e_mask, num_essential_inliers=int(e_mask.sum()),
                 homography=homography, homography_inlier_mask=h_mask, num_homography_inliers=int(h_mask.sum()),
                 fundamental=fundamental, fundamental_inlier_mask=f_mask, num_fundamental_inliers=int(f_mask.sum()))
    if essential is None and homography is None:
        return _empty_result(n, "no essential matrix or homography could be estimated", **extra)

    # ORB-SLAM's model selection, scored on all valid correspondences in undistorted pixels.
    x1h, x2h = _homogeneous(u1[vidx]), _homogeneous(u2[vidx])
    s_h = 0.0 if homography is None else _orbslam_score(
        _transfer_sq(K2 @ homography @ np.linalg.inv(K1), x1h, x2h), opts.sigma_px, _CHI2_2DOF, _CHI2_2DOF)
    s_e = 0.0 if essential is None else _orbslam_score(
        _point_line_sq(np.linalg.inv(K2).T @ essential @ np.linalg.inv(K1), x1h, x2h), opts.sigma_px, _CHI2_1DOF, _CHI2_2DOF)
    ratio = s_h / (s_h + s_e) if s_h + s_e > 0 else float("nan")
    he_ratio = float(h_mask.sum()) / float(e_mask.sum()) if e_mask.sum() else float("inf")
    use_h = homography is not None and (essential is None or ratio > opts.homography_score_threshold)

    max_error_norm = opts.max_error_px / f0
    reasons = []
    if use_h:
        model, inliers = "homography", h_mask
        _, Rs, ts, _ = cv2.decomposeHomographyMat(homography, np.eye(3))
        candidates = [(np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(3)) for R, t in zip(Rs, ts)]
    else:
        model, inliers = "essential", e_mask
        R1, R2, t = cv2.decomposeEssentialMat(essential)
        t = t.reshape(3)
        candidates = [(R1, t), (R1, -t), (R2, t), (R2, -t)]
    best, num_best, num_second, ambiguous = _select(candidates, n1, n2, inliers, max_error_norm, opts.ambiguity_ratio)
    rotation, translation = candidates[best]
    t_norm = float(np.linalg.norm(translation))
    translation = translation / t_norm if t_norm > 1e-12 else np.zeros(3)
    if t_norm > 1e-12 and inliers.sum() >= 5:
        rotation, translation = _refine_relative_pose(rotation, translation, n1[inliers], n2[inliers])
    cam2_from_cam1 = Rigid3d.from_rotation(rotation, translation)

    points, good = _good_points(rotation, translation, n1, n2, inliers, max_error_norm)
    points[~good] = np.nan
    angles = np.full(n, np.nan)
    if good.any():
        angles[good] = np.degrees(triangulation_angles(np.zeros(3), cam2_from_cam1.center(), points[good]))
        # Reprojection through the real camera models (distortion included), COLMAP pixels.
        e1 = np.linalg.norm(project(camera1, points[good]) - p1[good], axis=1)
        e2 = np.linalg.norm(project(camera2, cam2_from_cam1.apply(points[good])) - p2[good], axis=1)
        bad = np.flatnonzero(good)[~((e1 <= opts.max_error_px) & (e2 <= opts.max_error_px))]
        good[bad] = False
        points[bad] = np.nan
        angles[bad] = np.nan
    median_angle = float(np.median(angles[good])) if good.any() else 0.0
    num_well = int(np.sum(angles[good] >= opts.min_angle_deg))

    num_inliers = int(inliers.sum())
    if num_inliers < opts.min_num_inliers:
        reasons.append(f"too few {model} inliers: {num_inliers} < {opts.min_num_inliers}")
    if t_norm <= 1e-12:
        reasons.append(f"no translation: the {model} says the camera only rotated or did not move")
    elif median_angle < opts.min_median_angle_deg or num_well < opts.min_num_well_triangulated:
        reasons.append(f"too little parallax: median triangulation angle {median_angle:.3g} deg "
                       f"(need {opts.min_median_angle_deg:g}), {num_well} points above {opts.min_angle_deg:g} deg "
                       f"(need {opts.min_num_well_triangulated})")
    if ambiguous and t_norm > 1e-12:
        reasons.append(f"ambiguous {model} decomposition: the best solution has {num_best} points in front of "
                       f"both cameras, the runner-up {num_second}")
    return TwoViewResult(
        cam2_from_cam1=cam2_from_cam1, model=model, well_conditioned=not reasons, reason="; ".join(reasons),
        inlier_mask=inliers, triangulated_mask=good, points_cam1=points, triangulation_angles_deg=angles,
        median_triangulation_angle_deg=median_angle, num_inliers=num_inliers, num_triangulated=int(good.sum()),
        homography_score_ratio=float(ratio), homography_essential_inlier_ratio=he_ratio, **extra)
