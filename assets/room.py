"""The demo room: axis-aligned boxes, their textured faces, lights, packed into flat arrays for the renderer.

World frame: metres, z up, floor at z = 0. The room shell spans x in [-4, 4], y in [-3, 3], z in [0, 3] and is
seen from inside; every other box is a solid seen from outside. Face index ``f = 2 * axis + side`` (side 0 is
the box's minimum along that axis, side 1 its maximum).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import math

import cv2
import numpy as np
from numba import njit

from . import textures as tx

ROOM_MIN = np.array([-4.0, -3.0, 0.0])
ROOM_MAX = np.array([4.0, 3.0, 3.0])
MAX_LEVELS = 16
MAX_TEXELS = 2400  # per side; keeps the largest face texture about 2400 x 1800
LIGHTMAP_TEXEL_M = 0.04  # lighting and occlusion vary slowly: 4 cm samples, interpolated

# Face names for readability in the layout table.
WEST, EAST, SOUTH, NORTH, FLOOR, CEILING = 0, 1, 2, 3, 4, 5   # room shell (faces seen from inside)
MINUS_X, PLUS_X, MINUS_Y, PLUS_Y, BOTTOM, TOP = 0, 1, 2, 3, 4, 5  # objects (faces seen from outside)


@dataclass(frozen=True)
class BoxSpec:
    name: str
    lo: tuple
    hi: tuple
    material: tuple                 # (builder, texel_m) for faces not listed in ``faces``
    faces: dict | None = None       # face index -> (builder, texel_m)
    ao: float = 0.35                # how much this box darkens nearby surfaces
    emissive_faces: tuple = ()


def layout() -> list[BoxSpec]:
    """The furniture. Box 0 is the room shell. Positions leave a clear ring for the camera paths."""
    wood = (tx.wood_planks((0.55, 0.36, 0.2), plank_m=0.1), 0.004)
    pale_wood = (tx.wood_planks((0.72, 0.55, 0.36), plank_m=0.12), 0.003)
    steel = (tx.metal(), 0.004)
    skirting = (tx.plaster((0.93, 0.93, 0.9)), 0.004)
    frame = (tx.plain((0.1, 0.08, 0.06)), 0.004)
    boxes = [
        BoxSpec("room", tuple(ROOM_MIN), tuple(ROOM_MAX), (tx.plaster(), 0.005), {
            FLOOR: (tx.wood_planks(), 0.004), CEILING: (tx.ceiling_tiles(), 0.006),
            WEST: (tx.wallpaper(), 0.004), EAST: (tx.ceramic_tiles(), 0.004),
            SOUTH: (tx.concrete((0.7, 0.68, 0.64)), 0.004), NORTH: (tx.bricks(), 0.004)}, ao=0.0),
        BoxSpec("rug", (-1.5, -1.1, 0.0), (1.5, 1.1, 0.008), (tx.rug(), 0.004), ao=0.05),
        BoxSpec("table_top", (-0.6, -0.4, 0.72), (0.6, 0.4, 0.77), wood, {TOP: pale_wood}),
        BoxSpec("table_leg_1", (-0.57, -0.37, 0.008), (-0.52, -0.32, 0.72), steel, ao=0.2),
        BoxSpec("table_leg_2", (0.52, -0.37, 0.008), (0.57, -0.32, 0.72), steel, ao=0.2),
        BoxSpec("table_leg_3", (-0.57, 0.32, 0.008), (-0.52, 0.37, 0.72), steel, ao=0.2),
        BoxSpec("table_leg_4", (0.52, 0.32, 0.008), (0.57, 0.37, 0.72), steel, ao=0.2),
        BoxSpec("checker_cube", (-0.35, -0.2, 0.77), (-0.05, 0.1, 1.07), (tx.checker_noise(), 0.003)),
        BoxSpec("tin_box", (0.15, -0.05, 0.77), (0.45, 0.2, 0.87),
                (tx.checker_noise((0.85, 0.2, 0.15), (0.95, 0.95, 0.9), 0.025), 0.002)),
        BoxSpec("pillar", (1.8, -2.4, 0.0), (2.2, -2.0, 3.0), (tx.concrete(), 0.004)),
        BoxSpec("bookshelf", (-2.5, 2.6, 0.0), (-1.3, 3.0, 2.0), wood, {MINUS_Y: (tx.book_spines(), 0.003)}),
        BoxSpec("crate_1", (-3.6, -2.6, 0.0), (-2.9, -1.9, 0.7), (tx.crate(), 0.004)),
        BoxSpec("crate_2", (-3.5, -2.5, 0.7), (-3.0, -2.0, 1.2), (tx.crate((0.75, 0.6, 0.4)), 0.004)),
        BoxSpec("cabinet", (3.4, -1.0, 0.0), (3.9, 0.2, 0.9),
                (tx.checker_noise((0.2, 0.55, 0.3), (0.9, 0.9, 0.85), 0.08), 0.004)),
        BoxSpec("door", (-4.0, -1.2, 0.0), (-3.96, -0.3, 2.05), (tx.door(), 0.004), ao=0.25),
        BoxSpec("poster_north_text", (0.2, 2.985, 1.2), (1.0, 3.0, 2.3), frame, {MINUS_Y: (tx.poster_text(), 0.002)}, ao=0.15),
        BoxSpec("poster_north_markers", (1.6, 2.985, 1.1), (2.6, 3.0, 2.1), frame, {MINUS_Y: (tx.poster_markers(), 0.002)}, ao=0.15),
        BoxSpec("painting_south", (-2.8, -3.0, 1.2), (-1.0, -2.985, 2.3), frame, {PLUS_Y: (tx.painting_landscape(), 0.002)}, ao=0.15),
        BoxSpec("poster_south_abstract", (-0.4, -3.0, 1.1), (0.8, -2.985, 2.4), frame, {PLUS_Y: (tx.poster_abstract(), 0.002)}, ao=0.15),
        BoxSpec("poster_south_markers", (2.6, -3.0, 1.2), (3.5, -2.985, 2.1), frame, {PLUS_Y: (tx.poster_markers(), 0.002)}, ao=0.15),
        BoxSpec("poster_west_abstract", (-4.0, 0.6, 1.0), (-3.985, 2.0, 2.2), frame, {PLUS_X: (tx.poster_abstract(), 0.002)}, ao=0.15),
        BoxSpec("painting_east", (3.985, 0.8, 1.1), (4.0, 2.4, 2.2), frame, {MINUS_X: (tx.painting_landscape(), 0.002)}, ao=0.15),
        BoxSpec("poster_east_text", (3.985, -2.4, 1.0), (4.0, -1.6, 2.1), frame, {MINUS_X: (tx.poster_text(), 0.002)}, ao=0.15),
        BoxSpec("skirting_south", (-4.0, -3.0, 0.0), (4.0, -2.985, 0.09), skirting, ao=0.1),
        BoxSpec("skirting_north", (-4.0, 2.985, 0.0), (4.0, 3.0, 0.09), skirting, ao=0.1),
        BoxSpec("light_west", (-2.3, -0.3, 2.98), (-1.7, 0.3, 3.0), (tx.light_panel(), 0.004), ao=0.1,
                emissive_faces=(BOTTOM,)),
        BoxSpec("light_east", (1.7, -0.3, 2.98), (2.3, 0.3, 3.0), (tx.light_panel(), 0.004), ao=0.1,
                emissive_faces=(BOTTOM,)),
    ]
    return boxes


LIGHTS = np.array([[-2.0, 0.0, 2.8, 1.1], [2.0, 0.0, 2.8, 1.1], [0.0, 2.0, 2.6, 0.5]])  # x, y, z, intensity
AMBIENT = 0.38


@dataclass(frozen=True)
class Room:
    """Flat arrays the numba renderer consumes; built once per seed by ``build_room``."""

    seed: int
    names: tuple
    boxes: np.ndarray          # (B, 6) float64: lo xyz, hi xyz; row 0 is the shell
    face_origin: np.ndarray    # (B, 6, 3) corner where texture coords are (0, 0)
    face_u: np.ndarray         # (B, 6, 3) world direction / extent: u = dot(p - origin, face_u) in [0, 1]
    face_v: np.ndarray         # (B, 6, 3) same for v (image rows; "down" on walls)
    face_normal: np.ndarray    # (B, 6, 3) unit normal pointing into free space
    face_tex: np.ndarray       # (B, 6) int64 texture index
    face_emissive: np.ndarray  # (B, 6) int64: 1 = ignore lighting
    box_ao: np.ndarray         # (B,) float64
    lightmap_info: np.ndarray  # (B, 6, 3) int64: offset into lightmaps, width, height
    lightmaps: np.ndarray      # (M,) float64 light factor (ambient + diffuse) x occlusion per sample
    atlas: np.ndarray          # (T, 3) uint8 RGB texels of every mip level of every texture
    tex_levels: np.ndarray     # (n_tex, MAX_LEVELS, 3) int64: offset into atlas, width, height
    tex_nlevels: np.ndarray    # (n_tex,) int64
    lights: np.ndarray         # (L, 4) float64
    ambient: float

    def free_space_distance(self, points) -> np.ndarray:
        """Distance from each point to the nearest wall or object (negative when inside an object)."""
        p = np.atleast_2d(np.asarray(points, np.float64))
        dist = np.min(np.concatenate([p - self.boxes[0, :3], self.boxes[0, 3:] - p], axis=1), axis=1)
        for lo, hi in zip(self.boxes[1:, :3], self.boxes[1:, 3:]):
            outside = np.maximum(np.maximum(lo - p, p - hi), 0.0)
            d_out = np.linalg.norm(outside, axis=1)
            d_in = -np.min(np.concatenate([p - lo, hi - p], axis=1), axis=1)
            dist = np.minimum(dist, np.where(d_out > 0, d_out, d_in))
        return dist


@njit(cache=True)
def _falloff(dist, reach):
    """1 at contact, 0 beyond ``reach``, smooth in between (compact support)."""
    if dist >= reach:
        return 0.0
    x = 1.0 - dist / reach
    return x * x


@njit(cache=True)
def _bake_light(points, box_ids, face_ids, normals, boxes, box_ao, lights, ambient, out):
    """Lambertian point lights + ambient, times a soft darkening near room corners and other boxes
    (a cheap stand-in for ambient occlusion). Depends only on the surface point: baked once per room."""
    for i in range(points.shape[0]):
        px, py, pz = points[i, 0], points[i, 1], points[i, 2]
        box, axis = box_ids[i], face_ids[i] // 2
        occ = 1.0
        for k in range(3):
            if box == 0 and k == axis:
                continue
            occ *= (1.0 - 0.3 * _falloff(points[i, k] - boxes[0, k], 0.5)) \
                * (1.0 - 0.3 * _falloff(boxes[0, 3 + k] - points[i, k], 0.5))
        for b in range(1, boxes.shape[0]):
            if b == box or box_ao[b] == 0.0:
                continue
            ex = max(boxes[b, 0] - px, 0.0, px - boxes[b, 3])
            ey = max(boxes[b, 1] - py, 0.0, py - boxes[b, 4])
            ez = max(boxes[b, 2] - pz, 0.0, pz - boxes[b, 5])
            occ *= 1.0 - box_ao[b] * _falloff(math.sqrt(ex * ex + ey * ey + ez * ez), 0.4)
        light = ambient
        for j in range(lights.shape[0]):
            lx, ly, lz = lights[j, 0] - px, lights[j, 1] - py, lights[j, 2] - pz
            dist2 = lx * lx + ly * ly + lz * lz
            ndl = (normals[i, 0] * lx + normals[i, 1] * ly + normals[i, 2] * lz) / math.sqrt(dist2)
            if ndl > 0.0:
                light += lights[j, 3] * ndl / (1.0 + dist2 / 9.0)
        out[i] = light * occ


def _face_frame(lo, hi, face: int, shell: bool):
    """Origin, u, v and inward-to-free-space normal so textures read upright and unmirrored from the front."""
    axis, side = divmod(face, 2)
    normal = np.zeros(3)
    outward_sign = (1.0 if side == 1 else -1.0) * (-1.0 if shell else 1.0)
    normal[axis] = outward_sign
    up = np.array([0.0, 0.0, 1.0]) if axis != 2 else np.array([0.0, 1.0, 0.0])
    right = np.cross(-normal, up)
    down = -up
    origin = np.where((right + down) > 0, lo, hi)  # the corner where u and v are 0
    origin[axis] = hi[axis] if side == 1 else lo[axis]
    ext = hi - lo
    u = right / ext[np.argmax(np.abs(right))]
    v = down / ext[np.argmax(np.abs(down))]
    return origin, u, v, normal, ext[np.argmax(np.abs(right))], ext[np.argmax(np.abs(down))]


def _face_hidden(boxes: np.ndarray, b: int, centre: np.ndarray, normal: np.ndarray) -> bool:
    """A face is hidden when the point just in front of its centre is outside the room or inside another box."""
    probe = centre + 1e-4 * normal
    if np.any(probe <= boxes[0, :3]) or np.any(probe >= boxes[0, 3:]):
        return True
    for j in range(1, len(boxes)):
        if j != b and np.all(probe > boxes[j, :3]) and np.all(probe < boxes[j, 3:]):
            return True
    return False


def _mip_chain(img: np.ndarray) -> list[np.ndarray]:
    levels = [img]
    while max(levels[-1].shape[:2]) > 1 and len(levels) < MAX_LEVELS:
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA))
    return levels


def _bake_lightmaps(boxes, origin, fu, fv, normal, emissive, box_ao):
    """Sample the light factor at the centres of a LIGHTMAP_TEXEL_M grid on every face."""
    n = len(boxes)
    info = np.zeros((n, 6, 3), np.int64)
    pts, box_ids, face_ids, normals, slots = [], [], [], [], []
    offset = 0
    for b in range(n):
        for f in range(6):
            u_world = fu[b, f] / np.dot(fu[b, f], fu[b, f])  # the face's full extent along u, in metres
            v_world = fv[b, f] / np.dot(fv[b, f], fv[b, f])
            w = max(2, int(np.ceil(np.linalg.norm(u_world) / LIGHTMAP_TEXEL_M)))
            h = max(2, int(np.ceil(np.linalg.norm(v_world) / LIGHTMAP_TEXEL_M)))
            s, q = np.meshgrid((np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h)
            p = origin[b, f] + s.reshape(-1, 1) * u_world + q.reshape(-1, 1) * v_world
            axis = f // 2
            p[:, axis] = origin[b, f, axis]
            info[b, f] = (offset, w, h)
            pts.append(p)
            box_ids.append(np.full(len(p), b))
            face_ids.append(np.full(len(p), f))
            normals.append(np.broadcast_to(normal[b, f], p.shape))
            slots.append(emissive[b, f])
            offset += len(p)
    values = np.empty(offset)
    _bake_light(np.ascontiguousarray(np.concatenate(pts)), np.concatenate(box_ids).astype(np.int64),
                np.concatenate(face_ids).astype(np.int64), np.ascontiguousarray(np.concatenate(normals)), boxes,
                box_ao, LIGHTS, AMBIENT, values)
    for b in range(n):
        for f in range(6):
            if emissive[b, f]:
                o, w, h = info[b, f]
                values[o:o + w * h] = 1.0
    return info, values


@lru_cache(maxsize=2)  # textures cost about a second; renders of the same seed share them
def build_room(seed: int = 0) -> Room:
    specs = layout()
    n = len(specs)
    boxes = np.array([list(s.lo) + list(s.hi) for s in specs], np.float64)
    origin = np.zeros((n, 6, 3))
    fu = np.zeros((n, 6, 3))
    fv = np.zeros((n, 6, 3))
    normal = np.zeros((n, 6, 3))
    face_tex = np.zeros((n, 6), np.int64)
    emissive = np.zeros((n, 6), np.int64)
    chunks, level_rows, nlevels = [], [], []
    offset = 0
    for b, spec in enumerate(specs):
        lo, hi = boxes[b, :3], boxes[b, 3:]
        for f in range(6):
            o, u, v, nrm, w_m, h_m = _face_frame(lo, hi, f, shell=(b == 0))
            origin[b, f], fu[b, f], fv[b, f], normal[b, f] = o, u, v, nrm
            emissive[b, f] = int(f in spec.emissive_faces)
            axis = f // 2
            centre = (lo + hi) / 2
            centre[axis] = o[axis]
            builder, texel_m = (spec.faces or {}).get(f, spec.material)
            rng = np.random.default_rng([seed, b, f])
            if b > 0 and _face_hidden(boxes, b, centre, nrm):
                img = np.full((1, 1, 3), 0.3, np.float32)
            else:
                texel_m = max(texel_m, max(w_m, h_m) / MAX_TEXELS)
                h_px, w_px = max(1, int(round(h_m / texel_m))), max(1, int(round(w_m / texel_m)))
                # Builders draw patterns at least 16 texels across; slivers (a rug's edge) get a squashed copy.
                img = builder(rng, max(h_px, 16), max(w_px, 16), texel_m)
                if img.shape[:2] != (h_px, w_px):
                    img = cv2.resize(img, (w_px, h_px), interpolation=cv2.INTER_AREA)
            rows = np.zeros((MAX_LEVELS, 3), np.int64)
            levels = _mip_chain(np.clip(img, 0.0, 1.0).astype(np.float32))
            for k, lvl in enumerate(levels):
                q = np.round(lvl * 255.0).astype(np.uint8).reshape(-1, 3)
                rows[k] = (offset, lvl.shape[1], lvl.shape[0])
                chunks.append(q)
                offset += len(q)
            face_tex[b, f] = len(level_rows)
            level_rows.append(rows)
            nlevels.append(len(levels))
    lightmap_info, lightmaps = _bake_lightmaps(boxes, origin, fu, fv, normal, emissive,
                                               np.array([s.ao for s in specs], np.float64))
    return Room(seed=int(seed), names=tuple(s.name for s in specs), boxes=boxes, face_origin=origin, face_u=fu,
                face_v=fv, face_normal=normal, face_tex=face_tex, face_emissive=emissive,
                box_ao=np.array([s.ao for s in specs], np.float64), lightmap_info=lightmap_info, lightmaps=lightmaps,
                atlas=np.concatenate(chunks),
                tex_levels=np.stack(level_rows), tex_nlevels=np.array(nlevels, np.int64), lights=LIGHTS.copy(),
                ambient=AMBIENT)
