"""Parallax <-> pycolmap: models written by one load identically in the other (synthetic and real)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from scene.io.colmap import read_colmap_model, write_colmap_model
from scene.model import Scene

pycolmap = pytest.importorskip("pycolmap")

SCEAUX = Path(__file__).resolve().parents[2] / "shared" / "data" / "sceaux_castle" / "images"
TOL = 1e-9


def _cam_from_world(image):
    pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
    quat_xyzw = np.asarray(pose.rotation.quat)
    return np.r_[quat_xyzw[3], quat_xyzw[:3]], np.asarray(pose.translation)


def assert_same_model(rec, scene: Scene) -> None:
    """Every camera, registered image, keypoint, 3D point and track agree to 1e-9."""
    assert sorted(rec.cameras) == sorted(scene.cameras)
    for cid, cam in rec.cameras.items():
        ours = scene.cameras[cid]
        assert (cam.model.name, cam.width, cam.height) == (ours.model, ours.width, ours.height)
        np.testing.assert_allclose(ours.params, cam.params, rtol=0, atol=TOL)
    reg_ids = sorted(rec.reg_image_ids())
    assert reg_ids == sorted(i for i, im in scene.images.items() if im.registered)
    assert len(scene.images) == len(reg_ids)
    for iid in reg_ids:
        image, ours = rec.images[iid], scene.images[iid]
        assert (image.name, image.camera_id) == (ours.name, ours.camera_id)
        quat_wxyz, translation = _cam_from_world(image)
        np.testing.assert_allclose(ours.cam_from_world.quat_wxyz, quat_wxyz, rtol=0, atol=TOL)
        np.testing.assert_allclose(ours.cam_from_world.translation, translation, rtol=0, atol=TOL)
        xy = np.array([p.xy for p in image.points2D]).reshape(-1, 2)
        ids = np.array([p.point3D_id if p.has_point3D() else -1 for p in image.points2D], dtype=np.int64)
        np.testing.assert_allclose(ours.keypoints, xy, rtol=0, atol=TOL)
        assert np.array_equal(ours.point3d_ids, ids)
    points = scene.points
    assert sorted(rec.points3D) == sorted(points.ids.tolist())
    index = points.index_of()
    for pid, point in rec.points3D.items():
        i = index[pid]
        np.testing.assert_allclose(points.xyz[i], point.xyz, rtol=0, atol=TOL)
        assert np.array_equal(points.rgb[i], point.color)
        assert abs(points.error[i] - point.error) <= TOL
        image_ids, kp_idx = points.track(i)
        theirs = sorted((e.image_id, e.point2D_idx) for e in point.track.elements)
        assert sorted(zip(image_ids.tolist(), kp_idx.tolist())) == theirs


def _synthetic(cameras_per_rig: int):
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs = 2
    options.num_cameras_per_rig = cameras_per_rig
    options.num_frames_per_rig = 4
    options.num_points3D = 60
    options.num_points2D_without_point3D = 9
    options.camera_model_id = pycolmap.CameraModelId.OPENCV
    options.camera_params = [800.0, 810.0, 500.0, 380.0, 0.01, -0.02, 0.001, 0.0005]
    rec = pycolmap.synthesize_dataset(options)
    noise = pycolmap.SyntheticNoiseOptions()
    noise.point2D_stddev = 0.7
    noise.point3D_stddev = 0.01
    pycolmap.synthesize_noise(noise, rec)
    rng = np.random.default_rng(5)
    for pid in rec.points3D:  # colours and errors are all zero in synthetic data
        rec.points3D[pid].color = rng.integers(0, 256, size=3).astype(np.uint8)
        rec.points3D[pid].error = float(rng.uniform(0.1, 2.0))
    return rec


@pytest.fixture(scope="module", params=[1, 2], ids=["trivial-rigs", "two-camera-rigs"])
def synthetic(request):
    return _synthetic(request.param)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_pycolmap_written_model_loads_identically(tmp_path, synthetic, binary):
    (synthetic.write_binary if binary else synthetic.write_text)(str(tmp_path))
    assert_same_model(synthetic, read_colmap_model(tmp_path))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_parallax_written_model_loads_identically_in_pycolmap(tmp_path, synthetic, binary):
    (tmp_path / "src").mkdir()
    synthetic.write_binary(str(tmp_path / "src"))
    scene = read_colmap_model(tmp_path / "src")
    write_colmap_model(scene, tmp_path / "out", binary=binary)
    rec = pycolmap.Reconstruction()
    (rec.read_binary if binary else rec.read_text)(str(tmp_path / "out"))
    assert_same_model(rec, scene)
    assert_same_model(synthetic, scene)


def test_deregistered_frame_is_not_in_either_model(tmp_path):
    rec = _synthetic(1)
    rec.deregister_frame(next(iter(rec.frames)))
    rec.write_text(str(tmp_path))
    scene = read_colmap_model(tmp_path)
    assert len(scene.images) == rec.num_reg_images() < rec.num_images()
    assert_same_model(rec, scene)


# --- a real reconstruction (Sceaux castle, 11 photos), built once and cached between runs ----

@pytest.fixture(scope="session")
def sceaux_model(request, tmp_path_factory) -> Path:
    if not SCEAUX.is_dir():
        pytest.skip(f"real data set 'sceaux_castle' not found at {SCEAUX} (../shared/data is absent)")
    name = f"parallax-sceaux-pycolmap-{pycolmap.__version__}"
    # pytest's cache survives between runs; without the cache plugin build into a temporary folder
    cache_plugin = getattr(request.config, "cache", None)
    cache = Path(cache_plugin.mkdir(name) if cache_plugin else tmp_path_factory.mktemp(name))
    model = cache / "sparse" / "0"
    if (model / "points3D.bin").is_file():
        return model
    work = cache / "building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = 1000  # keeps the build well under a minute on 2 cores
    extraction.num_threads = 2
    extraction.sift.max_num_features = 4096
    database = work / "database.db"
    pycolmap.extract_features(database, SCEAUX, camera_mode=pycolmap.CameraMode.SINGLE,
                              extraction_options=extraction, device=pycolmap.Device.cpu)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = 2
    pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = 2
    (work / "sparse").mkdir()
    recs = pycolmap.incremental_mapping(database, SCEAUX, work / "sparse", options=mapping)
    assert recs, "pycolmap found no reconstruction of the Sceaux castle images"
    best = max(recs.values(), key=lambda r: r.num_reg_images())
    (work / "model").mkdir()
    best.write_binary(str(work / "model"))
    shutil.rmtree(cache / "sparse", ignore_errors=True)
    (cache / "sparse").mkdir()
    (work / "model").rename(model)  # only a complete model ever appears at the cached path
    shutil.rmtree(work, ignore_errors=True)
    return model


def test_real_reconstruction_pycolmap_to_parallax(tmp_path, sceaux_model):
    rec = pycolmap.Reconstruction(str(sceaux_model))
    assert rec.num_reg_images() >= 8 and rec.num_points3D() > 1000
    assert_same_model(rec, read_colmap_model(sceaux_model))
    rec.write_text(str(tmp_path))
    assert_same_model(rec, read_colmap_model(tmp_path))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_real_reconstruction_parallax_to_pycolmap(tmp_path, sceaux_model, binary):
    scene = read_colmap_model(sceaux_model)
    write_colmap_model(scene, tmp_path, binary=binary)
    assert_same_model(pycolmap.Reconstruction(str(tmp_path)), scene)
    if binary:  # same bytes as pycolmap's own cameras/images/points3D files
        for stem in ("cameras", "images", "points3D", "rigs"):
            assert (tmp_path / f"{stem}.bin").read_bytes() == (sceaux_model / f"{stem}.bin").read_bytes(), stem
