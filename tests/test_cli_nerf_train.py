"""``parallax nerf train`` through app.cli.main: a short run on a transforms.json, a project run recorded in the
project, and clear one-line errors (exit 2) for bad sources and presets."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from app.cli import main
from nerf.layout import RunLayout
from nerf.runner import read_record


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A saved project with 6 posed views of the demo room at 32x24 (images beside it)."""
    from assets.camera_paths import camera_path
    from assets.demo_scene import demo_camera
    from assets.render import render_frame
    from scene.model import FrameRef, Image, Scene
    from scene.project import save_project

    folder = tmp_path_factory.mktemp("cli")
    camera = demo_camera(32, 24)
    scene = Scene()
    scene.add_camera(camera)
    _, world_from_cams = camera_path("orbit", 6, fps=1.0)
    images = []
    for i, world_from_cam in enumerate(world_from_cams):
        path = folder / f"v{i}.png"
        cv2.imwrite(str(path), render_frame(world_from_cam, camera)[0])
        images.append(Image(i + 1, path.name, 1, world_from_cam.inverse(), source=FrameRef(str(path))))
    scene.add_images(images)
    save_project(scene, folder / "room.parallax")
    return folder / "room.parallax"


def test_train_a_project_run_is_recorded_in_it(project, capsys):
    from scene.project import load_project

    run_dir = project / "nerf" / "first"
    code = main(["nerf", "train", str(project), "-o", str(run_dir), "--iterations", "2", "--threads", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "trained 2 iterations" in captured.out
    assert "nerf train (parallax-cpu on cpu)" in captured.err and "2/2" in captured.err
    record = read_record(RunLayout.at(run_dir))
    assert record["status"] == "finished" and record["steps"] == 2
    assert [p.name for p in RunLayout.at(run_dir).checkpoints()] == ["step-000000001.ckpt"]
    run = load_project(project).nerf_runs["first"]
    assert run.status == "finished" and run.checkpoint_dir == "first" and run.metrics["steps"] == 2


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["nerf", "train", "-o", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    assert main(["nerf", "train", str(tmp_path / "nope.json"), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("parallax: error: ") and "not found" in err and "nope.json" in err
    assert not (tmp_path / "run").exists()


def test_transforms_with_missing_images_is_a_clear_error(tmp_path, capsys):
    frames = [{"file_path": f"img/{i}.png", "transform_matrix": np.eye(4).tolist()} for i in range(3)]
    for i, frame in enumerate(frames):
        frame["transform_matrix"][0][3] = float(i)
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"fl_x": 30.0, "fl_y": 30.0, "cx": 16.0, "cy": 12.0, "w": 32, "h": 24, "frames": frames}))
    assert main(["nerf", "train", str(tmp_path / "transforms.json"), "-o", str(tmp_path / "run")]) == 2
    assert "3 of 3 images are missing on disk" in capsys.readouterr().err


def test_splatfacto_on_cpu_is_a_clear_error(project, tmp_path, capsys):
    assert main(["nerf", "train", str(project), "-o", str(tmp_path / "run"), "--preset", "splatfacto",
                 "--device", "cpu"]) == 2
    assert "needs an NVIDIA GPU with CUDA" in capsys.readouterr().err


def test_minutes_and_iterations_are_exclusive(project, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["nerf", "train", str(project), "-o", str(tmp_path / "r"), "--minutes", "1", "--iterations", "5"])
    assert "not allowed with argument" in capsys.readouterr().err
