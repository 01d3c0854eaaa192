"""The SLAM tab's engine: it owns the ``slam.System`` and the FrameSource and runs ``step()``.

It runs in a process of its own (``python -m app.slam_engine``, started by ``app/slam_worker.SlamWorker``),
so the SLAM threads never hold the GUI process's GIL: the window stays responsive however busy tracking and
local mapping are. No Qt here. The first message is "start" (source, camera, ground truth, settings); then
commands (play, pause, step, seek, reset, finish, realtime, quit) arrive, and events go back, all as
pickle-free ``scene.messages``:

- "snapshot": a ``SlamSnapshot``'s fields, immutable, self-contained copies of what the tab draws, at most
  every ``min_interval_s`` during Play (a step, pause, seek target or end of the run always sends one);
- "results": the run's ``SlamResult`` fields and the focal check's warning (the GUI process owns the scene);
- "log": this process's log records, re-logged in the GUI process;
- "failed" (a message for the user) and finally "exited".

Play and forward seeks run local mapping on its own thread (``System.set_background_mapping``); Step,
Pause and the end of the run switch back to synchronous mapping, which first finishes the queued keyframes.
Snapshots read the map under ``System.reading()``.

Seeking: forward = process every frame up to the target as fast as possible (SLAM cannot skip frames);
backward = reset the system and replay from the first frame. When the source ends, or on ``finish``, the
result is sent for the scene.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np

from app.slam_run import intrinsics_warning
from scene.messages import camera_from_fields, child_channel, trajectory_from_fields

log = logging.getLogger(__name__)

MIN_SNAPSHOT_INTERVAL_S = 0.05  # <= 20 redraws a second
DISPLAY_MAX_WIDTH = 480  # the frame is shrunk for display here; keypoints stay in source pixels
MAX_OVERLAY_POINTS = 20000  # map points drawn live (a random but stable subset beyond this)
MIN_POSES_FOR_ALIGNMENT = 5
WARM_UP_FRAMES = 20  # enough for initialisation and a few mapped keyframes on the demo orbit
ENGINE_NICENESS = 10  # the engine process's priority below the GUI's (os.nice increment)
NOMINAL_FPS = 30.0  # the "Real time" pace of frames whose source has no clock


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
    track_ms: float  # median step time over the last ~second of processing
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


def snapshot_fields(snap: SlamSnapshot) -> dict:
    return {f.name: getattr(snap, f.name) for f in fields(snap)}


def snapshot_from_fields(f: dict) -> SlamSnapshot:
    return SlamSnapshot(**{**f, "image_size": tuple(f["image_size"])})


class _PipeLogHandler(logging.Handler):
    """Sends this process's log records to the GUI process (the message formatted here)."""

    def __init__(self, send):
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = logging.Formatter().formatException(record.exc_info) if record.exc_info else None
            self._send("log", name=record.name, levelno=record.levelno, message=record.getMessage(),
                       exc_text=exc_text)
        except Exception:  # noqa: BLE001 - logging must never take the engine down
            self.handleError(record)


class GuiSender:
    """``send(kind, **fields)`` to the GUI process, one message at a time (the mapping thread logs too). Once
    the GUI has gone (its window closed mid-Play), sending does nothing: the engine ends at its next look at
    the command pipe, which reads end-of-file, instead of dying with a BrokenPipeError traceback."""

    def __init__(self, channel):
        self._channel = channel
        self._lock = threading.Lock()
        self.gui_gone = False

    def __call__(self, kind: str, **message) -> None:
        with self._lock:
            if self.gui_gone:
                return
            try:
                self._channel.send(kind, **message)
            except OSError:
                self.gui_gone = True


def main(argv: list[str]) -> None:
    """The engine process (``python -m app.slam_engine READ_FD WRITE_FD``): serve commands until "quit" or
    until the GUI process goes away."""
    channel = child_channel(argv)
    send = GuiSender(channel)
    _lower_priority()
    _, start = channel.recv()
    root = logging.getLogger()
    root.handlers[:] = [_PipeLogHandler(send)]
    root.setLevel(start["log_level"])
    engine = SlamEngine(start["source_path"], camera_from_fields(start["camera"]),
                        trajectory_from_fields(start["ground_truth"]), send, start["realtime"],
                        start["min_interval_s"])
    try:
        engine.serve(channel)
    finally:
        send("exited")
        channel.close()


def _lower_priority() -> None:
    """Yield the CPU to the GUI: with tracking and mapping busy on both cores, an equal-priority GUI thread
    waited for a time slice (measured: event-loop gaps up to 40 ms); the window comes first."""
    try:
        os.nice(ENGINE_NICENESS)
    except (AttributeError, OSError):  # not on this platform, or not allowed: run at normal priority
        log.debug("SLAM engine runs at normal priority")


class SlamEngine:
    """Runs a SLAM system over a frame source; ``serve`` reads commands from a pipe until "quit"."""

    def __init__(self, source_path, camera, ground_truth, send, realtime: bool = False,
                 min_interval_s: float = MIN_SNAPSHOT_INTERVAL_S):
        self.source_path = source_path
        self.camera = camera
        self.ground_truth = ground_truth if ground_truth is not None and len(ground_truth) else None
        self.realtime = bool(realtime)
        self._send = send
        self._min_interval_s = min_interval_s
        self._last_sent = 0.0
        self._commands = None
        self._playing = False
        self._target: Optional[int] = None  # seek target (frame index to reach, inclusive)
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
        self._ahead = None  # (index, frame) read ahead in Play
        self._clock_anchor: Optional[tuple[float, float]] = None  # (wall time, source timestamp)

    def serve(self, commands) -> None:
        self._commands = commands
        try:
            from scene.io.sources import open_source

            self.source = open_source(self.source_path)
            self._warm_up()
            self._new_system()
            self._publish(self._snapshot())
            while True:
                busy = self._playing or self._target is not None
                if commands.poll(0 if busy else None):
                    try:
                        name, command = commands.recv()
                    except EOFError:  # the GUI process is gone
                        return
                    if name == "quit":
                        return
                    self._handle(name, *command.get("args", ()))
                elif busy:
                    self._advance()
        except Exception as exc:  # noqa: BLE001 - reported to the user, never lost
            log.error("SLAM worker failed:\n%s", traceback.format_exc().rstrip())
            self._send("failed", message=f"{type(exc).__name__}: {exc}")
        finally:
            if self.system is not None:
                try:
                    self.system.close()
                except Exception as exc:  # noqa: BLE001 - a mapping failure after the loop ended: reported
                    log.error("SLAM mapping thread failed: %s", exc)
                    self._send("failed", message=f"{type(exc).__name__}: {exc}")
            if self.source is not None:
                self.source.close()

    def _publish(self, snap: SlamSnapshot) -> None:
        self._last_sent = time.monotonic()
        self._send("snapshot", **snapshot_fields(snap))

    def _warm_up(self) -> None:
        """Load every SLAM kernel before the first Play (``slam.warm_up``): numba's first call of a kernel in a
        process loads it (tens of ms each), which would otherwise show as a stall in the first Play."""
        from slam.warm_up import warm_up

        frames = [self.source.read(i).image for i in range(min(len(self.source), WARM_UP_FRAMES))]
        warm_up(self.camera, frames)

    def _new_system(self) -> None:
        from slam.system import System

        if self.system is not None:
            self.system.close()
        self.system = System(self.camera)
        self.system.prepare_play()  # Play's extraction process starts while the user looks at the tab
        self._next_index = 0
        self._finished = False
        self._history_frames, self._history_tracked = [], []
        self._ate_frames, self._ate_rmse = [], []
        self._step_times.clear()
        self._last_result = None
        self._last_image = None
        self._ahead = None
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
        if self._playing and self.realtime and self._wait_for_frame_time():
            return  # a command came first: handle it
        self._process_next()
        if self._target is not None and self._next_index > self._target:
            self._target = None
            if not self._playing:
                self.system.set_background_mapping(False)
            self._publish(self._snapshot())
            return
        now = time.monotonic()
        if now - self._last_sent >= self._min_interval_s:
            self._publish(self._snapshot())
        if self._next_index >= len(self.source):
            self._end_of_source()

    def _wait_for_frame_time(self) -> bool:
        """Wait until the next frame is due on the source's clock; True when a command arrived meanwhile."""
        timestamp = self.source.frame_refs()[self._next_index].timestamp
        if timestamp is None or not self.source.has_clock:  # a folder of images: paced as a 30 fps video
            timestamp = self._next_index / NOMINAL_FPS
        timestamp = float(timestamp)
        now = time.monotonic()
        if self._clock_anchor is None:
            self._clock_anchor = (now, timestamp)
            return False
        due = self._clock_anchor[0] + (timestamp - self._clock_anchor[1])
        return due > now and self._commands.poll(min(due - now, 1.0))

    def _process_next(self) -> None:
        if self._next_index >= len(self.source):
            return
        frame = self._read(self._next_index)
        # Play reads one frame ahead: the extraction process works on it while this frame is tracked.
        self._ahead = self._read_ahead(self._next_index + 1) if self.system.background_mapping else None
        t0 = time.perf_counter()
        result = self.system.step(frame.image, frame.timestamp, ref=frame.ref,
                                  next_image=None if self._ahead is None else self._ahead[1].image)
        self._step_times.append((time.perf_counter(), time.perf_counter() - t0))
        self._last_result = result
        self._last_image = frame.image
        self._history_frames.append(self._next_index)
        self._history_tracked.append(int(result.num_tracked))
        self._next_index += 1

    def _read(self, index: int):
        if self._ahead is not None and self._ahead[0] == index:
            return self._ahead[1]
        return self.source.read(index)

    def _read_ahead(self, index: int):
        """(index, frame), or None past the end or where the frame cannot be read (its own turn reports it)."""
        if index >= len(self.source):
            return None
        try:
            return index, self.source.read(index)
        except Exception:  # noqa: BLE001 - read again, and reported, when the frame's turn comes
            return None

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
        result = self.system.result()
        warning = intrinsics_warning(self.system.check_intrinsics(), self.system.camera, None)
        self._send("results", result=result.to_fields(), warning=warning)

    # --- snapshot building ----------------------------------------------------------------------
    def _recent_steps(self) -> list[tuple[float, float]]:
        """(end time, seconds) of the steps that ended within the last second of processing."""
        times = list(self._step_times)
        return [t for t in times if times[-1][0] - t[0] <= 1.0] if times else []

    def _fps(self) -> float:
        recent = self._recent_steps()
        if len(recent) < 2:
            return 0.0
        span = recent[-1][0] - recent[0][0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def _step_ms(self) -> float:
        """Median step time over the last second: a keyframe's mapping or a loop closure shows in it
        without making the number jump from frame to frame."""
        recent = self._recent_steps()
        return 1000.0 * float(np.median([d for _, d in recent])) if recent else 0.0

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
        """gt_from_est Sim(3) over the tracked frames so far, and the ATE RMSE; (None, None) when not possible
        (too few matches or a degenerate path so far: the raw map is shown)."""
        if self.ground_truth is None or len(timestamps) < MIN_POSES_FOR_ALIGNMENT:
            return None, None
        from geometry.lie import rotation_to_quat_wxyz
        from geometry.metrics import sim3_ate
        from scene.model import Trajectory

        est = Trajectory(np.asarray(timestamps, np.float64), rotation_to_quat_wxyz(np.asarray(rots, np.float64)),
                         np.asarray(centers, np.float64))
        result = sim3_ate(est, self.ground_truth, MIN_POSES_FOR_ALIGNMENT)
        if result is None:
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
            if result.rotation_only:
                reason = "posed by rotation alone: the map is out of view and the turn shows no parallax " \
                         "(position held while tracking; solved from the whole run when it is written)"
            ms = self._step_ms()
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


if __name__ == "__main__":
    # Run main from the module under its own name (loggers and classes named app.slam_engine, not __main__).
    from app.slam_engine import main as _main

    _main(sys.argv[1:])
