"""``parallax nerf render`` and ``parallax nerf export-pointcloud``. torch loads only when a command runs."""
from __future__ import annotations

import sys
from pathlib import Path

PATHS = ("orbit", "slam", "sfm")
DEVICES = ("auto", "cpu", "cuda", "mps")


def configure_parser(sub) -> None:
    render = sub.add_parser("render", help="render a trained NeRF at given cameras (PNG stills) or along a path (MP4)")
    render.add_argument("run_dir", metavar="RUN_DIR")
    source = render.add_mutually_exclusive_group(required=True)
    source.add_argument("--cameras", metavar="TRANSFORMS.json",
                        help="render one PNG per frame of this transforms.json, at its intrinsics and resolution")
    source.add_argument("--path", choices=PATHS,
                        help="render a video: an orbit around the scene, or along the SLAM / SfM cameras of the "
                             "project the run was trained from")
    render.add_argument("-o", "--output", required=True, help="folder for stills, or OUT.mp4 for --path")
    render.add_argument("--frames", type=int, default=120, help="video frames (default 120)")
    render.add_argument("--fps", type=float, default=24.0, help="video frame rate (default 24)")
    render.add_argument("--scale", type=float, default=1.0,
                        help="video resolution relative to the training images (default 1)")
    render.add_argument("--device", choices=DEVICES, default="auto", help="where to render (default: auto)")
    render.set_defaults(handler=cmd_render)

    export = sub.add_parser("export-pointcloud", help="sample a coloured point cloud from a trained NeRF as PLY")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("-o", "--output", required=True, help="OUT.ply")
    export.add_argument("--points", type=int, default=100_000, help="number of points (default 100000)")
    export.add_argument("--keep-outliers", action="store_true", help="skip statistical outlier removal")
    export.add_argument("--device", choices=DEVICES, default="auto", help="where to render (default: auto)")
    export.set_defaults(handler=cmd_export_pointcloud)


def _progress():
    from scene.progress import TqdmProgress

    return TqdmProgress(disable=not sys.stderr.isatty())


def source_scene(record: dict, run_dir: Path, needed_for: str):
    """The project (or transforms.json) the run was trained from (run.json "source"); a clear error when unknown."""
    from scene.errors import ParallaxError
    from scene.io import open_path

    source = record.get("source")
    if not source:
        raise ParallaxError(f"{run_dir / 'run.json'} records no source project, which {needed_for} needs; "
                            "use --path orbit or --cameras TRANSFORMS.json instead")
    if source == "scene":  # trained from the GUI's scene before it was saved
        raise ParallaxError(f"{run_dir / 'run.json'}: the run was trained from an unsaved scene, which {needed_for} "
                            "needs; use --path orbit or --cameras TRANSFORMS.json instead")
    path = Path(source)
    if not path.is_absolute():
        path = run_dir / path
    return open_path(path)  # a project, or the transforms.json the run was trained from


def path_poses(kind: str, frames: int, run_dir: Path, record: dict, dataset_scene) -> list:
    """cam_from_world poses of the requested path, in the scene's world frame."""
    from geometry.camera_paths import orbit_from_cameras, orbit_path, resample_trajectory
    from scene.errors import ParallaxError

    if frames < 1:
        raise ParallaxError(f"--frames must be at least 1, got {frames}")
    if kind == "orbit":
        poses = [im.cam_from_world for im in dataset_scene.registered_images()]
        points = None
        if record.get("source"):
            try:
                points = source_scene(record, run_dir, "the orbit").points.xyz
            except ParallaxError:  # the orbit can do without the sparse points
                points = None
        return orbit_path(orbit_from_cameras(poses, points), frames)
    scene = source_scene(record, run_dir, f"--path {kind}")
    if kind == "slam":
        trajectory = scene.trajectories.get("slam")
        if trajectory is None or len(trajectory) == 0:
            raise ParallaxError(f"the source project {record['source']} has no SLAM trajectory; run SLAM in it "
                                "or use --path sfm / orbit")
        poses = [trajectory.pose(i).inverse() for i in range(len(trajectory))]
    else:
        images = sorted(scene.registered_images(), key=lambda im: (im.name, im.image_id))
        if not images:
            raise ParallaxError(f"the source project {record['source']} has no registered (SfM) cameras")
        poses = [im.cam_from_world for im in images]
    return resample_trajectory(poses, frames)


def cmd_render(args) -> int:
    from nerf.load import find_run, load_pipeline
    from nerf.render import View, render_stills, render_views, transforms_views
    from nerf.video import write_mp4
    from scene.errors import ParallaxError
    from scene.io.nerfstudio import read_transforms

    run_dir = Path(args.run_dir).expanduser()
    layout, record, _, _ = find_run(run_dir)  # clear errors before anything slow
    output = Path(args.output).expanduser()
    progress = _progress()
    if args.cameras:
        views = transforms_views(args.cameras)
        if output.suffix.lower() == ".mp4":
            raise ParallaxError("--cameras writes one PNG per frame: -o must be a folder, not an .mp4")
        loaded = load_pipeline(run_dir, device=args.device)
        written = render_stills(loaded, views, output, progress)
        progress.close()
        print(f"rendered {len(written)} images into {output}")
        return 0
    if output.suffix.lower() != ".mp4":
        raise ParallaxError(f"--path renders a video: -o must end in .mp4, got {output.name!r}")
    if not output.parent.is_dir():
        raise ParallaxError(f"the output folder {output.parent} does not exist")
    if not args.scale > 0:
        raise ParallaxError(f"--scale must be positive, got {args.scale}")
    dataset = read_transforms(layout.transforms)
    poses = path_poses(args.path, args.frames, run_dir, record, dataset)
    camera = next(iter(dataset.cameras.values()))
    width, height = max(2, round(camera.width * args.scale)), max(2, round(camera.height * args.scale))
    camera = camera.scaled(width + width % 2, height + height % 2)  # H.264 wants even sides
    loaded = load_pipeline(run_dir, device=args.device)
    views = [View(f"{args.path}_{i:05d}", camera, pose) for i, pose in enumerate(poses)]
    write_mp4(render_views(loaded, views, progress), output, fps=args.fps, total=len(views))
    progress.close()
    print(f"rendered {len(views)} frames ({camera.width}x{camera.height}) into {output}")
    return 0


def cmd_export_pointcloud(args) -> int:
    from nerf.load import find_run
    from nerf.pointcloud import export_point_cloud, scene_bounds
    from scene.errors import ParallaxError

    run_dir = Path(args.run_dir).expanduser()
    _, record, _, _ = find_run(run_dir)
    if args.points < 1:
        raise ParallaxError(f"--points must be at least 1, got {args.points}")
    box = None
    if record.get("source"):
        try:
            box = scene_bounds(source_scene(record, run_dir, "the bounding box"))
        except ParallaxError:  # fall back to nerfstudio's scene box
            box = None
    progress = _progress()
    cloud = export_point_cloud(run_dir, args.points, output=Path(args.output), bounding_box=box, device=args.device,
                               remove_outliers=not args.keep_outliers, progress=progress)
    progress.close()
    print(f"wrote {len(cloud)} points to {args.output}")
    return 0
