"""Bundle adjustment and pose-only optimisation on synthetic scenes with known ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from geometry import ba_kernels as kern
from geometry import camera_models as cm
from geometry.align import umeyama
from geometry.bundle_adjustment import (LOSSES, BAOptions, BAProblem, bundle_adjust, model_expansion, optimize_pose,
                                       warm_up)
from geometry.lie import quat_wxyz_to_rotation, rotation_angle, rotation_to_quat_wxyz, se3_exp, so3_exp
from scene.camera import Camera
from scene.errors import ParallaxError
from scene.progress import RecordingProgress
from scene.rigid import Rigid3d

W, H = 640, 480
OPENCV_PARAMS = [500.0, 505.0, 320.0, 240.0, -0.1, 0.02, 1e-3, -5e-4]
MODELS = {
    "SIMPLE_PINHOLE": [500.0, 320.0, 240.0],
    "PINHOLE": [500.0, 505.0, 320.0, 240.0],
    "SIMPLE_RADIAL": [500.0, 320.0, 240.0, -0.12],
    "RADIAL": [500.0, 320.0, 240.0, -0.1, 0.03],
    "OPENCV": OPENCV_PARAMS,
}


def _look_at(center, target):
    """cam_from_world (x right, y down, z forward) for a camera at ``center`` looking at ``target``; world z up."""
    z = target - center
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 0.0, -1.0], z)
    x /= np.linalg.norm(x)
    rotation = np.stack([x, np.cross(z, x), z])
    return rotation, -rotation @ center


class Scene:
    """Cameras on a half orbit (radius 4) around points in the cube [-1, 1]^3; every camera sees every point."""

    def __init__(self, n_cams=10, n_points=500, seed=0, camera=None):
        rng = np.random.default_rng(seed)
        self.camera = camera or Camera(1, "OPENCV", W, H, OPENCV_PARAMS)
        self.points = rng.uniform(-1.0, 1.0, (n_points, 3))
        rotations, translations = [], []
        for i in range(n_cams):
            angle = np.pi * i / n_cams
            center = np.array([4.0 * np.cos(angle), 4.0 * np.sin(angle), 0.5 + 0.3 * np.sin(3 * angle)])
            r, t = _look_at(center, rng.normal(0.0, 0.1, 3))
            rotations.append(r)
            translations.append(t)
        self.rotations, self.translations = np.array(rotations), np.array(translations)
        self.obs_image = np.repeat(np.arange(n_cams), n_points)
        self.obs_point = np.tile(np.arange(n_points), n_cams)
        self.obs_xy = np.vstack([cm.project(self.camera, self.points @ r.T + t)
                                 for r, t in zip(self.rotations, self.translations)])

    def perturbed(self, seed=1, rot_sigma=0.01, trans_sigma=0.05, point_sigma=0.05, n_fixed=2):
        """Poses and points moved by noise; the first ``n_fixed`` poses stay exact and fixed (the gauge)."""
        rng = np.random.default_rng(seed)
        rotations = so3_exp(rng.normal(0.0, rot_sigma, (len(self.rotations), 3))) @ self.rotations
        translations = self.translations + rng.normal(0.0, trans_sigma, self.translations.shape)
        rotations[:n_fixed], translations[:n_fixed] = self.rotations[:n_fixed], self.translations[:n_fixed]
        points = self.points + rng.normal(0.0, point_sigma, self.points.shape)
        fixed = np.zeros(len(rotations), dtype=bool)
        fixed[:n_fixed] = True
        return rotations, translations, points, fixed

    def problem(self, obs_xy=None, cameras=None, seed=1, n_fixed=2, **kwargs) -> BAProblem:
        rotations, translations, points, fixed = self.perturbed(seed=seed, n_fixed=n_fixed)
        return BAProblem(cameras=cameras or [self.camera], image_camera=np.zeros(len(rotations), dtype=int),
                         quat_wxyz=rotation_to_quat_wxyz(rotations), translation=translations,
                         points_world=points, obs_image_index=self.obs_image, obs_point_index=self.obs_point,
                         obs_xy=self.obs_xy if obs_xy is None else obs_xy, pose_fixed=fixed, **kwargs)

    def rotation_errors_deg(self, result) -> np.ndarray:
        return np.degrees(rotation_angle(quat_wxyz_to_rotation(result.quat_wxyz) @ self.rotations.transpose(0, 2, 1)))


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()


# --- Jacobians and the update convention ------------------------------------------------------------------

def _linearize_one(model, params, rotation, translation, point, xy):
    """kern.linearize on one observation with every intrinsic free; camera columns = 6 pose + P intrinsics."""
    expand = model_expansion(model)
    p = len(params)
    full = np.ascontiguousarray((expand @ params)[None])
    return kern.linearize(rotation[None], translation[None], point[None], full, np.ascontiguousarray(expand[None]),
                          np.array([p]), np.array([6]), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                          np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), xy[None],
                          np.ones(1, dtype=np.bool_))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_jacobians_match_central_differences(model):
    rng = np.random.default_rng(3)
    params = np.array(MODELS[model])
    rotation = so3_exp(rng.normal(0.0, 0.3, 3))
    translation = np.array([0.1, -0.2, 3.0])
    xy = np.array([300.0, 200.0])
    checked = 0
    for _ in range(20):
        # points over the whole field of view, where distortion matters most
        point = np.linalg.solve(rotation, np.array([rng.uniform(-1.6, 1.6), rng.uniform(-1.2, 1.2), 1.0])
                                * rng.uniform(2.0, 8.0) - translation)
        res, jc, _, jp, valid = _linearize_one(model, params, rotation, translation, point, xy)
        assert valid[0]
        n_p = len(params)

        def residual(delta_pose=np.zeros(6), delta_point=np.zeros(3), delta_params=np.zeros(n_p)):
            r, t = kern.apply_pose_updates(rotation[None], translation[None], delta_pose, np.zeros(1, dtype=np.int64))
            return _linearize_one(model, params + delta_params, r[0], t[0], point + delta_point, xy)[0][0]

        numeric_pose = np.empty((2, 6))
        for a in range(6):
            e = np.zeros(6)
            e[a] = 1e-6
            numeric_pose[:, a] = (residual(delta_pose=e) - residual(delta_pose=-e)) / 2e-6
        numeric_point = np.empty((2, 3))
        for a in range(3):
            e = np.zeros(3)
            e[a] = 1e-6
            numeric_point[:, a] = (residual(delta_point=e) - residual(delta_point=-e)) / 2e-6
        numeric_params = np.empty((2, n_p))
        for a in range(n_p):
            e = np.zeros(n_p)
            e[a] = 1e-6 * max(1.0, abs(params[a]))
            numeric_params[:, a] = (residual(delta_params=e) - residual(delta_params=-e)) / (2 * e[a])
        for analytic, numeric in ((jc[0, :, :6], numeric_pose), (jp[0], numeric_point),
                                  (jc[0, :, 6:6 + n_p], numeric_params)):
            assert np.abs(analytic - numeric).max() <= 1e-6 * np.abs(analytic).max()
        checked += 1
    assert checked == 20


def test_pose_update_is_left_multiplication_by_se3_exp():
    rng = np.random.default_rng(4)
    rotation, translation = so3_exp(rng.normal(0.0, 1.0, 3)), rng.normal(0.0, 1.0, 3)
    for xi in (rng.normal(0.0, 0.5, 6), rng.normal(0.0, 1e-6, 6), np.zeros(6)):
        r, t = kern.apply_pose_updates(rotation[None], translation[None], xi, np.zeros(1, dtype=np.int64))
        before = np.eye(4)
        before[:3, :3], before[:3, 3] = rotation, translation
        expected = se3_exp(xi) @ before
        assert np.abs(r[0] - expected[:3, :3]).max() < 1e-14
        assert np.abs(t[0] - expected[:3, 3]).max() < 1e-14


@pytest.mark.parametrize("loss, value", [("huber", 3.0), ("cauchy", 3.0)])
def test_robust_weight_is_derivative_of_rho(loss, value):
    code = LOSSES[loss]
    for s in (0.5, 2.0, 8.0, 10.0, 100.0):  # not at the Huber kink s = 9
        numeric = (kern.robust_rho(s + 1e-6, code, value) - kern.robust_rho(s - 1e-6, code, value)) / 2e-6
        assert abs(numeric - kern.robust_weight(s, code, value)) < 1e-8


# --- full bundle adjustment ----------------------------------------------------------------------------

def test_noise_free_converges_and_recovers_poses(scene):
    result = bundle_adjust(scene.problem(), BAOptions())
    assert result.converged, result.termination_reason
    assert result.initial_rms_px > 5.0
    assert result.final_rms_px < 1e-6
    # Two exact fixed poses fix the gauge and the scale: the answer is the ground truth itself.
    assert scene.rotation_errors_deg(result).max() < 1e-7
    assert np.abs(result.translation - scene.translations).max() < 1e-8
    assert np.abs(result.points_world - scene.points).max() < 1e-8
    assert np.all(result.residual_norms_px < 1e-6)
    assert np.all(np.diff([result.initial_cost] + result.costs) < 0)


def test_one_fixed_pose_recovers_poses_up_to_similarity(scene):
    result = bundle_adjust(scene.problem(n_fixed=1), BAOptions())
    assert result.final_rms_px < 1e-6
    centers = -np.einsum("nji,nj->ni", quat_wxyz_to_rotation(result.quat_wxyz), result.translation)
    true_centers = -np.einsum("nji,nj->ni", scene.rotations, scene.translations)
    r, t, s = umeyama(centers, true_centers)
    assert np.abs(s * centers @ r.T + t - true_centers).max() < 1e-7
    assert scene.rotation_errors_deg(result).max() < 1e-6  # the fixed pose pins the rotation gauge


def test_gaussian_noise_reaches_the_noise_level(scene):
    rng = np.random.default_rng(5)
    sigma = 0.5
    noisy = scene.obs_xy + rng.normal(0.0, sigma, scene.obs_xy.shape)
    options = BAOptions(function_tolerance=1e-12, parameter_tolerance=1e-12)
    result = bundle_adjust(scene.problem(obs_xy=noisy), options)
    assert result.converged, result.termination_reason
    assert result.final_rms_px < result.initial_rms_px
    # At the optimum E|r|^2 = 2 sigma^2 (1 - p / 2K) with p free parameters and 2K residuals.
    n_obs = len(noisy)
    n_params = 6 * 8 + 3 * len(scene.points)
    expected = sigma * np.sqrt(2.0 * (1.0 - n_params / (2.0 * n_obs)))
    assert abs(result.final_rms_px - expected) < 0.03 * expected
    # The same minimum is found from the ground truth as start, and it is below the cost of the truth.
    at_truth = BAProblem([scene.camera], np.zeros(10, dtype=int), rotation_to_quat_wxyz(scene.rotations),
                         scene.translations, scene.points, scene.obs_image, scene.obs_point, noisy,
                         pose_fixed=np.arange(10) < 2)
    from_truth = bundle_adjust(at_truth, options)
    assert np.abs(from_truth.points_world - result.points_world).max() < 1e-9
    assert np.abs(from_truth.translation - result.translation).max() < 1e-9
    frozen = bundle_adjust(BAProblem(**{**at_truth.__dict__, "pose_fixed": np.ones(10, bool),
                                        "point_fixed": np.ones(len(scene.points), bool)}))
    assert frozen.termination_reason == "nothing_to_optimize" and frozen.final_cost == frozen.initial_cost
    assert result.final_cost < frozen.final_cost
    # What 0.5 px of noise leaves in this geometry (two neighbouring cameras fix the gauge): ~0.05 deg.
    assert scene.rotation_errors_deg(result).max() < 0.1


def test_robust_losses_survive_gross_outliers_where_least_squares_does_not(scene):
    """10 % of the observations replaced by random pixels (wrong matches); the others exact."""
    rng = np.random.default_rng(6)
    xy = scene.obs_xy.copy()
    outliers = rng.random(len(xy)) < 0.1
    xy[outliers] = rng.uniform([0, 0], [W, H], (outliers.sum(), 2))
    errors = {}
    for loss in ("trivial", "huber", "cauchy"):
        result = bundle_adjust(scene.problem(obs_xy=xy), BAOptions(loss=loss, loss_scale_px=1.0))
        assert result.converged, (loss, result.termination_reason)
        errors[loss] = scene.rotation_errors_deg(result).max()
        if loss != "trivial":
            norms = result.residual_norms_px
            assert np.median(norms[~outliers]) < 0.1
            assert np.mean(norms[outliers] > 2.0) > 0.99
    assert errors["trivial"] > 1.0, errors
    assert errors["huber"] < 0.1, errors
    # Cauchy's influence redescends: the outliers leave almost no bias (Huber's stays bounded, ~0.04 deg here).
    assert errors["cauchy"] < 0.01, errors


def test_focal_refinement_recovers_a_5_percent_error(scene):
    params = np.array(OPENCV_PARAMS)
    params[:2] *= 1.05
    wrong = Camera(1, "OPENCV", W, H, params)
    result = bundle_adjust(scene.problem(cameras=[wrong]), BAOptions(refine_focal=True))
    assert result.converged, result.termination_reason
    assert result.final_rms_px < 1e-6
    assert np.abs(result.cameras[0].params - OPENCV_PARAMS).max() < 1e-6
    # without refinement the wrong focal stays and the error cannot vanish
    fixed = bundle_adjust(scene.problem(cameras=[wrong]), BAOptions())
    assert fixed.final_rms_px > 0.1
    assert np.array_equal(fixed.cameras[0].params, params)


def test_all_intrinsics_refined_for_two_cameras_of_different_models():
    """Two physical cameras (OPENCV and RADIAL) each seeing every point; all intrinsics start wrong."""
    radial = Camera(2, "RADIAL", W, H, MODELS["RADIAL"])
    base = Scene(n_cams=12, n_points=400, seed=7)
    image_camera = np.arange(12) % 2
    xy = base.obs_xy.copy()
    for i in np.flatnonzero(image_camera == 1):
        rows = base.obs_image == i
        xy[rows] = cm.project(radial, base.points @ base.rotations[i].T + base.translations[i])
    start_opencv = np.array(OPENCV_PARAMS) * [1.03, 0.98, 1.01, 0.99, 0.8, 1.2, 0.5, 1.5]
    start_radial = np.array(MODELS["RADIAL"]) * [0.97, 1.01, 1.02, 1.2, 0.8]
    cams = [Camera(1, "OPENCV", W, H, start_opencv), Camera(2, "RADIAL", W, H, start_radial)]
    problem = base.problem(obs_xy=xy, cameras=cams)
    problem.image_camera = image_camera
    result = bundle_adjust(problem, BAOptions(refine_focal=True, refine_principal_point=True,
                                              refine_distortion=True))
    assert result.final_rms_px < 1e-6, result.termination_reason
    assert np.abs(result.cameras[0].params - OPENCV_PARAMS).max() < 1e-5
    assert np.abs(result.cameras[1].params - MODELS["RADIAL"]).max() < 1e-5
    assert result.cameras[1].model == "RADIAL" and result.cameras[1].camera_id == 2


def test_intrinsics_fixed_per_camera_and_fixed_points_stay(scene):
    params = np.array(OPENCV_PARAMS)
    params[0] *= 1.01
    wrong = Camera(1, "OPENCV", W, H, params)
    point_fixed = np.zeros(len(scene.points), bool)
    point_fixed[::7] = True
    problem = scene.problem(cameras=[wrong], intrinsics_fixed=[True], point_fixed=point_fixed)
    result = bundle_adjust(problem, BAOptions(refine_focal=True, max_iterations=5))
    assert np.array_equal(result.cameras[0].params, params)
    assert np.array_equal(result.points_world[point_fixed], problem.points_world[point_fixed])
    assert np.array_equal(result.translation[:2], problem.translation[:2])


def test_observation_behind_a_camera_is_left_out(scene):
    problem = scene.problem()
    points = problem.points_world.copy()
    # one extra point behind camera 2 but in front of camera 9 (across the orbit), observed by both
    behind = scene.rotations[2].T @ (np.array([0.0, 0.0, -2.0]) - scene.translations[2])
    points = np.vstack([points, behind])
    xy3 = cm.project(scene.camera, (scene.rotations[9] @ behind + scene.translations[9])[None])[0]
    problem.points_world = points
    problem.obs_image_index = np.append(problem.obs_image_index, [2, 9])
    problem.obs_point_index = np.append(problem.obs_point_index, [len(points) - 1] * 2)
    problem.obs_xy = np.vstack([problem.obs_xy, [[320.0, 240.0]], [xy3]])
    result = bundle_adjust(problem, BAOptions())
    assert not result.observations_used[-2] and result.observations_used[-1]
    assert np.isnan(result.residual_norms_px[-2])
    assert result.final_rms_px < 1e-6


def test_cancel_stops_between_iterations(scene):
    progress = RecordingProgress(stop_after=1)
    result = bundle_adjust(scene.problem(), BAOptions(), progress=progress)
    assert result.termination_reason == "cancelled"
    assert result.accepted_iterations == 1 and len(progress.reports) == 1
    assert progress.reports[0][0] == "bundle_adjustment"
    assert result.final_cost < result.initial_cost


def test_max_iterations_is_honoured(scene):
    result = bundle_adjust(scene.problem(), BAOptions(max_iterations=2))
    assert result.termination_reason == "max_iterations" and result.iterations == 2


# --- bad input -----------------------------------------------------------------------------------------

def test_no_observations_is_an_error(scene):
    problem = scene.problem()
    problem.obs_image_index = np.zeros(0, dtype=int)
    problem.obs_point_index = np.zeros(0, dtype=int)
    problem.obs_xy = np.zeros((0, 2))
    with pytest.raises(ParallaxError, match="no observations"):
        bundle_adjust(problem)


@pytest.mark.parametrize("field, index", [("points_world", (3, 1)), ("obs_xy", (10, 0)), ("translation", (4, 2)),
                                          ("quat_wxyz", (5, 0))])
def test_nan_input_is_an_error(scene, field, index):
    problem = scene.problem()
    values = np.array(getattr(problem, field), dtype=float)
    values[index] = np.nan
    setattr(problem, field, values)
    with pytest.raises(ParallaxError, match=field):
        bundle_adjust(problem)


def test_bad_indices_and_free_gauge_are_errors(scene):
    problem = scene.problem()
    problem.obs_point_index = problem.obs_point_index.copy()
    problem.obs_point_index[0] = len(scene.points)
    with pytest.raises(ParallaxError, match="obs_point_index"):
        bundle_adjust(problem)
    with pytest.raises(ParallaxError, match="gauge"):
        bundle_adjust(scene.problem(n_fixed=0))
    with pytest.raises(ParallaxError, match="loss"):
        bundle_adjust(scene.problem(), BAOptions(loss="l1"))
    fisheye = Camera(1, "OPENCV_FISHEYE", W, H, [500, 500, 320, 240, 0, 0, 0, 0])
    with pytest.raises(ParallaxError, match="OPENCV_FISHEYE"):
        bundle_adjust(scene.problem(cameras=[fisheye]))


def test_all_points_behind_the_cameras_is_an_error(scene):
    problem = scene.problem()
    # mirror every camera so that it looks away from the scene
    flip = np.diag([-1.0, 1.0, -1.0])
    problem.quat_wxyz = rotation_to_quat_wxyz(flip @ quat_wxyz_to_rotation(problem.quat_wxyz))
    problem.translation = problem.translation @ flip.T
    with pytest.raises(ParallaxError, match="behind"):
        bundle_adjust(problem)


# --- pose-only optimisation ------------------------------------------------------------------------------

def _tracking_case(seed=8, n=300, outlier_fraction=0.2):
    rng = np.random.default_rng(seed)
    camera = Camera(1, "OPENCV", W, H, OPENCV_PARAMS)
    rotation, translation = _look_at(np.array([0.0, -5.0, 0.5]), np.zeros(3))
    pixels = rng.uniform([20, 20], [W - 20, H - 20], (n, 2))
    rays = cm.unproject(camera, pixels)
    points_cam = rays * rng.uniform(3.0, 8.0, n)[:, None]
    points_world = (points_cam - translation) @ rotation
    xy = pixels + rng.normal(0.0, 0.5, pixels.shape)
    outliers = rng.random(n) < outlier_fraction
    directions = rng.normal(size=(outliers.sum(), 2))
    offsets = rng.uniform(15, 80, (outliers.sum(), 1))
    xy[outliers] += directions / np.linalg.norm(directions, axis=1, keepdims=True) * offsets
    truth = Rigid3d.from_rotation(rotation, translation)
    start = Rigid3d.from_rotation(so3_exp([0.01, -0.02, 0.015]) @ rotation, translation + [0.1, -0.05, 0.08])
    return camera, truth, start, points_world, xy, outliers


def test_optimize_pose_with_outliers_finds_the_inliers():
    camera, truth, start, points_world, xy, outliers = _tracking_case()
    pose, inliers, rms = optimize_pose(camera, start, points_world, xy, loss="huber", loss_scale=2.447,
                                       max_iterations=10)
    assert np.array_equal(inliers, ~outliers)
    assert np.degrees(rotation_angle(pose.rotation @ truth.rotation.T)) < 0.02
    assert np.linalg.norm(pose.center() - truth.center()) < 0.01
    assert 0.4 < rms < 0.8  # 0.5 px per axis: |r| RMS ~ 0.5 * sqrt(2)


def test_optimize_pose_noise_free_is_exact_and_handles_nan_points():
    camera, truth, start, points_world, _, _ = _tracking_case(outlier_fraction=0.0)
    xy = cm.project(camera, truth.apply(points_world))
    points_world = points_world.copy()
    points_world[5] = np.nan
    pose, inliers, rms = optimize_pose(camera, start, points_world, xy, loss="cauchy", loss_scale=2.0,
                                       max_iterations=20)
    assert not inliers[5] and inliers.sum() == len(xy) - 1
    assert rms < 1e-8
    assert np.abs(pose.matrix() - truth.matrix()).max() < 1e-9
    with pytest.raises(ParallaxError):
        optimize_pose(camera, start, points_world, xy[:10])


def test_warm_up_runs():
    warm_up()
