"""`parallax nerf render` and `parallax nerf export-pointcloud` through app.cli.main, on the tiny run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import main
from tests import nerf_fixtures as nf

pytest.importorskip("nerfstudio")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return nf.shared_tiny_run(tmp_path_factory)


def _cameras_json(tiny, path):
    from scene.io.nerfstudio import opengl_world_from_cam

    frames = [{"file_path": f"imgs/view_{k}.jpg",
               "transform_matrix": opengl_world_from_cam(tiny.scene.images[k].cam_from_world).tolist()}
              for k in (1, 4)]
    path.write_text(json.dumps({"fl_x": 6.0, "fl_y": 6.0, "cx": 5.0, "cy": 3.0, "w": 10, "h": 6, "frames": frames}))
    return path


def test_render_cameras_writes_one_png_per_frame(tiny, tmp_path, capsys):
    import cv2

    out = tmp_path / "stills"
    assert main(["nerf", "render", str(tiny.root), "--cameras", str(_cameras_json(tiny, tmp_path / "c.json")),
                 "-o", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["view_1.png", "view_4.png"]
    assert cv2.imread(str(out / "view_1.png")).shape == (6, 10, 3)
    assert "rendered 2 images" in capsys.readouterr().out


@pytest.mark.parametrize("path, scale, size", [("orbit", 0.5, 12), ("slam", 0.25, 6), ("sfm", 0.25, 6)])
def test_render_paths_write_videos_of_n_frames(tiny, tmp_path, path, scale, size):
    from nerf.video import read_mp4

    out = tmp_path / f"{path}.mp4"
    assert main(["nerf", "render", str(tiny.root), "--path", path, "-o", str(out), "--frames", "3",
                 "--scale", str(scale), "--device", "cpu"]) == 0
    frames = read_mp4(out)
    assert len(frames) == 3 and all(f.shape == (size, size, 3) for f in frames)
    assert max(float(f.std()) for f in frames) > 5.0  # the sphere is in view, not a blank frame


def test_slam_and_sfm_paths_need_the_source_project(tiny, tmp_path, capsys):
    run = nf.copy_run(tiny, tmp_path / "nosource", record={"schema": 1, "preset": "test-tiny"})
    for path in ("slam", "sfm"):
        assert main(["nerf", "render", str(run), "--path", path, "-o", str(tmp_path / "v.mp4")]) == 2
        err = capsys.readouterr().err
        assert "records no source project" in err and "--path orbit" in err
    assert not (tmp_path / "v.mp4").exists()


def test_slam_path_without_a_slam_trajectory(tiny, tmp_path, capsys):
    from scene.project import load_project, save_project

    scene = load_project(tiny.project)
    scene.trajectories.clear()
    project = save_project(scene, tmp_path / "noslam.parallax")
    run = nf.copy_run(tiny, tmp_path / "run", record={"schema": 1, "source": str(project)})
    assert main(["nerf", "render", str(run), "--path", "slam", "-o", str(tmp_path / "v.mp4")]) == 2
    assert "has no SLAM trajectory" in capsys.readouterr().err


def test_export_pointcloud_writes_a_ply_on_the_surface(tiny, tmp_path, capsys):
    from scene.io.ply import read_ply

    out = tmp_path / "nerf.ply"
    assert main(["nerf", "export-pointcloud", str(tiny.root), "-o", str(out), "--points", "400",
                 "--device", "cpu"]) == 0
    cloud = read_ply(out)
    assert 300 <= len(cloud) <= 400 and cloud.rgb is not None
    box_min, box_max = nf.scene_box(0.1 * nf.SCENE_SIZE)  # the source project's sparse points bound it
    assert np.all(cloud.xyz >= box_min - 1e-9) and np.all(cloud.xyz <= box_max + 1e-9)
    assert np.median(nf.distance_to_surface(cloud.xyz)) < 0.075 * nf.SCENE_SIZE
    assert f"points to {out}" in capsys.readouterr().out


def test_missing_run_folder(tmp_path, capsys):
    assert main(["nerf", "render", str(tmp_path / "absent"), "--path", "orbit", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "NeRF run folder not found" in capsys.readouterr().err
    assert main(["nerf", "export-pointcloud", str(tmp_path / "absent"), "-o", str(tmp_path / "o.ply")]) == 2
    assert "NeRF run folder not found" in capsys.readouterr().err


def test_run_without_checkpoint(tiny, tmp_path, capsys):
    run = nf.copy_run(tiny, tmp_path / "early", checkpoints=False)
    assert main(["nerf", "export-pointcloud", str(run), "-o", str(tmp_path / "o.ply")]) == 2
    assert "no checkpoint yet" in capsys.readouterr().err
    assert not (tmp_path / "o.ply").exists()


def test_bad_outputs_and_arguments(tiny, tmp_path, capsys):
    assert main(["nerf", "render", str(tiny.root), "--path", "orbit", "-o", str(tmp_path / "o.gif")]) == 2
    assert "must end in .mp4" in capsys.readouterr().err
    assert main(["nerf", "render", str(tiny.root), "--path", "orbit", "-o", str(tmp_path / "o.mp4"),
                 "--frames", "0"]) == 2
    assert "--frames must be at least 1" in capsys.readouterr().err
    assert main(["nerf", "export-pointcloud", str(tiny.root), "-o", str(tmp_path / "o.txt")]) == 2
    assert "should end in .ply" in capsys.readouterr().err
    assert main(["nerf", "render", str(tiny.root), "--cameras", str(tmp_path / "none.json"), "-o",
                 str(tmp_path / "d")]) == 2
    assert "transforms file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # neither --cameras nor --path
        main(["nerf", "render", str(tiny.root), "-o", str(tmp_path / "d")])
    assert exc.value.code == 2
