"""The scene model: values, CSR tracks, events, snapshots."""
import threading

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scene import Camera, Image, PointCloud, Points3D, Rigid3d, Scene, Trajectory, guess_camera
from scene import events as ev
from scene.rigid import matrix_to_quat_wxyz, quat_wxyz_to_matrix


def random_rigid(rng) -> Rigid3d:
    return Rigid3d.from_rotation(Rotation.random(random_state=rng.integers(1 << 30)).as_matrix(), rng.normal(size=3))


def test_quaternion_matches_scipy_both_ways():
    rng = np.random.default_rng(0)
    for _ in range(200):
        rot = Rotation.random(random_state=rng.integers(1 << 30))
        x, y, z, w = rot.as_quat()
        assert np.allclose(quat_wxyz_to_matrix([w, x, y, z]), rot.as_matrix(), atol=1e-12)
        q = matrix_to_quat_wxyz(rot.as_matrix())
        assert q[0] >= 0
        assert np.allclose(quat_wxyz_to_matrix(q), rot.as_matrix(), atol=1e-12)
    # rotations by ~pi exercise the non-trace branches
    for axis in np.eye(3):
        m = Rotation.from_rotvec(np.pi * axis).as_matrix()
        assert np.allclose(quat_wxyz_to_matrix(matrix_to_quat_wxyz(m)), m, atol=1e-12)


def test_rigid_compose_inverse_apply():
    rng = np.random.default_rng(1)
    a_from_b, b_from_c = random_rigid(rng), random_rigid(rng)
    pts = rng.normal(size=(10, 3))
    assert np.allclose((a_from_b * b_from_c).apply(pts), a_from_b.apply(b_from_c.apply(pts)), atol=1e-12)
    assert np.allclose((a_from_b * a_from_b.inverse()).matrix(), np.eye(4), atol=1e-12)
    cam_from_world = a_from_b
    assert np.allclose(cam_from_world.apply(cam_from_world.center()[None]), 0, atol=1e-12)


def test_rigid_keeps_quaternion_verbatim_and_rejects_nan():
    q = np.array([0.5, 0.5, 0.5, 0.5])
    assert np.array_equal(Rigid3d(q, [1, 2, 3]).quat_wxyz, q)
    with pytest.raises(ValueError):
        Rigid3d([np.nan, 0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError):
        Rigid3d([1, 0, 0, 0], [0, np.inf, 0])


def test_camera_params_checked_and_scaled():
    cam = Camera(1, "OPENCV", 1280, 960, [1000, 1010, 640, 480, 0.1, -0.01, 0.001, 0.002])
    half = cam.scaled(640, 480)
    assert half.focal_xy == (500.0, 505.0) and half.principal_point == (320.0, 240.0)
    assert np.array_equal(half.params[4:], cam.params[4:])  # distortion is resolution independent
    with pytest.raises(ValueError, match="takes 4 parameters"):
        Camera(1, "PINHOLE", 10, 10, [1, 2, 3])
    with pytest.raises(ValueError, match="unknown camera model"):
        Camera(1, "BROWN", 10, 10, [1])
    with pytest.raises(ValueError, match="NaN"):
        Camera(1, "PINHOLE", 10, 10, [1, np.nan, 3, 4])
    guess = guess_camera(3, 640, 480)
    assert guess.is_guess and guess.focal_xy == (768.0, 768.0) and "GUESS" in guess.describe()


def test_points_csr_tracks_and_validation():
    pts = Points3D.from_tracks([10, 11], [[0, 0, 1], [1, 1, 1]], [[255, 0, 0], [0, 255, 0]], [0.5, 0.25],
                               [[(1, 0), (2, 5)], [(1, 3)]])
    assert list(pts.track_lengths()) == [2, 1]
    ids, kps = pts.track(0)
    assert list(ids) == [1, 2] and list(kps) == [0, 5]
    with pytest.raises(ValueError, match="track_ptr"):
        Points3D([1], [[0, 0, 0]], [[0, 0, 0]], [0.0], [0, 3], [1], [0])
    with pytest.raises(ValueError, match="duplicate"):
        Points3D([1, 1], np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2), [0, 0, 0], [], [])


def test_image_keypoints_and_ids_must_match():
    with pytest.raises(ValueError):
        Image(1, "a.png", 1, None, np.zeros((3, 2)), np.zeros(2, dtype=np.int64))
    assert list(Image(1, "a.png", 1, None, np.zeros((3, 2))).point3d_ids) == [-1, -1, -1]


def test_trajectory_rejects_nan_and_measures_path():
    traj = Trajectory([0, 1, 2], np.tile([1.0, 0, 0, 0], (3, 1)), [[0, 0, 0], [3, 4, 0], [3, 4, 1]])
    assert traj.path_length() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="NaN"):
        Trajectory([0, np.nan], np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((2, 3)))


def test_events_fire_and_a_failing_observer_does_not_break_the_scene(caplog):
    scene = Scene()
    seen = []
    scene.events.connect(lambda e: (_ for _ in ()).throw(RuntimeError("observer bug")))
    scene.events.connect(seen.append)
    scene.add_camera(Camera(1, "PINHOLE", 64, 48, [50, 50, 32, 24]))
    scene.add_images([Image(1, "a.png", 1), Image(2, "b.png", 1)])
    scene.set_poses({1: Rigid3d()})
    scene.set_cloud("sparse", PointCloud(np.zeros((2, 3))))
    kinds = [e.kind for e in seen]
    assert kinds == [ev.CAMERAS_CHANGED, ev.IMAGES_ADDED, ev.POSES_UPDATED, ev.CLOUD_CHANGED]
    assert seen[1].names == (1, 2)
    assert scene.images[1].registered and not scene.images[2].registered
    assert "observer bug" in caplog.text
    with pytest.raises(ValueError, match="unknown camera"):
        scene.add_images([Image(3, "c.png", 99)])
    with pytest.raises(ValueError, match="invalid point cloud name"):
        scene.set_cloud("../evil", PointCloud(np.zeros((1, 3))))


def test_batch_delivers_each_distinct_event_once():
    scene = Scene()
    seen = []
    scene.events.connect(seen.append)
    with scene.events.batch():
        for _ in range(5):
            scene.set_points(Points3D())
        assert seen == []
    assert [e.kind for e in seen] == [ev.POINTS_CHANGED]


def test_snapshot_is_an_independent_copy_safe_across_threads():
    scene = Scene()
    scene.add_camera(Camera(1, "PINHOLE", 64, 48, [50, 50, 32, 24]))
    scene.set_cloud("c", PointCloud(np.zeros((100, 3)), np.zeros((100, 3), np.uint8)))
    snap = scene.snapshot()
    snap.clouds["c"].xyz[:] = 7
    assert np.all(scene.clouds["c"].xyz == 0)

    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            n = 10 + i % 50
            scene.set_cloud("c", PointCloud(np.full((n, 3), float(n)), np.zeros((n, 3), np.uint8)))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            s = scene.snapshot()
            cloud = s.clouds["c"]
            assert len(cloud.rgb) == len(cloud.xyz)
            assert np.all(cloud.xyz == cloud.xyz[0, 0])
    finally:
        stop.set()
        thread.join()
