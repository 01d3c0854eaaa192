"""The ``parallax`` command line. User mistakes print one line on stderr and exit with code 2."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_USER_ERROR = 2

CONVERT_BY_SUFFIX = {".ply": "ply", ".json": "nerfstudio", ".parallax": "project", ".txt": "tum", ".csv": "euroc"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parallax", description="Parallax: SLAM, SfM and NeRF on your desktop.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command")

    sub.add_parser("demo", help="generate the built-in demo scene (once) and open it in the GUI")
    gui = sub.add_parser("gui", help="open the GUI, optionally on PATH")
    gui.add_argument("path", nargs="?")

    info = sub.add_parser("info", help="describe a video, image folder, dataset, project or model")
    info.add_argument("path")
    info.add_argument("--calib", help="intrinsics file (KITTI calib.txt, YAML/JSON, COLMAP cameras.txt)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    convert = sub.add_parser("convert", help="convert between formats")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--to", choices=["colmap-text", "colmap-bin", "nerfstudio", "ply", "tum", "kitti", "euroc",
                                          "project"], help="output format (default: from the output's extension)")
    convert.add_argument("--name", help="which point cloud / trajectory to export")
    convert.add_argument("--calib", help="intrinsics file for video/image inputs")

    slam = sub.add_parser("slam", help="monocular SLAM over a video, image folder or TUM/KITTI/EuRoC sequence")
    slam.add_argument("source")
    slam.add_argument("-o", "--output", required=True, help="project folder to write (NAME.parallax)")
    slam.add_argument("--calib", help="intrinsics file (KITTI calib.txt, YAML/JSON, COLMAP cameras.txt)")
    slam.add_argument("--max-frames", type=int, help="process only the first N frames")
    slam.add_argument("--no-loop-closure", action="store_true", help="disable loop closure")
    slam.add_argument("--no-intrinsics-check", action="store_true",
                      help="write the result even when the map says the focal length is more than 2x off")
    slam.add_argument("--trajectory", help="write the tracked frames' poses as TUM (world_from_cam)")
    slam.add_argument("--stats", help="write run statistics as JSON")

    from app import nerf_output_cli, nerf_train_cli, sfm_cli  # light modules: torch loads only when a command runs

    sfm_cli.configure_parser(sub)
    nerf = sub.add_parser("nerf", help="train a NeRF, render it, export its point cloud")
    nerf_sub = nerf.add_subparsers(dest="nerf_command", metavar="{train,render,export-pointcloud}")
    nerf_train_cli.configure_parser(nerf_sub)
    nerf_output_cli.configure_parser(nerf_sub)

    ev = sub.add_parser("eval", help="ATE/RPE of an estimated trajectory against ground truth")
    ev.add_argument("estimate")
    ev.add_argument("ground_truth")
    ev.add_argument("--align", choices=["sim3", "se3", "none"], default="sim3")
    ev.add_argument("--max-diff", type=float, default=0.01, help="timestamp association tolerance in seconds")
    ev.add_argument("--plot", help="write a PNG plot of the aligned trajectories and errors")
    ev.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from scene.errors import ParallaxError

    try:
        if args.command in (None, "gui", "demo"):
            from app.gui import run_gui
            return run_gui(path=getattr(args, "path", None), demo=args.command == "demo")
        handler = getattr(args, "handler", None)
        if handler is None and args.command == "nerf":
            raise ParallaxError("parallax nerf needs a subcommand: train, render or export-pointcloud")
        handler = handler or {"info": cmd_info, "convert": cmd_convert, "eval": cmd_eval, "slam": cmd_slam}[args.command]
        return handler(args)
    except ParallaxError as exc:
        print(f"parallax: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `parallax info X | head`: the reader left; not an error worth a message
        sys.stderr.close()
        return 0
    except OSError as exc:  # permissions, full disk, a file where a folder should be: the user's to fix
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"parallax: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("parallax: interrupted", file=sys.stderr)
        return 130


def _progress():
    from scene.progress import TqdmProgress

    return TqdmProgress(disable=not sys.stderr.isatty())


def describe(path, calib=None) -> dict:
    """What a path holds, for ``parallax info``."""
    from scene.io import detect_kind, open_path

    path = Path(path)
    kind = detect_kind(path)
    info: dict = {"path": str(path), "kind": kind}
    if kind in ("frames", "video"):
        from scene.io.dispatch import describe_frames
        info.update(describe_frames(path, calib))
        return info
    scene = open_path(path, calib=calib)
    info.update(scene.summary())
    info["intrinsics"] = [{"camera_id": c.camera_id, "description": c.describe(), "source": c.intrinsics_source}
                          for c in scene.cameras.values()]
    if scene.cameras:
        first = next(iter(scene.cameras.values()))
        info["resolution"] = [first.width, first.height]
    return info


def cmd_info(args) -> int:
    info = describe(args.path, args.calib)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key == "intrinsics":
            for cam in value:
                print(f"{'intrinsics':>14}: camera {cam['camera_id']}: {cam['description']}")
        else:
            print(f"{key:>14}: {value}")
    return 0


def cmd_convert(args) -> int:
    from scene.errors import ParallaxError
    from scene.io import export_scene, open_path

    fmt = args.to
    out = Path(args.output)
    if fmt is None:
        fmt = CONVERT_BY_SUFFIX.get(out.suffix.lower())
        if fmt is None:
            raise ParallaxError(f"cannot tell the output format from {out.name!r}; pass --to")
    progress = _progress()
    scene = open_path(args.input, progress=progress, calib=args.calib)
    written = export_scene(scene, out, fmt, name=args.name)
    progress.close()
    print(f"wrote {fmt}: {written}")
    return 0


def cmd_slam(args) -> int:
    from app.slam_run import run_slam_command

    stats = run_slam_command(args.source, args.output, calib=args.calib, max_frames=args.max_frames,
                             trajectory=args.trajectory, stats_path=args.stats, progress=_progress(),
                             loop_closure=not args.no_loop_closure, intrinsics_check=not args.no_intrinsics_check)
    print(f"tracked {stats['tracked']}/{stats['frames']} frames, {stats['keyframes']} keyframes, "
          f"{stats['map_points']} map points, tracking {stats['tracking_ms_median']:.1f} ms median; "
          f"wrote {args.output}")
    return 0


def cmd_eval(args) -> int:
    from geometry.evaluate import evaluate, plot_evaluation
    from scene.io.trajectory_io import read_trajectory

    estimate = read_trajectory(args.estimate)
    ground_truth = read_trajectory(args.ground_truth)
    result = evaluate(estimate, ground_truth, align=args.align, max_diff=args.max_diff)
    if args.plot:
        plot_evaluation(estimate, ground_truth, result, args.plot)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if not hasattr(v, "shape")}, indent=2, default=float))
        return 0
    for key, value in result.items():
        if hasattr(value, "shape"):
            continue
        print(f"{key:>22}: {value:.6g}" if isinstance(value, float) else f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
