"""The SLAM tab's worker: a QThread that runs ``app/slam_engine`` in a process of its own and relays it.

The SLAM threads (tracking and local mapping) run Python and numba code that holds the GIL for long
stretches; in the GUI's process they stalled the event loop by up to ~90 ms. In their own process they
cannot, and the GUI thread only unpickles the snapshots this thread hands it.

The GUI thread queues commands (play, pause, step, seek, reset, finish, quit) on a pipe and receives
``SlamSnapshot`` objects. Only the latest snapshot matters, so this thread keeps one slot and pokes the GUI
thread once per slot. The run's result arrives as a ``slam.export.SlamResult`` and is written into the
shared scene here (the scene lives in this process); a later export (after Reset and another run) first
removes the images and points the previous export added.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
from typing import Optional

from PyQt6 import QtCore

from app.slam_engine import MIN_SNAPSHOT_INTERVAL_S, SlamSnapshot, run_engine

log = logging.getLogger(__name__)

__all__ = ["SlamSnapshot", "SlamWorker"]

QUIT_TIMEOUT_S = 30.0  # a frame or the last keyframes' mapping finishes well within this


class SlamWorker(QtCore.QThread):
    """Runs a SLAM engine process over a frame source; controlled through queued commands."""

    snapshot_ready = QtCore.pyqtSignal(object)  # SlamSnapshot (GUI thread, throttled)
    results_written = QtCore.pyqtSignal(dict)  # write_result's summary, after the scene was updated
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
        self._min_interval_s = min_interval_s
        # spawn, not fork: this process runs Qt and other threads, which a forked child would inherit broken.
        self._context = multiprocessing.get_context("spawn")
        self._engine_commands, self._commands = self._context.Pipe(duplex=False)
        self._lock = threading.Lock()
        self._quit = False
        self._latest: Optional[SlamSnapshot] = None
        self._pending = False
        self._poke.connect(self._deliver, QtCore.Qt.ConnectionType.QueuedConnection)
        self._export: Optional[dict] = None  # what the last write_result added, to undo it on re-export
        self._process = None

    # --- commands (GUI thread) --------------------------------------------------------------
    def _command(self, name: str, *args) -> None:
        with self._lock:
            if self._quit:
                return
            try:
                self._commands.send((name, args))
            except (BrokenPipeError, OSError):  # the engine has ended; its failure was reported
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
        self._command("realtime", bool(realtime))

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
        events, engine_events = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=run_engine, name="parallax-slam", daemon=True,
            args=(self._engine_commands, engine_events, self.source_path, self.camera, self.ground_truth,
                  self.options, self.realtime, self._min_interval_s, logging.getLogger().getEffectiveLevel()))
        self._process = process
        try:
            process.start()
        except Exception as exc:  # noqa: BLE001 - reported to the user, never lost
            log.error("SLAM engine did not start: %s", exc)
            self.failed.emit(f"the SLAM engine did not start: {type(exc).__name__}: {exc}")
            return
        engine_events.close()  # the engine holds its own copies of both ends it uses
        self._engine_commands.close()
        exited = False
        try:
            while not exited:
                if self._quitting() and not events.poll(QUIT_TIMEOUT_S):
                    log.error("SLAM engine did not stop within %.0f s; terminated", QUIT_TIMEOUT_S)
                    break
                try:
                    kind, payload, *extra = events.recv()
                except EOFError:
                    if not self._quitting():
                        process.join(5.0)
                        self.failed.emit(f"the SLAM engine stopped unexpectedly (exit code {process.exitcode})")
                    break
                exited = self._handle_event(kind, payload, *extra)
        finally:
            process.join(5.0 if exited else 0.1)
            if process.is_alive():
                process.terminate()
                process.join(5.0)
            events.close()
            self._commands.close()

    def _quitting(self) -> bool:
        with self._lock:
            return self._quit

    def _handle_event(self, kind: str, payload, *extra) -> bool:
        """Act on one engine event; True once the engine has exited."""
        if kind == "snapshot":
            self._publish(payload)
        elif kind == "results":
            self._write_results(payload, extra[0] if extra else None)
        elif kind == "log":
            logging.getLogger(payload.name).handle(payload)
        elif kind == "failed":
            self.failed.emit(payload)
        elif kind == "exited":
            return True
        return False

    def _write_results(self, result, warning: Optional[str]) -> None:
        from slam.export import write_result

        self._undo_previous_export()
        points_before = self.scene.points
        summary = write_result(result, self.scene)
        self._export = {"image_ids": list(range(summary["first_image_id"], summary["first_image_id"]
                                                + summary["images"])),
                        "points_before": points_before, "points_after": self.scene.points}
        log.info("SLAM results written to the scene: %d keyframes, %d points, %d trajectory poses",
                 summary["images"], summary["points"], summary["trajectory_poses"])
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
