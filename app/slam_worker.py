"""The SLAM tab's worker: a QThread that runs ``app/slam_engine`` in a process of its own and relays it.

Messages both ways are ``scene.messages`` (no pickle).

The SLAM threads (tracking and local mapping) run Python and numba code that holds the GIL for long
stretches; in the GUI's process they stalled the event loop by up to ~90 ms. In their own process they
cannot, and the GUI thread only draws the snapshots this thread decodes for it.

The GUI thread queues commands (play, pause, step, seek, reset, finish, quit) on a pipe and receives
``SlamSnapshot`` objects. Only the latest snapshot matters, so this thread keeps one slot and pokes the GUI
thread once per slot. The run's result arrives as a ``slam.export.SlamResult`` and is written into the
shared scene here (the scene lives in this process); a later export (after Reset and another run) first
removes the images and points the previous export added.
"""
from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path
from typing import Optional

from PyQt6 import QtCore

from app.slam_engine import MIN_SNAPSHOT_INTERVAL_S, SlamSnapshot, snapshot_from_fields
from scene.messages import camera_fields, start_child, trajectory_fields

log = logging.getLogger(__name__)

__all__ = ["SlamSnapshot", "SlamWorker"]

QUIT_TIMEOUT_S = 30.0  # a frame or the last keyframes' mapping finishes well within this


class SlamWorker(QtCore.QThread):
    """Runs a SLAM engine process over a frame source; controlled through queued commands."""

    snapshot_ready = QtCore.pyqtSignal(object)  # SlamSnapshot (GUI thread, throttled)
    results_written = QtCore.pyqtSignal(dict)  # write_result's summary, after the scene was updated
    failed = QtCore.pyqtSignal(str)  # message for the user
    _poke = QtCore.pyqtSignal()

    def __init__(self, source_path, camera, scene, ground_truth=None,
                 parent: Optional[QtCore.QObject] = None, min_interval_s: float = MIN_SNAPSHOT_INTERVAL_S):
        super().__init__(parent)
        self.source_path = source_path
        self.camera = camera
        self.scene = scene
        self.ground_truth = ground_truth if ground_truth is not None and len(ground_truth) else None
        self.realtime = False
        # Write the result in the ground truth's frame (Sim(3) of the ATE), or in that of the scene's posed images.
        self.align_to_reference = True
        self._min_interval_s = min_interval_s
        self._channel = None  # to the engine, once run() has started it
        self._early_commands: list = []  # commands given before that
        self._lock = threading.Lock()
        self._quit = False
        self._latest: Optional[SlamSnapshot] = None
        self._pending = False
        self._poke.connect(self._deliver, QtCore.Qt.ConnectionType.QueuedConnection)
        self._export: Optional[dict] = None  # what the last write_result changed, to undo it on re-export
        self._process = None

    # --- commands (GUI thread) --------------------------------------------------------------
    def _command(self, name: str, *args) -> None:
        with self._lock:
            if self._quit:
                return
            if self._channel is None:
                self._early_commands.append((name, args))
                return
            try:
                self._channel.send(name, args=list(args))
            except OSError:  # the engine has ended; its failure was reported
                log.debug("SLAM engine gone; %s ignored", name)

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
        self.realtime = bool(realtime)
        self._command("realtime", self.realtime)

    def quit_worker(self) -> None:
        self._command("quit")
        with self._lock:
            self._quit = True

    @property
    def engine_pid(self) -> Optional[int]:
        """The engine process's id once it has started."""
        process = self._process
        return process.pid if process is not None else None

    # --- snapshots (GUI thread side) --------------------------------------------------------
    def latest(self) -> Optional[SlamSnapshot]:
        with self._lock:
            return self._latest

    def _deliver(self) -> None:
        with self._lock:
            snap, self._pending = self._latest, False
        if snap is not None:
            self.snapshot_ready.emit(snap)

    def _publish(self, snap: SlamSnapshot) -> None:  # worker thread
        with self._lock:
            self._latest = snap
            if self._pending:
                return
            self._pending = True
        self._poke.emit()

    # --- the relay (worker thread) ----------------------------------------------------------
    def run(self) -> None:
        try:
            process, channel = start_child("app.slam_engine")
        except OSError as exc:  # reported to the user, never lost
            log.error("SLAM engine did not start: %s", exc)
            self.failed.emit(f"the SLAM engine did not start: {exc}")
            return
        self._process = process
        exited = False
        try:
            channel.send("start", source_path=str(Path(self.source_path)), camera=camera_fields(self.camera),
                         ground_truth=trajectory_fields(self.ground_truth), realtime=self.realtime,
                         min_interval_s=self._min_interval_s, log_level=logging.getLogger().getEffectiveLevel())
            with self._lock:
                self._channel = channel
                early, self._early_commands = self._early_commands, []
                for name, args in early:  # "quit" among them when the worker was quit before it ran
                    channel.send(name, args=list(args))
            while not exited:
                if self._quitting() and not channel.poll(QUIT_TIMEOUT_S):
                    log.error("SLAM engine did not stop within %.0f s; terminated", QUIT_TIMEOUT_S)
                    break
                try:
                    kind, message = channel.recv()
                except (EOFError, OSError):
                    if not self._quitting():
                        self.failed.emit(f"the SLAM engine stopped unexpectedly (exit code {_exit_code(process)})")
                    break
                exited = self._handle_event(kind, message)
        finally:
            _end(process, 5.0 if exited else 0.1)
            with self._lock:
                self._channel = None
            channel.close()

    def _quitting(self) -> bool:
        with self._lock:
            return self._quit

    def _handle_event(self, kind: str, message: dict) -> bool:
        """Act on one engine event; True once the engine has exited."""
        if kind == "snapshot":
            self._publish(snapshot_from_fields(message))
        elif kind == "results":
            from slam.export import SlamResult

            self._write_results(SlamResult.from_fields(message["result"]), message["warning"])
        elif kind == "log":
            record = logging.makeLogRecord({"name": message["name"], "levelno": message["levelno"],
                                            "levelname": logging.getLevelName(message["levelno"]),
                                            "msg": message["message"], "exc_text": message["exc_text"]})
            logging.getLogger(record.name).handle(record)
        elif kind == "failed":
            self.failed.emit(message["message"])
        elif kind == "exited":
            return True
        return False

    def _write_results(self, result, warning: Optional[str]) -> None:
        from slam.export import write_result

        # One batch of scene events: the GUI takes one snapshot of the landed run, not one of a half-written one.
        with self.scene.events.batch():
            self._undo_previous_export()
            if self.align_to_reference:
                result = self._in_reference_frame(result)
            points_before, images_before = self.scene.points, dict(self.scene.images)
            named_before = _named_values(self.scene)
            summary = write_result(result, self.scene)
        # Keyframes take new image ids, or the ids of the frames the scene held bare: a re-export removes the
        # first and gives the second back as they were, so no frame the user opened leaves the scene.
        taken = summary["keyframe_image_ids"]
        self._export = {"added_image_ids": [i for i in taken if i not in images_before],
                        "replaced_images": [images_before[i] for i in taken if i in images_before],
                        "points_before": points_before, "points_after": self.scene.points,
                        "named_before": named_before, "named_after": _named_values(self.scene)}
        log.info("SLAM results written to the scene: %d keyframes, %d points, %d trajectory poses",
                 summary["images"], summary["points"], summary["trajectory_poses"])
        if warning:  # the map stays in the scene to look at; the CLI refuses to write it
            log.warning("SLAM: %s", warning)
        self.results_written.emit(summary)

    def _in_reference_frame(self, result):
        """The result in the ground truth's frame, else in the frame of the scene's registered images of the
        same frames (a model opened with them), else as it is."""
        from slam.export import registered_frames_alignment, transformed

        if self.ground_truth is not None:
            return self._in_ground_truth_frame(result)
        alignment = registered_frames_alignment(result, self.scene)
        if alignment is None:
            return result
        log.info("SLAM: the result was moved into the frame of the scene's posed images of the same frames by a "
                 "Sim(3) (scale %.4g)", alignment.scale)
        return transformed(result, alignment)

    def _in_ground_truth_frame(self, result):
        from geometry.metrics import sim3_ate
        from slam.export import result_trajectory, transformed

        errors = sim3_ate(result_trajectory(result), self.ground_truth)
        if errors is None:
            log.warning("SLAM: the result stays in the SLAM frame: too few of its poses match the ground truth "
                        "in time to align it")
            return result
        a = errors.alignment
        log.info("SLAM: the result was moved into the ground truth's frame by a Sim(3) (scale %.4g); "
                 "ATE %.4g over %d poses", a.scale, errors.rmse, len(errors.errors))
        return transformed(result, a)

    def _undo_previous_export(self) -> None:
        previous, self._export = self._export, None
        if previous is None:
            return
        self.scene.remove_images(previous["added_image_ids"])
        if previous["replaced_images"]:
            self.scene.add_images(previous["replaced_images"])
        if self.scene.points is previous["points_after"]:  # nobody replaced them since
            self.scene.set_points(previous["points_before"])
        # The trajectory and cloud the write set go too: a next run that writes none leaves none of this one's.
        scene = self.scene
        for (name, table, put, remove), before, after in zip(_named_outputs(scene), previous["named_before"],
                                                             previous["named_after"]):
            if after is before or table.get(name) is not after:  # this write set none, or it was replaced since
                continue
            if before is None:
                remove(name)
            else:
                put(name, before)


def _named_outputs(scene) -> tuple:
    """(name, table, setter, remover) of the trajectory and the cloud a SLAM write sets."""
    from slam.export import CLOUD_NAME, TRAJECTORY_NAME

    return ((TRAJECTORY_NAME, scene.trajectories, scene.set_trajectory, scene.remove_trajectory),
            (CLOUD_NAME, scene.clouds, scene.set_cloud, scene.remove_cloud))


def _named_values(scene) -> list:
    return [table.get(name) for name, table, _, _ in _named_outputs(scene)]


def _exit_code(process: subprocess.Popen):
    try:
        return process.wait(5.0)
    except subprocess.TimeoutExpired:
        return None


def _end(process: subprocess.Popen, timeout_s: float) -> None:
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5.0)
