"""SfM benchmark (issue 4 §4): Parallax's incremental SfM and pycolmap (extract_features, match_exhaustive or
match_sequential, incremental_mapping) on the same image files with the same intrinsics policy, in one run.

Intrinsics policy per set: "known" gives both tools the same calibration (COLMAP cameras.txt for us, the
same model and parameters for pycolmap) and neither refines it; "unknown" leaves both to EXIF or their
guess and lets bundle adjustment refine focal length (and distortion). Images that need preparing (lego on
white, the fox downscaled to <= 1600 px) are written once into the work folder and both tools read those.
Where ground truth exists (lego, KITTI) the registered camera centres are Sim(3)-aligned to it and the
centre RMSE and mean rotation error reported.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MAX_IMAGE_SIZE = 1600


@dataclass
class SfmSet:
    name: str
    image_dir: Path
    image_names: list
    matcher: str                              # "exhaustive" | "sequential"
    camera: Optional[tuple] = None            # (model, width, height, params) when the intrinsics are known
    gt_world_from_cam: dict = field(default_factory=dict)   # image name -> 4x4, OpenCV camera axes
    note: str = ""

    @property
    def intrinsics(self) -> str:
        return "known" if self.camera else "unknown"


# --- data sets -----------------------------------------------------------------------------------

def _names(folder: Path, suffixes=(".jpg", ".jpeg", ".png")) -> list:
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in suffixes)


def _write_cameras_txt(path: Path, camera: tuple) -> Path:
    model, width, height, params = camera
    path.write_text(f"1 {model} {width} {height} " + " ".join(repr(float(v)) for v in params) + "\n")
    return path


def sceaux_sets() -> list[SfmSet]:
    folder = DATA / "sceaux_castle" / "images"
    names = _names(folder)
    known = ("PINHOLE", 2832, 2128, (2905.88, 2905.88, 1416.0, 1064.0))
    return [SfmSet("sceaux_castle (known K)", folder, names, "exhaustive", camera=known),
            SfmSet("sceaux_castle (unknown K)", folder, names, "exhaustive")]


def kermit_set() -> SfmSet:
    folder = DATA / "bundler_kermit"
    return SfmSet("bundler_kermit", folder, _names(folder), "exhaustive")


def sacre_coeur_set() -> SfmSet:
    folder = DATA / "hloc_sacre_coeur" / "mapping"
    return SfmSet("hloc_sacre_coeur", folder, _names(folder), "exhaustive", note="mixed sizes, unknown K")


def fox_set(work: Path) -> SfmSet:
    import cv2

    src = DATA / "instant_ngp_fox"
    meta = json.loads((src / "transforms.json").read_text())
    out = work / "fox_images"
    out.mkdir(parents=True, exist_ok=True)
    scale = MAX_IMAGE_SIZE / max(meta["w"], meta["h"])
    names = []
    for frame in meta["frames"]:
        name = Path(frame["file_path"]).name
        target = out / name
        if not target.exists():
            image = cv2.imread(str(src / frame["file_path"]), cv2.IMREAD_COLOR)
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        names.append(name)
    w, h = round(meta["w"] * scale), round(meta["h"] * scale)
    # pixel-corner convention: intrinsics scale with the image (transforms.json stores corner-origin cx, cy)
    params = (meta["fl_x"] * scale, meta["fl_y"] * scale, meta["cx"] * scale, meta["cy"] * scale,
              meta["k1"], meta["k2"], meta["p1"], meta["p2"])
    return SfmSet("instant_ngp_fox (≤1600 px)", out, sorted(names), "exhaustive", camera=("OPENCV", w, h, params),
                  note="intrinsics from its transforms.json, scaled")


def lego_set(work: Path) -> SfmSet:
    import cv2

    from scene.io.nerfstudio import cam_from_world_from_opengl

    src = DATA / "nerf_synthetic_lego_train"
    meta = json.loads((src / "transforms_train.json").read_text())
    out = work / "lego_white"
    out.mkdir(parents=True, exist_ok=True)
    gt = {}
    for frame in meta["frames"]:
        name = Path(frame["file_path"]).name + ".png"
        target = out / name
        if not target.exists():
            rgba = cv2.imread(str(src / "train" / name), cv2.IMREAD_UNCHANGED).astype(np.float32)
            alpha = rgba[:, :, 3:4] / 255.0
            rgb = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)  # composite onto white
            cv2.imwrite(str(target), np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
        cam_from_world = cam_from_world_from_opengl(frame["transform_matrix"])
        gt[name] = cam_from_world.inverse().matrix()
    focal = 0.5 * 800 / np.tan(0.5 * meta["camera_angle_x"])
    return SfmSet("nerf_synthetic_lego_train (white)", out, sorted(gt), "exhaustive",
                  camera=("PINHOLE", 800, 800, (focal, focal, 400.0, 400.0)), gt_world_from_cam=gt,
                  note="exact poses")


def kitti_set() -> SfmSet:
    from scene.io.trajectory_io import read_kitti

    src = DATA / "kitti07_f000_079"
    names = _names(src / "image_0")
    trajectory = read_kitti(src / "poses" / "07.txt", src / "times.txt")
    gt = {}
    for i, name in enumerate(names):
        gt[name] = trajectory.pose(i).matrix()
    return SfmSet("kitti07_f000_079", src / "image_0", names, "sequential",
                  camera=("PINHOLE", 1226, 370, (707.0912, 707.0912, 601.8873, 183.1104)), gt_world_from_cam=gt,
                  note="sequential matching, window 10")


def default_sets(work: Path, only: Optional[list] = None, keys: bool = False) -> list:
    """The sets (in ``only``'s order when given); with ``keys``, (key, set) pairs."""
    makers: dict[str, Callable[[], object]] = {
        "sceaux": sceaux_sets, "kermit": kermit_set, "sacre_coeur": sacre_coeur_set,
        "fox": lambda: fox_set(work), "lego": lambda: lego_set(work), "kitti": kitti_set}
    sets = []
    for key in (only or list(makers)):
        made = makers[key]()
        sets.extend((key, m) if keys else m for m in (made if isinstance(made, list) else [made]))
    return sets


# --- the two tools ---------------------------------------------------------------------------------

def _image_view(s: SfmSet, work: Path) -> Path:
    """A folder holding exactly the set's images (links), so both tools see the same files."""
    view = work / "views" / s.name.replace(" ", "_").replace("(", "").replace(")", "").replace("≤", "le")
    if not view.exists():
        view.mkdir(parents=True)
        for name in s.image_names:
            (view / name).symlink_to((s.image_dir / name).resolve())
    return view


def run_parallax(s: SfmSet, work: Path) -> dict:
    from sfm.features import FeatureOptions
    from sfm.matching import MatchingOptions
    from sfm.pipeline import SfmOptions, run

    calib = _write_cameras_txt(work / f"{id(s)}_cameras.txt", s.camera) if s.camera else None
    options = SfmOptions(features=FeatureOptions(max_image_size=MAX_IMAGE_SIZE),
                         matching=MatchingOptions(method=s.matcher, window=10),
                         calib_path=str(calib) if calib else None)
    t0 = time.perf_counter()
    result = run(_image_view(s, work), options)
    total = time.perf_counter() - t0
    scene = result.scene
    poses = {}
    for image_id in result.image_ids:
        if result.reasons.get(image_id, "") == "":
            image = scene.images[image_id]
            poses[Path(image.name).name] = image.cam_from_world.inverse().matrix()
    seconds = dict(result.seconds)
    return {"registered": result.registered, "models": result.models, "points": result.num_points,
            "track_length": result.mean_track_length, "reproj_px": result.mean_reprojection_error_px,
            "extract_s": seconds.get("extract", 0.0) + seconds.get("open", 0.0), "match_s": seconds.get("match", 0.0)
            + seconds.get("verify", 0.0), "map_s": seconds.get("map", 0.0) + seconds.get("write", 0.0),
            "total_s": total, "world_from_cam": poses}


def run_pycolmap(s: SfmSet, work: Path) -> dict:
    import zlib  # noqa: F401  -- must precede pycolmap: the reverse order breaks later zlib use (numba cache)

    import pycolmap

    folder = work / f"pycolmap_{abs(hash((s.name, time.perf_counter())))}"
    folder.mkdir(parents=True)
    database, sparse = folder / "database.db", folder / "sparse"
    sparse.mkdir()
    reader = pycolmap.ImageReaderOptions()
    mapping = pycolmap.IncrementalPipelineOptions()
    if s.camera:
        model, _, _, params = s.camera
        reader.camera_model = model
        reader.camera_params = ",".join(repr(float(v)) for v in params)
        mapping.ba_refine_focal_length = False
        mapping.ba_refine_principal_point = False
        mapping.ba_refine_extra_params = False
    single = s.camera is not None or s.name.startswith(("sceaux", "bundler", "kitti"))
    camera_mode = pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.AUTO
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = MAX_IMAGE_SIZE
    cpu = pycolmap.Device.cpu
    view = _image_view(s, work)
    t0 = time.perf_counter()
    pycolmap.extract_features(database, view, image_names=s.image_names, camera_mode=camera_mode,
                              reader_options=reader, extraction_options=extraction, device=cpu)
    t1 = time.perf_counter()
    if s.matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = 10
        pycolmap.match_sequential(database, pairing_options=pairing, device=cpu)
    else:
        pycolmap.match_exhaustive(database, device=cpu)
    t2 = time.perf_counter()
    reconstructions = pycolmap.incremental_mapping(database, view, sparse, options=mapping)
    t3 = time.perf_counter()
    models = list(reconstructions.values())
    registered = sum(r.num_reg_images() for r in models)
    points = sum(r.num_points3D() for r in models)
    observations = sum(r.compute_num_observations() for r in models)
    reproj = (sum(r.compute_mean_reprojection_error() * r.compute_num_observations() for r in models) / observations
              if observations else float("nan"))
    poses = {}
    if models:
        largest = max(models, key=lambda r: r.num_reg_images())
        for image in largest.images.values():
            if image.has_pose:
                poses[image.name] = np.vstack([image.cam_from_world().inverse().matrix(), [0, 0, 0, 1]])
    return {"registered": registered, "models": len(models), "points": points,
            "track_length": observations / points if points else 0.0, "reproj_px": reproj,
            "extract_s": t1 - t0, "match_s": t2 - t1, "map_s": t3 - t2, "total_s": t3 - t0, "world_from_cam": poses}


# --- accuracy against ground truth ---------------------------------------------------------------------

def pose_errors(world_from_cam: dict, gt: dict) -> tuple[float, float, float]:
    """(centre RMSE after Sim(3) alignment, the same as % of the ground truth's extent or path, mean rotation
    error in degrees) over the images both have; NaN when fewer than 3."""
    from geometry.align import umeyama

    names = [n for n in world_from_cam if n in gt]
    if len(names) < 3:
        return float("nan"), float("nan"), float("nan")
    est = np.array([world_from_cam[n][:3, 3] for n in names])
    ref = np.array([gt[n][:3, 3] for n in names])
    rotation, translation, scale = umeyama(est, ref, with_scale=True)
    aligned = (scale * (rotation @ est.T)).T + translation
    rmse = float(np.sqrt(np.mean(np.sum((aligned - ref) ** 2, axis=1))))
    ordered = np.array([gt[n][:3, 3] for n in sorted(gt)])
    path = float(np.sum(np.linalg.norm(np.diff(ordered, axis=0), axis=1)))
    angles = []
    for n in names:
        relative = gt[n][:3, :3].T @ rotation @ world_from_cam[n][:3, :3]
        angles.append(np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0))))
    return rmse, 100.0 * rmse / path, float(np.mean(angles))


# --- runs and the report ---------------------------------------------------------------------------------

NUMERIC = ("registered", "models", "points", "track_length", "reproj_px", "extract_s", "match_s", "map_s", "total_s",
           "ate", "ate_pct", "rot_deg")


def bench_set(s: SfmSet, tool: str, runs: int, work: Path) -> dict:
    runner = run_parallax if tool == "parallax" else run_pycolmap
    results = []
    for _ in range(max(1, runs)):
        r = runner(s, work)
        r["ate"], r["ate_pct"], r["rot_deg"] = (pose_errors(r["world_from_cam"], s.gt_world_from_cam)
                                                if s.gt_world_from_cam else (float("nan"),) * 3)
        results.append(r)
    row = {key: statistics.median(r[key] for r in results) for key in NUMERIC}
    row.update(set=s.name, tool=tool, images=len(s.image_names), intrinsics=s.intrinsics, note=s.note,
               runs=len(results))
    return row


LARGE_SETS = ("fox", "lego", "kitti")  # tens of minutes per tool on 2 cores


def run_all(runs: int, work: Path, only: Optional[list] = None, log=print, large_runs: Optional[int] = None,
            on_rows: Optional[Callable[[list], None]] = None) -> list[dict]:
    """Both tools on every set, ``runs`` times each (``large_runs`` on LARGE_SETS when given); ``on_rows``
    gets the rows so far after every set (a long run that is stopped still reports what it finished)."""
    rows = []
    for key, s in default_sets(work, only, keys=True):
        n = min(runs, large_runs) if large_runs and key in LARGE_SETS else runs
        for tool in ("parallax", "pycolmap"):
            log(f"  {s.name}: {tool} x {n} ...")
            try:
                rows.append(bench_set(s, tool, n, work))
            except Exception as exc:  # a failing tool is a result worth reporting, not a crash of the report
                rows.append({"set": s.name, "tool": tool, "images": len(s.image_names), "intrinsics": s.intrinsics,
                             "note": f"failed: {type(exc).__name__}: {exc}", "runs": n})
            log(f"    {rows[-1]}")
        if on_rows is not None:
            on_rows(rows)
    return rows


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return format(value, spec)


TITLE = "## SfM (issue 4 §4)"


def markdown_section(rows: list[dict], runs: int) -> list[str]:
    lines = [TITLE, "",
             f"Parallax incremental SfM against pycolmap {_pycolmap_version()} (extract_features, match_exhaustive or "
             f"match_sequential, incremental_mapping; CPU) on the same files, same intrinsics policy, max image size "
             f"{MAX_IMAGE_SIZE}. Median of the runs in the runs column (up to {runs}). ATE: registered camera centres after Sim(3) alignment "
             "(% of the ground-truth path length); rotation: mean angle after alignment.", "",
             "| set | tool | runs | K | registered / images | models | points | track len | reproj px | extract s | "
             "match+verify s | map s | total s | time ratio | ATE (%) | rot ° | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pycolmap_total = {r["set"]: r.get("total_s") for r in rows if r["tool"] == "pycolmap"}
    for r in rows:
        ratio = "—"
        if r["tool"] == "parallax" and r.get("total_s") and pycolmap_total.get(r["set"]):
            ratio = f"{r['total_s'] / pycolmap_total[r['set']]:.2f}×"
        ate = "—" if not np.isfinite(r.get("ate", float("nan"))) else f"{r['ate']:.4f} ({r['ate_pct']:.2f} %)"
        lines.append(
            f"| {r['set']} | {r['tool']} | {r.get('runs', runs)} | {r['intrinsics']} | {_fmt(r.get('registered'), '.0f')} / {r['images']} | "
            f"{_fmt(r.get('models'), '.0f')} | {_fmt(r.get('points'), '.0f')} | {_fmt(r.get('track_length'), '.2f')} | "
            f"{_fmt(r.get('reproj_px'), '.3f')} | {_fmt(r.get('extract_s'), '.1f')} | {_fmt(r.get('match_s'), '.1f')} | "
            f"{_fmt(r.get('map_s'), '.1f')} | {_fmt(r.get('total_s'), '.1f')} | {ratio} | {ate} | "
            f"{_fmt(r.get('rot_deg'), '.3f')} | {r.get('note', '')} |")
    return lines + [""]


def _pycolmap_version() -> str:
    try:
        import zlib  # noqa: F401

        import pycolmap
        return pycolmap.__version__
    except Exception:  # the section still renders without it
        return "?"
