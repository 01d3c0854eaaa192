"""export_scene: outputs that other tools can use wherever they are written."""
import json
import threading
import time
from pathlib import Path

import numpy as np

from scene import Camera, FrameRef, Image, Rigid3d, Scene, Trajectory
from scene.autosave import Autosaver
from scene.io import export_scene, open_path
from scene.io.trajectory_io import read_trajectory


def registered_scene(image_dir) -> Scene:
    import cv2

    scene = Scene()
    scene.add_camera(Camera(1, "PINHOLE", 64, 48, [50.0, 50.0, 32.0, 24.0], "calib"))
    images = []
    for i in range(3):
        path = image_dir / f"f{i}.png"
        cv2.imwrite(str(path), np.full((48, 64, 3), 50 * i, np.uint8))
        images.append(Image(i + 1, path.name, 1, Rigid3d([1, 0, 0, 0], [i, 0, 0]), source=FrameRef(str(path), None, i * 0.5)))
    scene.add_images(images)
    return scene


def test_transforms_json_points_at_the_images_from_wherever_it_is_written(tmp_path):
    (tmp_path / "frames").mkdir()
    scene = registered_scene(tmp_path / "frames")
    target = export_scene(scene, tmp_path / "elsewhere" / "deep" / "transforms.json", "nerfstudio")
    doc = json.loads(target.read_text())
    for frame in doc["frames"]:
        assert (target.parent / frame["file_path"]).resolve().is_file()
    reread = open_path(target)
    assert sorted(Path(im.source.path).name for im in reread.images.values()) == ["f0.png", "f1.png", "f2.png"]


def test_kitti_export_keeps_timestamps(tmp_path):
    scene = Scene()
    traj = Trajectory([10.25, 10.5, 11.0], np.tile([1.0, 0, 0, 0], (3, 1)), [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    scene.set_trajectory("slam", traj)
    out = export_scene(scene, tmp_path / "poses.txt", "kitti")
    assert (tmp_path / "poses_times.txt").is_file()
    back = read_trajectory(out, fmt="kitti")
    assert np.array_equal(back.timestamps, traj.timestamps)
    assert np.allclose(back.world_from_cam_translation, traj.world_from_cam_translation, atol=1e-12)


def test_autosave_close_waits_for_a_running_save(tmp_path, monkeypatch):
    import scene.project as project

    scene = Scene()
    real_save = project.save_project
    started, finished = threading.Event(), threading.Event()

    def slow_save(s, folder):
        started.set()
        time.sleep(0.5)
        result = real_save(s, folder)
        finished.set()
        return result

    monkeypatch.setattr(project, "save_project", slow_save)
    saver = Autosaver(scene, tmp_path / "a.parallax", delay_s=0.01)
    scene.set_trajectory("t", Trajectory([0.0], [[1, 0, 0, 0]], [[0, 0, 0]]))
    assert started.wait(5)
    saver.close()
    assert finished.is_set()  # close() returned only after the save finished
    scene.set_trajectory("u", Trajectory([0.0], [[1, 0, 0, 0]], [[0, 0, 0]]))
    time.sleep(0.1)
    assert saver.saves == 1  # nothing is saved after close
