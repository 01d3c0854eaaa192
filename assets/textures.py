"""Procedural textures for the demo room, made by our own code (no downloaded images).

Every builder has the signature ``builder(rng, height_px, width_px, texel_m) -> float32 (H, W, 3)`` RGB in
[0, 1]: ``texel_m`` is the size of one texel in metres so patterns have real-world scale whatever face they
cover. Builders draw only with numpy and OpenCV's deterministic rasteriser, so a seed gives identical bytes.
"""
from __future__ import annotations

import cv2
import numpy as np

_LINE = cv2.LINE_AA


def value_noise(rng: np.random.Generator, h: int, w: int, cell_px: float, octaves: int = 4,
                aspect: float = 1.0) -> np.ndarray:
    """Zero-mean fractal value noise, std about 1. ``aspect`` > 1 stretches cells along x (wood grain)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(octaves):
        cy = max(cell_px / 2 ** octave, 1.0)
        cx = max(cy * aspect, 1.0)
        gh, gw = int(np.ceil(h / cy)) + 2, int(np.ceil(w / cx)) + 2
        grid = rng.random((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (int(np.ceil(gw * cx)), int(np.ceil(gh * cy))), interpolation=cv2.INTER_CUBIC)
        out += amp * (up[:h, :w] - 0.5)
        total += amp * amp
        amp *= 0.5
    return out / np.float32(np.sqrt(total / 12.0))


def _px(metres: float, texel_m: float) -> int:
    return max(1, int(round(metres / texel_m)))


def _colour(base, jitter, rng) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-jitter, jitter, 3).astype(np.float32), 0.0, 1.0)


def _speckle(rng, h, w, amount) -> np.ndarray:
    return (1.0 + amount * rng.standard_normal((h, w)).astype(np.float32))[..., None]


def plain(colour):
    """A flat colour (for faces nobody sees, e.g. a box's underside)."""
    def build(rng, h, w, texel_m):
        return np.broadcast_to(np.asarray(colour, np.float32), (h, w, 3)).copy()
    return build


def wood_planks(base=(0.62, 0.43, 0.26), plank_m=0.15, vertical=False, gap=(0.18, 0.11, 0.06)):
    """Floor boards: staggered planks, per-plank tint, grain, knots, dark seams and nail heads."""
    def build(rng, h, w, texel_m):
        if vertical:
            return np.ascontiguousarray(_planks(rng, w, h, texel_m).transpose(1, 0, 2))
        return _planks(rng, h, w, texel_m)

    def _planks(rng, h, w, texel_m):
        pw = _px(plank_m, texel_m)
        rows = int(np.ceil(h / pw))
        plank_id = np.zeros((h, w), np.int32)
        seam = np.zeros((h, w), bool)
        nails = []
        next_id = 0
        cols = np.arange(w)
        for r in range(rows):
            y0, y1 = r * pw, min((r + 1) * pw, h)
            cuts = [-rng.integers(0, _px(1.2, texel_m))]
            while cuts[-1] < w:
                cuts.append(cuts[-1] + _px(rng.uniform(0.7, 1.8), texel_m))
            cuts = np.array(cuts)
            seg = np.searchsorted(cuts, cols, side="right") - 1
            plank_id[y0:y1] = next_id + seg
            next_id += len(cuts)
            seam[y0:min(y0 + 1, h)] = True
            for c in cuts[1:-1]:
                if 0 <= c < w:
                    seam[y0:y1, max(c - 1, 0):c + 1] = True
                    for dx in (-_px(0.03, texel_m), _px(0.03, texel_m)):
                        for yy in (y0 + pw // 4, y1 - pw // 4):
                            nails.append((int(c + dx), int(yy)))
        n = plank_id.max() + 1
        tint = rng.uniform(0.8, 1.12, n).astype(np.float32)
        hue = rng.uniform(-0.02, 0.02, (n, 3)).astype(np.float32)
        phase = rng.uniform(0, 50, n).astype(np.float32)
        grain = value_noise(rng, h, w, _px(0.04, texel_m), 3, aspect=12.0)
        yy = np.arange(h, dtype=np.float32)[:, None]
        rings = np.sin((yy * texel_m * 180.0 + 2.5 * grain + phase[plank_id]) * 1.0)
        fine = value_noise(rng, h, w, 2.0, 2, aspect=6.0)
        shade = 1.0 + 0.12 * rings + 0.08 * grain + 0.08 * fine
        img = (np.asarray(base, np.float32) + hue[plank_id]) * (tint[plank_id] * shade)[..., None]
        canvas = np.ascontiguousarray(img)
        for _ in range(max(1, int(h * w * texel_m ** 2 * 1.5))):  # knots: about 1.5 per square metre
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            ax = (_px(rng.uniform(0.015, 0.035), texel_m), _px(rng.uniform(0.006, 0.012), texel_m))
            dark = tuple(float(v) for v in np.asarray(base) * 0.45)
            cv2.ellipse(canvas, c, ax, 0, 0, 360, dark, -1, _LINE)
            cv2.ellipse(canvas, c, (ax[0] * 2, ax[1] * 2), 0, 0, 360, dark, 1, _LINE)
        for _ in range(int(h * w * texel_m ** 2 * 60)):  # scuffs and scratches
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            length = _px(rng.uniform(0.01, 0.05), texel_m)
            angle = rng.uniform(0, np.pi)
            p1 = (int(p0[0] + length * np.cos(angle)), int(p0[1] + length * np.sin(angle)))
            tone = tuple(float(v) for v in np.asarray(base) * rng.uniform(0.4, 1.4))
            cv2.line(canvas, p0, p1, tone, 1, _LINE)
        canvas[seam] = gap
        for x, y in nails:
            cv2.circle(canvas, (x, y), max(1, _px(0.004, texel_m)), (0.12, 0.1, 0.09), -1, _LINE)
        return canvas
    return build


def bricks(base=(0.58, 0.26, 0.18), mortar=(0.72, 0.70, 0.66)):
    """Running-bond brick wall with per-brick colour, speckle and mortar joints."""
    def build(rng, h, w, texel_m):
        bw, bh, joint = _px(0.225, texel_m), _px(0.075, texel_m), max(1, _px(0.01, texel_m))
        yy, xx = np.mgrid[0:h, 0:w]
        row = yy // bh
        shifted = xx + (row % 2) * (bw // 2) + rng.integers(0, bw)
        col = shifted // bw
        brick_id = row * (w // bw + 3) + col
        n = int(brick_id.max()) + 1
        tones = rng.uniform(0.7, 1.15, n).astype(np.float32)
        hue = rng.normal(0, 0.04, (n, 3)).astype(np.float32)
        burnt = rng.random(n) < 0.12
        tones[burnt] *= 0.55
        img = (np.asarray(base, np.float32) + hue[brick_id]) * tones[brick_id][..., None]
        img *= (1.0 + 0.08 * value_noise(rng, h, w, _px(0.05, texel_m), 3))[..., None]
        img *= _speckle(rng, h, w, 0.07)
        in_joint = ((yy % bh) < joint) | ((shifted % bw) < joint)
        mortar_img = np.asarray(mortar, np.float32) * _speckle(rng, h, w, 0.1)
        img = np.where(in_joint[..., None], mortar_img, img)
        return img
    return build


def plaster(base=(0.86, 0.84, 0.78)):
    def build(rng, h, w, texel_m):
        blot = value_noise(rng, h, w, _px(0.4, texel_m), 4)
        img = np.asarray(base, np.float32) * (1.0 + 0.05 * blot)[..., None] * _speckle(rng, h, w, 0.03)
        return img
    return build


def wallpaper(base=(0.82, 0.78, 0.62), ink=(0.35, 0.22, 0.28)):
    """Striped paper with small flowers whose size, angle and colour vary, so no two repeats match."""
    def build(rng, h, w, texel_m):
        xx = np.arange(w, dtype=np.float32)[None, :] * texel_m
        stripes = 0.9 + 0.1 * (np.sin(xx * 2 * np.pi / 0.08) > 0.6)
        img = np.asarray(base, np.float32) * stripes[..., None] * np.ones((h, 1, 1), np.float32)
        img *= (1.0 + 0.04 * value_noise(rng, h, w, _px(0.3, texel_m), 3))[..., None]
        img = np.ascontiguousarray(img)
        step = 0.16
        for j, y in enumerate(np.arange(step / 2, h * texel_m, step)):
            for x in np.arange(step / 2 + (j % 2) * step / 2, w * texel_m, step):
                c = (int((x + rng.normal(0, 0.01)) / texel_m), int((y + rng.normal(0, 0.01)) / texel_m))
                colour = tuple(float(v) for v in _colour(ink, 0.12, rng))
                r = _px(rng.uniform(0.018, 0.03), texel_m)
                angle0 = rng.uniform(0, 360)
                for k in range(int(rng.integers(4, 7))):
                    cv2.ellipse(img, c, (r, max(1, r // 3)), angle0 + k * 360 / 5, 0, 360, colour, -1, _LINE)
                cv2.circle(img, c, max(1, r // 3), (0.85, 0.7, 0.2), -1, _LINE)
        return img
    return build


def ceramic_tiles(base=(0.55, 0.68, 0.72), grout=(0.85, 0.85, 0.82), tile_m=0.15):
    """Glazed tiles with per-tile shade and an occasional patterned tile."""
    def build(rng, h, w, texel_m):
        t = _px(tile_m, texel_m)
        g = max(1, _px(0.004, texel_m))
        yy, xx = np.mgrid[0:h, 0:w]
        tid = (yy // t) * (w // t + 2) + xx // t
        n = int(tid.max()) + 1
        shade = rng.uniform(0.88, 1.1, (n, 1)).astype(np.float32)
        hue = rng.normal(0, 0.02, (n, 3)).astype(np.float32)
        img = (np.asarray(base, np.float32) + hue[tid]) * shade[tid]
        img *= (1.0 + 0.05 * value_noise(rng, h, w, _px(0.05, texel_m), 3))[..., None]
        img = np.ascontiguousarray(img)
        for ty in range(0, h, t):
            for tx in range(0, w, t):
                if rng.random() < 0.3:
                    colour = tuple(float(v) for v in _colour((0.15, 0.2, 0.45), 0.15, rng))
                    c = (tx + t // 2, ty + t // 2)
                    pts = np.array([[c[0], ty + 3], [tx + t - 3, c[1]], [c[0], ty + t - 3], [tx + 3, c[1]]], np.int32)
                    cv2.polylines(img, [pts], True, colour, max(1, t // 12), _LINE)
                    cv2.circle(img, c, max(2, t // 6), colour, -1, _LINE)
        img[((yy % t) < g) | ((xx % t) < g)] = grout
        return img
    return build


def ceiling_tiles(base=(0.9, 0.9, 0.88)):
    """Acoustic ceiling: 0.6 m tiles in a metal grid, random perforations and fissures."""
    def build(rng, h, w, texel_m):
        t = _px(0.6, texel_m)
        bar = max(1, _px(0.02, texel_m))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.asarray(base, np.float32) * (1.0 + 0.04 * value_noise(rng, h, w, _px(0.2, texel_m), 3))[..., None]
        img = np.ascontiguousarray(img * _speckle(rng, h, w, 0.04))
        n_holes = int(h * w * texel_m ** 2 * 900)
        px = rng.integers(0, w, n_holes)
        py = rng.integers(0, h, n_holes)
        dark = rng.uniform(0.35, 0.6, n_holes)
        img[py, px] *= dark[:, None].astype(np.float32)
        for _ in range(int(h * w * texel_m ** 2 * 40)):
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (p0[0] + int(rng.integers(-6, 7)), p0[1] + int(rng.integers(-6, 7)))
            cv2.line(img, p0, p1, (0.6, 0.6, 0.58), 1, _LINE)
        img[((yy % t) < bar) | ((xx % t) < bar)] = (0.78, 0.78, 0.8)
        return img
    return build


def concrete(base=(0.6, 0.6, 0.58)):
    """Cast concrete: blotches, pores, form-work seams and a few stains."""
    def build(rng, h, w, texel_m):
        img = np.asarray(base, np.float32) * (1.0 + 0.12 * value_noise(rng, h, w, _px(0.15, texel_m), 5))[..., None]
        img = np.ascontiguousarray(img * _speckle(rng, h, w, 0.05))
        for _ in range(int(h * w * texel_m ** 2 * 500)):  # air pores: small, varied, many
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            tone = float(rng.uniform(0.3, 0.55))
            cv2.circle(img, c, 1 if rng.random() < 0.8 else 2, (tone, tone, tone * 0.97), -1, _LINE)
        tie = _px(0.6, texel_m)
        for y in range(tie // 2, h, tie):  # form-work tie holes, as in architectural concrete
            for x in range(tie // 2, w, tie):
                cv2.circle(img, (x, y), max(2, _px(0.012, texel_m)), (0.25, 0.25, 0.25), -1, _LINE)
                cv2.circle(img, (x, y), max(3, _px(0.02, texel_m)), (0.5, 0.5, 0.48), 1, _LINE)
        seam = _px(0.5, texel_m)
        img[(np.arange(h) % seam) == 0] *= 0.6
        return img
    return build


def metal(base=(0.25, 0.26, 0.28)):
    def build(rng, h, w, texel_m):
        brushed = value_noise(rng, h, w, 3.0, 2, aspect=20.0)
        return np.asarray(base, np.float32) * (1.0 + 0.15 * brushed)[..., None]
    return build


def crate(base=(0.66, 0.5, 0.3)):
    """Shipping crate: board infill, frame boards, diagonal brace, stencilled codes, nails."""
    planks = wood_planks(base, plank_m=0.1)

    def build(rng, h, w, texel_m):
        img = planks(rng, h, w, texel_m)
        frame = max(2, _px(0.07, texel_m))
        dark = tuple(float(v) for v in np.asarray(base) * 0.7)
        edge = (0.2, 0.14, 0.08)
        for p0, p1 in (((0, 0), (w - 1, frame)), ((0, h - 1 - frame), (w - 1, h - 1)),
                       ((0, 0), (frame, h - 1)), ((w - 1 - frame, 0), (w - 1, h - 1))):
            cv2.rectangle(img, p0, p1, dark, -1, _LINE)
            cv2.rectangle(img, p0, p1, edge, 1, _LINE)
        cv2.line(img, (frame, frame), (w - frame, h - frame), dark, frame, _LINE)
        scale = max(0.3, h / 160.0)
        code = f"PX-{rng.integers(1000, 9999)}"
        cv2.putText(img, code, (frame + 4, h // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0.1, 0.1, 0.1), max(1, int(scale * 2)),
                    _LINE)
        cv2.putText(img, "FRAGILE", (frame + 4, h // 2 + int(30 * scale)), cv2.FONT_HERSHEY_DUPLEX, scale * 0.7,
                    (0.55, 0.08, 0.05), max(1, int(scale * 1.5)), _LINE)
        for x in (frame // 2, w - frame // 2):
            for y in np.linspace(frame, h - frame, 4).astype(int):
                cv2.circle(img, (int(x), int(y)), max(1, frame // 6), (0.15, 0.15, 0.15), -1, _LINE)
        return img
    return build


def checker_noise(a=(0.9, 0.85, 0.2), b=(0.12, 0.2, 0.45), square_m=0.06):
    """Checkerboard with noisy squares and random glyphs: many strong corners."""
    def build(rng, h, w, texel_m):
        s = _px(square_m, texel_m)
        yy, xx = np.mgrid[0:h, 0:w]
        board = ((yy // s + xx // s) % 2).astype(bool)
        img = np.where(board[..., None], np.asarray(a, np.float32), np.asarray(b, np.float32))
        img = np.ascontiguousarray(img * (1.0 + 0.1 * value_noise(rng, h, w, 3.0, 2))[..., None])
        for _ in range(int(h * w * texel_m ** 2 * 60)):
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            colour = tuple(float(v) for v in rng.uniform(0, 1, 3))
            cv2.putText(img, chr(int(rng.integers(65, 91))), c, cv2.FONT_HERSHEY_SIMPLEX, s / 40.0, colour,
                        max(1, s // 12), _LINE)
        return img
    return build


def book_spines():
    """A filled bookshelf: shelves every 0.4 m, books of random width, height and colour with bands and titles."""
    def build(rng, h, w, texel_m):
        img = np.full((h, w, 3), 0.12, np.float32)
        shelf = _px(0.4, texel_m)
        board = max(2, _px(0.025, texel_m))
        for y_top in range(0, h, shelf):
            y_bottom = min(y_top + shelf, h) - board
            x = 0
            while x < w:
                bw = _px(rng.uniform(0.02, 0.055), texel_m)
                bh = int((y_bottom - y_top) * rng.uniform(0.55, 0.92))
                colour = tuple(float(v) for v in rng.uniform(0.1, 0.85, 3))
                cv2.rectangle(img, (x, y_bottom - bh), (x + bw - 1, y_bottom), colour, -1)
                band = tuple(float(v) for v in rng.uniform(0.6, 1.0, 3) * 0.9)
                for yb in (y_bottom - bh + bh // 8, y_bottom - bh // 6):
                    cv2.line(img, (x, yb), (x + bw - 1, yb), band, max(1, bh // 40))
                for k in range(int(rng.integers(2, 6))):
                    yk = y_bottom - bh + bh // 4 + k * max(2, bh // 10)
                    cv2.line(img, (x + bw // 3, yk), (x + 2 * bw // 3, yk), band, 1)
                cv2.line(img, (x + bw - 1, y_bottom - bh), (x + bw - 1, y_bottom), (0.05, 0.05, 0.05), 1)
                x += bw + int(rng.integers(0, 2))
            img[y_bottom:y_bottom + board] = (0.45, 0.3, 0.18)
        return img
    return build


def rug():
    """Woven rug: bordered bands, a diamond lattice and coarse fibre noise."""
    def build(rng, h, w, texel_m):
        field_c = _colour((0.55, 0.12, 0.12), 0.08, rng)
        img = np.ascontiguousarray(np.broadcast_to(field_c, (h, w, 3)).astype(np.float32))
        step = _px(0.12, texel_m)
        accent = tuple(float(v) for v in _colour((0.9, 0.75, 0.4), 0.1, rng))
        deep = tuple(float(v) for v in _colour((0.1, 0.15, 0.35), 0.05, rng))
        for y in range(0, h + step, step):
            for x in range(0, w + step, step):
                pts = np.array([[x, y - step // 2], [x + step // 2, y], [x, y + step // 2], [x - step // 2, y]], np.int32)
                cv2.polylines(img, [pts], True, accent, max(1, step // 14), _LINE)
                if (x // step + y // step) % 3 == 0:
                    cv2.circle(img, (x, y), max(1, step // 6), deep, -1, _LINE)
        for k, colour in enumerate((deep, accent, deep)):
            m = _px(0.05 + 0.06 * k, texel_m)
            cv2.rectangle(img, (m, m), (w - 1 - m, h - 1 - m), colour, max(2, _px(0.03, texel_m)), _LINE)
        img *= (1.0 + 0.12 * value_noise(rng, h, w, 1.5, 2))[..., None]
        return img
    return build


def light_panel():
    def build(rng, h, w, texel_m):
        img = np.full((h, w, 3), (1.0, 0.98, 0.92), np.float32)
        louvre = max(1, _px(0.1, texel_m))
        img[(np.arange(h) % louvre) == 0] = (0.7, 0.7, 0.72)
        img[:, (np.arange(w) % louvre) == 0] = (0.7, 0.7, 0.72)
        return img
    return build


def door(base=(0.5, 0.32, 0.2)):
    """Panelled door with bevelled insets and a handle."""
    planks = wood_planks(base, plank_m=0.9, vertical=True)

    def build(rng, h, w, texel_m):
        img = planks(rng, h, w, texel_m)
        m = _px(0.1, texel_m)
        dark = tuple(float(v) for v in np.asarray(base) * 0.55)
        light = tuple(float(v) for v in np.minimum(np.asarray(base) * 1.4, 1))
        for y0, y1 in ((m, h // 2 - m // 2), (h // 2 + m // 2, h - m)):
            cv2.rectangle(img, (m, y0), (w - m, y1), dark, max(1, _px(0.012, texel_m)), _LINE)
            cv2.rectangle(img, (m + 4, y0 + 4), (w - m - 4, y1 - 4), light, 1, _LINE)
        cv2.circle(img, (w - _px(0.08, texel_m), h // 2), _px(0.03, texel_m), (0.8, 0.7, 0.3), -1, _LINE)
        cv2.circle(img, (w - _px(0.08, texel_m), h // 2), _px(0.03, texel_m), (0.2, 0.15, 0.05), 1, _LINE)
        return img
    return build


# -- posters and paintings: high-frequency, non-repeating detail --------------------------------------------

def _frame(img, texel_m, colour=(0.08, 0.07, 0.06)):
    h, w = img.shape[:2]
    m = max(2, _px(0.03, texel_m))
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), colour, 2 * m)
    cv2.rectangle(img, (m, m), (w - 1 - m, h - 1 - m), (0.9, 0.88, 0.8), max(1, m // 3))


def poster_abstract():
    def build(rng, h, w, texel_m):
        img = np.ascontiguousarray(np.broadcast_to(_colour((0.92, 0.9, 0.84), 0.05, rng), (h, w, 3)).astype(np.float32))
        palette = rng.uniform(0.05, 0.95, (6, 3))
        for _ in range(40):
            colour = tuple(float(v) for v in palette[rng.integers(0, 6)])
            kind = rng.integers(0, 3)
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if kind == 0:
                cv2.circle(img, c, int(rng.integers(4, max(5, w // 6))), colour, -1 if rng.random() < 0.6 else 3, _LINE)
            elif kind == 1:
                c2 = (c[0] + int(rng.integers(-w // 4, w // 4)), c[1] + int(rng.integers(-h // 4, h // 4)))
                cv2.rectangle(img, c, c2, colour, -1 if rng.random() < 0.6 else 3, _LINE)
            else:
                pts = rng.integers(0, [w, h], (3, 2)).astype(np.int32)
                cv2.fillPoly(img, [pts], colour, _LINE)
        for _ in range(25):
            p0 = tuple(int(v) for v in rng.integers(0, [w, h]))
            p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
            cv2.line(img, p0, p1, (0.05, 0.05, 0.05), int(rng.integers(1, 4)), _LINE)
        _frame(img, texel_m)
        return img
    return build


def poster_text():
    """A notice board of 'text': a title and paragraphs of random words (letter glyphs are rich in corners)."""
    def build(rng, h, w, texel_m):
        img = np.ascontiguousarray(np.broadcast_to(_colour((0.95, 0.95, 0.9), 0.03, rng), (h, w, 3)).astype(np.float32))
        letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
        title_colour = tuple(float(v) for v in rng.uniform(0.05, 0.6, 3))
        scale = w / 260.0
        cv2.putText(img, "".join(rng.choice(letters, 7)), (int(w * 0.08), int(h * 0.12)), cv2.FONT_HERSHEY_TRIPLEX,
                    scale, title_colour, max(1, int(scale * 2)), _LINE)
        y = int(h * 0.2)
        line_h = max(8, int(14 * scale * 0.6))
        while y < h * 0.9:
            x = int(w * 0.08)
            while x < w * 0.85:
                word = "".join(rng.choice(letters, int(rng.integers(2, 8)))).lower()
                cv2.putText(img, word, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.32, (0.1, 0.1, 0.12), 1, _LINE)
                x += max(1, int(len(word) * 9 * scale * 0.4) + int(6 * scale))
            y += max(1, line_h)
            if rng.random() < 0.15:
                y += line_h
        _frame(img, texel_m, (0.6, 0.1, 0.1))
        return img
    return build


def painting_landscape():
    def build(rng, h, w, texel_m):
        yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        sky = np.asarray((0.35, 0.55, 0.85), np.float32) * (1 - yy) + np.asarray((0.9, 0.8, 0.7), np.float32) * yy
        img = np.ascontiguousarray(np.broadcast_to(sky, (h, w, 3)).astype(np.float32))
        xs = np.arange(w)
        for layer, colour in enumerate(((0.35, 0.4, 0.5), (0.25, 0.4, 0.25), (0.2, 0.3, 0.12))):
            ridge = h * (0.35 + 0.17 * layer) + 12 * value_noise(rng, 1, w, w / 8, 4)[0] * (1 + layer)
            mask = np.arange(h)[:, None] > ridge[None, :]
            img[mask] = colour
        for _ in range(60):
            x = int(rng.integers(0, w))
            base_y = int(h * rng.uniform(0.7, 0.98))
            s = int(rng.integers(4, max(5, h // 12)))
            pts = np.array([[x, base_y - 3 * s], [x - s, base_y], [x + s, base_y]], np.int32)
            cv2.fillPoly(img, [pts], tuple(float(v) for v in _colour((0.1, 0.28, 0.1), 0.06, rng)), _LINE)
        img *= (1.0 + 0.06 * value_noise(rng, h, w, 2.0, 2))[..., None]
        cv2.circle(img, (int(w * rng.uniform(0.2, 0.8)), int(h * 0.15)), max(3, w // 14), (1.0, 0.95, 0.7), -1, _LINE)
        _frame(img, texel_m, (0.45, 0.3, 0.08))
        return img
    return build


def poster_markers():
    """A grid of random binary markers (AprilTag-like): the most corner-dense poster."""
    def build(rng, h, w, texel_m):
        img = np.ones((h, w, 3), np.float32)
        cells = 6
        marker = max(8, min(w, h) // 5)
        gap = marker // 4
        cell = marker // (cells + 2)
        for y0 in range(gap, h - marker, marker + gap):
            for x0 in range(gap, w - marker, marker + gap):
                cv2.rectangle(img, (x0, y0), (x0 + marker - 1, y0 + marker - 1), (0.02, 0.02, 0.02), -1)
                bits = rng.random((cells, cells)) < 0.5
                for by, bx in zip(*np.nonzero(bits)):
                    p0 = (x0 + (bx + 1) * cell, y0 + (by + 1) * cell)
                    cv2.rectangle(img, p0, (p0[0] + cell - 1, p0[1] + cell - 1), (0.97, 0.97, 0.97), -1)
        return img
    return build
