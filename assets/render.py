"""Exact pinhole ray caster for the demo room (numba, one core).

Pixel convention: COLMAP's. The image's top-left corner is (0, 0), so pixel (column i, row j) covers
[i, i + 1) x [j, j + 1) and its centre is (i + 0.5, j + 0.5); an ideal W x H camera has cx, cy = W / 2, H / 2.
Image point (x, y) casts the ray ``world_from_cam.rotation @ ((x - cx) / fx, (y - cy) / fy, 1)`` from the
camera centre; pixel (i, j) is rendered with the ray through its centre (i + 0.5, j + 0.5), and
``raycast_depth`` takes image points in this convention. Because that direction has camera z = 1, the ray
parameter at the hit is exactly the z-depth. Colour: anisotropic trilinear mip-mapped texture lookup,
Lambertian light from point lights plus ambient and an analytic ambient-occlusion darkening near corners and
contacts (view-independent, so baked into per-face light maps when the room is built), and 2 x 2
supersampling (at +-0.25 px around the pixel centre) on pixels whose neighbours see a different face (clean
silhouettes).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from scene.camera import Camera
from scene.errors import ParallaxError
from scene.rigid import Rigid3d

from .room import Room, build_room

_EPS = 1e-9
_MAX_ANISO = 4


@njit(cache=True, inline="always")
def _intersect(ox, oy, oz, dx, dy, dz, boxes, active):
    """Nearest hit: (t, box, face) over the shell (box 0, seen from inside) and the boxes listed in ``active``.

    t is in units of |d|, so with d = R (x, y, 1) it is the camera z-depth."""
    o = (ox, oy, oz)
    d = (dx, dy, dz)
    t_best = np.inf
    best_face = -1
    for k in range(3):
        if d[k] > 0.0:
            t = (boxes[0, 3 + k] - o[k]) / d[k]
            if t < t_best:
                t_best, best_face = t, 2 * k + 1
        elif d[k] < 0.0:
            t = (boxes[0, k] - o[k]) / d[k]
            if t < t_best:
                t_best, best_face = t, 2 * k
    best_box = 0
    for b in active:
        t_near, t_far, face = -np.inf, np.inf, -1
        miss = False
        for k in range(3):
            lo, hi = boxes[b, k], boxes[b, 3 + k]
            if d[k] == 0.0:
                if o[k] < lo or o[k] > hi:
                    miss = True
                    break
                continue
            t1, t2 = (lo - o[k]) / d[k], (hi - o[k]) / d[k]
            f1 = 2 * k
            if t1 > t2:
                t1, t2, f1 = t2, t1, 2 * k + 1
            if t1 > t_near:
                t_near, face = t1, f1
            if t2 < t_far:
                t_far = t2
            if t_near > t_far or t_far <= _EPS or t_near >= t_best:
                miss = True
                break
        if miss or t_near <= _EPS:
            continue
        t_best, best_box, best_face = t_near, b, face
    return t_best, best_box, best_face


@njit(cache=True, inline="always")
def _bilinear_taps(w, h, x, y):
    """The four texel indices around continuous texel coords (x, y) (texel centres at +0.5), edge-clamped,
    and the fractional weights along x and y."""
    x -= 0.5
    y -= 0.5
    x0 = math.floor(x)
    y0 = math.floor(y)
    ax, ay = x - x0, y - y0
    xa = min(max(int(x0), 0), w - 1)
    xb = min(max(int(x0) + 1, 0), w - 1)
    ya = min(max(int(y0), 0), h - 1)
    yb = min(max(int(y0) + 1, 0), h - 1)
    return xa, xb, ya, yb, ax, ay


@njit(cache=True, inline="always")
def _fetch(atlas, offset, w, h, x, y):
    """Bilinear texel lookup at continuous texel coords (x, y), clamped to the edge; RGB in 0..1."""
    xa, xb, ya, yb, ax, ay = _bilinear_taps(w, h, x, y)
    i00, i01 = offset + ya * w + xa, offset + ya * w + xb
    i10, i11 = offset + yb * w + xa, offset + yb * w + xb
    w00, w01 = (1.0 - ax) * (1.0 - ay), ax * (1.0 - ay)
    w10, w11 = (1.0 - ax) * ay, ax * ay
    r = atlas[i00, 0] * w00 + atlas[i01, 0] * w01 + atlas[i10, 0] * w10 + atlas[i11, 0] * w11
    g = atlas[i00, 1] * w00 + atlas[i01, 1] * w01 + atlas[i10, 1] * w10 + atlas[i11, 1] * w11
    b = atlas[i00, 2] * w00 + atlas[i01, 2] * w01 + atlas[i10, 2] * w10 + atlas[i11, 2] * w11
    return r / 255.0, g / 255.0, b / 255.0


@njit(cache=True, inline="always")
def _lightmap(values, offset, w, h, x, y):
    """Bilinear lookup in a single-channel float map, clamped to the edge."""
    xa, xb, ya, yb, ax, ay = _bilinear_taps(w, h, x, y)
    top = values[offset + ya * w + xa] * (1.0 - ax) + values[offset + ya * w + xb] * ax
    bottom = values[offset + yb * w + xa] * (1.0 - ax) + values[offset + yb * w + xb] * ax
    return top * (1.0 - ay) + bottom * ay


@njit(cache=True, inline="always")
def _trilinear(atlas, levels, nlevels, s, t, lod):
    lod = min(max(lod, 0.0), nlevels - 1.0)
    l0 = int(math.floor(lod))
    l1 = min(l0 + 1, nlevels - 1)
    a = lod - l0
    r0, g0, b0 = _fetch(atlas, levels[l0, 0], levels[l0, 1], levels[l0, 2], s * levels[l0, 1], t * levels[l0, 2])
    if a <= 0.0 or l1 == l0:
        return r0, g0, b0
    r1, g1, b1 = _fetch(atlas, levels[l1, 0], levels[l1, 1], levels[l1, 2], s * levels[l1, 1], t * levels[l1, 2])
    return r0 + a * (r1 - r0), g0 + a * (g1 - g0), b0 + a * (b1 - b0)


@njit(cache=True)
def _shade(ox, oy, oz, dx, dy, dz, ddx, ddy, boxes, active, face_origin, face_u, face_v, face_normal, face_tex,
           lightmap_info, lightmaps, atlas, tex_levels, tex_nlevels):
    """RGB (0..1), ray parameter and face id seen along o + t d; ddx/ddy are per-pixel changes of d."""
    t, b, f = _intersect(ox, oy, oz, dx, dy, dz, boxes, active)
    axis = f // 2
    # Snap onto the plane so the hit lies exactly on the face.
    px = face_origin[b, f, 0] if axis == 0 else ox + t * dx
    py = face_origin[b, f, 1] if axis == 1 else oy + t * dy
    pz = face_origin[b, f, 2] if axis == 2 else oz + t * dz
    d_axis = dx if axis == 0 else (dy if axis == 1 else dz)
    fu = face_u[b, f]
    fv = face_v[b, f]
    fo = face_origin[b, f]
    s = (px - fo[0]) * fu[0] + (py - fo[1]) * fu[1] + (pz - fo[2]) * fu[2]
    q = (px - fo[0]) * fv[0] + (py - fo[1]) * fv[1] + (pz - fo[2]) * fv[2]
    # Ray differentials: how the hit moves on the plane per pixel step = the texture footprint.
    kx = ddx[axis] / d_axis
    ky = ddy[axis] / d_axis
    dpx0, dpx1, dpx2 = t * (ddx[0] - dx * kx), t * (ddx[1] - dy * kx), t * (ddx[2] - dz * kx)
    dpy0, dpy1, dpy2 = t * (ddy[0] - dx * ky), t * (ddy[1] - dy * ky), t * (ddy[2] - dz * ky)
    tex = face_tex[b, f]
    levels = tex_levels[tex]
    w0, h0 = levels[0, 1], levels[0, 2]
    ax_s = (dpx0 * fu[0] + dpx1 * fu[1] + dpx2 * fu[2]) * w0
    ax_t = (dpx0 * fv[0] + dpx1 * fv[1] + dpx2 * fv[2]) * h0
    ay_s = (dpy0 * fu[0] + dpy1 * fu[1] + dpy2 * fu[2]) * w0
    ay_t = (dpy0 * fv[0] + dpy1 * fv[1] + dpy2 * fv[2]) * h0
    lx = math.sqrt(ax_s * ax_s + ax_t * ax_t)
    ly = math.sqrt(ay_s * ay_s + ay_t * ay_t)
    if lx >= ly:
        major, minor, ms, mt = lx, ly, ax_s, ax_t
    else:
        major, minor, ms, mt = ly, lx, ay_s, ay_t
    n_taps = min(_MAX_ANISO, max(1, int(math.ceil(major / max(minor, 1e-6) - 1e-9))))
    lod = math.log2(max(major / n_taps, minor, 1e-6))
    r = g = bl = 0.0
    for i in range(n_taps):
        k = (i + 0.5) / n_taps - 0.5
        cr, cg, cb = _trilinear(atlas, levels, tex_nlevels[tex], s + k * ms / w0, q + k * mt / h0, lod)
        r += cr
        g += cg
        bl += cb
    r /= n_taps
    g /= n_taps
    bl /= n_taps
    # Lighting is view-independent (Lambertian + ambient occlusion), so it is baked per face: one lookup.
    lm = lightmap_info[b, f]
    light = _lightmap(lightmaps, lm[0], lm[1], lm[2], s * lm[1], q * lm[2])
    return r * light, g * light, bl * light, t, b * 6 + f


@njit(cache=True, inline="always")
def _ray(rot, x, y):
    return (rot[0, 0] * x + rot[0, 1] * y + rot[0, 2], rot[1, 0] * x + rot[1, 1] * y + rot[1, 2],
            rot[2, 0] * x + rot[2, 1] * y + rot[2, 2])


@njit(cache=True)
def _render(rot, centre, fx, fy, cx, cy, width, height, boxes, active, face_origin, face_u, face_v, face_normal, face_tex,
            lightmap_info, lightmaps, atlas, tex_levels, tex_nlevels, out_bgr, out_depth):
    ids = np.empty((height, width), np.int64)
    rgb = np.empty((height, width, 3))
    ddx = rot[:, 0] / fx
    ddy = rot[:, 1] / fy
    half_x = ddx * 0.5
    half_y = ddy * 0.5
    ox, oy, oz = centre[0], centre[1], centre[2]
    for v in range(height):
        for u in range(width):
            dx, dy, dz = _ray(rot, (u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy)  # the pixel's centre
            r, g, b, t, fid = _shade(ox, oy, oz, dx, dy, dz, ddx, ddy, boxes, active, face_origin, face_u, face_v,
                                     face_normal, face_tex, lightmap_info, lightmaps, atlas, tex_levels,
                                     tex_nlevels)
            rgb[v, u, 0], rgb[v, u, 1], rgb[v, u, 2] = r, g, b
            out_depth[v, u] = t
            ids[v, u] = fid
    for v in range(height):
        for u in range(width):
            fid = ids[v, u]
            edge = ((u > 0 and ids[v, u - 1] != fid) or (u + 1 < width and ids[v, u + 1] != fid)
                    or (v > 0 and ids[v - 1, u] != fid) or (v + 1 < height and ids[v + 1, u] != fid))
            if edge:
                ar = ag = ab = 0.0
                for sy in (-0.25, 0.25):
                    for sx in (-0.25, 0.25):
                        dx, dy, dz = _ray(rot, (u + 0.5 + sx - cx) / fx, (v + 0.5 + sy - cy) / fy)
                        r, g, b, t, _ = _shade(ox, oy, oz, dx, dy, dz, half_x, half_y, boxes, active, face_origin, face_u,
                                               face_v, face_normal, face_tex, lightmap_info, lightmaps, atlas,
                                               tex_levels, tex_nlevels)
                        ar += r
                        ag += g
                        ab += b
                rgb[v, u, 0], rgb[v, u, 1], rgb[v, u, 2] = ar * 0.25, ag * 0.25, ab * 0.25
            for c in range(3):
                out_bgr[v, u, 2 - c] = np.uint8(min(max(rgb[v, u, c] * 255.0 + 0.5, 0.0), 255.0))


@njit(cache=True)
def _cast(rot, centre, fx, fy, cx, cy, uv, boxes, active, out_depth, out_box):
    for i in range(uv.shape[0]):
        dx, dy, dz = _ray(rot, (uv[i, 0] - cx) / fx, (uv[i, 1] - cy) / fy)
        t, b, f = _intersect(centre[0], centre[1], centre[2], dx, dy, dz, boxes, active)
        out_depth[i] = t
        out_box[i] = b


def pinhole_intrinsics(camera: Camera) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy of an undistorted camera; the demo renders only those."""
    if camera.model not in ("PINHOLE", "SIMPLE_PINHOLE"):
        raise ParallaxError(f"demo renderer: camera model {camera.model} has distortion; use PINHOLE or "
                            "SIMPLE_PINHOLE")
    fx, fy = camera.focal_xy
    cx, cy = camera.principal_point
    return fx, fy, cx, cy


def _pose_arrays(world_from_cam: Rigid3d, room: Room):
    rot = np.ascontiguousarray(world_from_cam.rotation, dtype=np.float64)
    centre = np.ascontiguousarray(world_from_cam.translation, dtype=np.float64)
    if room.free_space_distance(centre)[0] <= 0.0:
        raise ParallaxError(f"demo renderer: camera centre {centre.tolist()} is not inside the room's free space")
    return rot, centre


def _boxes_in_view(rot, centre, boxes, intrinsics, width, height) -> np.ndarray:
    """Indices of object boxes not entirely outside one side of the view frustum (conservative culling)."""
    fx, fy, cx, cy = intrinsics
    corners = np.array([[i, j, k] for i in (0, 3) for j in (1, 4) for k in (2, 5)])
    pts = boxes[1:][:, corners.ravel()].reshape(-1, 8, 3)  # (B-1, 8, 3)
    cam = (pts - centre) @ rot  # cam_from_world applied to each corner
    x, y, z = cam[..., 0], cam[..., 1], cam[..., 2]
    # Frustum side planes (image edges at 0 and width) with a one-pixel margin: x >= (-1 - cx) / fx * z, ...
    outside = (np.all(z <= 0, axis=1)
               | np.all(x < (-1.0 - cx) / fx * z, axis=1) | np.all(x > (width + 1.0 - cx) / fx * z, axis=1)
               | np.all(y < (-1.0 - cy) / fy * z, axis=1) | np.all(y > (height + 1.0 - cy) / fy * z, axis=1))
    return np.nonzero(~outside)[0].astype(np.int64) + 1


def render_frame(world_from_cam: Rigid3d, camera: Camera, room: Room | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render one view: (BGR uint8 H x W x 3, z-depth float32 H x W in metres, camera frame).

    Pixel (i, j) shows the ray through image point (i + 0.5, j + 0.5) (COLMAP convention)."""
    room = build_room(0) if room is None else room
    fx, fy, cx, cy = pinhole_intrinsics(camera)
    rot, centre = _pose_arrays(world_from_cam, room)
    active = _boxes_in_view(rot, centre, room.boxes, (fx, fy, cx, cy), camera.width, camera.height)
    bgr = np.empty((camera.height, camera.width, 3), np.uint8)
    depth = np.empty((camera.height, camera.width), np.float64)
    _render(rot, centre, fx, fy, cx, cy, camera.width, camera.height, room.boxes, active, room.face_origin, room.face_u,
            room.face_v, room.face_normal, room.face_tex, room.lightmap_info, room.lightmaps, room.atlas,
            room.tex_levels, room.tex_nlevels, bgr, depth)
    return bgr, depth.astype(np.float32)


def raycast_depth(world_from_cam: Rigid3d, camera: Camera, uv, room: Room | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 z-depth and box index seen at arbitrary image points uv (N, 2), COLMAP convention.

    uv = (i + 0.5, j + 0.5) is the centre of pixel (column i, row j): the ray ``render_frame`` uses there."""
    room = build_room(0) if room is None else room
    fx, fy, cx, cy = pinhole_intrinsics(camera)
    rot, centre = _pose_arrays(world_from_cam, room)
    uv = np.ascontiguousarray(np.asarray(uv, np.float64).reshape(-1, 2))
    active = np.arange(1, len(room.boxes), dtype=np.int64)  # arbitrary uv: no frustum to cull against
    depth = np.empty(len(uv))
    box = np.empty(len(uv), np.int64)
    _cast(rot, centre, fx, fy, cx, cy, uv, room.boxes, active, depth, box)
    return depth, box


@njit(cache=True)
def _shade_rays(origins, dirs, boxes, active, face_origin, face_u, face_v, face_normal, face_tex, lightmap_info,
                lightmaps, atlas, tex_levels, tex_nlevels, out_rgb, out_face):
    zero = np.zeros(3)
    for i in range(origins.shape[0]):
        r, g, b, t, fid = _shade(origins[i, 0], origins[i, 1], origins[i, 2], dirs[i, 0], dirs[i, 1], dirs[i, 2],
                                 zero, zero, boxes, active, face_origin, face_u, face_v, face_normal, face_tex,
                                 lightmap_info, lightmaps, atlas, tex_levels, tex_nlevels)
        out_rgb[i, 0], out_rgb[i, 1], out_rgb[i, 2] = r, g, b
        out_face[i] = fid


def surface_colours(room: Room, origins, dirs) -> tuple[np.ndarray, np.ndarray]:
    """Lit colour (RGB 0..1, finest texture level) and face id (6 * box + face) hit by each ray."""
    origins = np.ascontiguousarray(origins, np.float64)
    dirs = np.ascontiguousarray(dirs, np.float64)
    rgb = np.empty((len(origins), 3))
    face = np.empty(len(origins), np.int64)
    active = np.arange(1, len(room.boxes), dtype=np.int64)
    _shade_rays(origins, dirs, room.boxes, active, room.face_origin, room.face_u, room.face_v, room.face_normal,
                room.face_tex, room.lightmap_info, room.lightmaps, room.atlas, room.tex_levels, room.tex_nlevels,
                rgb, face)
    return rgb, face
