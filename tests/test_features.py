"""slam/features.py: ORB spread by a grid, COLMAP pixel convention, any image size; checked against known warps."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from assets import camera_path, demo_camera, render_frame
from geometry.camera_models import project
from geometry.matching import match_brute_force
from scene.camera import Camera
from scene.errors import ParallaxError
from slam.features import OrbExtractor, OrbOptions, extract_orb, pyramid_plan


def textured_image(width: int, height: int, seed: int = 0, contrast: float = 1.0) -> np.ndarray:
    """Blurred noise at two scales plus random filled shapes: corners everywhere, no repeated pattern."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width), np.float32)
    for cell, weight in ((3, 0.5), (11, 0.5)):
        small = rng.random((height // cell + 2, width // cell + 2)).astype(np.float32)
        img += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)[:height, :width]
    img = cv2.GaussianBlur(img, (0, 0), 1.0) * 255.0
    canvas = img.copy()
    n_shapes = int(width * height / 2500)
    for _ in range(n_shapes):
        colour = float(rng.uniform(0, 255))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(4, 24))
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (x, y), (x + size, y + int(rng.integers(4, 24))), colour, -1)
        else:
            cv2.circle(canvas, (x, y), size // 2, colour, -1)
    out = 128.0 + contrast * (canvas - 128.0)
    return np.clip(out, 0, 255).astype(np.uint8)


def pinhole(width: int, height: int) -> Camera:
    f = 1.2 * max(width, height)
    return Camera(1, "PINHOLE", width, height, np.array([f, f, width / 2.0, height / 2.0]))


def colmap_homography(h_opencv: np.ndarray) -> np.ndarray:
    """cv2.warpPerspective's H (pixel centres at integers) expressed in COLMAP pixels (centres at +0.5)."""
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return shift @ h_opencv @ np.linalg.inv(shift)


def apply_homography(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    p = np.column_stack((xy, np.ones(len(xy)))) @ h.T
    return p[:, :2] / p[:, 2:3]


def grid_counts(xy: np.ndarray, width: int, height: int, n: int) -> np.ndarray:
    counts, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=[n, n], range=[[0, width], [0, height]])
    return counts


@pytest.fixture(scope="module")
def demo_frame():
    camera = demo_camera(640, 480)
    _, poses = camera_path("orbit", 30, 30.0)
    bgr, _ = render_frame(poses[0], camera)
    return bgr, camera


def test_demo_frame_gives_1000_features_covering_every_cell(demo_frame):
    bgr, camera = demo_frame
    features = extract_orb(bgr, camera)
    assert len(features) >= 1000
    assert np.all(grid_counts(features.keypoints_xy, 640, 480, 4) > 0)
    assert features.descriptors.shape == (len(features), 32) and features.descriptors.dtype == np.uint8
    assert set(np.unique(features.octaves)) == set(range(features.plan.n_levels))
    assert np.all((features.angles >= 0) & (features.angles < 360))
    assert np.all(features.responses >= OrbOptions().fast_min_threshold)
    np.testing.assert_array_equal(features.scales, features.plan.level_scales[features.octaves].astype(np.float32))
    # A BGR frame and its gray version give the same features.
    gray = extract_orb(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), camera)
    np.testing.assert_array_equal(gray.keypoints_xy, features.keypoints_xy)
    np.testing.assert_array_equal(gray.descriptors, features.descriptors)


def test_same_image_gives_identical_features(demo_frame):
    bgr, camera = demo_frame
    extractor = OrbExtractor()
    a, b = extractor.extract(bgr, camera), extractor.extract(bgr, camera)
    for name in ("keypoints_xy", "octaves", "angles", "responses", "descriptors"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_matches_agree_with_a_known_homography():
    width, height = 640, 480
    image1 = textured_image(width, height, seed=1)
    # Mild perspective + rotation + zoom about the centre, in OpenCV pixels (what warpPerspective takes).
    angle, zoom = np.deg2rad(4.0), 1.05
    c, s = np.cos(angle) * zoom, np.sin(angle) * zoom
    centre = np.array([[1, 0, (width - 1) / 2], [0, 1, (height - 1) / 2], [0, 0, 1.0]])
    h_cv = centre @ np.array([[c, -s, 6.0], [s, c, -4.0], [2e-5, -1e-5, 1.0]]) @ np.linalg.inv(centre)
    image2 = cv2.warpPerspective(image1, h_cv, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT_101)
    camera = pinhole(width, height)
    f1, f2 = extract_orb(image1, camera), extract_orb(image2, camera)
    pairs, _ = match_brute_force(f1.descriptors, f2.descriptors, ratio=0.8, mutual=True, max_distance=64)
    assert len(pairs) >= 300
    predicted = apply_homography(colmap_homography(h_cv), f1.keypoints_xy[pairs[:, 0]])
    errors = np.linalg.norm(predicted - f2.keypoints_xy[pairs[:, 1]], axis=1)
    # A keypoint is located to a pixel of its pyramid level: 2 px there is 2 * scale image pixels.
    level_px = np.maximum(f1.scales[pairs[:, 0]], f2.scales[pairs[:, 1]])
    assert np.mean(errors < 2.0 * level_px) > 0.95
    fine = level_px < 1.5  # levels 0-2: within 2 image pixels
    assert fine.sum() >= 100 and np.mean(errors[fine] < 2.0) > 0.9


def test_integer_translation_moves_level0_keypoints_exactly():
    width, height = 640, 480
    big = textured_image(width + 40, height + 40, seed=2)
    dx, dy = 17, 9
    image1 = big[20:20 + height, 20:20 + width]
    image2 = big[20 - dy:20 - dy + height, 20 - dx:20 - dx + width]  # content moves by (+dx, +dy)
    camera = pinhole(width, height)
    f1, f2 = extract_orb(image1, camera), extract_orb(image2, camera)
    pairs, _ = match_brute_force(f1.descriptors, f2.descriptors)
    assert len(pairs) >= 300
    errors = f2.keypoints_xy[pairs[:, 1]] - (f1.keypoints_xy[pairs[:, 0]] + [dx, dy])
    assert np.mean(np.linalg.norm(errors, axis=1) < 2.0) > 0.9
    # Level 0 sees the same pixels shifted: the same corners at exactly shifted positions, same descriptors.
    level0 = (f1.octaves[pairs[:, 0]] == 0) & (f2.octaves[pairs[:, 1]] == 0)
    assert level0.sum() >= 100
    assert np.median(np.abs(errors[level0])) == 0.0


def test_keypoint_of_a_bright_dot_is_its_pixel_centre_in_colmap_convention():
    image = np.full((240, 320), 40, np.uint8)
    # A peaked 3x3 dot centred on OpenCV pixel (200, 150) (a flat one ties and FAST's non-max drops it all).
    image[149:152, 199:202] = 160
    image[150, 200] = 230
    features = extract_orb(image, pinhole(320, 240))
    level0 = features.keypoints_xy[features.octaves == 0]
    assert len(level0) == 1
    np.testing.assert_array_equal(level0[0], [200.5, 150.5])  # the dot's centre, COLMAP: pixel centre at +0.5


def test_upper_level_coordinates_use_the_pixel_centre_mapping():
    """A 2x block-upsampled image's level 1 (scale factor 2) is exactly the original image's level 0, so its
    keypoints must sit at exactly twice the original COLMAP coordinates (and carry the same descriptors)."""
    small = textured_image(320, 240, seed=3)
    big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    options = OrbOptions(n_features=20000, scale_with_area=False, scale_factor=2.0, n_levels=1,
                         reference_size=(320, 240), fast_threshold=60, fast_min_threshold=60)
    f_small = extract_orb(small, pinhole(320, 240), options)
    f_big = extract_orb(big, pinhole(640, 480), options)
    assert f_small.plan.n_levels == 1 and f_big.plan.n_levels == 2
    up = f_big.octaves == 1
    assert 50 <= len(f_small) == up.sum()  # a sparse candidate set: every candidate kept in both
    order_small = np.lexsort(f_small.keypoints_xy.T[::-1])
    order_big = np.lexsort(f_big.keypoints_xy[up].T[::-1])
    np.testing.assert_array_equal(f_big.keypoints_xy[up][order_big], 2.0 * f_small.keypoints_xy[order_small])
    np.testing.assert_array_equal(f_big.descriptors[up][order_big], f_small.descriptors[order_small])


def test_low_threshold_fallback_fills_weak_texture():
    width, height = 640, 480
    image = textured_image(width, height, seed=4)
    faint = textured_image(width, height, seed=5, contrast=0.15)  # few corners reach FAST threshold 20
    image[:, width // 2:] = faint[:, width // 2:]
    camera = pinhole(width, height)
    with_fallback = extract_orb(image, camera)
    without = extract_orb(image, camera, OrbOptions(fast_min_threshold=20))
    right = with_fallback.keypoints_xy[:, 0] > width / 2 + 40
    assert right.sum() >= 300
    assert np.all(grid_counts(with_fallback.keypoints_xy, width, height, 4) > 0)
    assert (without.keypoints_xy[:, 0] > width / 2 + 40).sum() < right.sum() / 3


def test_4k_frame_keeps_the_density_without_resizing():
    width, height = 3840, 2160
    image = textured_image(width, height, seed=6)
    features = extract_orb(image, pinhole(width, height))
    plan = features.plan
    assert plan.first_level_scale == 2.0 and tuple(plan.level_sizes[0]) == (1920, 1080)
    assert plan.n_levels == 14
    target = round(1000 * width * height / (640 * 480))
    assert plan.n_features == target
    assert len(features) >= 0.97 * target
    assert np.all(grid_counts(features.keypoints_xy, width, height, 8) > 0.5 * target / 64)
    assert np.all((features.keypoints_xy >= 0) & (features.keypoints_xy < [width, height]))
    np.testing.assert_allclose(plan.level_scales, 2.0 * 1.2 ** np.arange(14))


def test_plan_scales_levels_and_count_with_the_image_size():
    vga = pyramid_plan(640, 480)
    assert vga.n_levels == 8 and vga.first_level_scale == 1.0 and vga.n_features == 1000
    assert vga.level_quotas.sum() == 1000 and np.all(np.diff(vga.level_quotas) < 0)
    np.testing.assert_allclose(vga.level_scales_xy[0], [1.0, 1.0])
    hd = pyramid_plan(1280, 720)
    assert hd.n_levels == 12 and hd.n_features == 3000
    capped = pyramid_plan(1280, 720, OrbOptions(max_features=1500))
    assert capped.n_features == 1500


def test_normalized_coordinates_undistort_through_the_camera_model(demo_frame):
    bgr, _ = demo_frame
    camera = Camera(1, "OPENCV", 640, 480, np.array([520.0, 515.0, 321.0, 239.0, -0.2, 0.05, 1e-3, -5e-4]))
    features = extract_orb(bgr, camera)
    rays = np.column_stack((features.normalized_xy, np.ones(len(features))))
    np.testing.assert_allclose(project(camera, rays), features.keypoints_xy, atol=1e-6)


def test_blank_and_tiny_images_give_empty_features():
    for image in (np.zeros((480, 640), np.uint8), np.full((480, 640, 3), 255, np.uint8)):
        features = extract_orb(image, pinhole(640, 480))
        assert len(features) == 0
        assert features.keypoints_xy.shape == (0, 2) and features.descriptors.shape == (0, 32)
        assert features.octaves.shape == (0,) and features.normalized_xy.shape == (0, 2)
    tiny = textured_image(32, 24)
    assert len(extract_orb(tiny, pinhole(32, 24))) == 0


def test_bad_inputs_are_refused_with_clear_errors():
    camera = pinhole(640, 480)
    with pytest.raises(ParallaxError, match="640x480"):
        extract_orb(np.zeros((720, 1280), np.uint8), camera)
    with pytest.raises(ValueError, match="uint8"):
        extract_orb(np.zeros((480, 640), np.float32), camera)
    with pytest.raises(ValueError, match="shape"):
        extract_orb(np.zeros((480, 640, 2), np.uint8), camera)
    with pytest.raises(ValueError):
        OrbOptions(fast_min_threshold=30, fast_threshold=20)
    with pytest.raises(ValueError):
        OrbOptions(scale_factor=1.0)


def test_slam_caps_the_features_of_large_frames_and_keeps_them_spread():
    """SLAM's extractor scales the count with the area only up to SLAM_MAX_FEATURES: a 1920 x 1080 frame gets
    4000 (6750 at the full density made Play's mapping fall behind on a phone video), a VGA frame its 1000."""
    from slam.system import SLAM_MAX_FEATURES, System

    width, height = 1920, 1080
    image = textured_image(width, height, seed=7)
    system = System(pinhole(width, height))
    result = system.step(image, 0.0)
    assert SLAM_MAX_FEATURES == 4000 and 0.97 * 4000 <= len(result.keypoints_xy) <= 4000
    assert np.all(grid_counts(result.keypoints_xy, width, height, 8) > 0.5 * 4000 / 64)
    vga = System(pinhole(640, 480)).options.orb
    assert vga.max_features == 4000 and pyramid_plan(640, 480, vga).n_features == 1000
