"""`parallax slam`: run the SLAM core over a source and write a project, a TUM trajectory and statistics.

Plain code (no Qt): the CLI calls it; the GUI has its own stepping worker.
"""
from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np

from scene.errors import ParallaxError

log = logging.getLogger(__name__)


class _FirstFrames:
    """The first ``limit`` frames of a FrameSource, with the length System.run reports against."""

    def __init__(self, source, limit: int):
        self._source, self._limit = source, limit

    def __len__(self) -> int:
        return min(len(self._source), self._limit)

    def __iter__(self):
        return itertools.islice(iter(self._source), self._limit)


def slam_statistics(summary, system) -> dict:
    """The JSON `--stats` of issue 3 (times in ms, total in s)."""
    times = np.asarray(summary.tracking_ms, dtype=np.float64)
    return {
        "frames": summary.frames,
        "tracked": summary.tracked,
        "rotation_only_frames": summary.rotation_only,
        "initialized_at_frame": summary.initialized_at_frame,
        "keyframes": summary.keyframes,
        "map_points": summary.map_points,
        "loop_closures": system.loop_closures,
        "tracking_ms_median": float(np.median(times)) if len(times) else 0.0,
        "tracking_ms_p95": float(np.percentile(times, 95)) if len(times) else 0.0,
        "total_s": summary.total_s,
        "stopped": summary.stopped,
    }


def _intrinsics_origin(camera, origin) -> str:
    """Where the intrinsics came from, for messages: ``origin`` (from scene.io.calibration's
    resolve_intrinsics_with_origin), else the camera's source."""
    return f"from {origin}" if origin else f"({camera.intrinsics_source})"


def _initialisation_advice(camera, origin) -> str:
    """What to check when initialisation keeps failing: motion and texture first, then the intrinsics."""
    return (f"not enough camera motion or texture, or wrong intrinsics {_intrinsics_origin(camera, origin)}: "
            f"{camera.describe()}; "
            "check the calibration (--calib) matches this camera and resolution")


def intrinsics_warning(check, camera, origin) -> str:
    """The message for a ``slam.intrinsics_check.FocalCheck`` that found the focal length far off ('' if not)."""
    if check is None or not check.suspicious:
        return ""
    fx, fy = camera.focal_xy
    return (f"the intrinsics {_intrinsics_origin(camera, origin)} look wrong: bundle adjustment over the first {check.keyframes} keyframes "
            f"prefers a focal length {check.focal_ratio:.2f}x the given one (about fx={fx * check.focal_ratio:.0f}, "
            f"fy={fy * check.focal_ratio:.0f} instead of fx={fx:g}, fy={fy:g}; reprojection RMS "
            f"{check.rms_given_px:.2f} px -> {check.rms_free_px:.2f} px); "
            + ("pass this camera's calibration (--calib)" if camera.is_guess
               else "check the calibration file matches this camera and resolution"))


def run_slam_command(source_path, output, calib=None, max_frames=None, trajectory=None, stats_path=None,
                     progress=None, loop_closure: bool = True, intrinsics_check: bool = True) -> dict:
    """Run SLAM over a source; ``loop_closure=False`` is ``--no-loop-closure``; ``intrinsics_check=False``
    (``--no-intrinsics-check``) writes the result even when the map says the focal length is far off."""
    from scene.atomic import atomic_write_text
    from scene.io.calibration import resolve_intrinsics_with_origin
    from scene.io.sources import open_source
    from scene.io.trajectory_io import read_trajectory, write_trajectory
    from scene.model import Scene
    from scene.project import save_project
    from slam.loop_closing import LoopOptions
    from slam.system import SlamOptions, System

    if max_frames is not None and max_frames < 2:
        raise ParallaxError(f"--max-frames must be at least 2, got {max_frames}")
    source = open_source(Path(source_path))
    camera, origin = resolve_intrinsics_with_origin(source, calib_path=calib)
    frames = _FirstFrames(source, max_frames) if max_frames else source
    system = System(camera, SlamOptions(loop=LoopOptions(enabled=bool(loop_closure))))
    summary = system.run(frames, progress=progress)
    if summary.initialized_at_frame is None:
        raise ParallaxError(f"{source_path}: SLAM did not initialise in {summary.frames} frames: "
                            f"{_initialisation_advice(camera, origin)}; nothing was written")
    check = system.check_intrinsics()
    warning = intrinsics_warning(check, camera, origin)
    if warning and intrinsics_check and not camera.is_guess:
        raise ParallaxError(f"{source_path}: {warning}; nothing was written (--no-intrinsics-check writes it "
                            "anyway)")
    if warning:  # a guess was never a claim about the camera: the run is written, with the hint
        log.warning("%s: %s", source_path, warning)

    scene = Scene()
    scene.add_source({"path": str(source_path), "layout": source.layout, "frames": len(source),
                      "width": source.size[0], "height": source.size[1]})
    gt_path = source.ground_truth_path()
    if gt_path is not None:
        scene.set_trajectory("ground_truth", read_trajectory(gt_path))
    system.to_scene(scene)
    save_project(scene, output)
    if trajectory:
        write_trajectory(trajectory, scene.trajectories["slam"], "tum")
    stats = slam_statistics(summary, system)
    stats["focal_ratio_preferred"] = check.focal_ratio if check is not None else None
    if stats_path:
        atomic_write_text(stats_path, json.dumps(stats, indent=2))
    return stats
