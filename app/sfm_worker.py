"""The SfM tab's worker thread: it builds the image set, runs ``sfm.pipeline.run`` and merges the model.

The GUI thread never runs a pipeline stage. It starts one ``SfmWorker`` per Run with an ``SfmRequest`` and
receives ``SfmProgress`` objects (the state of every stage so far; only the latest matters, delivered at most
~20 times a second) and, at the end, one ``SfmSummary`` (per-image rows, reprojection errors, totals).

Where the images come from:
  * "scene": the frames of the open scene (its images that have a file or video-frame source), every
    ``frame_step``-th one; the model is merged into the open scene on this thread.
  * "folder": ``scene.io.open_path(folder)`` (as File > Open would), then the same; the new scene travels back
    in the summary and the panel loads it as the document.
The pipeline works on a separate scene holding only the chosen images, so nothing in the open scene changes
until it has finished: Cancel (``should_stop`` at the pipeline's step boundaries) leaves the scene as it was.
A run replaces the previous reconstruction of the source's frames: frames left out by the step lose their
poses and 3D links, because those would be in another run's coordinate frame.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
from PyQt6 import QtCore

from .workers import ThrottledDelivery

log = logging.getLogger(__name__)

MIN_PROGRESS_INTERVAL_S = 0.05  # <= 20 redraws a second
PIPELINE_STAGES = ("extract", "match", "verify", "map")
PRESETS = ("fast", "default", "accurate")
INTRINSICS_MODES = ("scene", "calib", "exif", "guess")  # as opened / calibration file / EXIF / documented guess


@dataclass(frozen=True)
class SfmRequest:
    source: str = "scene"  # "scene" | "folder"
    folder: Optional[str] = None
    frame_step: int = 1
    intrinsics: str = "scene"  # one of INTRINSICS_MODES
    calib_path: Optional[str] = None
    matcher: str = "exhaustive"  # "exhaustive" | "sequential"
    window: int = 10  # sequential matching window
    preset: str = "default"
    detector: str = "sift"  # used when sfm's FeatureOptions offers a choice of detector
    remove_outliers: bool = False  # statistical outlier removal on the clouds, when sfm offers it
    seed_from_poses: bool = False  # scene frames with poses (SLAM keyframes) seed the model, in their frame


def supports(options_class, name: str) -> bool:
    """Whether an sfm options dataclass has the field ``name`` (sfm/ grows options; the tab offers what exists)."""
    from dataclasses import fields

    return any(f.name == name for f in fields(options_class))


def sfm_options(request: SfmRequest):
    """SfmOptions for a request: the preset's feature/mapper settings plus the chosen matcher."""
    from sfm.features import FeatureOptions
    from sfm.mapper import MapperOptions
    from sfm.matching import MatchingOptions
    from sfm.pipeline import SfmOptions

    if request.preset not in PRESETS:
        raise ValueError(f"unknown SfM preset {request.preset!r}; known: {', '.join(PRESETS)}")
    features, mapper, matching = FeatureOptions(), MapperOptions(), MatchingOptions()
    if request.preset == "fast":  # smaller images, fewer features, shorter bundle adjustments
        features = replace(features, max_image_size=1000, max_num_features=2048)
        mapper = replace(mapper, local_ba_max_iterations=10, global_ba_max_iterations=25)
        matching = replace(matching, exact=False, flann_checks=32)  # approximate neighbours: faster, a few fewer
    elif request.preset == "accurate":  # more features and larger images, longer bundle adjustments
        features = replace(features, max_image_size=2400, max_num_features=16384)
        mapper = replace(mapper, local_ba_max_iterations=50, global_ba_max_iterations=100)
    if request.detector != "sift" and supports(FeatureOptions, "detector"):
        features = replace(features, detector=request.detector)
    matching = replace(matching, method=request.matcher, window=max(1, int(request.window)))
    options = SfmOptions(features=features, matching=matching, mapper=mapper,
                         seed_from_poses=request.seed_from_poses and request.source == "scene")
    if request.remove_outliers and supports(SfmOptions, "outlier_removal"):
        from sfm.cloud import OutlierRemovalOptions

        options = replace(options, outlier_removal=OutlierRemovalOptions())
    return options


# --- the image set (plain code, worker thread) ------------------------------------------------

def _chosen_camera(camera, request: SfmRequest, first_image: Optional[str], camera_id: int):
    """The intrinsics the user asked for, for frames of ``camera``'s size (``camera`` itself for "scene")."""
    from scene.camera import guess_camera
    from scene.errors import InputNotFound
    from scene.io.calibration import camera_from_exif, load_calibration

    size = (camera.width, camera.height)
    if request.intrinsics == "scene":
        return camera
    if request.intrinsics == "calib":
        if not request.calib_path:
            raise InputNotFound("SfM: choose a calibration file for the intrinsics (or another intrinsics source)")
        return replace(load_calibration(request.calib_path, image_size=size), camera_id=camera_id)
    if request.intrinsics == "exif":
        exif = camera_from_exif(first_image, camera_id) if first_image else None
        if exif is None:
            from scene.errors import CorruptInput

            raise CorruptInput(f"SfM: {first_image or 'these frames'}: no EXIF focal length to build intrinsics "
                               "from; choose a calibration file or the guess")
        return exif if (exif.width, exif.height) == size else exif.scaled(*size)
    if request.intrinsics == "guess":
        return guess_camera(camera_id, *size)
    raise ValueError(f"unknown intrinsics source {request.intrinsics!r}; known: {', '.join(INTRINSICS_MODES)}")


def frame_pool(scene) -> list[int]:
    """Ids of the scene's frames SfM can use (images with a pixel source), in id order (as the pipeline takes them)."""
    return sorted(i for i, im in scene.images.items() if im.source is not None)


def working_scene(base, request: SfmRequest):
    """(work scene with only the chosen frames and intrinsics, pool ids, chosen ids). ``base`` is not modified."""
    from scene.model import Image, Scene

    snap = base.snapshot()
    pool = frame_pool(snap)
    step = max(1, int(request.frame_step))
    chosen = pool[::step]
    if len(chosen) < 2:
        from scene.errors import InputNotFound

        raise InputNotFound(f"SfM needs at least two frames; the scene has {len(pool)} with a pixel source"
                            + (f" and every {step}th leaves {len(chosen)}" if step > 1 else "")
                            + ". Open a video or an image folder first.")
    work = Scene()
    cameras: dict[int, object] = {}
    for image_id in chosen:  # the chosen intrinsics replace each camera's, under the same id: same physical camera
        im = snap.images[image_id]
        if im.camera_id not in cameras:
            cameras[im.camera_id] = _chosen_camera(snap.cameras[im.camera_id], request, im.source.path, im.camera_id)
    for camera in cameras.values():
        work.add_camera(camera)
    seed = request.seed_from_poses and request.source == "scene"
    work.add_images([Image(i, snap.images[i].name, snap.images[i].camera_id,
                           snap.images[i].cam_from_world if seed else None, source=snap.images[i].source)
                     for i in chosen])
    return work, pool, chosen


def merge_into(scene, work, pool: list[int]) -> None:
    """Write the work scene's model into ``scene``: it replaces every earlier SfM result on the frames of ``pool``.

    Held under the scene's lock so that no snapshot sees images pointing at points that are not there yet.
    """
    from scene.model import Image, Points3D

    ws = work.snapshot()
    with scene._lock:  # noqa: SLF001 - one consistent update, as sfm.pipeline._write does
        old = scene.points
        in_pool = np.isin(old.track_image_ids, np.asarray(pool, np.int64))
        lengths = old.track_lengths()
        touched = np.zeros(len(old), bool)
        if len(in_pool):
            owner = np.repeat(np.arange(len(old)), lengths)
            touched[owner[in_pool]] = True
        dropped_ids = old.ids[touched]
        keep_obs = np.repeat(~touched, lengths)
        first = int(old.ids[~touched].max()) + 1 if (~touched).any() else 1
        new = ws.points
        new_ids = first + np.arange(len(new), dtype=np.int64)
        sorted_ids = new.ids  # the pipeline numbers a fresh scene's points 1..M in order
        merged = Points3D(np.concatenate((old.ids[~touched], new_ids)), np.vstack((old.xyz[~touched], new.xyz)),
                          np.vstack((old.rgb[~touched], new.rgb)), np.concatenate((old.error[~touched], new.error)),
                          np.concatenate(([0], np.cumsum(np.concatenate((lengths[~touched],
                                                                         new.track_lengths()))))).astype(np.int64),
                          np.concatenate((old.track_image_ids[keep_obs], new.track_image_ids)),
                          np.concatenate((old.track_kp_idx[keep_obs], new.track_kp_idx)))
        for camera in ws.cameras.values():
            if scene.cameras.get(camera.camera_id) != camera:
                scene.add_camera(camera)
        images = []
        for image_id in pool:
            im = scene.images[image_id]
            got = ws.images.get(image_id)
            if got is not None:
                p3d = got.point3d_ids.copy()
                seen = p3d >= 0
                p3d[seen] = new_ids[np.searchsorted(sorted_ids, p3d[seen])]
                images.append(Image(image_id, im.name, got.camera_id, got.cam_from_world, got.keypoints.copy(), p3d,
                                    im.source))
            elif im.cam_from_world is not None or (im.point3d_ids >= 0).any():
                images.append(Image(image_id, im.name, im.camera_id, None, im.keypoints,
                                    np.full(len(im.keypoints), -1, np.int64), im.source))
        pool_set = set(pool)
        if len(dropped_ids):  # images outside the pool that observed a dropped point lose that link
            for image_id, im in scene.images.items():
                if image_id not in pool_set and len(im.point3d_ids):
                    lost = np.isin(im.point3d_ids, dropped_ids)
                    if lost.any():
                        images.append(replace(im, point3d_ids=np.where(lost, -1, im.point3d_ids)))
        scene.add_images(images)
        scene.set_points(merged)
        for name, cloud in ws.clouds.items():
            scene.set_cloud(name, cloud)


# --- what the tab shows ---------------------------------------------------------------------

@dataclass(frozen=True)
class StageState:
    done: int = 0
    total: int = 0
    message: str = ""
    seconds: float = 0.0
    finished: bool = False


@dataclass(frozen=True)
class SfmProgress:
    """The state of every stage reported so far (copies; safe to keep on the GUI thread)."""

    stages: dict  # stage name -> StageState, in the order they started
    current: str
    elapsed_s: float
    running: bool
    live_model: Optional[dict] = None  # the growing model (sfm's on_model_changed dict), newest only


@dataclass(frozen=True)
class ImageRow:
    image_id: int
    name: str
    registered: bool
    reason: str  # why not registered ("" when registered)
    keypoints: int
    observations: int  # keypoints with a 3D point
    inliers: int  # PnP / two-view inliers when the pipeline reports them, else -1
    mean_error_px: float  # mean reprojection error of its observations (NaN when none)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    image_ids: tuple
    num_points: int


@dataclass(frozen=True)
class SfmSummary:
    request: SfmRequest
    rows: tuple  # ImageRow per chosen frame, in pipeline input order
    observation_errors: np.ndarray  # reprojection error (px) of every observation of every point
    registered: int
    num_images: int
    num_points: int
    mean_track_length: float
    mean_reprojection_error_px: float
    seconds: dict
    initial_pair: tuple
    num_verified_pairs: int
    models: tuple  # ModelInfo
    cameras: tuple  # the refined cameras of the model
    intrinsics_used: tuple  # describe() of the cameras the run started from
    new_scene: object = None  # folder runs: the scene to load as the document
    stats: dict = field(default_factory=dict)


def observation_errors(scene) -> tuple[dict, np.ndarray]:
    """({image id: per-observation errors (px)}, all errors) of a scene's registered images."""
    from geometry.camera_models import project

    points = scene.points
    order = np.argsort(points.ids)
    per_image: dict[int, np.ndarray] = {}
    for image_id, im in scene.images.items():
        seen = im.point3d_ids >= 0
        if im.cam_from_world is None or not seen.any() or not len(points):
            continue
        idx = order[np.searchsorted(points.ids[order], im.point3d_ids[seen])]
        pose = im.cam_from_world
        cam_pts = points.xyz[idx] @ pose.rotation.T + pose.translation
        err = np.linalg.norm(project(scene.cameras[im.camera_id], cam_pts) - im.keypoints[seen], axis=1)
        per_image[image_id] = err
    all_errors = np.concatenate(list(per_image.values())) if per_image else np.zeros(0)
    return per_image, all_errors


def _per_image_inliers(result) -> dict:
    """Image id -> inliers when the pipeline's result carries them (a dict by id or a list in input order)."""
    inliers = getattr(result, "image_inliers", None) or getattr(result, "inliers", None)
    if isinstance(inliers, dict):
        return {int(k): int(v) for k, v in inliers.items()}
    if inliers is not None and len(inliers) == len(result.image_ids):
        return {int(i): int(v) for i, v in zip(result.image_ids, inliers)}
    return {}


def _models(result, scene) -> tuple:
    """One ModelInfo per model; a result without ``model_list`` is one model of its registered images."""
    listed = getattr(result, "reconstructions", None) or getattr(result, "model_list", None)
    out = []
    for k, model in enumerate(listed or ()):
        ids = getattr(model, "image_ids", None)
        if ids is None and isinstance(model, dict):
            ids = model.get("image_ids")
        if ids is None:
            continue
        n_pts = getattr(model, "num_points", None)
        if n_pts is None and isinstance(model, dict):
            n_pts = model.get("num_points", 0)
        name = f"Model {getattr(model, 'index', k + 1)}"
        out.append(ModelInfo(name, tuple(int(i) for i in ids), int(n_pts or 0)))
    if not out:
        ids = tuple(i for i in result.image_ids if scene.images[i].cam_from_world is not None)
        out.append(ModelInfo("Model 1", ids, int(result.num_points)))
    return tuple(out)


def summarize(request: SfmRequest, result, work, intrinsics_used) -> SfmSummary:
    """Per-image rows and the error histogram data, from the pipeline's result and the scene it wrote."""
    per_image, all_errors = observation_errors(work)
    inliers = _per_image_inliers(result)
    rows = []
    for image_id in result.image_ids:
        im = work.images[image_id]
        err = per_image.get(image_id)
        rows.append(ImageRow(image_id, im.name, im.cam_from_world is not None, result.reasons.get(image_id, ""),
                             len(im.keypoints), int((im.point3d_ids >= 0).sum()), inliers.get(image_id, -1),
                             float(err.mean()) if err is not None and len(err) else float("nan")))
    return SfmSummary(request, tuple(rows), all_errors, int(result.registered), int(result.num_images),
                      int(result.num_points), float(result.mean_track_length),
                      float(result.mean_reprojection_error_px), dict(result.seconds), tuple(result.initial_pair),
                      int(result.num_verified_pairs), _models(result, work), tuple(work.cameras.values()),
                      tuple(intrinsics_used), stats=dict(getattr(result, "stats", {}) or {}))


# --- the thread ---------------------------------------------------------------------------

class SfmWorker(QtCore.QThread):
    """One SfM run. ``report``/``should_stop`` are the pipeline's progress hooks (called on this thread)."""

    progress_ready = QtCore.pyqtSignal(object)  # SfmProgress (GUI thread, throttled)
    succeeded = QtCore.pyqtSignal(object)  # SfmSummary, after the model was merged into the scene
    failed = QtCore.pyqtSignal(str)  # message for the user
    cancelled = QtCore.pyqtSignal()

    def __init__(self, request: SfmRequest, scene, parent: Optional[QtCore.QObject] = None,
                 min_interval_s: float = MIN_PROGRESS_INTERVAL_S):
        super().__init__(parent)
        self.request = request
        self.scene = scene
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stages: dict[str, StageState] = {}
        self._stage_start: dict[str, float] = {}
        self._current = ""
        self._live_model: Optional[dict] = None
        self._t0 = time.perf_counter()
        self._running = True
        self._delivery = ThrottledDelivery(self.latest, self, min_interval_s)
        self._delivery.delivered.connect(self.progress_ready.emit)

    # --- the progress protocol (worker thread) ------------------------------------------------
    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        now = time.perf_counter()
        with self._lock:
            if stage != self._current and self._current in self._stages:  # the previous stage has ended
                prev = self._stages[self._current]
                self._stages[self._current] = replace(prev, finished=True)
            start = self._stage_start.setdefault(stage, now)
            self._stages[stage] = StageState(int(done), int(total), str(message or ""), now - start,
                                             total > 0 and done >= total)
            self._current = stage
        self._delivery.notify()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def model_changed(self, model: dict) -> None:
        """sfm's on_model_changed (worker thread): keep only the newest model; the GUI draws it throttled."""
        with self._lock:
            self._live_model = model
        self._delivery.notify()

    def request_stop(self) -> None:
        self._stop.set()

    def latest(self) -> SfmProgress:
        with self._lock:
            return SfmProgress(dict(self._stages), self._current, time.perf_counter() - self._t0, self._running,
                               self._live_model)

    # --- the run (worker thread) ------------------------------------------------------------
    def run(self) -> None:
        from scene.errors import ParallaxError
        from scene.progress import Cancelled

        try:
            summary = self._run()
        except Cancelled:
            self._end()
            self.cancelled.emit()
        except ParallaxError as exc:
            log.error("SfM failed: %s", exc)
            self._end()
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the user, never lost
            log.error("SfM failed with an unexpected error:\n%s", traceback.format_exc().rstrip())
            self._end()
            self.failed.emit(f"Unexpected error: {type(exc).__name__}: {exc}\n\nThe full report is in the Log panel.")
        else:
            self._end()
            self.succeeded.emit(summary)

    def _end(self) -> None:
        with self._lock:
            self._running = False
            if self._current in self._stages:
                self._stages[self._current] = replace(self._stages[self._current], finished=True)
        self._delivery.notify()

    def _run(self) -> SfmSummary:
        from scene.progress import Cancelled
        from sfm.pipeline import run as run_pipeline

        request = self.request
        options = sfm_options(request)
        if request.source == "folder":
            from scene.io import open_path

            if not request.folder:
                from scene.errors import InputNotFound

                raise InputNotFound("SfM: choose an image folder first")
            calib = request.calib_path if request.intrinsics == "calib" else None  # no needless guess warning
            base = open_path(request.folder, progress=self, calib=calib)
        else:
            base = self.scene
        if self.should_stop():
            raise Cancelled("SfM cancelled before it started")
        work, pool, _chosen = working_scene(base, request)
        intrinsics_used = tuple(c.describe() for c in work.cameras.values())
        log.info("SfM on %d of %d frames, %s matching, %s preset; intrinsics: %s", len(_chosen), len(pool),
                 request.matcher, request.preset, "; ".join(intrinsics_used))
        result = run_pipeline(work, replace(options, on_model_changed=self.model_changed), self)
        summary = summarize(request, result, work, intrinsics_used)
        # Past this point the run is complete: a late Cancel no longer applies (the merge is one quick update).
        merge_into(base, work, pool)
        log.info("SfM: %d of %d images registered, %d points, mean track length %.2f, mean reprojection error "
                 "%.3f px, %.1f s", summary.registered, summary.num_images, summary.num_points,
                 summary.mean_track_length, summary.mean_reprojection_error_px, summary.seconds.get("total", 0.0))
        return replace(summary, new_scene=base if request.source == "folder" else None)
