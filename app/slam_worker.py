"""The SLAM tab's worker thread: it owns the ``slam.System`` and the FrameSource and runs ``step()``.

The GUI thread never runs a SLAM step. It queues commands (play, pause, step, seek, reset, finish,
quit) and receives ``SlamSnapshot`` objects: immutable, self-contained copies of what the tab draws,
built on this thread. Only the latest snapshot matters, so the worker keeps one slot and pokes the GUI
thread at most every ``MIN_SNAPSHOT_INTERVAL_S`` (a step, pause or end of the run always delivers).

Play and forward seeks run local mapping on its own thread (``System.set_background_mapping``); Step,
Pause and the end of the run switch back to synchronous mapping, which first finishes the queued keyframes.
Snapshots read the map under ``System.reading()``.

Seeking: forward = process every frame up to the target as fast as possible (SLAM cannot skip frames);
backward = reset the system and replay from the first frame. When the source ends, or on ``finish()``,
the result is written into the shared scene with ``System.to_scene`` on this thread; a later export
(after Reset and another run) first removes the images and points the previous export added.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PyQt6 import QtCore

from app.slam_run import intrinsics_warning

log = logging.getLogger(__name__)

MIN_SNAPSHOT_INTERVAL_S = 0.05  # <= 20 redraws a second
DISPLAY_MAX_WIDTH = 480  # the frame is shrunk for display on this thread; keypoints stay in source pixels
MAX_OVERLAY_POINTS = 20000  # map points drawn live (a random but stable subset beyond this)
MIN_POSES_FOR_ALIGNMENT = 5
WARM_UP_FRAMES = 20  # enough for initialisation and a few mapped keyframes on the demo orbit


@dataclass(frozen=True)
class SlamSnapshot:
    """Everything the SLAM tab draws for one moment of the run. Arrays are copies owned by the snapshot."""

    frame_index: int  # index of the last processed frame, -1 before the first
    total_frames: int
    running: bool  # playing (or seeking)
    finished: bool  # the source ended (results are in the scene)
    state: str  # INIT / OK / LOST / RELOCALIZED, "" before the first frame
    reason: str
    image_rgb: Optional[np.ndarray]  # (h, w, 3) uint8, shrunk for display
    image_size: tuple[int, int]  # (width, height) of the processed frame (keypoint coordinates)
    keypoints_xy: np.ndarray  # (N, 2) COLMAP pixels of the processed frame
    keypoint_status: np.ndarray  # (N,) KP_NEW / KP_TRACKED / KP_OUTLIER
    num_tracked: int
    keyframes: int
    map_points: int
    loop_closures: int
    track_ms: float  # total step time of the last frame
    fps: float  # frames per second over the last ~second of processing
    # 3D, in the display world: the ground truth's frame when aligned, else the SLAM map's own frame.
    aligned_to_gt: bool
    points_xyz: np.ndarray  # (M, 3)
    keyframe_rot: np.ndarray  # (K, 3, 3) world_from_cam rotations
    keyframe_centers: np.ndarray  # (K, 3)
    current_rot: Optional[np.ndarray]  # (3, 3) or None when the last frame is not tracked
    current_center: Optional[np.ndarray]
    trajectory: np.ndarray  # (T, 3) centres of every tracked frame
    # History for the plot.
    history_frames: np.ndarray
    history_tracked: np.ndarray
    ate_frames: np.ndarray
    ate_rmse: np.ndarray
    ate_scale: Optional[float] = None
    message: str = ""
    extra: dict = field(default_factory=dict)


def _empty(n: int, tail=()) -> np.ndarray:
    return np.zeros((n,) + tail)


class SlamWorker(QtCore.QThread):
    """Runs a SLAM system over a frame source on its own thread; controlled through queued commands."""

    snapshot_ready = QtCore.pyqtSignal(object)  # SlamSnapshot (GUI thread, throttled)
    results_written = QtCore.pyqtSignal(dict)  # System.to_scene's summary, after the scene was updated
    failed = QtCore.pyqtSignal(str)  # message for the user
    _poke = QtCore.pyqtSignal()

    def __init__(self, source_path, camera, scene, ground_truth=None, options=None,
                 parent: Optional[QtCore.QObject] = None, min_interval_s: float = MIN_SNAPSHOT_INTERVAL_S):
        super().__init__(parent)
        self.source_path = source_path
        self.camera = camera
        self.scene = scene
        self.ground_truth = ground_truth if ground_truth is not None and len(ground_truth) else None
        self.options = options
        self.realtime = False
        self._cond = threading.Condition()
        self._commands: deque = deque()
        self._playing = False
        self._target: Optional[int] = None  # seek target (frame index to reach, inclusive)
        self._quit = False
        self._latest: Optional[SlamSnapshot] = None
        self._pending = False
        self._last_delivery = 0.0
        self._min_interval_s = min_interval_s
        self._poke.connect(self._deliver, QtCore.Qt.ConnectionType.QueuedConnection)
        self._export: Optional[dict] = None  # what the last to_scene added, to undo it on re-export
        # Per-run state (worker thread only).
        self.system = None
        self.source = None
        self._next_index = 0
        self._finished = False
        self._history_frames: list[int] = []
        self._history_tracked: list[int] = []
        self._ate_frames: list[int] = []
        self._ate_rmse: list[float] = []
        self._step_times: deque = deque(maxlen=30)
        self._last_result = None
        self._last_image = None
        self._clock_anchor: Optional[tuple[float, float]] = None  # (wall time, source timestamp)
        self._snapshot_due = True

    # --- commands (GUI thread) --------------------------------------------------------------
    def _command(self, name: str, *args) -> None:
        with self._cond:
            self._commands.append((name, args))
            self._cond.notify_all()

    def play(self) -> None:
        self._command("play")

    def pause(self) -> None:
        self._command("pause")

    def step_once(self) -> None:
        self._command("step")

    def seek(self, index: int) -> None:
        self._command("seek", int(index))

    def reset(self) -> None:
        self._command("reset")

    def finish(self) -> None:
        """Stop here and write the result into the scene."""
        self._command("finish")

    def set_realtime(self, realtime: bool) -> None:
        self._command("realtime", bool(realtime))

    def quit_worker(self) -> None:
        with self._cond:
            self._quit = True
            self._cond.notify_all()

    # --- snapshots (GUI thread side) --------------------------------------------------------
    def latest(self) -> Optional[SlamSnapshot]:
        with self._cond:
            return self._latest

    def _deliver(self) -> None:
        with self._cond:
            snap, self._pending = self._latest, False
        if snap is not None:
            self._last_delivery = time.monotonic()
            self.snapshot_ready.emit(snap)

    def _publish(self, snap: SlamSnapshot) -> None:  # worker thread
        with self._cond:
            self._latest = snap
            if self._pending:
                return
            self._pending = True
        self._poke.emit()

    # --- the loop (worker thread) -----------------------------------------------------------
    def run(self) -> None:
        try:
            from scene.io.sources import open_source

            self.source = open_source(self.source_path)
            self._warm_up()
            self._new_system()
            self._publish(self._snapshot())
            while True:
                with self._cond:
                    while not (self._quit or self._commands or self._playing or self._target is not None):
                        self._cond.wait()
                    if self._quit:
                        break
                    commands = list(self._commands)
                    self._commands.clear()
                for name, args in commands:
                    self._handle(name, *args)
                if self._quit:
                    break
                if self._playing or self._target is not None:
                    self._advance()
        except Exception as exc:  # noqa: BLE001 - reported to the user, never lost
            log.error("SLAM worker failed:\n%s", traceback.format_exc().rstrip())
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        finally:
            if self.system is not None:
                try:
                    self.system.close()
                except Exception as exc:  # noqa: BLE001 - a mapping failure after the loop ended: reported
                    log.error("SLAM mapping thread failed: %s", exc)
                    self.failed.emit(f"{type(exc).__name__}: {exc}")
            if self.source is not None:
                self.source.close()

    def _warm_up(self) -> None:
        """Load every SLAM kernel before the first Play (``slam.warm_up``): numba's first call of a kernel in a
        process loads it while holding the GIL (tens of ms each), which would stall the GUI thread mid-run."""
        from slam.warm_up import warm_up

        frames = [self.source.read(i).image for i in range(min(len(self.source), WARM_UP_FRAMES))]
        warm_up(self.camera, frames, self.options)

    def _new_system(self) -> None:
        from slam.system import System

        if self.system is not None:
            self.system.close()
        self.system = System(self.camera, self.options)
        self._next_index = 0
        self._finished = False
        self._history_frames, self._history_tracked = [], []
        self._ate_frames, self._ate_rmse = [], []
        self._step_times.clear()
        self._last_result = None
        self._last_image = None
        self._clock_anchor = None

    def _handle(self, name: str, *args) -> None:
        if name == "play":
            if self._finished:
                return
            self._playing, self._target, self._clock_anchor = True, None, None
            self.system.set_background_mapping(True)
        elif name == "pause":
            self._playing, self._target = False, None
            self.system.set_background_mapping(False)
            self._publish(self._snapshot())
        elif name == "step":
            if self._finished:
                return
            self._playing, self._target = False, None
            self.system.set_background_mapping(False)
            self._process_next()
            self._publish(self._snapshot())
        elif name == "seek":
            target = min(max(int(args[0]), 0), len(self.source) - 1)
            self._playing = False
            if target < self._next_index - 1:
                self._new_system()  # SLAM cannot go back in time: replay from the start
            self._target = target if target >= self._next_index else None
            self.system.set_background_mapping(self._target is not None)
            self._publish(self._snapshot())
        elif name == "reset":
            self._playing, self._target = False, None
            self._new_system()
            self._publish(self._snapshot())
        elif name == "finish":
            self._playing, self._target = False, None
            self.system.set_background_mapping(False)
            if self._next_index > 0 and not self._finished:
                self._write_results()
            self._publish(self._snapshot())
        elif name == "realtime":
            self.realtime, self._clock_anchor = bool(args[0]), None

    def _advance(self) -> None:
        """One frame of Play or of a seek, paced to the source's clock in real-time Play."""
        if self._next_index >= len(self.source):
            self._end_of_source()
            return
        if self._playing and self.realtime:
            self._wait_for_frame_time()
            with self._cond:
                if self._commands or self._quit:
                    return  # handle the command first
        self._process_next()
        if self._target is not None and self._next_index > self._target:
            self._target = None
            if not self._playing:
                self.system.set_background_mapping(False)
            self._publish(self._snapshot())
            return
        now = time.monotonic()
        if now - self._last_delivery >= self._min_interval_s and not self._pending:
            self._publish(self._snapshot())
        if self._next_index >= len(self.source):
            self._end_of_source()

    def _wait_for_frame_time(self) -> None:
        timestamp = self.source.frame_refs()[self._next_index].timestamp
        timestamp = float(timestamp) if timestamp is not None else self._next_index / 30.0
        now = time.monotonic()
        if self._clock_anchor is None:
            self._clock_anchor = (now, timestamp)
            return
        due = self._clock_anchor[0] + (timestamp - self._clock_anchor[1])
        if due > now:
            with self._cond:  # a command wakes the wait early
                if not self._commands and not self._quit:
                    self._cond.wait(min(due - now, 1.0))

    def _process_next(self) -> None:
        if self._next_index >= len(self.source):
            return
        frame = self.source.read(self._next_index)
        t0 = time.perf_counter()
        result = self.system.step(frame.image, frame.timestamp, ref=frame.ref)
        self._step_times.append((time.perf_counter(), time.perf_counter() - t0))
        self._last_result = result
        self._last_image = frame.image
        self._history_frames.append(self._next_index)
        self._history_tracked.append(int(result.num_tracked))
        self._next_index += 1

    def _end_of_source(self) -> None:
        self._playing, self._target = False, None
        self.system.set_background_mapping(False)
        if not self._finished:
            self._write_results()
        self._publish(self._snapshot())

    def _write_results(self) -> None:
        self._finished = True
        if self.system.map.num_keyframes == 0:
            log.warning("SLAM: not initialised after %d frames; nothing written to the scene", self._next_index)
            return
        self._undo_previous_export()
        points_before = self.scene.points
        summary = self.system.to_scene(self.scene)
        self._export = {"image_ids": list(range(summary["first_image_id"], summary["first_image_id"]
                                                + summary["images"])),
                        "points_before": points_before, "points_after": self.scene.points}
        log.info("SLAM results written to the scene: %d keyframes, %d points, %d trajectory poses",
                 summary["images"], summary["points"], summary["trajectory_poses"])
        warning = intrinsics_warning(self.system.check_intrinsics(), self.system.camera, None)
        if warning:  # the map stays in the scene to look at; the CLI refuses to write it
            log.warning("SLAM: %s", warning)
        self.results_written.emit(summary)

    def _undo_previous_export(self) -> None:
        previous, self._export = self._export, None
        if previous is None:
            return
        self.scene.remove_images(previous["image_ids"])
        if self.scene.points is previous["points_after"]:  # nobody replaced them since
            self.scene.set_points(previous["points_before"])

    # --- snapshot building (worker thread) ----------------------------------------------------
    def _fps(self) -> float:
        times = list(self._step_times)
        if len(times) < 2:
            return 0.0
        recent = [t for t in times if times[-1][0] - t[0] <= 1.0]
        if len(recent) < 2:
            return 0.0
        span = recent[-1][0] - recent[0][0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def _display_image(self) -> tuple[Optional[np.ndarray], tuple[int, int]]:
        import cv2

        img = self._last_image
        if img is None:
            return None, (self.camera.width, self.camera.height)
        h, w = img.shape[:2]
        if w > DISPLAY_MAX_WIDTH:
            s = DISPLAY_MAX_WIDTH / w
            img = cv2.resize(img, (DISPLAY_MAX_WIDTH, max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        if img.ndim == 2:
            rgb = np.repeat(img[:, :, None], 3, axis=2)
        else:
            rgb = img[:, :, 2::-1]  # sources give BGR
        return np.ascontiguousarray(rgb), (w, h)

    def _alignment(self, timestamps: np.ndarray, centers: np.ndarray, rots: np.ndarray):
        """gt_from_est Sim(3) over the tracked frames so far, and the ATE RMSE; (None, None) when not possible."""
        if self.ground_truth is None or len(timestamps) < MIN_POSES_FOR_ALIGNMENT:
            return None, None
        from geometry.metrics import ate
        from scene.model import Trajectory

        quats = np.array([_matrix_to_quat_wxyz(r) for r in rots])
        est = Trajectory(np.asarray(timestamps, np.float64), quats, np.asarray(centers, np.float64))
        try:
            result = ate(est, self.ground_truth, align="sim3")
        except Exception as exc:  # noqa: BLE001 - too few matches or degenerate: show the raw map
            log.debug("ATE not available yet: %s", exc)
            return None, None
        if len(result.errors) < MIN_POSES_FOR_ALIGNMENT or not np.isfinite(result.rmse):
            return None, None
        return result.alignment, float(result.rmse)

    def _snapshot(self) -> SlamSnapshot:
        system, result = self.system, self._last_result
        m = system.map
        with system.reading():  # local mapping may be writing the map on its own thread
            poses = [(ts, p) for ts, p in system.frame_poses() if p is not None]
            k = m.num_keyframes
            kf_rot = np.array([m.kf_pose(i).rotation.T for i in range(k)]) if k else _empty(0, (3, 3))
            kf_centers = np.array([m.kf_pose(i).center() for i in range(k)]) if k else _empty(0, (3,))
            alive = np.flatnonzero(m.alive) if m.num_points_total else np.zeros(0, np.int64)
            if len(alive) > MAX_OVERLAY_POINTS:
                alive = alive[:: int(np.ceil(len(alive) / MAX_OVERLAY_POINTS))]
            points = m.xyz[alive].copy() if len(alive) else _empty(0, (3,))
            num_points, loop_closures = int(m.num_points), int(system.loop_closures)
        if poses:
            timestamps = np.array([ts for ts, _ in poses])
            rot = np.array([p.rotation.T for _, p in poses])  # world_from_cam
            centers = np.array([p.center() for _, p in poses])
        else:
            timestamps, rot, centers = np.zeros(0), _empty(0, (3, 3)), _empty(0, (3,))
        current_rot = current_center = None
        if result is not None and result.cam_from_world is not None:
            current_rot = result.cam_from_world.rotation.T
            current_center = result.cam_from_world.center()

        alignment, rmse = self._alignment(timestamps, centers, rot)
        if rmse is not None and self._history_frames:
            frame = self._history_frames[-1]
            if not self._ate_frames or self._ate_frames[-1] != frame:
                self._ate_frames.append(frame)
                self._ate_rmse.append(rmse)
        if alignment is not None:
            points = alignment.apply_positions(points) if len(points) else points
            kf_centers = alignment.apply_positions(kf_centers) if k else kf_centers
            kf_rot = alignment.apply_rotations(kf_rot) if k else kf_rot
            centers = alignment.apply_positions(centers) if len(centers) else centers
            if current_rot is not None:
                current_rot = alignment.rotation @ current_rot
                current_center = alignment.apply_positions(current_center[None])[0]

        image, size = self._display_image()
        total = len(self.source) if self.source is not None else 0
        if result is None:
            kp_xy, kp_status, state, reason, tracked, ms = _empty(0, (2,)), np.zeros(0, np.int8), "", "", 0, 0.0
        else:
            kp_xy, kp_status = np.asarray(result.keypoints_xy).copy(), np.asarray(result.keypoint_status).copy()
            state, reason, tracked = result.state.value, result.reason, int(result.num_tracked)
            ms = float(result.timings_ms.get("total", 0.0))
        return SlamSnapshot(
            frame_index=self._next_index - 1, total_frames=total,
            running=self._playing or self._target is not None, finished=self._finished,
            state=state, reason=reason, image_rgb=image, image_size=size, keypoints_xy=kp_xy,
            keypoint_status=kp_status, num_tracked=tracked, keyframes=k, map_points=num_points,
            loop_closures=loop_closures, track_ms=ms, fps=self._fps(), aligned_to_gt=alignment is not None,
            points_xyz=points, keyframe_rot=kf_rot, keyframe_centers=kf_centers, current_rot=current_rot,
            current_center=current_center, trajectory=centers,
            history_frames=np.array(self._history_frames), history_tracked=np.array(self._history_tracked),
            ate_frames=np.array(self._ate_frames), ate_rmse=np.array(self._ate_rmse),
            ate_scale=None if alignment is None else float(alignment.scale))


def _matrix_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    from scene.rigid import Rigid3d

    return Rigid3d.from_rotation(r, np.zeros(3)).quat_wxyz
