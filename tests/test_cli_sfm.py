"""`parallax sfm` through app.cli.main: project, --stats, exports read back (pycolmap), and user errors."""
from __future__ import annotations

import json
import zlib  # noqa: F401  -- must be imported before pycolmap (the reverse order breaks zlib for numba's cache)

import numpy as np
import pytest

from app.cli import main
from tests.test_sfm_bad_input import arc_poses, render_set, write_calib

STAT_KEYS = ("images", "registered", "models", "points", "mean_track_length", "mean_reprojection_error_px", "seconds")


@pytest.fixture(scope="module")
def arc8(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_sfm")
    render_set(folder / "images", arc_poses(8, 195, 240))
    return folder / "images", write_calib(folder / "calib.yaml")


@pytest.fixture(scope="module")
def cli_run(arc8, tmp_path_factory):
    images, calib = arc8
    out = tmp_path_factory.mktemp("cli_out")
    argv = ["sfm", str(images), "-o", str(out / "run.parallax"), "--calib", str(calib), "--max-features", "1024",
            "--stats", str(out / "stats.json"), "--export-colmap", str(out / "colmap"), "--export-ply",
            str(out / "cloud.ply"), "--export-transforms", str(out / "transforms.json"), "--outlier-removal"]
    code = main(argv)
    return code, out, json.loads((out / "stats.json").read_text()) if code == 0 else None


def test_sfm_cli_writes_project_and_stats(cli_run):
    from scene.project import load_project

    code, out, stats = cli_run
    assert code == 0
    for key in STAT_KEYS:
        assert key in stats
    assert stats["images"] == stats["registered"] == 8 and stats["models"] == 1
    assert stats["points"] > 500 and stats["mean_track_length"] > 2.0
    assert 0 < stats["mean_reprojection_error_px"] < 1.0
    assert set(stats["seconds"]) >= {"extract", "match", "verify", "map", "total"}
    scene = load_project(out / "run.parallax")
    assert len(scene.registered_images()) == 8 and len(scene.points) == stats["points"]
    assert scene.metadata["sfm"]["models"][0]["cloud"] == "sfm_sparse"


def test_sfm_cli_outlier_removal_is_reported_and_only_touches_the_cloud(cli_run):
    from scene.io.ply import read_ply
    from scene.project import load_project

    _, out, stats = cli_run
    removal = stats["outlier_removal"]
    assert removal["nb_neighbors"] == 20 and removal["std_ratio"] == 2.0
    scene = load_project(out / "run.parallax")
    assert len(scene.clouds["sfm_sparse"]) == stats["points"] - removal["removed"]
    assert len(read_ply(out / "cloud.ply")) == stats["points"] - removal["removed"]
    assert load_project(out / "run.parallax").metadata["sfm"]["outlier_removal"]["removed"] == removal["removed"]


def test_sfm_cli_colmap_export_loads_in_pycolmap(cli_run):
    pycolmap = pytest.importorskip("pycolmap")
    _, out, stats = cli_run
    rec = pycolmap.Reconstruction(str(out / "colmap"))
    assert rec.num_reg_images() == stats["registered"] == 8
    assert rec.num_points3D() == stats["points"]
    errors = np.array([p.error for p in rec.points3D.values()])
    lengths = np.array([p.track.length() for p in rec.points3D.values()])
    assert lengths.min() >= 2 and lengths.mean() == pytest.approx(stats["mean_track_length"], abs=1e-9)
    # Our mean is over observations: the track-length weighted mean of the points' errors.
    assert np.average(errors, weights=lengths) == pytest.approx(stats["mean_reprojection_error_px"], abs=1e-6)


def test_sfm_cli_transforms_export(cli_run):
    _, out, _ = cli_run
    doc = json.loads((out / "transforms.json").read_text())
    assert len(doc["frames"]) == 8
    assert all((out / f["file_path"]).is_file() for f in doc["frames"])


def test_sfm_cli_orb_features(arc8, tmp_path):
    images, calib = arc8
    code = main(["sfm", str(images), "-o", str(tmp_path / "orb.parallax"), "--calib", str(calib), "--features", "orb",
                 "--max-features", "2048", "--matcher", "sequential", "--window", "3", "--loop-candidates", "2",
                 "--stats", str(tmp_path / "s.json")])
    assert code == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["features"] == "orb" and stats["matcher"] == "sequential"
    assert stats["registered"] == 8 and stats["mean_reprojection_error_px"] < 1.0


def test_sfm_cli_no_overlap_is_a_user_error(tmp_path, capsys):
    import cv2

    folder = tmp_path / "noise"
    folder.mkdir()
    for k in range(3):
        rng = np.random.default_rng(k)
        noise = rng.integers(0, 255, (120, 160, 3), np.uint8)
        cv2.imwrite(str(folder / f"{k}.png"), cv2.GaussianBlur(noise, (5, 5), 0))
    assert main(["sfm", str(folder), "-o", str(tmp_path / "x.parallax")]) == 2
    assert "no initial pair" in capsys.readouterr().err
    assert not (tmp_path / "x.parallax").exists()


def test_sfm_cli_rejects_bad_options(arc8, tmp_path, capsys):
    images, _ = arc8
    assert main(["sfm", str(images), "-o", str(tmp_path / "x.parallax"), "--max-image-size", "10"]) == 2
    assert "--max-image-size" in capsys.readouterr().err
    assert main(["sfm", str(tmp_path / "missing"), "-o", str(tmp_path / "x.parallax")]) == 2
    assert "missing" in capsys.readouterr().err


def test_sfm_seeded_from_a_slam_project_keeps_its_frame(tmp_path):
    """`parallax slam` then `parallax sfm PROJECT --seed-from-poses`: every keyframe is registered and the
    model stays in the SLAM map's frame and scale (camera centres agree without any alignment)."""
    from assets import generate_demo
    from scene.project import load_project

    walk = tmp_path / "walk"
    generate_demo(walk, path="forward_walk", frames=40, video=False)
    slam_project = tmp_path / "slam.parallax"
    assert main(["slam", str(walk), "-o", str(slam_project)]) == 0
    slam_scene = load_project(slam_project)
    keyframes = {im.name: im.cam_from_world.center() for im in slam_scene.registered_images()}
    assert len(keyframes) >= 3

    out = tmp_path / "sfm.parallax"
    assert main(["sfm", str(slam_project), "-o", str(out), "--seed-from-poses", "--max-features", "2048",
                 "--stats", str(tmp_path / "stats.json")]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["registered"] == stats["images"] == len(keyframes) and stats["models"] == 1
    scene = load_project(out)
    centres = {im.name: im.cam_from_world.center() for im in scene.registered_images()}
    assert set(centres) == set(keyframes)
    extent = np.ptp(np.array(list(keyframes.values())), axis=0).max()
    moved = max(np.linalg.norm(centres[n] - keyframes[n]) for n in keyframes)
    assert moved < 0.05 * extent


def test_seed_from_poses_needs_a_project(arc8, tmp_path, capsys):
    images, calib = arc8
    assert main(["sfm", str(images), "-o", str(tmp_path / "x.parallax"), "--seed-from-poses"]) == 2
    assert "--seed-from-poses needs a project" in capsys.readouterr().err
    assert not (tmp_path / "x.parallax").exists()
