"""The PARENT side of training (no torch here): prepare the dataset, write run.json, spawn and watch the child.

run.json (RunLayout.record) holds: schema, parallax/nerfstudio versions, preset, device (requested, then the
one used), status (created | training | stopped | finished | failed), steps (iterations done),
target_iterations, last metrics, message, created/updated times, the dataset summary. The parent writes it
only while no child runs; the child writes it while it trains.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from nerf.dataset import prepare_dataset
from nerf.device import DEVICES
from nerf.layout import RUN_SCHEMA, RunLayout
from nerf.presets import DEFAULT_PRESET, get_preset
from scene.atomic import atomic_write_text
from scene.errors import CorruptInput, ParallaxError, SchemaTooNew
from scene.model import NerfRun, Scene

FINAL_EVENTS = ("done", "stopped", "error")
STATUS_OF_EVENT = {"done": "finished", "stopped": "stopped", "error": "failed"}
PROJECT_ROOT = Path(__file__).resolve().parents[1]
UNLIMITED_ITERATIONS = 10 ** 7  # a minutes budget with no iteration cap


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


# --- run.json --------------------------------------------------------------------------------------

def read_record(layout: RunLayout) -> dict:
    """run.json, checked: a newer schema (another Parallax version wrote it) raises SchemaTooNew."""
    try:
        record = layout.read_record()
    except FileNotFoundError:
        raise ParallaxError(f"{layout.root}: not a NeRF run folder (no run.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptInput(f"{layout.record}: cannot read the run record ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("schema"), int):
        raise CorruptInput(f"{layout.record}: not a Parallax run record (no integer 'schema')")
    if record["schema"] > RUN_SCHEMA:
        raise SchemaTooNew(f"{layout.record}: run folder written by a newer Parallax "
                           f"({record.get('parallax_version', '?')}, run schema {record['schema']}; this version "
                           f"reads schema {RUN_SCHEMA}). Upgrade Parallax or train into a new folder; "
                           "nothing was changed")
    return record


def write_record(layout: RunLayout, record: dict) -> None:
    atomic_write_text(layout.record, json.dumps(record, indent=1, allow_nan=False, default=float) + "\n")


def default_threads() -> int:
    """Both cores when idle, but never more than 4 (OpenMP gains little beyond on these models)."""
    return max(1, min(4, os.cpu_count() or 1))


# --- the handle --------------------------------------------------------------------------------------

class TrainingHandle:
    """A running child. Events arrive from a reader thread; poll()/events() hand them out."""

    def __init__(self, process: subprocess.Popen, layout: RunLayout, target: int):
        self.process = process
        self.layout = layout
        self.target = target
        self.last: dict = {}           # the latest event of each kind
        self.final: dict | None = None
        self.stop_requested = False
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="nerf-train-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # not ours: the child routes library output to stderr, so this is rare
            self.last[event.get("event")] = event
            if event.get("event") in FINAL_EVENTS:
                self.final = event
            self._queue.put(event)
        code = self.process.wait()
        if self.final is None:  # killed (OOM killer, crash): say so in run.json and to readers
            step = (self.last.get("step") or {}).get("step", 0)
            if self.stop_requested and code == -signal.SIGTERM:
                kind, status, message = "stopped", "stopped", "stopped before training started"
            else:
                kind, status, message = "error", "failed", self._died_message(code)
            self.final = {"event": kind, "step": step, "message": message}
            try:
                record = read_record(self.layout)
                record.update(status=status, message=message, updated=time.time())
                write_record(self.layout, record)
            except (OSError, ParallaxError, ValueError):
                pass
            self._queue.put(self.final)
        self._queue.put(None)

    def _died_message(self, code: int) -> str:
        how = (f"was killed by signal {-code}" + (" (probably out of memory)" if code == -signal.SIGKILL else "")
               if code < 0 else f"exited with code {code} without a final report")
        kept = self.layout.checkpoints()
        tail = f"; last checkpoint kept: {kept[-1].name}" if kept else ""
        return f"the training process {how}; see {self.layout.train_log}{tail}"

    def poll(self) -> list[dict]:
        """Events that arrived since the last call (never blocks)."""
        out = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return out
            if event is None:
                self._queue.put(None)  # keep the end marker for events()
                return out
            out.append(event)

    def events(self, timeout: float | None = None):
        """Yield events until the child has exited and every event was handed out."""
        while True:
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                return
            if event is None:
                self._queue.put(None)
                return
            yield event

    def stop(self) -> None:
        """Ask for a graceful stop: the child finishes the current step and saves a checkpoint.

        The stop file works at any time; SIGTERM (which also interrupts a long setup) is sent only once the
        child has reported "start", i.e. after it installed its handler.
        """
        self.stop_requested = True
        try:
            self.layout.stop_request.touch()
        except OSError:
            pass
        if "start" in self.last and self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    @property
    def finished(self) -> bool:
        """True once the child has exited and its last event is queued (poll() then returns the rest)."""
        return not self._reader.is_alive()

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def status(self) -> str:
        if self.final is not None:
            return STATUS_OF_EVENT[self.final["event"]]
        return "training" if "start" in self.last else "created"


# --- starting ---------------------------------------------------------------------------------------

def start_training(source, run_dir, preset: str | None = None, iterations: int | None = None,
                   minutes: float | None = None, device: str = "auto", resume: bool = False,
                   env: dict | None = None, threads: int | None = None, max_size: int | None = None,
                   background: str = "auto", rays_per_batch: int | None = None, progress=None) -> TrainingHandle:
    """Prepare (or, resuming, reuse) the run folder and spawn the training child.

    ``iterations`` is the total target (a resumed run keeps its target unless given); ``minutes`` a time
    budget for this session. ``max_size``/``background``/``rays_per_batch`` override the preset.
    Every check that can fail on user input runs before the child starts, and before anything is written.
    """
    layout = RunLayout.at(Path(run_dir).expanduser())
    if device not in DEVICES:
        raise ParallaxError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if iterations is not None and int(iterations) <= 0:
        raise ParallaxError(f"iterations must be positive, got {iterations}")
    if minutes is not None and not float(minutes) > 0:
        raise ParallaxError(f"minutes must be positive, got {minutes}")
    if get_preset(preset or DEFAULT_PRESET).requires_cuda:  # only then is torch worth loading here
        from nerf.device import check_preset_device, resolve_device

        check_preset_device(preset, resolve_device(device))
    existing = read_record(layout) if layout.record.exists() else None
    now = time.time()
    if resume:
        if existing is None or not layout.checkpoints():
            raise ParallaxError(f"{layout.root}: no checkpoint to resume from; start a new run instead")
        if preset is not None and preset != existing["preset"]:
            raise ParallaxError(f"{layout.root} was trained with preset {existing['preset']!r}; it cannot resume "
                                f"as {preset!r}")
        record = dict(existing)
        if iterations is not None:
            record["target_iterations"] = int(iterations)
        elif minutes is not None:
            record["target_iterations"] = max(int(record["target_iterations"]), UNLIMITED_ITERATIONS)
        if record.get("steps", 0) >= record["target_iterations"]:
            raise ParallaxError(f"{layout.root} already trained {record['steps']} of {record['target_iterations']} "
                                "iterations; give a larger --iterations to continue")
    else:
        spec = get_preset(preset or DEFAULT_PRESET)
        if layout.checkpoints():
            raise ParallaxError(f"{layout.root} already holds a trained run ({layout.checkpoints()[-1].name}); "
                                "resume it or choose another folder (nothing was changed)")
        info = prepare_dataset(source, layout.dataset_dir, max_size=max_size or spec.max_size,
                               background=background, progress=progress)
        target = int(iterations) if iterations else (UNLIMITED_ITERATIONS if minutes else spec.iterations)
        record = {"schema": RUN_SCHEMA, "parallax_version": _version("parallax3d"),
                  "nerfstudio_version": _version("nerfstudio"), "preset": spec.name, "method": spec.name,
                  "device": device, "requested_device": device, "status": "created", "steps": 0,
                  "target_iterations": target, "metrics": {}, "message": "", "created": now,
                  "source": str(source) if not isinstance(source, Scene) else "scene",
                  "dataset": info.as_json(), "rays_per_batch": rays_per_batch}
    record.update(requested_device=device, device=device, session_minutes=float(minutes) if minutes else None,
                  updated=now, threads=int(threads or default_threads()))
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.stop_request.unlink(missing_ok=True)
    write_record(layout, record)

    child_env = dict(os.environ)
    child_env.update({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(record["threads"]),
                      "MKL_NUM_THREADS": str(record["threads"]), "PYTHONUNBUFFERED": "1",
                      # glibc: keep freed tensor memory in the heap. By default every tensor over 32 MB is
                      # mmapped and unmapped each step (~1 M page faults, ~30 % of a CPU step on lego).
                      "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36),
                      "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))
                                                    if p)})
    child_env.update(env or {})
    command = [sys.executable, "-m", "nerf.train_process", "--run-dir", str(layout.root)]
    if resume:
        command.append("--resume")
    log = open(layout.train_log, "ab")
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                   env=child_env, cwd=str(PROJECT_ROOT), text=True, encoding="utf-8",
                                   start_new_session=True)  # a terminal's Ctrl+C reaches the parent only
    finally:
        log.close()
    return TrainingHandle(process, layout, int(record["target_iterations"]))


# --- the scene's record ---------------------------------------------------------------------------------

def record_run(scene: Scene, run_dir, project_dir=None) -> NerfRun:
    """Add or update the scene's NerfRun for ``run_dir`` (named after the folder).

    ``checkpoint_dir`` is the run folder relative to the project's ``nerf/`` folder when it lies inside it
    (what project files accept); otherwise it stays empty and metrics["run_dir"] holds the absolute path.
    """
    layout = RunLayout.at(Path(run_dir).expanduser())
    record = read_record(layout)
    metrics = dict(record.get("metrics") or {})
    metrics.update(steps=record.get("steps", 0), target_iterations=record.get("target_iterations"),
                   device=record.get("device"))
    checkpoint_dir = ""
    root = layout.root.resolve()
    if project_dir is not None and root.is_relative_to((Path(project_dir) / "nerf").resolve()):
        checkpoint_dir = root.relative_to((Path(project_dir) / "nerf").resolve()).as_posix()
    else:
        metrics["run_dir"] = str(root)
    name = layout.root.name
    run = scene.nerf_runs.get(name)
    run = (replace(run, preset=record["preset"], status=record["status"], checkpoint_dir=checkpoint_dir,
                   metrics=metrics) if run is not None else
           NerfRun(name, record["preset"], record["status"], checkpoint_dir, metrics))
    scene.set_nerf_run(run)
    return run
