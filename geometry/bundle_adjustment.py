"""Bundle adjustment shared by SLAM (local BA, pose-only tracking) and SfM (local and global BA).

Levenberg-Marquardt written here, with the points eliminated by the Schur complement:

    [U  W ] [dc]   [-gc]        (U - W V^-1 W^T) dc = -gc + W V^-1 gp      (reduced camera system)
    [W' V ] [dp] = [-gp]   ->   dp = -V^-1 (gp + W' dc)                    (back-substitution)

V is block-diagonal (one 3x3 block per point). The camera side holds 6 pose variables per free image
and the free intrinsics of each camera; it is solved densely with a Cholesky factorisation (scipy).
That is fine up to a few hundred free images (600 pose variables: S is 600 x 600, a Cholesky takes
~5 ms); it stops being fine around 1500-2000 free images (S of 10^4 x 10^4 is 800 MB and ~10 s per
factorisation), where a sparse or iterative (PCG) solve of S would be needed.

Conventions:
- Poses are ``cam_from_world`` (quat_wxyz + translation, COLMAP order). Updates multiply on the left:
  ``cam_from_world <- exp(delta) * cam_from_world``, ``delta = (rho, omega)`` in ``geometry.lie``'s order.
- Residuals are reprojection errors in pixels (COLMAP convention: pixel centres at +0.5) through the
  camera model (SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV) with analytic Jacobians.
- Cost = 0.5 * sum rho(|r|^2) (Ceres convention); robust losses by IRLS weights rho'(|r|^2); scale in pixels.
- RMS reprojection error = sqrt(mean |r|^2) over the observations used.

Gauge: BA cannot fix what the observations do not determine. The caller fixes at least one pose
(``pose_fixed``); a problem with no fixed pose and no fixed point is refused. For monocular
reconstructions the scale is also free: fix a second pose (what local BA windows do naturally with
their fixed neighbouring keyframes, and what we recommend for SfM: the two poses of the initial pair).
With only one fixed pose, the scale direction is a null direction of the normal equations; the LM
damping keeps the step in it finite, so the solve still works and reaches the same reprojection error,
but the scale may drift slightly -- compare poses up to a similarity then.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.linalg

from geometry import ba_kernels as kern
from geometry.camera_models import project
from geometry.lie import quat_wxyz_to_rotation, rotation_to_quat_wxyz
from scene.camera import Camera
from scene.errors import ParallaxError
from scene.rigid import Rigid3d

LOSSES = {"trivial": kern.LOSS_TRIVIAL, "huber": kern.LOSS_HUBER, "cauchy": kern.LOSS_CAUCHY}

# Marquardt's diagonal scaling is clamped as in Ceres, so that a zero diagonal still gets damped.
_MIN_DIAGONAL, _MAX_DIAGONAL = 1e-6, 1e32
_MAX_LAMBDA = 1e16

# Role of each COLMAP parameter: which refinement flag frees it.
_ROLES = {
    "SIMPLE_PINHOLE": ("focal", "pp", "pp"),
    "PINHOLE": ("focal", "focal", "pp", "pp"),
    "SIMPLE_RADIAL": ("focal", "pp", "pp", "dist"),
    "RADIAL": ("focal", "pp", "pp", "dist", "dist"),
    "OPENCV": ("focal", "focal", "pp", "pp", "dist", "dist", "dist", "dist"),
}
# Row of the full vector (fx, fy, cx, cy, k1, k2, p1, p2) each COLMAP parameter feeds (f feeds fx and fy).
_FEEDS = {
    "SIMPLE_PINHOLE": ((0, 1), (2,), (3,)),
    "PINHOLE": ((0,), (1,), (2,), (3,)),
    "SIMPLE_RADIAL": ((0, 1), (2,), (3,), (4,)),
    "RADIAL": ((0, 1), (2,), (3,), (4,), (5,)),
    "OPENCV": ((0,), (1,), (2,), (3,), (4,), (5,), (6,), (7,)),
}


def model_expansion(model: str) -> np.ndarray:
    """8 x P matrix mapping COLMAP params to (fx, fy, cx, cy, k1, k2, p1, p2)."""
    if model not in _FEEDS:
        raise ParallaxError(f"bundle adjustment does not support camera model {model}; "
                            f"supported: {', '.join(_FEEDS)}")
    feeds = _FEEDS[model]
    expand = np.zeros((8, len(feeds)))
    for col, rows in enumerate(feeds):
        expand[list(rows), col] = 1.0
    return expand


@dataclass
class BAProblem:
    """Arrays of one bundle adjustment problem.

    ``cameras``: intrinsics (model + params) indexed by ``image_camera``.
    ``quat_wxyz`` (N, 4) / ``translation`` (N, 3): cam_from_world of each image.
    ``points_world`` (M, 3).
    Observations, packed: ``obs_image_index`` (K,) into the poses, ``obs_point_index`` (K,) into the
    points, ``obs_xy`` (K, 2) pixels in COLMAP's convention.
    ``image_camera`` (N,): camera (intrinsics) index of each image.
    ``pose_fixed`` (N,) / ``point_fixed`` (M,) / ``intrinsics_fixed`` (C,): held constant when True.
    """

    cameras: Sequence[Camera]
    image_camera: np.ndarray
    quat_wxyz: np.ndarray
    translation: np.ndarray
    points_world: np.ndarray
    obs_image_index: np.ndarray
    obs_point_index: np.ndarray
    obs_xy: np.ndarray
    pose_fixed: Optional[np.ndarray] = None
    point_fixed: Optional[np.ndarray] = None
    intrinsics_fixed: Optional[np.ndarray] = None


@dataclass
class BAOptions:
    max_iterations: int = 100
    loss: str = "trivial"               # 'trivial' | 'huber' | 'cauchy'
    loss_scale_px: float = 1.0
    refine_focal: bool = False
    refine_principal_point: bool = False
    refine_distortion: bool = False
    function_tolerance: float = 1e-6    # stop when |dF| / F falls below this on an accepted step
    gradient_tolerance: float = 1e-10   # stop when max |J^T W r| falls below this
    parameter_tolerance: float = 1e-8   # stop when |dx| <= tol * (|x| + tol)
    initial_lambda: float = 1e-4        # Marquardt damping, relative to diag(J^T W J)


@dataclass
class BAResult:
    quat_wxyz: np.ndarray               # (N, 4) cam_from_world
    translation: np.ndarray             # (N, 3)
    points_world: np.ndarray            # (M, 3)
    cameras: list                       # list[Camera] with refined params
    initial_cost: float
    final_cost: float
    initial_rms_px: float
    final_rms_px: float
    iterations: int                     # linear solves (accepted + rejected steps)
    accepted_iterations: int
    termination_reason: str             # see TERMINATION_REASONS
    residual_norms_px: np.ndarray       # (K,) final |r| per observation; NaN where unused (behind camera)
    observations_used: np.ndarray       # (K,) bool: in front of its camera at the start
    seconds: float = 0.0
    costs: list = field(default_factory=list)  # cost after every accepted step

    def cam_from_world(self, image_index: int) -> Rigid3d:
        return Rigid3d(self.quat_wxyz[image_index], self.translation[image_index])

    @property
    def converged(self) -> bool:
        return self.termination_reason in ("function_tolerance", "gradient_tolerance", "parameter_tolerance")


TERMINATION_REASONS = ("function_tolerance", "gradient_tolerance", "parameter_tolerance", "max_iterations",
                       "cancelled", "no_progress", "nothing_to_optimize")


# --- input checks -------------------------------------------------------------------------------

def _finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a.reshape(len(a), -1)).all(axis=1)).ravel()
        raise ParallaxError(f"bundle adjustment: {name} has NaN or infinite values (first at index {bad[0]})")


def _mask(value, size: int, name: str) -> np.ndarray:
    if value is None:
        return np.zeros(size, dtype=bool)
    m = np.asarray(value, dtype=bool).reshape(-1)
    if m.size != size:
        raise ParallaxError(f"bundle adjustment: {name} has {m.size} entries, expected {size}")
    return m


def _index(value, size: int, bound: int, name: str) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 1 or a.size != size:
        raise ParallaxError(f"bundle adjustment: {name} must have shape ({size},), got {a.shape}")
    if a.size and (not np.issubdtype(a.dtype, np.integer)):
        raise ParallaxError(f"bundle adjustment: {name} must hold integers, got {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= bound):
        raise ParallaxError(f"bundle adjustment: {name} has indices outside [0, {bound})")
    return np.ascontiguousarray(a)


def _array(value, shape_tail: tuple, name: str) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(value, dtype=np.float64))
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        raise ParallaxError(f"bundle adjustment: {name} must have shape (n, {', '.join(map(str, shape_tail))}), "
                            f"got {a.shape}")
    _finite(name, a)
    return a


@dataclass
class _Intrinsics:
    """Per-camera parametrisation: COLMAP params, the 8 x P expansion and the free columns."""

    params: list            # list of (P_c,) arrays
    expand: list            # list of (8, P_c)
    free: list              # list of index arrays into params
    offset: np.ndarray      # (C,) first global column of each camera's free block
    free_map: np.ndarray    # (C, 8, Pmax)
    free_count: np.ndarray  # (C,)

    def full(self) -> np.ndarray:
        return np.ascontiguousarray(np.stack([e @ p for e, p in zip(self.expand, self.params)]))


def _intrinsics(cameras, options: BAOptions, fixed: np.ndarray, used: np.ndarray, first_offset: int):
    flags = {"focal": options.refine_focal, "pp": options.refine_principal_point, "dist": options.refine_distortion}
    params, expand, free = [], [], []
    for c, camera in enumerate(cameras):
        e = model_expansion(camera.model)
        params.append(np.array(camera.params, dtype=np.float64))
        expand.append(e)
        if fixed[c] or not used[c]:
            free.append(np.zeros(0, dtype=np.int64))
        else:
            free.append(np.array([i for i, role in enumerate(_ROLES[camera.model]) if flags[role]], dtype=np.int64))
    pmax = max([len(f) for f in free] + [0])
    free_map = np.zeros((len(cameras), 8, max(pmax, 1)))
    count = np.array([len(f) for f in free], dtype=np.int64)
    offset = np.zeros(len(cameras), dtype=np.int64)
    cursor = first_offset
    for c in range(len(cameras)):
        offset[c] = cursor
        cursor += count[c]
        if count[c]:
            free_map[c, :, :count[c]] = expand[c][:, free[c]]
    if pmax == 0:
        free_map = np.zeros((len(cameras), 8, 0))
    return _Intrinsics(params, expand, free, offset, np.ascontiguousarray(free_map), count), cursor


def _validate(problem: BAProblem):
    cameras = list(problem.cameras)
    if not cameras:
        raise ParallaxError("bundle adjustment: no cameras (intrinsics) given")
    for c, camera in enumerate(cameras):
        if not isinstance(camera, Camera):
            raise ParallaxError(f"bundle adjustment: cameras[{c}] is not a scene.camera.Camera")
        model_expansion(camera.model)
    quat = _array(problem.quat_wxyz, (4,), "quat_wxyz")
    trans = _array(problem.translation, (3,), "translation")
    if len(quat) != len(trans):
        raise ParallaxError(f"bundle adjustment: {len(quat)} rotations but {len(trans)} translations")
    if len(quat) == 0:
        raise ParallaxError("bundle adjustment: no poses given")
    if np.any(np.linalg.norm(quat, axis=1) < 1e-12):
        raise ParallaxError("bundle adjustment: quat_wxyz has a zero quaternion")
    points = _array(problem.points_world, (3,), "points_world") if np.size(problem.points_world) else np.zeros((0, 3))
    obs_xy = _array(problem.obs_xy, (2,), "obs_xy") if np.size(problem.obs_xy) else np.zeros((0, 2))
    k_obs = len(obs_xy)
    if k_obs == 0:
        raise ParallaxError("bundle adjustment: no observations")
    obs_image = _index(problem.obs_image_index, k_obs, len(quat), "obs_image_index")
    obs_point = _index(problem.obs_point_index, k_obs, len(points), "obs_point_index")
    image_camera = _index(problem.image_camera, len(quat), len(cameras), "image_camera")
    return cameras, quat, trans, points, obs_xy, obs_image, obs_point, image_camera


# --- the solver ---------------------------------------------------------------------------------

def bundle_adjust(problem: BAProblem, options: Optional[BAOptions] = None, progress=None) -> BAResult:
    """Minimise the (robust) reprojection error over poses, points and optionally intrinsics.

    ``progress`` follows ``scene.progress.Progress``: ``report("bundle_adjustment", iteration,
    max_iterations, message)`` after every step and ``should_stop()`` between steps (then the result
    holds the best state so far with termination_reason "cancelled").
    """
    options = options or BAOptions()
    if options.loss not in LOSSES:
        raise ParallaxError(f"bundle adjustment: unknown loss {options.loss!r}; use one of {', '.join(LOSSES)}")
    if options.loss != "trivial" and not (np.isfinite(options.loss_scale_px) and options.loss_scale_px > 0):
        raise ParallaxError(f"bundle adjustment: loss_scale_px must be positive, got {options.loss_scale_px}")
    loss_type = LOSSES[options.loss]
    scale = float(options.loss_scale_px)
    started = time.perf_counter()

    cameras, quat, trans, points, obs_xy, obs_image, obs_point, image_camera = _validate(problem)
    n_images, n_points = len(quat), len(points)
    pose_fixed = _mask(problem.pose_fixed, n_images, "pose_fixed")
    point_fixed = _mask(problem.point_fixed, n_points, "point_fixed")
    intr_fixed = _mask(problem.intrinsics_fixed, len(cameras), "intrinsics_fixed")

    rotations = np.ascontiguousarray(quat_wxyz_to_rotation(quat))
    translations = trans.copy()
    points = points.copy()

    # Only variables that some observation constrains are free.
    image_seen = np.bincount(obs_image, minlength=n_images) > 0
    point_seen = np.bincount(obs_point, minlength=n_points) > 0
    pose_free = ~pose_fixed & image_seen
    point_free = ~point_fixed & point_seen
    pose_offset = -np.ones(n_images, dtype=np.int64)
    pose_offset[pose_free] = 6 * np.arange(int(pose_free.sum()))
    camera_used = np.zeros(len(cameras), dtype=bool)
    camera_used[image_camera[obs_image]] = True
    intr, n_cam_vars = _intrinsics(cameras, options, intr_fixed, camera_used, 6 * int(pose_free.sum()))
    if n_cam_vars and not pose_fixed.any() and not point_fixed.any():
        raise ParallaxError("bundle adjustment: the gauge is free; fix at least one pose (pose_fixed)")
    cam_full = intr.full()

    linearize_args = (intr.free_map, intr.free_count, intr.offset, image_camera, pose_offset,
                      obs_image, obs_point, obs_xy)
    all_active = np.ones(len(obs_xy), dtype=np.bool_)
    res, jc, cidx, jp, valid = kern.linearize(rotations, translations, points, cam_full, *linearize_args, all_active)
    if not valid.any():
        raise ParallaxError("bundle adjustment: every observed point is behind its camera")
    # Observations behind their camera at the start are left out; steps may not push others behind.
    active = valid.copy()
    # CSR of each free point's active observations, for the Schur complement.
    obs_for_points = np.flatnonzero(active & point_free[obs_point])
    order = obs_for_points[np.argsort(obs_point[obs_for_points], kind="stable")]
    point_ptr = np.zeros(n_points + 1, dtype=np.int64)
    np.cumsum(np.bincount(obs_point[order], minlength=n_points), out=point_ptr[1:])
    point_obs = np.ascontiguousarray(order)
    point_free_solve = point_free.copy()
    point_free_solve[point_ptr[1:] == point_ptr[:-1]] = False

    def cost_of(r_, t_, x_, full_):
        cost_, sq_, behind_ = kern.evaluate_cost(r_, t_, x_, full_, image_camera, obs_image, obs_point, obs_xy,
                                                 active, loss_type, scale)
        return (np.inf if behind_ else cost_), sq_

    n_active = int(active.sum())
    cost, sq = cost_of(rotations, translations, points, cam_full)
    initial_cost, initial_rms = cost, float(np.sqrt(sq / n_active))
    costs = []

    lam = float(options.initial_lambda)
    nu = 2.0
    iterations = accepted = 0
    reason = "max_iterations"
    need_linearize = False  # the first linearisation is done above
    accepted_since_build = True
    n_pose_vars = 6 * int(pose_free.sum())
    if n_cam_vars == 0 and not point_free_solve.any():
        reason = "nothing_to_optimize"
    while reason != "nothing_to_optimize":
        if progress is not None and progress.should_stop():
            reason = "cancelled"
            break
        if iterations >= options.max_iterations:
            reason = "max_iterations"
            break
        if need_linearize:
            res, jc, cidx, jp, _ = kern.linearize(rotations, translations, points, cam_full, *linearize_args, active)
            need_linearize = False
        if accepted_since_build:
            u_mat, gc, v_blk, gp, wk, _ = kern.build_normal_equations(
                res, jc, cidx, jp, active, obs_point, point_free_solve, n_cam_vars, n_points, loss_type, scale)
            diag_u = np.clip(np.diag(u_mat).copy(), _MIN_DIAGONAL, _MAX_DIAGONAL)
            diag_v = np.clip(np.diagonal(v_blk, axis1=1, axis2=2).copy(), _MIN_DIAGONAL, _MAX_DIAGONAL)
            gp_free = gp[point_free_solve]
            grad_max = max(np.abs(gc).max(initial=0.0), np.abs(gp_free).max(initial=0.0))
            accepted_since_build = False
            if grad_max <= options.gradient_tolerance:
                reason = "gradient_tolerance"
                break

        iterations += 1
        s_mat, b_vec, v_inv, ok = kern.schur_reduce(u_mat, gc, v_blk, gp, wk, cidx, point_ptr, point_obs,
                                                    lam, diag_u, diag_v)
        delta_c = _solve_reduced(s_mat, b_vec)
        if delta_c is None:
            lam, nu = lam * nu, nu * 2.0
            if lam > _MAX_LAMBDA:
                reason = "no_progress"
                break
            continue
        delta_p = kern.back_substitute(delta_c, gp, wk, cidx, point_ptr, point_obs, v_inv, ok)

        # Step size test against the size of the free parameters (rotations count 1 each, as a unit quaternion).
        x_norm = np.sqrt(np.sum(translations[pose_free] ** 2) + np.sum(points[point_free_solve] ** 2)
                         + sum(float(np.sum(p[f] ** 2)) for p, f in zip(intr.params, intr.free))
                         + pose_free.sum())
        step_norm = np.sqrt(np.sum(delta_c ** 2) + np.sum(delta_p ** 2))
        if step_norm <= options.parameter_tolerance * (x_norm + options.parameter_tolerance):
            reason = "parameter_tolerance"
            break

        new_r, new_t = kern.apply_pose_updates(rotations, translations, delta_c, pose_offset)
        new_x = points + delta_p
        new_params = [p.copy() for p in intr.params]
        for c, f in enumerate(intr.free):
            if len(f):
                new_params[c][f] += delta_c[intr.offset[c]:intr.offset[c] + len(f)]
        new_full = np.ascontiguousarray(np.stack([e @ p for e, p in zip(intr.expand, new_params)]))
        new_cost, new_sq = cost_of(new_r, new_t, new_x, new_full)

        # Predicted decrease of the IRLS model: 0.5 delta^T (lam D delta - g).
        predicted = 0.5 * (float(delta_c @ (lam * diag_u * delta_c - gc))
                           + float(np.sum(delta_p * (lam * diag_v * delta_p - gp))))
        if np.isfinite(new_cost) and new_cost < cost and predicted > 0:
            ratio = (cost - new_cost) / predicted
            decrease = cost - new_cost
            rotations, translations, points, cam_full = new_r, new_t, new_x, new_full
            intr.params = new_params
            old_cost, cost, sq = cost, new_cost, new_sq
            costs.append(cost)
            accepted += 1
            need_linearize = True
            accepted_since_build = True
            lam *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
            nu = 2.0
            if progress is not None:
                progress.report("bundle_adjustment", iterations, options.max_iterations,
                                f"cost {cost:.6g}, rms {np.sqrt(sq / n_active):.4g} px")
            if decrease <= options.function_tolerance * old_cost:
                reason = "function_tolerance"
                break
        else:
            lam, nu = lam * nu, nu * 2.0
            if lam > _MAX_LAMBDA:
                reason = "no_progress"
                break

    norms = kern.residual_norms(rotations, translations, points, cam_full, image_camera, obs_image, obs_point,
                                obs_xy)
    norms[~active] = np.nan
    out_cameras = [Camera(cam.camera_id, cam.model, cam.width, cam.height, p, intrinsics_source=cam.intrinsics_source)
                   for cam, p in zip(cameras, intr.params)]
    return BAResult(
        quat_wxyz=rotation_to_quat_wxyz(rotations), translation=translations, points_world=points,
        cameras=out_cameras, initial_cost=float(initial_cost), final_cost=float(cost),
        initial_rms_px=initial_rms, final_rms_px=float(np.sqrt(sq / n_active)), iterations=iterations,
        accepted_iterations=accepted, termination_reason=reason, residual_norms_px=norms,
        observations_used=active, seconds=time.perf_counter() - started, costs=costs)


def _solve_reduced(s_mat: np.ndarray, b_vec: np.ndarray) -> Optional[np.ndarray]:
    """Cholesky of the reduced camera system after Jacobi scaling (focal and rotation columns differ by
    orders of magnitude); None when it is not positive definite."""
    if s_mat.shape[0] == 0:
        return np.zeros(0)
    d = np.sqrt(np.clip(np.diag(s_mat), _MIN_DIAGONAL, None))
    scaled = s_mat / d[:, None] / d[None, :]
    if not np.all(np.isfinite(scaled)):
        return None
    with one_blas_thread():
        try:
            factor = scipy.linalg.cho_factor(scaled, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        x = scipy.linalg.cho_solve(factor, b_vec / d, check_finite=False) / d
    return x if np.all(np.isfinite(x)) else None


def one_blas_thread():
    """Context manager: one BLAS thread inside (the reduced BA solve; exact matching's threaded pairs).

    Measured on the 2-core machine: with two OpenBLAS threads and the other core busy (tracking, or other
    work), a Cholesky of a 192 x 192 system took 165-240 ms instead of ~1 ms, and scipy's LAPACK wrappers
    hold the GIL meanwhile, which froze the GUI thread.
    """
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, scanned once (a scan costs ~3 ms; a limit ~20 us)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it BLAS keeps its default threads
        return None
    return ThreadpoolController()


# --- pose-only refinement (tracking) ------------------------------------------------------------

def optimize_pose(camera: Camera, cam_from_world: Rigid3d, points_world, obs_xy, loss: str = "huber",
                  loss_scale: float = 2.447, max_iterations: int = 10,
                  inlier_threshold_px: Optional[float] = None, rounds: int = 4) -> tuple[Rigid3d, np.ndarray, float]:
    """Refine one ``cam_from_world`` from 2D-3D correspondences; intrinsics and points held fixed.

    Works in ``rounds`` as ORB-SLAM's pose optimisation does: LM with the robust loss on the current
    inliers (all finite correspondences at first), then every correspondence is reclassified as an
    inlier when its reprojection error is <= ``inlier_threshold_px`` (default ``loss_scale``: with
    Huber delta = sqrt(5.991) sigma that is the 95 % chi-square gate of a sigma-pixel detector); stops
    early when the classification no longer changes.

    Returns (cam_from_world, inlier_mask (K,), RMS reprojection error of the inliers in pixels; NaN when
    there are none).
    """
    if loss not in LOSSES:
        raise ParallaxError(f"optimize_pose: unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    if not (np.isfinite(loss_scale) and loss_scale > 0):
        raise ParallaxError(f"optimize_pose: loss_scale must be positive, got {loss_scale}")
    pts = np.ascontiguousarray(np.asarray(points_world, dtype=np.float64))
    xy = np.ascontiguousarray(np.asarray(obs_xy, dtype=np.float64))
    if pts.ndim != 2 or pts.shape[1] != 3 or xy.shape != (len(pts), 2):
        raise ParallaxError(f"optimize_pose: need points_world (K, 3) and obs_xy (K, 2), "
                            f"got {pts.shape} and {xy.shape}")
    if not np.all(np.isfinite(xy)):
        raise ParallaxError("optimize_pose: obs_xy has NaN or infinite values")
    full = model_expansion(camera.model) @ np.asarray(camera.params, dtype=np.float64)
    threshold = float(loss_scale if inlier_threshold_px is None else inlier_threshold_px)
    rot, trans, inliers, _ = kern.pose_only_optimize(
        np.ascontiguousarray(cam_from_world.rotation), np.array(cam_from_world.translation, dtype=np.float64),
        pts, xy, full, LOSSES[loss], float(loss_scale), int(max_iterations), threshold, int(rounds))
    if inliers.any():
        pix = project(camera, pts[inliers] @ rot.T + trans)
        rms = float(np.sqrt(np.mean(np.sum((pix - xy[inliers]) ** 2, axis=1))))
    else:
        rms = float("nan")
    return Rigid3d.from_rotation(rot, trans), inliers, rms


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel on a tiny problem; call it from a background
    thread at start-up so that the first local BA or tracked frame is not slow (DESIGN section 5)."""
    camera = Camera(0, "OPENCV", 64, 48, [50.0, 50.0, 32.0, 24.0, 0.0, 0.0, 0.0, 0.0])
    points = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    translations = np.array([[0.0, 0.0, 4.0], [-0.5, 0.0, 4.0], [0.5, 0.1, 4.0]])
    rotations = np.repeat(np.eye(3)[None], 3, axis=0)
    obs_image = np.repeat(np.arange(3), len(points))
    obs_point = np.tile(np.arange(len(points)), 3)
    obs_xy = np.vstack([project(camera, points + t) for t in translations])
    problem = BAProblem([camera], np.zeros(3, dtype=np.int64), rotation_to_quat_wxyz(rotations), translations,
                        points + 0.01, obs_image, obs_point, obs_xy, pose_fixed=np.array([True, True, False]))
    bundle_adjust(problem, BAOptions(max_iterations=2, loss="huber", refine_focal=True))
    optimize_pose(camera, Rigid3d(translation=translations[0]), points, obs_xy[:len(points)], max_iterations=2)
