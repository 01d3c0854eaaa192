"""The NeRF tab's off-GUI-thread work: which cameras train, the training watcher thread, and the output child.

Training runs in a child process (nerf.runner.start_training spawns ``python -m nerf.train_process``).
``TrainingWorker`` is a QThread that prepares the dataset (through start_training, which writes images),
then polls the child's JSON lines and posts immutable ``TrainSnapshot`` objects to the GUI thread: the
worker keeps one slot and pokes the GUI at most every ``MIN_SNAPSHOT_INTERVAL_S``; a final state always
arrives. When the child ends (done, stopped, or crashed) the run is recorded in the scene on this thread.

Renders (the live preview, stills, videos, the NeRF point cloud) need torch, so they run in another child:
``python -m app.nerf_worker`` (``OutputProcess`` drives it with QProcess, which never blocks the GUI). It reads
one JSON request per line on stdin and answers JSON lines on stdout; the loaded pipeline is kept between
requests and reloaded only when the run has a newer checkpoint. This module imports nerf modules only
inside functions, so the GUI process never loads torch.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PyQt6 import QtCore

log = logging.getLogger(__name__)

MIN_SNAPSHOT_INTERVAL_S = 0.05  # <= 20 redraws a second
POLL_INTERVAL_S = 0.05
STOP_GRACE_S = 60.0  # after Stop, the child gets this long to save its checkpoint before it is killed
CAMERA_MATCH_TOLERANCE = 1e-6  # relative to the trajectory's extent: a keyframe pose IS a trajectory pose

STATES_RUNNING = ("preparing", "starting", "training", "stopping")


# --- which cameras train ----------------------------------------------------------------------------

def camera_sets(snap) -> dict[str, list[int]]:
    """Registered image ids split into SLAM keyframes and the rest (SfM, or cameras imported with the scene).

    SLAM writes its keyframes as images whose poses are poses of its "slam" trajectory; nothing else marks them.
    """
    registered = sorted(i for i, im in snap.images.items() if im.cam_from_world is not None)
    slam: list[int] = []
    traj = snap.trajectories.get("slam")
    if traj is not None and len(traj) and registered:
        centres = np.asarray(traj.world_from_cam_translation, dtype=np.float64)
        extent = float(np.ptp(centres, axis=0).max()) if len(centres) > 1 else 1.0
        tol = CAMERA_MATCH_TOLERANCE * (1.0 + extent)
        for image_id in registered:
            c = snap.images[image_id].cam_from_world.center()
            if float(np.min(np.linalg.norm(centres - c, axis=1))) <= tol:
                slam.append(image_id)
    slam_set = set(slam)
    return {"sfm": [i for i in registered if i not in slam_set], "slam": slam}


def training_scene(snap, image_ids):
    """A Scene holding only ``image_ids`` (with their cameras) and the sparse points (they set the bounds)."""
    from scene.model import Scene

    scene = Scene()
    images = [snap.images[i] for i in image_ids]
    for camera_id in sorted({im.camera_id for im in images}):
        scene.add_camera(snap.cameras[camera_id])
    scene.add_images(images)
    if len(snap.points):
        scene.set_points(snap.points)
    return scene


def attach_colmap_images(scene, model_dir: Path) -> None:
    """A COLMAP model names its images without saying where they are: look in the usual places beside it."""
    from dataclasses import replace

    from scene.model import FrameRef

    model_dir = Path(model_dir)
    for folder in (model_dir / "images", model_dir.parent / "images", model_dir.parent.parent / "images",
                   model_dir.parent.parent.parent / "images"):
        if folder.is_dir() and all((folder / im.name).is_file() for im in scene.images.values()):
            for image_id, im in list(scene.images.items()):
                scene.images[image_id] = replace(im, source=FrameRef(str(folder / im.name)))
            return


def load_import(path: Path):
    """A transforms.json (or a project) is handed to the trainer as a path; a COLMAP model is read here."""
    from scene.io.dispatch import detect_kind

    kind = detect_kind(path)
    if kind in ("transforms", "project"):
        return path
    if kind == "colmap":
        from scene.io.colmap import read_colmap_model

        folder = path if path.is_dir() else path.parent
        scene = read_colmap_model(folder)
        attach_colmap_images(scene, folder)
        return scene
    from scene.errors import UnsupportedFormat

    raise UnsupportedFormat(f"{path}: NeRF training reads cameras from a transforms.json, a COLMAP model or a "
                            f"Parallax project, not a {kind}")


def run_dir_of(run, project_dir: Optional[Path]) -> Optional[Path]:
    """Where a scene NerfRun lives: inside the project's nerf/ folder, or the absolute path record_run kept."""
    if run.checkpoint_dir and project_dir is not None:
        return Path(project_dir) / "nerf" / run.checkpoint_dir
    path = run.metrics.get("run_dir")
    return Path(path) if path else None


def read_run_record(run_dir: Path) -> dict:
    """run.json of a run folder, or {} when it cannot be read (the list shows what the scene knows)."""
    try:
        return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def path_poses(kind: str, snap, sets: dict, chosen: list, frames: int):
    """(cams_from_world, camera, note) of a render path in the scene's world (geometry.camera_paths builds it).

    kind: "orbit" around the scene centre, "slam" / "sfm" along those cameras (in image order), "between" the
    chosen image ids (in list order). The camera is the first used image's (or any scene camera).
    """
    from geometry import camera_paths as cp

    registered = {i: im for i, im in snap.images.items() if im.cam_from_world is not None}
    if kind == "between":
        ids = [i for i in chosen if i in registered]
        if len(ids) < 2:
            return [], None, "choose at least two cameras in the list"
    elif kind in ("slam", "sfm"):
        ids = sorted(sets.get(kind, []), key=lambda i: (registered[i].name, i)) if registered else []
        if len(ids) < 2:
            return [], None, f"the scene has no {'SLAM keyframes' if kind == 'slam' else 'SfM cameras'} to follow"
    else:
        ids = sorted(registered)
        if not ids:
            return [], None, "the scene has no posed cameras to orbit around"
    camera = snap.cameras.get(registered[ids[0]].camera_id) if ids else next(iter(snap.cameras.values()), None)
    cams = [registered[i].cam_from_world for i in ids]
    if kind == "orbit":
        xyz = np.asarray(snap.points.xyz) if len(snap.points) else None
        poses = cp.orbit_path(cp.orbit_from_cameras(cams, points=xyz), frames)
        note = f"{len(poses)} frames around the scene centre"
    elif kind == "between":
        if frames < len(cams):
            return [], None, f"{frames} frames cannot pass through {len(cams)} cameras: raise the frame count"
        poses, _ = cp.interpolate_cameras(cams, frames)
        note = f"{len(poses)} frames through {len(cams)} cameras"
    else:
        traj = snap.trajectories.get(kind)
        if kind == "slam" and traj is not None and len(traj) >= 2:  # every tracked frame, not just keyframes
            cams = [traj.pose(i).inverse() for i in range(len(traj))]
        poses = cp.resample_trajectory(cams, frames)
        note = f"{len(poses)} frames along {len(cams)} {'keyframes' if kind == 'slam' else 'cameras'}"
    return list(poses), camera, note


# --- training ------------------------------------------------------------------------------------

@dataclass
class TrainJob:
    """What Start (or Resume) asks for. ``source`` is a Scene, a transforms.json / project path, or a callable
    returning one (run on the worker thread: reading a COLMAP model takes time)."""

    run_dir: Path
    source: object = None
    preset: str = "parallax-cpu"
    iterations: Optional[int] = None
    minutes: Optional[float] = None
    device: str = "auto"
    resume: bool = False
    project_dir: Optional[Path] = None
    options: dict = field(default_factory=dict)  # more start_training keywords (rays_per_batch, max_size, env...)


@dataclass(frozen=True)
class TrainSnapshot:
    """Everything the training half of the tab draws. Arrays are copies owned by the snapshot."""

    state: str  # idle | preparing | starting | training | stopping | stopped | finished | failed
    run_name: str
    run_dir: Optional[Path]
    preset: str
    device: str
    step: int
    target: Optional[int]
    loss_steps: np.ndarray
    loss: np.ndarray
    psnr_steps: np.ndarray
    psnr: np.ndarray
    eval_steps: np.ndarray
    eval_psnr: np.ndarray
    rays_per_s: Optional[float]
    eta_s: Optional[float]
    elapsed_s: float
    minutes: Optional[float]
    checkpoint: Optional[str]
    checkpoint_step: Optional[int]
    message: str
    prepare: tuple = (0, 0)  # dataset images written, of

    @property
    def running(self) -> bool:
        return self.state in STATES_RUNNING


def _default_start(source, run_dir, **kwargs):
    from nerf.runner import start_training  # no torch: the child loads it

    return start_training(source, run_dir, **kwargs)


def _default_record(scene, run_dir, project_dir=None):
    from nerf.runner import record_run

    return record_run(scene, run_dir, project_dir=project_dir)


class _PrepareProgress:
    """The progress hooks start_training's dataset preparation calls, fed into the worker's snapshot."""

    def __init__(self, worker: "TrainingWorker"):
        self.worker = worker

    def report(self, stage, done, total, message="") -> None:
        self.worker._prepare = (int(done), int(total))
        self.worker._maybe_publish()

    def should_stop(self) -> bool:
        return self.worker._stop.is_set()


class TrainingWorker(QtCore.QThread):
    """Starts one training child (or resumes one) and watches its JSON lines until it ends."""

    snapshot_ready = QtCore.pyqtSignal(object)  # TrainSnapshot (GUI thread, throttled)
    recorded = QtCore.pyqtSignal(object)  # the scene's NerfRun after the run ended (GUI thread)
    _poke = QtCore.pyqtSignal()

    def __init__(self, job: TrainJob, scene, start: Optional[Callable] = None, record: Optional[Callable] = None,
                 parent: Optional[QtCore.QObject] = None, min_interval_s: float = MIN_SNAPSHOT_INTERVAL_S):
        super().__init__(parent)
        self.job = job
        self.scene = scene
        self._start = start or _default_start
        self._record = record or _default_record
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: Optional[TrainSnapshot] = None
        self._pending = False
        self._last_publish = 0.0
        self._min_interval_s = min_interval_s
        self._poke.connect(self._deliver, QtCore.Qt.ConnectionType.QueuedConnection)
        self.handle = None
        # Run state (worker thread only).
        self._state = "preparing"
        self._step = 0
        self._target = job.iterations
        self._device = job.device
        self._loss: list[tuple[int, float]] = []
        self._psnr: list[tuple[int, float]] = []
        self._eval: list[tuple[int, float]] = []
        self._rays: Optional[float] = None
        self._eta: Optional[float] = None
        self._checkpoint: Optional[str] = None
        self._checkpoint_step: Optional[int] = None
        self._message = ""
        self._prepare = (0, 0)
        self._t0 = time.monotonic()
        self._seed_history()

    @property
    def run_name(self) -> str:
        return Path(self.job.run_dir).name

    # --- commands (GUI thread) -----------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful: the child finishes its step and keeps a checkpoint. Never blocks."""
        self._stop.set()

    def latest(self) -> Optional[TrainSnapshot]:
        with self._lock:
            return self._latest

    def _deliver(self) -> None:
        with self._lock:
            snap, self._pending = self._latest, False
        if snap is not None:
            self.snapshot_ready.emit(snap)

    # --- worker thread --------------------------------------------------------------------------
    def _seed_history(self) -> None:
        """A resumed run's plot starts with the history its events.jsonl already holds."""
        if not self.job.resume:
            return
        try:
            lines = (Path(self.job.run_dir) / "events.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") in ("step", "eval", "checkpoint"):
                self._apply(event, live=False)

    def snapshot(self) -> TrainSnapshot:
        def arrays(pairs):
            if not pairs:
                return np.zeros(0), np.zeros(0)
            a = np.asarray(pairs, dtype=np.float64)
            return a[:, 0].copy(), a[:, 1].copy()

        ls, lv = arrays(self._loss)
        ps, pv = arrays(self._psnr)
        es, ev = arrays(self._eval)
        return TrainSnapshot(self._state, self.run_name, Path(self.job.run_dir), self.job.preset, self._device,
                             self._step, self._target, ls, lv, ps, pv, es, ev, self._rays, self._eta,
                             time.monotonic() - self._t0, self.job.minutes, self._checkpoint,
                             self._checkpoint_step, self._message, self._prepare)

    def _publish(self) -> None:
        snap = self.snapshot()
        with self._lock:
            self._latest = snap
            self._last_publish = time.monotonic()
            if self._pending:
                return
            self._pending = True
        self._poke.emit()

    def _maybe_publish(self) -> None:
        if time.monotonic() - self._last_publish >= self._min_interval_s:
            self._publish()

    def run(self) -> None:
        try:
            self._publish()
            self._train()
        except Exception as exc:  # noqa: BLE001 - shown to the user, never lost
            from app.task_runner import failure_message

            log.error("NeRF training could not run:\n%s", traceback.format_exc().rstrip())
            self._state, self._message = "failed", failure_message(exc)
        self._record_in_scene()
        self._publish()

    def _train(self) -> None:
        job = self.job
        source = job.source() if callable(job.source) else job.source
        if self._stop.is_set():
            self._state, self._message = "stopped", "stopped before training started"
            return
        kwargs = dict(preset=job.preset if not job.resume else None, iterations=job.iterations, minutes=job.minutes,
                      device=job.device, resume=job.resume, **job.options)
        try:
            self.handle = self._start(source, job.run_dir, progress=_PrepareProgress(self), **kwargs)
        except TypeError as exc:  # a start function without the progress hook (tests, older runners)
            if "progress" not in str(exc):
                raise
            self.handle = self._start(source, job.run_dir, **kwargs)
        self._target = getattr(self.handle, "target", None) or self._target
        self._state = "starting"
        self._publish()
        handle, stop_sent, stop_time = self.handle, False, 0.0
        while True:
            if self._stop.is_set() and not stop_sent:
                stop_sent, stop_time = True, time.monotonic()
                handle.stop()
                self._state = "stopping"
                self._publish()
            if stop_sent and time.monotonic() - stop_time > STOP_GRACE_S and handle.returncode is None:
                log.warning("NeRF: the training child did not stop within %.0f s; killing it", STOP_GRACE_S)
                kill = getattr(handle, "kill", None)
                if kill is not None:
                    kill()
            events = handle.poll() or []
            if isinstance(events, dict):
                events = [events]
            final = None
            for event in events:
                if self._apply(event):
                    final = event
            if events:
                self._maybe_publish()
            if final is not None:
                break
            if not events and handle.returncode is not None:
                # the child ended without a final line (the runner normally synthesises one)
                time.sleep(POLL_INTERVAL_S)
                rest = handle.poll() or []
                if any(self._apply(e) for e in rest):
                    break
                self._state = "failed"
                self._message = f"the training process exited with code {handle.returncode} without a final report"
                break
            if not events:
                time.sleep(POLL_INTERVAL_S)
        try:
            handle.wait(10)
        except Exception:  # noqa: BLE001 - the final event is what matters
            pass

    def _apply(self, event: dict, live: bool = True) -> bool:
        """Fold one JSON line into the state; True for a final event (done / stopped / error)."""
        kind = event.get("event")
        step = event.get("step")
        if kind == "start":
            self._state = "stopping" if self._stop.is_set() else "training"
            self._target = event.get("target") or self._target
            self._device = event.get("device") or self._device
            self._step = int(step or 0)
        elif kind == "step":
            self._step = int(step or self._step)
            if event.get("loss") is not None:
                self._loss.append((self._step, float(event["loss"])))
            if event.get("psnr") is not None:
                self._psnr.append((self._step, float(event["psnr"])))
            if live:
                self._rays = event.get("rays_per_s")
                self._eta = event.get("eta_s")
                if self._state == "starting":
                    self._state = "training"
        elif kind == "eval":
            if event.get("eval_psnr") is not None:
                self._eval.append((int(step or self._step), float(event["eval_psnr"])))
        elif kind == "checkpoint":
            self._checkpoint = event.get("path")
            self._checkpoint_step = int(step) if step is not None else None
        elif kind in ("done", "stopped", "error"):
            if step is not None:
                self._step = int(step)
            self._state = {"done": "finished", "stopped": "stopped", "error": "failed"}[kind]
            self._message = str(event.get("message") or "")
            self._eta = None
            return True
        return False

    def _record_in_scene(self) -> None:
        if not (Path(self.job.run_dir) / "run.json").is_file():
            return  # nothing was started (bad input caught before the run folder was written)
        try:
            run = self._record(self.scene, self.job.run_dir, self.job.project_dir)
        except Exception as exc:  # noqa: BLE001 - the scene stays as it was; the user reads why
            log.error("NeRF: the run could not be recorded in the scene: %s", exc)
            return
        if self._state in ("stopped", "finished", "failed") and run.status != self._state:
            from dataclasses import replace  # run.json still says "training": its child died without a word

            run = replace(run, status=self._state)
            self.scene.set_nerf_run(run)
        self.recorded.emit(run)


# --- the output child (renders, videos, point clouds) ------------------------------------------------

class OutputProcess(QtCore.QObject):
    """A long-lived ``python -m app.nerf_worker`` child: one request at a time, answers as JSON lines."""

    progressed = QtCore.pyqtSignal(int, int, int, str)  # request id, done, total, message
    answered = QtCore.pyqtSignal(int, dict)  # request id, {"ok": True, ...} or {"ok": False, "message": ...}

    def __init__(self, parent: Optional[QtCore.QObject] = None, threads: int = 1):
        super().__init__(parent)
        self._threads = threads
        self._process: Optional[QtCore.QProcess] = None
        self._buffer = b""
        self._queue: list[tuple[int, dict]] = []
        self._current: Optional[tuple[int, dict]] = None
        self._next_id = 1

    def busy(self) -> bool:
        return self._current is not None

    def pending(self) -> list[dict]:
        return [r for _, r in self._queue]

    def request(self, op: str, **fields) -> int:
        """Queue a request; its answer comes through ``answered`` with the returned id."""
        request_id, self._next_id = self._next_id, self._next_id + 1
        self._queue.append((request_id, dict(fields, op=op, id=request_id)))
        self._pump()
        return request_id

    def drop_queued(self, op: str) -> None:
        """Forget queued (not yet started) requests of one kind: only the newest preview matters."""
        self._queue = [(i, r) for i, r in self._queue if r["op"] != op]

    def cancel_current(self) -> None:
        """Kill the child (a render cannot be interrupted inside torch); the next request starts a fresh one."""
        current = self._current
        self._kill()
        if current is not None:
            self.answered.emit(current[0], {"ok": False, "cancelled": True, "message": "cancelled"})
        self._pump()

    def _ensure_process(self) -> QtCore.QProcess:
        if self._process is not None and self._process.state() != QtCore.QProcess.ProcessState.NotRunning:
            return self._process
        process = QtCore.QProcess(self)
        env = QtCore.QProcessEnvironment.systemEnvironment()
        root = str(Path(__file__).resolve().parents[1])
        env.insert("PYTHONPATH", root + (":" + env.value("PYTHONPATH") if env.value("PYTHONPATH") else ""))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.insert(name, str(self._threads))  # the trainer owns the cores; renders take one
        env.insert("OMP_WAIT_POLICY", "PASSIVE")
        env.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(env)
        process.setWorkingDirectory(root)
        process.setProcessChannelMode(QtCore.QProcess.ProcessChannelMode.SeparateChannels)
        process.readyReadStandardOutput.connect(self._read)
        process.readyReadStandardError.connect(lambda p=process: self._log_stderr(p))
        process.finished.connect(lambda code, _status, p=process: self._finished(p, code))
        process.start(sys.executable, ["-m", "app.nerf_worker"])
        self._process, self._buffer = process, b""
        return process

    def _pump(self) -> None:
        if self._current is not None or not self._queue:
            return
        self._current = self._queue.pop(0)
        process = self._ensure_process()
        process.write((json.dumps(self._current[1]) + "\n").encode())

    def _log_stderr(self, process: QtCore.QProcess) -> None:
        text = bytes(process.readAllStandardError()).decode(errors="replace").rstrip()
        if text:
            log.debug("nerf output child: %s", text[-2000:])

    def _read(self) -> None:
        if self._process is None:
            return
        self._buffer += bytes(self._process.readAllStandardOutput())
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if self._current is None or message.get("id") != self._current[0]:
                continue
            if message.get("event") == "progress":
                self.progressed.emit(self._current[0], int(message.get("done", 0)), int(message.get("total", 0)),
                                     str(message.get("message", "")))
            elif message.get("event") == "result":
                request_id, self._current = self._current[0], None
                self.answered.emit(request_id, message.get("result") or {})
                self._pump()

    def _finished(self, process: QtCore.QProcess, code: int) -> None:
        if process is not self._process:
            return
        self._process = None
        current, self._current = self._current, None
        if current is not None:
            self.answered.emit(current[0], {"ok": False, "message": f"the render process ended unexpectedly "
                                                                    f"(exit code {code}); see the Log panel"})
        self._pump()

    def _kill(self) -> None:
        process, self._process, self._current = self._process, None, None
        if process is not None:
            process.finished.disconnect()
            process.kill()
            process.waitForFinished(2000)
            process.deleteLater()

    def shutdown(self) -> None:
        self._queue.clear()
        process, self._process, self._current = self._process, None, None
        if process is not None:
            process.finished.disconnect()
            process.closeWriteChannel()  # the child ends at end of input
            if not process.waitForFinished(1000):
                process.kill()
                process.waitForFinished(2000)
            process.deleteLater()


# --- the child side (``python -m app.nerf_worker``): imports nerf (and torch) lazily ----------------------

def _camera_from(fields: dict):
    from scene.camera import Camera

    return Camera(int(fields.get("camera_id", 1)), fields["model"], int(fields["width"]), int(fields["height"]),
                  np.asarray(fields["params"], dtype=np.float64))


def _pose_from(fields: dict):
    from scene.rigid import Rigid3d

    return Rigid3d(np.asarray(fields["quat_wxyz"], dtype=np.float64), np.asarray(fields["translation"],
                                                                                 dtype=np.float64))


def camera_fields(camera) -> dict:
    return {"camera_id": camera.camera_id, "model": camera.model, "width": camera.width, "height": camera.height,
            "params": np.asarray(camera.params, dtype=np.float64).tolist()}


def pose_fields(cam_from_world) -> dict:
    return {"quat_wxyz": np.asarray(cam_from_world.quat_wxyz, dtype=np.float64).tolist(),
            "translation": np.asarray(cam_from_world.translation, dtype=np.float64).tolist()}


class _ChildProgress:
    def __init__(self, emit, request_id):
        self.emit, self.request_id, self._last = emit, request_id, 0.0

    def report(self, stage, done, total, message="") -> None:
        now = time.monotonic()
        if now - self._last >= 0.1 or done >= total:
            self._last = now
            self.emit({"id": self.request_id, "event": "progress", "done": int(done), "total": int(total),
                       "message": str(message or stage)})

    def should_stop(self) -> bool:
        return False


class _Loaded:
    """The child's cache: one loaded run, reloaded when its newest checkpoint changes."""

    def __init__(self):
        self.key = None
        self.run = None

    def get(self, run_dir: str, device: str):
        from nerf.layout import RunLayout
        from nerf.load import load_pipeline

        checkpoints = RunLayout.at(Path(run_dir)).checkpoints()
        key = (run_dir, device, str(checkpoints[-1]) if checkpoints else None)
        if key != self.key:
            self.run, self.key = None, None
            self.run = load_pipeline(run_dir, device)
            self.key = key
        return self.run


def _write_rgb(path: Path, image) -> Path:
    from nerf.render import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_png(path, np.ascontiguousarray(image))


def _op(request: dict, cache: _Loaded, progress: _ChildProgress) -> dict:
    op = request["op"]
    run_dir = request["run_dir"]
    device = request.get("device", "cpu")
    if op == "preview":
        from nerf.render import render_image

        run = cache.get(run_dir, device)
        image = render_image(run, _camera_from(request["camera"]), _pose_from(request["cam_from_world"]))
        return {"ok": True, "path": str(_write_rgb(Path(request["out"]), image)), "step": run.step}
    if op == "stills":
        from nerf.render import View, render_stills

        run = cache.get(run_dir, device)
        views = [View(v["name"], _camera_from(v["camera"]), _pose_from(v["cam_from_world"]))
                 for v in request["views"]]
        written = render_stills(run, views, request["out_dir"], progress)
        return {"ok": True, "paths": [str(p) for p in written], "path": str(request["out_dir"])}
    if op == "video":
        from nerf.render import View, render_views
        from nerf.video import write_mp4

        run = cache.get(run_dir, device)
        camera = _camera_from(request["camera"])
        views = [View(f"{i:05d}", camera, _pose_from(p)) for i, p in enumerate(request["cams_from_world"])]
        out = Path(request["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        path = write_mp4(render_views(run, views, progress), out, fps=float(request.get("fps", 24)),
                         total=len(views))  # progress comes from the renderer, one report per frame
        return {"ok": True, "path": str(path), "frames": len(views)}
    if op == "pointcloud":
        from nerf.pointcloud import export_point_cloud

        run = cache.get(run_dir, device)
        box = request.get("bounding_box")
        box = None if box is None else tuple(np.asarray(b, dtype=np.float64) for b in box)
        ply = Path(request["out"])
        ply.parent.mkdir(parents=True, exist_ok=True)
        cloud = export_point_cloud(run_dir, int(request.get("num_points", 100000)), output=ply, bounding_box=box,
                                   loaded=run, progress=progress)
        xyz = np.asarray(cloud.xyz, dtype=np.float64)
        rgb = np.zeros((len(xyz), 3), np.uint8) if cloud.rgb is None else np.asarray(cloud.rgb, dtype=np.uint8)
        arrays = ply.with_suffix(".npz")  # what the GUI reads back (faster than PLY)
        np.savez(arrays, xyz=xyz, rgb=rgb)
        return {"ok": True, "path": str(ply), "arrays": str(arrays), "points": int(len(xyz))}
    raise ValueError(f"unknown request {op!r}")


def serve(stdin=None, stdout=None) -> int:
    """The child's loop: one JSON request per input line, JSON lines out; ends at end of input."""
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout

    def emit(message: dict) -> None:
        out.write(json.dumps(message, allow_nan=False, default=float) + "\n")
        out.flush()

    cache = _Loaded()
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError:
            continue
        request_id = request.get("id", 0)
        try:
            result = _op(request, cache, _ChildProgress(emit, request_id))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the GUI as a message
            from scene.errors import ParallaxError

            traceback.print_exc(file=sys.stderr)
            message = str(exc) if isinstance(exc, ParallaxError) else f"{type(exc).__name__}: {exc}"
            result = {"ok": False, "message": message}
        emit({"id": request_id, "event": "result", "result": result})
    return 0


def main() -> int:
    import os

    # stdout carries the JSON answers only: whatever torch or nerfstudio print goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(sys.stdin, answers)


if __name__ == "__main__":
    sys.exit(main())
