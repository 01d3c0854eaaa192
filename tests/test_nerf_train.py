"""NeRF training through the child process: loss goes down, stop keeps a checkpoint, resume continues, and every
§5 bad input for training gets a clear error with nothing lost.

One tiny synthetic run (12 views of the demo room at 32x24 and 40x30: two cameras of different sizes) is
trained once per module, stopped, then resumed; the other tests only validate inputs or use one short child.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from assets.camera_paths import camera_path
from assets.demo_scene import demo_camera
from assets.render import render_frame
from nerf.layout import RUN_SCHEMA, RunLayout
from nerf.runner import read_record, record_run, start_training
from scene.camera import Camera
from scene.errors import CorruptInput, InputNotFound, ParallaxError, SaveFailed, SchemaTooNew
from scene.model import FrameRef, Image, Scene

RAYS = 256          # rays per batch: the tiny scene has 12 x ~1000 pixels
STOP_AFTER = 12     # steps the shared run trains before Stop is pressed
RESUME_MORE = 3     # steps the resumed run adds to where Stop left it (Stop lands a few steps after it is pressed)
TIMEOUT = 240


def tiny_scene(folder: Path, views: int = 12) -> Scene:
    """The demo room seen from an orbit; even views at 32x24 (camera 1), odd ones at 40x30 (camera 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    cameras = {1: demo_camera(32, 24), 2: Camera(2, "PINHOLE", 40, 30, demo_camera(40, 30).params)}
    scene = Scene()
    for camera in cameras.values():
        scene.add_camera(camera)
    _, world_from_cams = camera_path("orbit", views, fps=1.0)
    images = []
    for i, world_from_cam in enumerate(world_from_cams):
        camera_id = 1 + i % 2
        bgr, _ = render_frame(world_from_cam, cameras[camera_id])
        path = folder / f"view{i:02d}.png"
        cv2.imwrite(str(path), bgr)
        images.append(Image(i + 1, path.name, camera_id, world_from_cam.inverse(), source=FrameRef(str(path))))
    scene.add_images(images)
    return scene


def drain(handle) -> list[dict]:
    events = list(handle.events(timeout=TIMEOUT))
    handle.wait(TIMEOUT)
    return events


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_scene")
    return folder, tiny_scene(folder)


@pytest.fixture(scope="module")
def stopped_run(scene_dir, tmp_path_factory):
    """Train the tiny scene, press Stop once STOP_AFTER steps are reported."""
    _, scene = scene_dir
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    handle = start_training(scene, run_dir, iterations=1000, rays_per_batch=RAYS, threads=2)
    events = []
    for event in handle.events(timeout=TIMEOUT):
        events.append(event)
        if event["event"] == "step" and event["step"] >= STOP_AFTER:
            handle.stop()
    handle.wait(TIMEOUT)
    return run_dir, handle, events


@pytest.fixture(scope="module")
def resumed_run(stopped_run):
    run_dir, _, stopped_events = stopped_run
    target = stopped_events[-1]["step"] + RESUME_MORE
    handle = start_training(None, run_dir, iterations=target, resume=True, threads=2)
    return run_dir, handle, drain(handle), target


def steps(events):
    return [e for e in events if e["event"] == "step"]


def test_training_lowers_the_loss(stopped_run):
    _, handle, events = stopped_run
    assert events[0]["event"] == "start" and events[0]["device"] == "cpu" and events[0]["preset"] == "parallax-cpu"
    losses = [e["loss"] for e in steps(events)]
    # Step events are throttled (nerf.train_process.STEP_EVENT_INTERVAL_S): the first step is always reported,
    # later ones may be skipped when iterations are fast, never repeated or out of order.
    numbers = [e["step"] for e in steps(events)]
    assert numbers[0] == 1 and all(b > a for a, b in zip(numbers, numbers[1:])) and numbers[-1] >= STOP_AFTER
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    first = steps(events)[0]
    assert first["rays_per_s"] > 0 and first["eta_s"] > 0 and np.isfinite(first["psnr"])


def test_stop_keeps_a_checkpoint(stopped_run):
    run_dir, handle, events = stopped_run
    layout = RunLayout.at(run_dir)
    final = events[-1]
    assert handle.returncode == 0 and handle.status == "stopped"
    assert final["event"] == "stopped" and "resume" in final["message"]
    done = final["step"]
    assert STOP_AFTER <= done < 1000
    kept = layout.checkpoints()
    assert [p.name for p in kept] == [f"step-{done - 1:09d}.ckpt"]  # nerfstudio names the last index done
    assert any(e["event"] == "checkpoint" and e["step"] == done for e in events)
    record = read_record(layout)
    assert record["status"] == "stopped" and record["steps"] == done and record["preset"] == "parallax-cpu"
    assert record["metrics"]["lpips"].startswith("skipped: AlexNet weights not present") or \
        Path(os.path.expanduser("~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth")).is_file()
    logged = [json.loads(line)["event"] for line in layout.events.read_text().splitlines()]
    assert logged == [e["event"] for e in events]


def test_resume_continues_from_the_last_step(stopped_run, resumed_run):
    _, _, stopped_events = stopped_run
    run_dir, handle, events, target = resumed_run
    done_before = stopped_events[-1]["step"]
    assert handle.returncode == 0, events[-1]
    assert events[0]["event"] == "start" and events[0]["resumed"] and events[0]["step"] == done_before
    assert steps(events)[0]["step"] == done_before + 1
    assert events[-1]["event"] == "done" and events[-1]["step"] == target
    # the resumed model continues where it was: its first loss is near the last ones, not back at the start
    assert steps(events)[0]["loss"] < np.mean([e["loss"] for e in steps(stopped_events)[:3]])
    layout = RunLayout.at(run_dir)
    assert [p.name for p in layout.checkpoints()] == [f"step-{target - 1:09d}.ckpt"]
    assert read_record(layout)["status"] == "finished" and read_record(layout)["steps"] == target


def test_record_run_survives_project_save_and_reopen(resumed_run, tmp_path):
    from scene.project import load_project, save_project

    run_dir, _, _, target = resumed_run
    project = tmp_path / "p.parallax"
    (project / "nerf").mkdir(parents=True)
    moved = project / "nerf" / "tiny"
    shutil.copytree(run_dir, moved)
    scene = Scene()
    run = record_run(scene, moved, project_dir=project)
    assert run.status == "finished" and run.preset == "parallax-cpu" and run.metrics["steps"] == target
    save_project(scene, project)
    again = load_project(project).nerf_runs["tiny"]
    assert again.checkpoint_dir == "tiny" and again.status == "finished" and again.metrics["steps"] == target


# --- §5 bad inputs: each is refused before a child starts, and the run folder keeps what it had -------------

def _transforms(folder: Path, scene: Scene) -> Path:
    from scene.io.nerfstudio import write_transforms

    return write_transforms(scene, folder / "transforms.json",
                            file_paths={im.image_id: im.name for im in scene.images.values()})


def test_nan_camera_pose_is_refused(scene_dir, tmp_path):
    folder, scene = scene_dir
    path = _transforms(folder, scene)
    doc = json.loads(path.read_text())
    doc["frames"][3]["transform_matrix"][0][3] = float("nan")
    bad = folder / "nan.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(CorruptInput, match=r"frame 3 .*NaN"):
        start_training(bad, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_degenerate_camera_poses_are_refused(scene_dir, tmp_path):
    _, scene = scene_dir
    same_place = Scene()
    same_place.add_camera(scene.cameras[1])
    first = scene.images[1]
    same_place.add_images([Image(i, f"{i}.png", 1, first.cam_from_world, source=first.source) for i in (1, 2, 3)])
    with pytest.raises(CorruptInput, match="same position"):
        start_training(same_place, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_non_rigid_transform_matrix_is_refused(scene_dir, tmp_path):
    folder, scene = scene_dir
    doc = json.loads(_transforms(folder, scene).read_text())
    doc["frames"][0]["transform_matrix"] = [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]]
    bad = folder / "flat.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(CorruptInput, match="frame 0 .*not rigid"):
        start_training(bad, tmp_path / "run")


def test_fewer_than_three_images_are_refused(scene_dir, tmp_path):
    _, scene = scene_dir
    two = Scene()
    two.add_camera(scene.cameras[1])
    two.add_images([scene.images[1], scene.images[3]])
    with pytest.raises(ParallaxError, match="at least 3 images with camera poses; found 2"):
        start_training(two, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_images_missing_on_disk_are_refused(scene_dir, tmp_path):
    folder, scene = scene_dir
    gone = Scene()
    for camera in scene.cameras.values():
        gone.add_camera(camera)
    gone.add_images([Image(im.image_id, im.name, im.camera_id, im.cam_from_world,
                           source=FrameRef(str(tmp_path / "nowhere" / im.name)) if im.image_id in (2, 5)
                           else im.source) for im in scene.images.values()])
    with pytest.raises(InputNotFound, match=r"2 of 12 images are missing on disk: .*view01.png"):
        start_training(gone, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_image_of_another_size_with_same_aspect_is_resized(scene_dir, tmp_path):
    from nerf.dataset import prepare_dataset

    folder, scene = scene_dir
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(scene.images[1].source.path)), (64, 48)))
    mixed = Scene()
    for camera in scene.cameras.values():
        mixed.add_camera(camera)
    mixed.add_images([Image(im.image_id, im.name, im.camera_id, im.cam_from_world,
                            source=FrameRef(str(big)) if im.image_id == 1 else im.source)
                      for im in scene.images.values()])
    info = prepare_dataset(mixed, tmp_path / "ds")
    assert info.resized == [scene.images[1].name]
    assert cv2.imread(str(tmp_path / "ds" / "images" / "view00.png")).shape == (24, 32, 3)
    assert info.sizes == [(32, 24), (40, 30)]


def test_image_of_another_aspect_is_refused(scene_dir, tmp_path):
    folder, scene = scene_dir
    odd = tmp_path / "odd.png"
    cv2.imwrite(str(odd), np.zeros((32, 32, 3), np.uint8))
    mixed = Scene()
    for camera in scene.cameras.values():
        mixed.add_camera(camera)
    mixed.add_images([Image(im.image_id, im.name, im.camera_id, im.cam_from_world,
                            source=FrameRef(str(odd)) if im.image_id == 4 else im.source)
                      for im in scene.images.values()])
    with pytest.raises(CorruptInput, match=r"image 4 .*32x32 but its camera 2 is 40x30"):
        start_training(mixed, tmp_path / "run")


def test_run_folder_from_a_newer_version_is_refused(scene_dir, tmp_path):
    _, scene = scene_dir
    layout = RunLayout.at(tmp_path / "run")
    layout.root.mkdir()
    text = json.dumps({"schema": RUN_SCHEMA + 1, "parallax_version": "9.0", "preset": "parallax-cpu"})
    layout.record.write_text(text)
    for resume in (False, True):
        with pytest.raises(SchemaTooNew, match=r"newer Parallax \(9.0, run schema 2"):
            start_training(scene, layout.root, resume=resume)
    assert layout.record.read_text() == text and not layout.dataset_dir.exists()


def test_existing_trained_run_is_not_overwritten(stopped_run, scene_dir):
    run_dir, _, _ = stopped_run
    _, scene = scene_dir
    before = RunLayout.at(run_dir).checkpoints()
    with pytest.raises(ParallaxError, match="already holds a trained run"):
        start_training(scene, run_dir)
    assert RunLayout.at(run_dir).checkpoints() == before


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    from nerf.train_process import write_checkpoint

    def save(state, handle):
        handle.write(b"x" * 100)
        if state["step"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        handle.write(json.dumps(state).encode())

    folder = tmp_path / "ckpt"
    first = write_checkpoint({"step": 1}, folder, 1, save=save)
    content = first.read_bytes()
    with pytest.raises(SaveFailed, match=r"step-000000002.ckpt: disk full; the previous checkpoint .*"
                                         r"step-000000001.ckpt is kept"):
        write_checkpoint({"step": 2}, folder, 2, save=save)
    assert sorted(p.name for p in folder.iterdir()) == ["step-000000001.ckpt"]
    assert first.read_bytes() == content
    third = write_checkpoint({"step": 3}, folder, 3, save=save)
    assert sorted(p.name for p in folder.iterdir()) == [third.name]


def test_stop_pressed_during_the_first_iteration(scene_dir, tmp_path):
    _, scene = scene_dir
    handle = start_training(scene, tmp_path / "run", iterations=1000, rays_per_batch=RAYS, threads=2)
    events = []
    for event in handle.events(timeout=TIMEOUT):
        events.append(event)
        if event["event"] == "start":
            handle.stop()  # the first iteration is now running
    handle.wait(TIMEOUT)
    layout = RunLayout.at(tmp_path / "run")
    final = events[-1]
    assert handle.returncode == 0 and final["event"] == "stopped", final
    assert final["step"] <= 1
    record = read_record(layout)
    assert record["status"] == "stopped" and record["steps"] == final["step"]
    assert f"stopped at step {final['step']} of 1000" in record["message"]
    assert [p.name for p in layout.checkpoints()] == (["step-000000000.ckpt"] if final["step"] == 1 else [])


def test_splatfacto_without_cuda_is_refused_clearly(scene_dir, tmp_path):
    _, scene = scene_dir
    with pytest.raises(ParallaxError, match="splatfacto.*needs an NVIDIA GPU with CUDA"):
        start_training(scene, tmp_path / "run", preset="splatfacto", device="cpu")
    assert not (tmp_path / "run").exists()
