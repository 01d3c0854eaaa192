"""`parallax sfm`: incremental SfM over a folder of photos (or a video), a project, exports and statistics.

Several models (a disconnected set): the project holds them all; each export writes model 1 (the largest)
at the path given and every other model beside it: ``DIR/model_2/`` for COLMAP (pycolmap and COLMAP read
``DIR`` itself as model 1), ``NAME_model_2.ply`` for PLY. transforms.json holds model 1 only (a NeRF trains
on one world frame).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def configure_parser(sub) -> None:
    p = sub.add_parser("sfm", help="incremental structure-from-motion over a folder of photos or a video")
    p.add_argument("images", help="folder of images, a video file, or a project (its frames; with "
                                  "--seed-from-poses its posed images, e.g. SLAM keyframes, seed the model)")
    p.add_argument("-o", "--output", required=True, help="project folder to write (NAME.parallax)")
    p.add_argument("--calib", help="intrinsics file (YAML/JSON, K.txt, KITTI calib.txt, COLMAP cameras.txt)")
    p.add_argument("--matcher", choices=["exhaustive", "sequential"], default="exhaustive",
                   help="exhaustive: every pair (small sets); sequential: each image with the next --window ones, "
                        "plus retrieval-based loop candidates")
    p.add_argument("--window", type=int, default=10, help="sequential matcher window (default 10)")
    p.add_argument("--loop-candidates", type=int, default=5,
                   help="sequential matcher: most similar earlier images matched as well (0: none; default 5)")
    p.add_argument("--features", choices=["sift", "orb", "akaze"], default="sift",
                   help="sift (RootSIFT, most accurate; default), orb or akaze (binary, faster)")
    p.add_argument("--max-image-size", type=int, default=1600, help="longest side features are detected at "
                   "(default 1600 px; keypoints stay in full-resolution pixels)")
    p.add_argument("--max-features", type=int, default=8192, help="features per image (default 8192)")
    p.add_argument("--cache", help="folder for the per-image feature cache (a re-run skips done work)")
    p.add_argument("--export-colmap", metavar="DIR", help="write the COLMAP model (binary) into DIR")
    p.add_argument("--export-ply", metavar="FILE", help="write the sparse point cloud as PLY")
    p.add_argument("--export-transforms", metavar="FILE", help="write nerfstudio transforms.json")
    p.add_argument("--outlier-removal", action="store_true",
                   help="statistical outlier removal on the point clouds (Open3D; reported in --stats)")
    p.add_argument("--seed-from-poses", action="store_true",
                   help="IMAGES is a project whose images have poses (SLAM keyframes): start from those poses "
                        "instead of searching an initial pair; the result stays in their frame and scale")
    p.add_argument("--stats", metavar="OUT.json", help="write run statistics as JSON")
    p.set_defaults(handler=cmd_sfm)


def _options(args):
    from scene.errors import ParallaxError
    from sfm.cloud import OutlierRemovalOptions
    from sfm.features import FeatureOptions
    from sfm.matching import MatchingOptions
    from sfm.pipeline import SfmOptions

    if args.max_image_size < 64:
        raise ParallaxError(f"--max-image-size must be at least 64 px, got {args.max_image_size}")
    if args.window < 1:
        raise ParallaxError(f"--window must be at least 1, got {args.window}")
    if args.max_features < 100:
        raise ParallaxError(f"--max-features must be at least 100, got {args.max_features}")
    if args.loop_candidates < 0:
        raise ParallaxError(f"--loop-candidates must be 0 or more, got {args.loop_candidates}")
    return SfmOptions(
        features=FeatureOptions(detector=args.features, max_image_size=args.max_image_size,
                                max_num_features=args.max_features, cache_dir=args.cache),
        matching=MatchingOptions(method=args.matcher, window=args.window, loop_candidates=args.loop_candidates),
        calib_path=args.calib,
        outlier_removal=OutlierRemovalOptions() if args.outlier_removal else None,
        seed_from_poses=args.seed_from_poses)


def _input(args):
    """The path to reconstruct from, or the Scene of a project (its frames, cameras and poses)."""
    from scene.errors import ParallaxError
    from scene.project import is_project, load_project

    path = Path(args.images)
    if is_project(path):
        return load_project(path)
    if args.seed_from_poses:
        raise ParallaxError(f"--seed-from-poses needs a project with posed images (e.g. from `parallax slam`); "
                            f"{path} is not a project")
    return path


def _finite(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def sfm_statistics(result, options) -> dict:
    """The JSON ``--stats`` of issue 4 (seconds per stage; NaN written as null)."""
    scene = result.scene
    name = {i: scene.images[i].name for i in result.image_ids}
    return {
        "images": result.num_images,
        "registered": result.registered,
        "models": result.models,
        "points": result.num_points,
        "mean_track_length": _finite(result.mean_track_length),
        "mean_reprojection_error_px": _finite(result.mean_reprojection_error_px),
        "seconds": {k: round(float(v), 3) for k, v in result.seconds.items()},
        "features": options.features.detector,
        "max_image_size": options.features.max_image_size,
        "matcher": options.matching.method,
        "verified_pairs": result.num_verified_pairs,
        "initial_pair": [name[i] for i in result.initial_pair],
        "per_model": [{"index": m.index, "images": m.num_images, "points": m.num_points, "cloud": m.cloud_name,
                       "mean_reprojection_error_px": _finite(m.mean_reprojection_error_px),
                       "mean_track_length": _finite(m.mean_track_length)} for m in result.reconstructions],
        "unregistered": {name[i]: why for i, why in result.reasons.items() if why},
        "skipped": list(result.skipped),
        "outlier_removal": result.stats.get("outlier_removal"),
        "warnings": list(result.warnings),
        "mapper": {k: v for k, v in result.stats.items() if k != "outlier_removal"},
    }


def _export(result, args) -> list[str]:
    from scene.io import export_scene
    from sfm.pipeline import model_scene

    written = []
    for model in result.reconstructions:
        if not (args.export_colmap or args.export_ply or args.export_transforms):
            break
        sub = model_scene(result.scene, model)
        first = model.index == 1
        if args.export_colmap:
            folder = Path(args.export_colmap) if first else Path(args.export_colmap) / f"model_{model.index}"
            written.append(str(export_scene(sub, folder, "colmap-bin")))
        if args.export_ply:
            target = Path(args.export_ply)
            if not first:
                target = target.with_name(f"{target.stem}_model_{model.index}{target.suffix or '.ply'}")
            written.append(str(export_scene(sub, target, "ply", name="sfm_sparse")))
        if args.export_transforms and first:
            written.append(str(export_scene(sub, Path(args.export_transforms), "nerfstudio")))
    return written


def cmd_sfm(args) -> int:
    from scene.atomic import atomic_write_text
    from scene.progress import TqdmProgress
    from scene.project import save_project
    from sfm.pipeline import run

    options = _options(args)
    progress = TqdmProgress(disable=not sys.stderr.isatty())
    try:
        result = run(_input(args), options, progress)
    finally:
        progress.close()
    save_project(result.scene, Path(args.output))
    written = _export(result, args)
    if args.stats:
        stats = sfm_statistics(result, options)
        Path(args.stats).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.stats), json.dumps(stats, indent=2) + "\n")
    print(f"registered {result.registered}/{result.num_images} images in {result.models} model(s), "
          f"{result.num_points} points, mean track length {result.mean_track_length:.2f}, "
          f"mean reprojection error {result.mean_reprojection_error_px:.3f} px, "
          f"{result.seconds['total']:.1f} s; wrote {args.output}" + "".join(f", {w}" for w in written))
    removal = result.stats.get("outlier_removal")
    if removal is not None:
        print(f"statistical outlier removal dropped {removal['removed']} of {result.num_points} points from the "
              f"point cloud(s); the 3D points (and the COLMAP export) keep them all")
    return 0
