"""`make bench`: Parallax against the reference tools in one run; writes BENCHMARKS.md.

Foundation benchmarks: COLMAP model I/O against pycolmap, trajectory metrics against evo,
project save/load, the demo-scene renderer, and the SLAM benchmark (bench/slam_bench.py: Parallax SLAM
against the OpenCV VO baseline and pycolmap; `--only slam` reruns just that section). Every number is the
median of --runs runs; ratios compare timings taken in the same run on the same machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def median_times(fn, runs: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(runs))


# --- COLMAP I/O ----------------------------------------------------------------------------

def bench_colmap_io(runs: int, work: Path) -> list[dict]:
    import zlib  # noqa: F401  -- must precede pycolmap: the reverse order breaks later zlib use (numba cache)

    import pycolmap

    from scene.io.colmap import read_colmap_model, write_colmap_model

    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs = 1
    options.num_cameras_per_rig = 1
    options.num_frames_per_rig = 150
    options.num_points3D = 30000
    options.camera_model_id = pycolmap.CameraModelId.OPENCV
    options.camera_params = [800.0, 810.0, 500.0, 380.0, 0.01, -0.02, 0.001, 0.0005]
    rec = pycolmap.synthesize_dataset(options)
    observations = sum(p.track.length() for p in rec.points3D.values())
    rows = []
    for binary in (True, False):
        kind = "binary" if binary else "text"
        theirs_dir, ours_dir = work / f"pycolmap_{kind}", work / f"parallax_{kind}"
        theirs_dir.mkdir(exist_ok=True)
        ours_dir.mkdir(exist_ok=True)
        write_theirs = rec.write_binary if binary else rec.write_text
        t_write_theirs = median_times(lambda: write_theirs(str(theirs_dir)), runs)
        t_read_theirs = median_times(lambda: pycolmap.Reconstruction(str(theirs_dir)), runs)
        scene = read_colmap_model(theirs_dir)
        t_read_ours = median_times(lambda: read_colmap_model(theirs_dir), runs)
        t_write_ours = median_times(lambda: write_colmap_model(scene, ours_dir, binary=binary), runs)
        check = pycolmap.Reconstruction(str(ours_dir))
        assert check.num_points3D() == rec.num_points3D() and check.num_reg_images() == rec.num_reg_images()
        rows.append({"what": f"COLMAP {kind} read ({rec.num_reg_images()} images, {rec.num_points3D()} points, "
                             f"{observations} observations)", "parallax_s": t_read_ours, "reference_s": t_read_theirs,
                     "reference": "pycolmap"})
        rows.append({"what": f"COLMAP {kind} write", "parallax_s": t_write_ours, "reference_s": t_write_theirs,
                     "reference": "pycolmap"})
    return rows


# --- trajectory metrics ----------------------------------------------------------------------

def bench_metrics(runs: int) -> tuple[list[dict], dict]:
    from evo.core import metrics as evo_metrics
    from evo.core import sync
    from evo.core.trajectory import PoseTrajectory3D
    from scipy.spatial.transform import Rotation

    from geometry.metrics import ate, rpe
    from scene.model import Trajectory

    rng = np.random.default_rng(0)
    n = 20000
    stamps = np.arange(n) * 0.05
    centres = np.cumsum(rng.normal(scale=0.1, size=(n, 3)), axis=0)
    rot = Rotation.from_rotvec(np.cumsum(rng.normal(scale=0.02, size=(n, 3)), axis=0))
    xyzw = rot.as_quat()
    gt = Trajectory(stamps, xyzw[:, [3, 0, 1, 2]], centres)
    noisy = centres * 0.5 + rng.normal(scale=0.01, size=centres.shape) + 3.0
    est = Trajectory(stamps + 0.001, xyzw[:, [3, 0, 1, 2]], noisy)

    def evo_aligned_pair():
        ref = PoseTrajectory3D(positions_xyz=gt.world_from_cam_translation,
                               orientations_quat_wxyz=gt.world_from_cam_quat_wxyz, timestamps=gt.timestamps)
        e = PoseTrajectory3D(positions_xyz=est.world_from_cam_translation,
                             orientations_quat_wxyz=est.world_from_cam_quat_wxyz, timestamps=est.timestamps)
        ref, e = sync.associate_trajectories(ref, e, max_diff=0.01)
        e.align(ref, correct_scale=True)
        return ref, e

    def evo_rmse(metric):
        metric.process_data(evo_aligned_pair())
        return metric.get_statistic(evo_metrics.StatisticsType.rmse)

    def evo_ape():
        return evo_rmse(evo_metrics.APE(evo_metrics.PoseRelation.translation_part))

    def evo_rpe():
        return evo_rmse(evo_metrics.RPE(evo_metrics.PoseRelation.translation_part, delta=1,
                                        delta_unit=evo_metrics.Unit.frames))

    ours_ape, ours_rpe = ate(est, gt, align="sim3").rmse, rpe(est, gt, align="sim3").rmse
    agreement = {"ate_rmse_abs_diff": abs(ours_ape - evo_ape()), "rpe_rmse_abs_diff": abs(ours_rpe - evo_rpe())}
    rows = [
        {"what": f"ATE with Sim(3) alignment ({n} poses)", "parallax_s": median_times(lambda: ate(est, gt, align="sim3"), runs),
         "reference_s": median_times(evo_ape, runs), "reference": "evo"},
        {"what": f"RPE (delta 1 frame, Sim(3)) ({n} poses)",
         "parallax_s": median_times(lambda: rpe(est, gt, align="sim3"), runs),
         "reference_s": median_times(evo_rpe, runs), "reference": "evo"},
    ]
    return rows, agreement


# --- project files and the demo renderer -----------------------------------------------------

def bench_project(runs: int, work: Path) -> list[dict]:
    from scene import PointCloud, Points3D, Scene
    from scene.project import load_project, save_project

    rng = np.random.default_rng(1)
    n = 1_000_000
    scene = Scene()
    scene.set_points(Points3D(np.arange(n), rng.normal(size=(n, 3)), rng.integers(0, 255, (n, 3)), rng.uniform(size=n),
                              np.zeros(n + 1, dtype=np.int64), [], []))
    scene.set_cloud("dense", PointCloud(rng.normal(size=(n, 3)), rng.integers(0, 255, (n, 3))))
    folder = work / "bench.parallax"
    return [
        {"what": "project save (1 M points + 1 M-point cloud, crash-safe)",
         "parallax_s": median_times(lambda: save_project(scene, folder), runs), "reference_s": None, "reference": "—"},
        {"what": "project load (same)", "parallax_s": median_times(lambda: load_project(folder), runs),
         "reference_s": None, "reference": "—"},
    ]


def bench_demo_render(runs: int) -> list[dict]:
    from assets import camera_path, demo_camera, render_frame

    camera = demo_camera(640, 480)
    _, poses = camera_path("orbit", frames=30, fps=30, seed=0)
    render_frame(poses[0], camera)  # compile the numba kernels outside the timing
    t = median_times(lambda: [render_frame(p, camera) for p in poses], runs)
    return [{"what": f"demo renderer, 30 frames at {camera.width}x{camera.height} "
                     f"({30 / t:.1f} frames/s)", "parallax_s": t, "reference_s": None, "reference": "—"}]


def bench_features(runs: int) -> list[dict]:
    import cv2

    from assets import camera_path, demo_camera, render_frame
    from geometry.matching import match_brute_force
    from slam.features import OrbExtractor

    camera = demo_camera(640, 480)
    _, poses = camera_path("orbit", frames=20, fps=30, seed=0)
    grays = [cv2.cvtColor(render_frame(p, camera)[0], cv2.COLOR_BGR2GRAY) for p in poses[::4]]
    extractor = OrbExtractor()
    orb = cv2.ORB_create(1000)
    extractor.extract(grays[0], camera)  # numba compile outside the timing
    per_frame = len(grays) * max(runs, 5)

    def ours():
        for _ in range(max(runs, 5)):
            for g in grays:
                extractor.extract(g, camera)

    def theirs():
        for _ in range(max(runs, 5)):
            for g in grays:
                orb.detectAndCompute(g, None)

    f1, f2 = extractor.extract(grays[0], camera), extractor.extract(grays[1], camera)
    match_brute_force(f1.descriptors, f2.descriptors)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    reps = 20
    return [
        {"what": f"ORB features per 640x480 frame (grid-spread, {len(f1.keypoints_xy)} kept)",
         "parallax_s": median_times(ours, runs) / per_frame,
         "reference_s": median_times(theirs, runs) / per_frame, "reference": "cv2.ORB_create(1000)"},
        {"what": f"descriptor matching {len(f1.descriptors)}x{len(f2.descriptors)} (ratio test)",
         "parallax_s": median_times(lambda: [match_brute_force(f1.descriptors, f2.descriptors, mutual=False)
                                             for _ in range(reps)], runs) / reps,
         "reference_s": median_times(lambda: [matcher.knnMatch(f1.descriptors, f2.descriptors, k=2)
                                              for _ in range(reps)], runs) / reps,
         "reference": "cv2.BFMatcher knnMatch"},
    ]


# --- report ----------------------------------------------------------------------------------

def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or "?"


def _now() -> str:
    return time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())


def write_report(path: Path, sections: dict[str, list[dict]], notes: list[str], runs: int,
                 extra: list[str] | None = None) -> None:
    lines = ["# Benchmarks", "",
             f"Written by `make bench` ({_now()}, commit {_commit()}) on "
             f"{machine()}. Each time is the median of {runs} runs; a ratio compares Parallax with the reference tool "
             "timed in the same run (below 1.0: Parallax is faster).", ""]
    for title, rows in sections.items():
        lines += [f"## {title}", "", "| what | Parallax (s) | reference (s) | reference tool | ratio |", "|---|---|---|---|---|"]
        for r in rows:
            ref = "—" if r["reference_s"] is None else f"{r['reference_s']:.4f}"
            ratio = "—" if r["reference_s"] is None else f"{r['parallax_s'] / r['reference_s']:.2f}×"
            lines.append(f"| {r['what']} | {r['parallax_s']:.4f} | {ref} | {r['reference']} | {ratio} |")
        lines.append("")
    lines += extra or []
    if notes:
        lines += ["## Agreement with the reference tools", ""] + [f"- {n}" for n in notes] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


SLAM_TITLE = "## SLAM (issue 3 §4)"


def bench_slam(runs: int, work: Path, pycolmap_max_frames: int | None) -> list[str]:
    from bench.slam_bench import default_sequences, markdown_section, run_all

    print("  rendering / loading the sequences ...", flush=True)
    sequences = default_sequences()
    rows = run_all(runs, work / "slam", sequences, pycolmap_runs=1, pycolmap_max_frames=pycolmap_max_frames,
                   log=lambda m: print(m, flush=True))
    return markdown_section(rows, runs, 1)


def bench_sfm(runs: int, work: Path, only_sets, large_runs=None, out: Path | None = None) -> list[str]:
    """With ``out``, the section is rewritten there after every set (a stopped run keeps what it finished)."""
    from bench.sfm_bench import TITLE, markdown_section, run_all

    def write(rows):
        replace_section(out, TITLE, markdown_section(rows, runs))

    rows = run_all(runs, work / "sfm", only_sets, log=lambda m: print(m, flush=True), large_runs=large_runs,
                   on_rows=write if out is not None else None)
    return markdown_section(rows, runs)


def bench_nerf(work: Path, scale: float) -> list[str]:
    from bench.nerf_bench import Options, markdown_section, run_all

    rows = run_all(work / "nerf", Options(scale=scale), log=lambda m: print(m, flush=True))
    return markdown_section(rows)


def replace_section(path: Path, title: str, section: list[str]) -> None:
    """Put ``section`` (starting with ``title``) into an existing report in place of the old one, keeping the
    rest; appended before the agreement notes when the report has no such section yet."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else ["# Benchmarks", ""]
    # A section rerun alone says when and at which commit: the report's first line dates the last full run.
    stamp = f"This section: `make bench` run finished {_now()} at commit {_commit()}."
    section = [section[0], "", stamp] + section[1:]
    if title in lines:
        start = lines.index(title)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    else:
        notes = "## Agreement with the reference tools"
        at = lines.index(notes) if notes in lines else len(lines)
        lines[at:at] = section
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--only", choices=["foundation", "slam", "sfm", "nerf"], default=None,
                        help="run one group; --only slam|sfm|nerf rewrites just that section of --out")
    parser.add_argument("--sfm-sets", nargs="*", default=None,
                        choices=["sceaux", "kermit", "sacre_coeur", "fox", "lego", "kitti"],
                        help="SfM data sets to run, in this order (default: all)")
    parser.add_argument("--sfm-large-runs", type=int, default=None,
                        help="runs on the large SfM sets (fox, lego, kitti; tens of minutes each); default: --runs")
    parser.add_argument("--pycolmap-frames", type=int, default=60,
                        help="frames per sequence given to pycolmap (offline and slow on 2 cores); 0 = all")
    parser.add_argument("--nerf-scale", type=float, default=1.0,
                        help="multiply every NeRF training duration (smoke runs: 0.01)")
    args = parser.parse_args(argv)
    sections: dict[str, list[dict]] = {}
    notes: list[str] = []
    slam_lines: list[str] = []
    sfm_lines: list[str] = []
    nerf_lines: list[str] = []
    pycolmap_frames = args.pycolmap_frames or None
    with tempfile.TemporaryDirectory(prefix="parallax-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "foundation"):
            print("COLMAP I/O ...", flush=True)
            sections["COLMAP model I/O (vs pycolmap)"] = bench_colmap_io(args.runs, work)
            print("trajectory metrics ...", flush=True)
            rows, agreement = bench_metrics(args.runs)
            sections["Trajectory metrics (vs evo)"] = rows
            notes.append(f"ATE RMSE |Parallax − evo| = {agreement['ate_rmse_abs_diff']:.2e}; "
                         f"RPE RMSE |Parallax − evo| = {agreement['rpe_rmse_abs_diff']:.2e}")
            print("project files ...", flush=True)
            sections["Project files"] = bench_project(args.runs, work)
            print("demo renderer ...", flush=True)
            sections["Demo scene"] = bench_demo_render(args.runs)
            print("features ...", flush=True)
            sections["Features and matching (SLAM/SfM kernels)"] = bench_features(args.runs)
        if args.only in (None, "slam"):
            print("SLAM ...", flush=True)
            slam_lines = bench_slam(args.runs, work, pycolmap_frames)
        if args.only in (None, "sfm"):
            print("SfM ...", flush=True)
            sfm_lines = bench_sfm(args.runs, work, args.sfm_sets, args.sfm_large_runs,
                                  Path(args.out) if args.only == "sfm" else None)
        if args.only in (None, "nerf"):
            print("NeRF ...", flush=True)
            nerf_lines = bench_nerf(work, args.nerf_scale)
    out = Path(args.out)
    if args.only == "slam":
        replace_section(out, SLAM_TITLE, slam_lines)
    elif args.only == "sfm":
        from bench.sfm_bench import TITLE as SFM_TITLE
        replace_section(out, SFM_TITLE, sfm_lines)
    elif args.only == "nerf":
        from bench.nerf_bench import TITLE as NERF_TITLE
        replace_section(out, NERF_TITLE, nerf_lines)
    else:
        write_report(out, sections, notes, args.runs, extra=slam_lines + sfm_lines + nerf_lines)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
