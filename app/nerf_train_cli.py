"""``parallax nerf train SRC -o RUN_DIR``: train in a child process, show its JSON progress as a tqdm bar.

Light at import: nerf.runner (no torch) loads only when the command runs. Ctrl+C asks the child to stop
gracefully (checkpoint kept); ``--resume`` continues the run.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

PRESET_CHOICES = ("parallax-cpu", "nerfacto", "splatfacto")


def configure_parser(sub) -> None:
    train = sub.add_parser("train", help="train a NeRF on a project's or a transforms.json's cameras",
                           description="Train a NeRF in a child process. SRC is a NAME.parallax project or a "
                                       "nerfstudio transforms.json (fl_x fl_y cx cy w h, per-frame "
                                       "transform_matrix, images relative to it). Ctrl+C stops gracefully "
                                       "and keeps a checkpoint; --resume continues.")
    train.add_argument("src", metavar="SRC", nargs="?", help="project folder or transforms.json (not needed "
                                                              "with --resume)")
    train.add_argument("-o", "--output", metavar="RUN_DIR", required=True, help="the run folder to write")
    train.add_argument("--preset", choices=PRESET_CHOICES, default=None,
                       help="training preset (default parallax-cpu; a resumed run keeps its own)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="stop after this many minutes of training")
    budget.add_argument("--iterations", type=int, help="total iterations to reach")
    train.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                       help="torch device (auto: cuda > mps > cpu)")
    train.add_argument("--resume", action="store_true", help="continue RUN_DIR from its last checkpoint")
    train.add_argument("--threads", type=int, help="CPU threads for the trainer (default: up to 4)")
    train.add_argument("--max-size", type=int, help="longest image side in the dataset (default: the preset's)")
    train.set_defaults(handler=cmd_train)


def _postfix(event: dict) -> str:
    parts = [f"loss {event['loss']:.4f}" if event.get("loss") is not None else "",
             f"PSNR {event['psnr']:.2f}" if event.get("psnr") is not None else "",
             f"{event['rays_per_s']:.0f} rays/s" if event.get("rays_per_s") else ""]
    return ", ".join(p for p in parts if p)


def _show(bar, event: dict) -> dict | None:
    """Update the bar from one event; the event itself when it is the final one."""
    kind = event.get("event")
    if kind == "start":
        bar.n = event["step"]
        bar.set_description(f"nerf train ({event['preset']} on {event['device']})")
        if str(event.get("lpips", "")).startswith("skipped"):
            bar.write(f"LPIPS {event['lpips']}")
    elif kind == "step":
        bar.n = event["step"]
        bar.set_postfix_str(_postfix(event), refresh=False)
    elif kind == "eval" and event.get("eval_psnr") is not None:
        bar.write(f"step {event['step']}: held-out PSNR {event['eval_psnr']:.2f} dB")
    elif kind == "checkpoint":
        bar.set_postfix_str(f"checkpoint at step {event['step']}", refresh=False)
    bar.refresh()
    return event if kind in ("done", "stopped", "error") else None


def cmd_train(args) -> int:
    from tqdm import tqdm

    from nerf.runner import UNLIMITED_ITERATIONS, start_training
    from scene.errors import ParallaxError
    from scene.progress import TqdmProgress

    if args.src is None and not args.resume:
        raise ParallaxError("parallax nerf train needs SRC (a .parallax project or a transforms.json)")
    if args.src is not None and not Path(args.src).expanduser().exists():
        raise ParallaxError(f"NeRF training source not found: {args.src}")
    handle = start_training(args.src, args.output, preset=args.preset, iterations=args.iterations,
                            minutes=args.minutes, device=args.device, resume=args.resume, threads=args.threads,
                            max_size=args.max_size, progress=TqdmProgress())
    total = None if handle.target >= UNLIMITED_ITERATIONS else handle.target
    bar = tqdm(total=total, desc="nerf train", unit="it", file=sys.stderr, dynamic_ncols=True)
    final = None
    try:
        while True:
            try:
                finished = handle.finished  # read before poll(): nothing can arrive after it turns True
                events = handle.poll()
                if not events:
                    if finished:
                        break
                    time.sleep(0.1)
            except KeyboardInterrupt:
                bar.write("stopping: finishing the current step and saving a checkpoint ...")
                handle.stop()
                continue
            for event in events:
                final = _show(bar, event) or final
    finally:
        bar.close()
        handle.wait()
    final = final or handle.final or {"event": "error", "message": "the training process ended without a report"}
    if final["event"] == "error":
        raise ParallaxError(f"NeRF training failed: {final['message']}")
    _record_in_project(args.src, handle.layout.root)
    print(f"{final['message']}; run folder: {handle.layout.root}")
    return 0


def _record_in_project(src, run_dir: Path) -> None:
    """A run trained into PROJECT/nerf/NAME is recorded in that project (and survives reopening it)."""
    from nerf.runner import record_run
    from scene.project import is_project, load_project, save_project

    if src is None or not is_project(src):
        return
    project = Path(src).expanduser()
    if not run_dir.resolve().is_relative_to((project / "nerf").resolve()):
        return
    scene = load_project(project)
    record_run(scene, run_dir, project_dir=project)
    save_project(scene, project)
