"""Stereo renderer for the MSCS twin: skull height field + drill, with lens effects.

Method (all in NumPy/OpenCV, on one core):
- **Skull** (cached per camera, refreshed when the skull changes): every pixel's ray (from
  ``CameraModel.pixel_rays``, so lens distortion is exact) is intersected with the outer
  surface height field by fixed-point iteration ``t <- (h(o + t d) - o_z) / d_z`` using
  ``cv2.remap`` lookups, starting from a fixed reference plane; with the near-vertical views
  of a microscope it contracts by ~|slope * tan(view angle)| < 0.1 per step, so 4 steps reach
  < 1 um. The hit point's grid coordinates then sample a pre-shaded sRGB texture (bone albedo
  with seeded texture, sutures, thickness-dependent translucency tint towards the dura's
  colour, skin outside the exposure; Lambertian light + ambient).
- **Incremental refresh** (milling changes a small region many times a second): the skull
  logs the cell box of every change; the texture re-shades only that box (plus margins for
  its area filter, bilinear sampling and gradients) and logs the box with the heights it
  spanned before and after; each camera re-casts only the pixels whose rays can meet that box
  (its corners projected at those heights and at the reference plane, plus a few pixels) and
  re-blurs them with the blur's margin. The result equals a full refresh (the tests check it to
  1 DN).
- **Drill** (every frame, in a region of interest around its projection): analytic ray-sphere
  (burr) and ray-cylinder (neck, shank) intersections, Blinn-Phong metal shading, depth test
  against the skull's ray depth, so bone in front of the burr hides it.
- **Lens and sensor**: depth of field from the thin-lens circle of confusion (a blend between
  a few Gaussian blur levels, an approximation of spatially varying defocus), vignetting,
  and signal-dependent noise (read + shot) drawn from a seeded bank of Gaussian frames.
- **Compiled loops**: the per-pixel and per-cell work (drill ray casting and shading, the
  depth-of-field blend, sensor noise, the texture's normals and colour) runs as numba kernels
  (``twin.render_kernels``) that repeat the former NumPy expressions operation for operation:
  the images are bit-identical to the NumPy forms kept in ``tests/render_reference.py``.
- **Deferred right image** (``StereoRenderer.render(defer_right=True)``, the twin's frames):
  the right camera's skull layer is brought up to date at exposure, its drill and noise drawn
  only when the image is first read. The frame shares the camera's layer arrays and copies
  them only if the camera is about to change them while the frame is still held unread
  (``SharedSkullLayer``): a frame dropped unread (the milling loop reads only the left image)
  costs no copies.

Approximations (named so nobody mistakes them for physics): no shadows or inter-reflection;
the defocus blend does not model occlusion-aware bokeh; noise frames are crops of a fixed
bank of 4 per camera (temporal noise is not fully independent across frames).
Output images are BGR uint8 (OpenCV's convention, like a capture device).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Callable
from weakref import WeakSet

import cv2
import numpy as np

from scenes.frames import apply, invert
from twin import render_kernels as kernels
from twin.render_kernels import LABEL_BURR, LABEL_SHAFT  # noqa: F401 (the label values, re-exported)
from twin.cameras import CameraModel
from twin.skull import CellBox, Grid, Skull

LABEL_SKIN, LABEL_BONE = 0, 1          # LABEL_BURR = 2, LABEL_SHAFT = 3 (render_kernels)

BONE_RGB = np.array([0.86, 0.80, 0.68])
DURA_RGB = np.array([0.72, 0.30, 0.30])
SKIN_RGB = np.array([0.50, 0.27, 0.22])
SUTURE_RGB = np.array([0.45, 0.33, 0.28])
METAL_RGB = np.array([0.55, 0.55, 0.58])


@dataclass(frozen=True)
class Lighting:
    """Illumination. ``direction_s`` points from the scene towards the light, in {S}."""

    direction_s: tuple[float, float, float] = (0.25, -0.35, 0.90)
    intensity: float = 1.0
    ambient: float = 0.25


@dataclass(frozen=True)
class DrillGeometry:
    """Drill bit in the tool frame: burr sphere at the origin, shaft along -z (m)."""

    burr_radius_m: float = 0.5e-3
    neck_radius_m: float = 0.2e-3
    neck_length_m: float = 3.0e-3
    shank_radius_m: float = 1.175e-3   # 2.35 mm HP shank
    shank_length_m: float = 30e-3

    def segments(self):
        """(start, end, radius) of each cylinder of non-zero length, in the tool frame (m)."""
        z1 = -self.neck_length_m
        z2 = z1 - self.shank_length_m
        segs = [(np.array([0.0, 0, 0]), np.array([0.0, 0, z1]), self.neck_radius_m),
                (np.array([0.0, 0, z1]), np.array([0.0, 0, z2]), self.shank_radius_m)]
        return [s for s in segs if s[1][2] < s[0][2]]

    def burr_only(self) -> "DrillGeometry":
        """The burr without its shaft (ground-truth renders of the tip alone)."""
        return DrillGeometry(self.burr_radius_m, self.neck_radius_m, 0.0, self.shank_radius_m, 0.0)


@dataclass(frozen=True)
class SensorNoise:
    """Camera sensor noise in digital numbers (DN, 0-255): sigma^2 = read^2 + gain * I."""

    read_noise_dn: float = 1.5
    shot_noise_gain: float = 0.08


class StereoImages:
    """One rendered pair. ``labels_*`` are ground truth (twin only), not sensor output.

    The right image and labels may be given as a zero-argument function returning both
    (``CameraRenderer.deferred_render``): it runs once, on the first read of either.
    """

    def __init__(self, left: np.ndarray, right: np.ndarray | None, labels_left: np.ndarray,
                 labels_right: np.ndarray | None,
                 render_right: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None):
        self.left = left
        self.labels_left = labels_left
        self._right = None if render_right is not None else (right, labels_right)
        self._render_right = render_right

    def _right_pair(self) -> tuple[np.ndarray, np.ndarray]:
        if self._right is None:
            self._right, self._render_right = self._render_right(), None
        return self._right

    @property
    def right(self) -> np.ndarray:
        """Right BGR uint8 image (rendered now if it was deferred)."""
        return self._right_pair()[0]

    @property
    def labels_right(self) -> np.ndarray:
        """Right ground-truth labels (rendered now if they were deferred)."""
        return self._right_pair()[1]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; large sigmas are applied at reduced resolution (same result to ~1 %, 10x faster)."""
    f = 1
    while sigma / f > 1.5 and min(img.shape[:2]) // (2 * f) >= 8:
        f *= 2
    if f == 1:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(w // f, 1), max(h // f, 1)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / f), (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class TextureChange:
    """Render-grid cells re-shaded by ``SkullTexture.refresh`` and the range of heights (m) they
    held before and after; ``whole`` means everything changed (``box`` is then the whole grid)."""

    box: CellBox
    z_min_m: float
    z_max_m: float
    whole: bool = False

    def union(self, other: "TextureChange") -> "TextureChange":
        return TextureChange(self.box.union(other.box), min(self.z_min_m, other.z_min_m),
                             max(self.z_max_m, other.z_max_m), self.whole or other.whole)


#: linear intensity in [0, 1] to 8-bit with display gamma 2.2: index round(4095 * clip(linear, 0, 1))
_SRGB_LUT = (255.0 * np.linspace(0.0, 1.0, 4096) ** (1 / 2.2) + 0.5).astype(np.uint8)


def _nonzero_box(mask: np.ndarray) -> CellBox:
    """The smallest box holding every True cell of ``mask`` (an empty box at 0 if none)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return CellBox(0, 0, 0, 0)
    return CellBox(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def _box_minus(box: CellBox, hole: CellBox | None) -> list[CellBox]:
    """Non-empty boxes that together cover ``box`` without ``hole``: the bands above and below
    the hole, then its left and right sides."""
    if hole is None:
        return [box]
    r0, r1 = min(max(hole.r0, box.r0), box.r1), max(min(hole.r1, box.r1), box.r0)
    c0, c1 = min(max(hole.c0, box.c0), box.c1), max(min(hole.c1, box.c1), box.c0)
    if r1 <= r0 or c1 <= c0:
        return [box]
    parts = [CellBox(box.r0, r0, box.c0, box.c1), CellBox(r1, box.r1, box.c0, box.c1),
             CellBox(r0, r1, box.c0, c0), CellBox(r0, r1, c1, box.c1)]
    return [p for p in parts if p.r1 > p.r0 and p.c1 > p.c0]


class SkullTexture:
    """The skull's outer surface height and shaded colour on a render grid (cell 20 um).

    Static layers (skin, sutures, bone texture, the untouched skull outside the milling
    region) are computed once; ``refresh`` recomputes, from the skull's current height fields,
    only the cells of the milling region that changed since the last refresh (all of them the
    first time) and logs them for the cameras (``changes_since``).
    """

    EXPOSURE_HALF_AXES_M = (4.2e-3, 5.6e-3)   # the skin incision, around the dome apex
    SHADE_BLOCK_ROWS = 32                     # rows of cells shaded at a time (see ``_update``)
    SKIN_THICKNESS_M = 0.6e-3
    CHANGE_LOG_LENGTH = 1024

    def __init__(self, skull: Skull, extent_s: tuple[float, float, float, float],
                 lighting: Lighting, cell_m: float = 20e-6):
        self.skull = skull
        self.lighting = lighting
        x0, x1, y0, y1 = extent_s
        self.grid = g = Grid(x0, y0, cell_m, int(np.ceil((x1 - x0) / cell_m)) + 1,
                             int(np.ceil((y1 - y0) / cell_m)) + 1)
        xs, ys = g.xs, g.ys
        ax, ay = self.EXPOSURE_HALF_AXES_M
        r = np.sqrt((xs[None, :] / ax) ** 2 + ((ys[:, None] - skull.apex_y_m) / ay) ** 2)
        self._skin = np.clip((r - 1.0) / 0.06, 0.0, 1.0).astype(np.float32)   # 0 bone, 1 skin
        # The bone's albedo (texture, sutures) and thickness (translucency) count only where the
        # skin does not cover it fully (skin < 1): elsewhere a cell's colour is the skin's, exactly
        # (bone * 0 + skin), so they are computed in that box only (zero albedo, zero thickness outside).
        bare = _nonzero_box(self._skin < 1)
        texture = skull.texture(xs, ys)
        self._bone_albedo = np.zeros((g.ny, g.nx, 3), np.float32)
        self._skin_albedo = np.empty((g.ny, g.nx, 3), np.float32)
        for r0 in range(0, g.ny, self.SHADE_BLOCK_ROWS):       # per cell: blocks of rows stay in cache
            rows = slice(r0, r0 + self.SHADE_BLOCK_ROWS)
            tex = texture[rows].astype(np.float32)
            self._skin_albedo[rows] = SKIN_RGB * (1.0 + 0.15 * tex[..., None])
            rows = slice(max(r0, bare.r0), min(r0 + self.SHADE_BLOCK_ROWS, bare.r1))
            if rows.stop > rows.start:
                tex = texture[rows, bare.cols].astype(np.float32)
                d = skull.suture_distance(xs[bare.cols], ys[rows])
                sut = (np.exp(-(d / skull.params.suture_width_m) ** 2) * 0.8)
                bone = BONE_RGB * (1.0 + 0.07 * tex[..., None])
                self._bone_albedo[rows, bare.cols] = bone * (1 - sut[..., None]) + SUTURE_RGB * sut[..., None]
        thick = np.zeros((g.ny, g.nx))
        thick[bare.rows, bare.cols] = skull.initial_thickness_grid(xs[bare.cols], ys[bare.rows])
        self.height = np.empty((g.ny, g.nx), np.float32)
        self.bgr_u8 = np.empty((g.ny, g.nx, 3), np.uint8)
        self.label = np.where(self._skin > 0.5, LABEL_SKIN, LABEL_BONE).astype(np.uint8)
        self.window = self._physics_window()
        self._k = max(int(round(cell_m / skull.grid.cell)), 1)      # area filter of the skull grid
        whole = CellBox(0, g.ny, 0, g.nx)
        # The first refresh re-shades the milling region from the skull's grid: not shaded here.
        self._update(whole, whole, skull.initial_outer_grid(xs, ys), thick,
                     skip=self._render_box(CellBox(0, skull.grid.ny, 0, skull.grid.nx)))
        #: height (m) where the cameras' ray casting starts: the median of the untouched surface
        #: (independent of milling, so incremental and full renders iterate identically)
        self.reference_height_m = float(np.median(self.height))
        self._changes: deque[tuple[int, int, TextureChange]] = deque(maxlen=self.CHANGE_LOG_LENGTH)
        self.version = -1
        self.refresh()

    def _physics_window(self) -> CellBox:
        """Rows and columns of the render grid inside the skull's milling grid."""
        g, pg = self.grid, self.skull.grid
        j0 = max(int(np.ceil((pg.x0 - g.x0) / g.cell)), 0)
        i0 = max(int(np.ceil((pg.y0 - g.y0) / g.cell)), 0)
        j1 = min(int(np.floor((pg.x0 + pg.cell * (pg.nx - 1) - g.x0) / g.cell)), g.nx - 1) + 1
        i1 = min(int(np.floor((pg.y0 + pg.cell * (pg.ny - 1) - g.y0) / g.cell)), g.ny - 1) + 1
        return CellBox(i0, max(i1, i0), j0, max(j1, j0))

    def _update(self, heights: CellBox, shade: CellBox, outer: np.ndarray, thick: np.ndarray,
                skip: CellBox | None = None) -> None:
        """Store heights on ``heights`` (from ``outer``, ``thick`` sampled there) and shade the cells
        of ``shade`` (inside ``heights``; normals from height differences within ``heights``) but
        those of ``skip`` (None: none). Shading is per cell, so it is done ``SHADE_BLOCK_ROWS``
        rows at a time (the temporaries stay in the CPU cache) with the same result.
        Normals and colour are compiled (``render_kernels.surface_normals``, ``shade_texture``);
        the exponential and ``n @ L`` stay in NumPy (their rounding is NumPy's own)."""
        skin = self._skin[heights.rows, heights.cols]
        height = outer + self.SKIN_THICKNESS_M * skin
        self.height[heights.rows, heights.cols] = height
        gy, gx = np.gradient(height, self.grid.cell)
        L = np.asarray(self.lighting.direction_s, float)
        L = L / np.linalg.norm(L)
        n_rows = self.SHADE_BLOCK_ROWS
        for part in _box_minus(shade, skip):
            for r0 in range(part.r0, part.r1, n_rows):
                b = CellBox(r0, min(r0 + n_rows, part.r1), part.c0, part.c1)
                crop = (slice(b.r0 - heights.r0, b.r1 - heights.r0), slice(b.c0 - heights.c0, b.c1 - heights.c0))
                self._shade(b, gx[crop], gy[crop], thick[crop], skin[crop], L)

    def _shade(self, box: CellBox, gx: np.ndarray, gy: np.ndarray, thick: np.ndarray, skin: np.ndarray,
               light: np.ndarray) -> None:
        """Shaded sRGB of cells ``box`` from their height gradients ``gx``, ``gy`` (m/m), bone
        thickness ``thick`` (m), skin weight ``skin`` (0-1) and unit light direction ``light`` ({S})."""
        translucency = 0.85 * np.exp(-np.maximum(thick, 0.0) / 0.12e-3)
        n = np.empty((*gx.shape, 3), gx.dtype)          # float64 on the first, whole refresh
        kernels.surface_normals(gx, gy, n)
        shade_f = self.lighting.ambient + self.lighting.intensity * np.clip(n @ light, 0.0, None)
        kernels.shade_texture(self._bone_albedo[box.rows, box.cols], translucency, skin,
                              self._skin_albedo[box.rows, box.cols], DURA_RGB, shade_f, _SRGB_LUT,
                              self.bgr_u8[box.rows, box.cols])

    def _render_box(self, changed: CellBox) -> CellBox | None:
        """Render cells (within the window) whose height or shading depends on skull cells
        ``changed``: the area filter and bilinear sampling reach k + 1 skull cells, the
        gradient one render cell; one more of each for safety."""
        g, pg, w = self.grid, self.skull.grid, self.window
        m = self._k + 2
        x_lo, x_hi = pg.x0 + pg.cell * (changed.c0 - m), pg.x0 + pg.cell * (changed.c1 - 1 + m)
        y_lo, y_hi = pg.y0 + pg.cell * (changed.r0 - m), pg.y0 + pg.cell * (changed.r1 - 1 + m)
        c0 = max(int(np.floor((x_lo - g.x0) / g.cell)) - 2, w.c0)
        c1 = min(int(np.ceil((x_hi - g.x0) / g.cell)) + 3, w.c1)
        r0 = max(int(np.floor((y_lo - g.y0) / g.cell)) - 2, w.r0)
        r1 = min(int(np.ceil((y_hi - g.y0) / g.cell)) + 3, w.r1)
        return CellBox(r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None

    def _resample(self, box: CellBox) -> None:
        """Heights and shading of render cells ``box`` from the skull's current height fields."""
        sk, g, w = self.skull, self.grid, self.window
        pad = CellBox(max(box.r0 - 1, w.r0), min(box.r1 + 1, w.r1), max(box.c0 - 1, w.c0), min(box.c1 + 1, w.c1))
        # The same float32 sampling coordinates as a refresh of the whole window, then shifted by
        # whole skull cells (exact in float32) into the filtered sub-block.
        mx = ((g.xs[pad.cols] - sk.grid.x0) / sk.grid.cell).astype(np.float32)
        my = ((g.ys[pad.rows] - sk.grid.y0) / sk.grid.cell).astype(np.float32)
        k = self._k
        j0 = max(int(mx[0]) - k - 2, 0)
        j1 = min(int(mx[-1]) + k + 3, sk.grid.nx)
        i0 = max(int(my[0]) - k - 2, 0)
        i1 = min(int(my[-1]) + k + 3, sk.grid.ny)
        o = np.ascontiguousarray(sk.outer_z[i0:i1, j0:j1])
        inn = np.ascontiguousarray(sk.inner_z[i0:i1, j0:j1])
        if k > 1:                                              # area average
            o, inn = cv2.blur(o, (k, k)), cv2.blur(inn, (k, k))
        mx, my = np.meshgrid(mx - np.float32(j0), my - np.float32(i0))
        self._update(pad, box, cv2.remap(o, mx, my, cv2.INTER_LINEAR), cv2.remap(o - inn, mx, my, cv2.INTER_LINEAR))

    def refresh(self) -> None:
        """Bring the milling region up to date with the skull's height fields: only the cells
        changed since the last refresh (``Skull.changed_since``), everything the first time."""
        sk = self.skull
        changed = sk.changed_since(self.version)
        if changed is not None:
            box = self._render_box(changed)
            if box is not None:
                before = self.height[box.rows, box.cols]
                z0, z1 = float(before.min()), float(before.max())
                self._resample(box)
                after = self.height[box.rows, box.cols]
                change = TextureChange(box, min(z0, float(after.min())), max(z1, float(after.max())),
                                       whole=self.version < 0)
                self._changes.append((self.version, sk.version, change))
        self.version = sk.version

    def changes_since(self, version: int) -> TextureChange | None:
        """Union of the texture changes after skull ``version`` (None: none). If the log does not
        reach back that far, a change with ``whole=True``."""
        if version >= self.version:
            return None
        union = None
        for v_from, v_to, change in reversed(self._changes):
            if v_to <= version:
                return union
            union = change if union is None else union.union(change)
            if v_from <= version:
                return union
        g = self.grid
        return TextureChange(CellBox(0, g.ny, 0, g.nx), -np.inf, np.inf, whole=True)


def _noise_frame(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise in 1/256 units as int16 (clipped to +-32767), computed in place."""
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= 256
    np.clip(x, -32767, 32767, out=x)
    return x.astype(np.int16)


class SharedSkullLayer:
    """A camera's skull layer at one exposure for a deferred render: BGR image, labels and ray
    depths (m). It refers to the camera's cache arrays (``shared``) until the camera, about to
    change them, calls ``detach``, which gives it copies of its own."""

    def __init__(self, img: np.ndarray, labels: np.ndarray, depth_t: np.ndarray):
        self.img = img
        self.labels = labels
        self.depth_t = depth_t
        self.shared = True

    def detach(self) -> None:
        """Own copies of the arrays as they are now."""
        if self.shared:
            self.img, self.labels, self.depth_t = self.img.copy(), self.labels.copy(), self.depth_t.copy()
            self.shared = False


class CameraRenderer:
    """Renders one camera: cached skull layer plus the drill on top."""

    DOF_LEVELS_PX = (0.0, 1.5, 4.0, 10.0)
    SKULL_BLUR_SIGMA_PX = 1.5          # the skull layer's defocus blur (blended per pixel)
    ROI_MARGIN_PX = 4                  # around the projection of a changed box

    def __init__(self, camera: CameraModel, texture: SkullTexture, T_s_to_r: np.ndarray,
                 noise: SensorNoise, noise_seed: int):
        self.camera = camera
        self.texture = texture
        self.T_s_to_r = T_s_to_r
        self.T_cam_to_s = invert(T_s_to_r) @ camera.T_cam_to_r
        self.rays_c = camera.pixel_rays()
        R = self.T_cam_to_s[:3, :3].astype(np.float32)
        self.rays_s = self.rays_c @ R.T
        self.origin_s = self.T_cam_to_s[:3, 3]
        h, w = camera.height_px, camera.width_px
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        rr2 = ((xx - camera.cx_px) / (w / 2)) ** 2 + ((yy - camera.cy_px) / (h / 2)) ** 2
        vignette = np.clip(1.0 - 0.12 * rr2, 0.0, 1.0)
        self.vignette_u8 = cv2.merge([(255 * vignette).astype(np.uint8)] * 3)
        self._vignette_flat = (self.vignette_u8[..., 0].astype(np.float32) / 255).ravel()
        self._rays_planes = [np.ascontiguousarray(self.rays_c[..., k]).ravel() for k in range(3)]
        self.noise = noise
        rng = np.random.default_rng(noise_seed)
        self._noise_pad = 32
        self._noise_bank = [_noise_frame(rng, (h + 32, w + 32, 3)) for _ in range(4)]
        dn = np.arange(256, dtype=np.float64)
        sigma = np.sqrt(noise.read_noise_dn ** 2 + noise.shot_noise_gain * dn)
        self._sigma_lut = np.clip(np.round(16 * sigma), 0, 255).astype(np.uint8)
        # Skull layer caches, (re)computed by _refresh_skull in regions of interest.
        self.depth_t = np.zeros((h, w), np.float32)       # ray length (m) to the skull, per pixel
        self.labels_skull = np.zeros((h, w), np.uint8)
        self._skull_sharp = np.zeros((h, w, 3), np.uint8)  # texture seen by each pixel, before blur
        self.skull_bgr = np.zeros((h, w, 3), np.uint8)     # ... after defocus blur and vignetting
        # 8-bit Gaussian kernels reach round(6 sigma + 1) | 1 taps, i.e. 3 sigma + 0.5 px each side.
        self._blur_reach_px = int(np.ceil(3 * self.SKULL_BLUR_SIGMA_PX + 0.5)) + 1
        self._cache_version = -1
        #: layers of deferred renders not yet drawn that still refer to the cache arrays
        self._shared_layers: WeakSet[SharedSkullLayer] = WeakSet()

    # ---- skull layer ---------------------------------------------------------------------
    def _refresh_skull(self) -> None:
        """Bring the skull layer up to date: everything the first time, afterwards only the
        pixels that can see the texture's changes since the last refresh."""
        tex = self.texture
        if tex.version != tex.skull.version:
            tex.refresh()
        h, w = self.camera.height_px, self.camera.width_px
        if self._cache_version < 0:
            roi = (0, h, 0, w)
        else:
            change = tex.changes_since(self._cache_version)
            roi = None if change is None else (0, h, 0, w) if change.whole else self._image_roi(change)
        if roi is not None:
            for layer in self._shared_layers:        # deferred renders still held keep their exposure
                layer.detach()
            self._shared_layers.clear()
            self._cast_skull(*roi)
            self._compose_skull(*roi)
        self._cache_version = tex.skull.version

    def _image_roi(self, change: TextureChange) -> tuple[int, int, int, int] | None:
        """Pixel rows v0:v1 and columns u0:u1 whose rays can meet the changed texture cells: the
        box's corners (one render cell wider) at the lowest and highest of its heights and the
        reference plane (where the ray casting starts), projected, plus ``ROI_MARGIN_PX``."""
        tex, cam = self.texture, self.camera
        g, b = tex.grid, change.box
        xs = (g.x0 + g.cell * (b.c0 - 1), g.x0 + g.cell * b.c1)
        ys = (g.y0 + g.cell * (b.r0 - 1), g.y0 + g.cell * b.r1)
        zs = (min(change.z_min_m, tex.reference_height_m), max(change.z_max_m, tex.reference_height_m))
        corners = np.array([[x, y, z] for x in xs for y in ys for z in zs])
        uv = cam.project(apply(self.T_s_to_r, corners))
        m = self.ROI_MARGIN_PX
        u0 = max(int(np.floor(uv[:, 0].min())) - m, 0)
        u1 = min(int(np.ceil(uv[:, 0].max())) + m + 1, cam.width_px)
        v0 = max(int(np.floor(uv[:, 1].min())) - m, 0)
        v1 = min(int(np.ceil(uv[:, 1].max())) + m + 1, cam.height_px)
        return (v0, v1, u0, u1) if u1 > u0 and v1 > v0 else None

    def _cast_skull(self, v0: int, v1: int, u0: int, u1: int) -> None:
        """Ray-cast pixels [v0:v1, u0:u1] onto the texture's surface: depth, labels, sharp colour."""
        tex = self.texture
        g = tex.grid
        o = self.origin_s.astype(np.float32)
        d = self.rays_s[v0:v1, u0:u1]
        dz = d[..., 2]
        t = (np.float32(tex.reference_height_m) - o[2]) / dz
        inv_cell = np.float32(1.0 / g.cell)
        for _ in range(4):
            mx = (o[0] + t * d[..., 0] - np.float32(g.x0)) * inv_cell
            my = (o[1] + t * d[..., 1] - np.float32(g.y0)) * inv_cell
            z = cv2.remap(tex.height, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            t = (z - o[2]) / dz
        mx = (o[0] + t * d[..., 0] - np.float32(g.x0)) * inv_cell
        my = (o[1] + t * d[..., 1] - np.float32(g.y0)) * inv_cell
        self._skull_sharp[v0:v1, u0:u1] = cv2.remap(tex.bgr_u8, mx, my, cv2.INTER_LINEAR,
                                                    borderMode=cv2.BORDER_REPLICATE)
        self.labels_skull[v0:v1, u0:u1] = cv2.remap(tex.label, mx, my, cv2.INTER_NEAREST,
                                                    borderMode=cv2.BORDER_REPLICATE)
        self.depth_t[v0:v1, u0:u1] = t

    def _compose_skull(self, v0: int, v1: int, u0: int, u1: int) -> None:
        """Defocus blur and vignetting of the skull layer wherever pixels [v0:v1, u0:u1] reach."""
        h, w = self.camera.height_px, self.camera.width_px
        r = self._blur_reach_px
        cv0, cv1, cu0, cu1 = max(v0 - r, 0), min(v1 + r, h), max(u0 - r, 0), min(u1 + r, w)   # output
        sv0, sv1, su0, su1 = max(cv0 - r, 0), min(cv1 + r, h), max(cu0 - r, 0), min(cu1 + r, w)   # input
        sharp = np.ascontiguousarray(self._skull_sharp[sv0:sv1, su0:su1])
        blurred = cv2.GaussianBlur(sharp, (0, 0), self.SKULL_BLUR_SIGMA_PX)[cv0 - sv0:cv1 - sv0, cu0 - su0:cu1 - su0]
        img = sharp[cv0 - sv0:cv1 - sv0, cu0 - su0:cu1 - su0]
        sigma = self.camera.blur_sigma_px(self.depth_t[cv0:cv1, cu0:cu1] * self.rays_c[cv0:cv1, cu0:cu1, 2])
        wgt = np.clip(sigma / self.SKULL_BLUR_SIGMA_PX, 0.0, 1.0)[..., None]
        img = (img * (1 - wgt) + blurred * wgt).astype(np.uint8)
        self.skull_bgr[cv0:cv1, cu0:cu1] = cv2.multiply(img, self.vignette_u8[cv0:cv1, cu0:cu1], scale=1 / 255)

    def skull_intersection_s(self) -> np.ndarray:
        """(H, W, 3) points (m, in {S}) where each pixel's ray meets the outer surface."""
        if self._cache_version != self.texture.skull.version:
            self._refresh_skull()
        return self.origin_s + self.depth_t[..., None] * self.rays_s

    # ---- drill ---------------------------------------------------------------------------
    def _drill_candidates(self, T_tool_to_cam: np.ndarray, drill: DrillGeometry):
        """ROI (v0, v1, u0, u1) around the drill and a mask of pixels its silhouette may cover.

        The silhouette is rasterised from the projection of each part's centre line (burr
        disc, shaft bands) widened by its radius and a small margin; only those pixels are
        ray-cast, so a long shaft crossing the image costs its area, not its bounding box.
        """
        cam = self.camera
        parts = [(np.zeros(3), np.zeros(3), drill.burr_radius_m)] + drill.segments()
        polys, blur = [], 0.0
        for a_t, b_t, rad in parts:
            pts = apply(T_tool_to_cam, np.array([a_t + (b_t - a_t) * s for s in np.linspace(0, 1, 12)]))
            pts = pts[pts[:, 2] > 1e-3]
            if len(pts) == 0:
                continue
            # Centre line through the real (distorted) projection; radii from the pinhole scale.
            uv, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), cam.K, cam.dist)
            r_px = rad * cam.fx_px / pts[:, 2].min()
            blur = max(blur, float(cam.blur_sigma_px(pts[:, 2]).max()))
            polys.append((uv.reshape(-1, 2), r_px))
        if not polys:
            return None
        m_dist = 2.0        # px: curvature of the distorted centre line between samples
        allu = np.concatenate([u for u, _ in polys])
        rmax = max(r for _, r in polys)
        m = rmax + m_dist + 3 * min(blur, self.DOF_LEVELS_PX[-1])
        u0 = int(max(np.floor(allu[:, 0].min() - m), 0))
        u1 = int(min(np.ceil(allu[:, 0].max() + m), cam.width_px))
        v0 = int(max(np.floor(allu[:, 1].min() - m), 0))
        v1 = int(min(np.ceil(allu[:, 1].max() + m), cam.height_px))
        if u1 <= u0 or v1 <= v0:
            return None
        mask = np.zeros((v1 - v0, u1 - u0), np.uint8)
        for uv, r_px in polys:
            thick = int(np.ceil(2 * (r_px + m_dist)))
            pts = np.round(uv - [u0, v0]).astype(np.int32)
            cv2.polylines(mask, [pts], False, 1, thickness=max(thick, 1))
            cv2.circle(mask, tuple(int(v) for v in pts[0]), int(np.ceil(r_px + m_dist)), 1, -1)
        return (v0, v1, u0, u1), mask

    def _draw_drill(self, img: np.ndarray, labels: np.ndarray, depth_t: np.ndarray, T_tool_to_r: np.ndarray,
                    drill: DrillGeometry, lighting: Lighting) -> None:
        """Draw the drill into ``img`` and ``labels`` where it is nearer than the skull's ray
        depth ``depth_t`` (m, per pixel): ray casting and shading of the candidate pixels
        (``render_kernels.drill_hits``, ``shade_metal``), then depth of field over its region."""
        T_tool_to_cam = self.camera.T_r_to_cam @ T_tool_to_r
        found = self._drill_candidates(T_tool_to_cam, drill)
        if found is None:
            return
        (v0, v1, u0, u1), mask = found
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            return
        flat = (rows + v0) * self.camera.width_px + (cols + u0)
        n = flat.size
        t, ndl, spec = (np.empty(n, np.float32) for _ in range(3))
        label, keep = np.empty(n, np.uint8), np.empty(n, np.intp)
        L = self.T_cam_to_s[:3, :3].T @ np.asarray(lighting.direction_s, float)
        n_vis = kernels.drill_hits(flat, *self._rays_planes, depth_t.reshape(-1),
                                   self._burr_params(T_tool_to_cam, drill), self._shaft_params(T_tool_to_cam, drill),
                                   (L / np.linalg.norm(L)).astype(np.float32), t, ndl, spec, label, keep)
        if n_vis == 0:
            return
        keep = keep[:n_vis]
        rows, cols, t, label = rows[keep], cols[keep], t[:n_vis], label[:n_vis]
        diffuse = lighting.ambient + lighting.intensity * ndl[:n_vis]
        patch = img[v0:v1, u0:u1].astype(np.float32)
        kernels.shade_metal(patch, rows, cols, diffuse, spec[:n_vis] ** 40, self._vignette_flat.take(flat[keep]),
                            METAL_RGB[::-1].copy(), _SRGB_LUT)
        # Depth of field on the drill: blend between blur levels by each pixel's sigma; the
        # sigma map is dilated so that blurred edges spill over the background.
        sigma = np.zeros(mask.shape, np.float32)
        sigma[rows, cols] = self.camera.blur_sigma_px(t * self._rays_planes[2].take(flat[keep]))
        sigma = cv2.dilate(sigma, np.ones((9, 9), np.uint8), iterations=2)
        levels = np.asarray(self.DOF_LEVELS_PX, np.float32)
        sigma = np.clip(sigma, 0, levels[-1])
        self._depth_of_field(patch, sigma, levels, img[v0:v1, u0:u1])
        labels[v0:v1, u0:u1][rows, cols] = label

    @staticmethod
    def _depth_of_field(patch: np.ndarray, sigma: np.ndarray, levels: np.ndarray, out_u8: np.ndarray) -> None:
        """Blend ``patch`` (float32 BGR) blurred at each of ``levels`` (px) by tent weights over
        each pixel's ``sigma`` (px) into ``out_u8``; levels above the largest sigma in view get
        zero weight and are not blurred."""
        weights = np.empty((levels.size, *sigma.shape), np.float32)
        kernels.dof_weights(sigma, levels, weights)
        layers = tuple(patch if s_k == 0 or weights[k].max() <= 0 else _blur(patch, float(s_k))
                       for k, s_k in enumerate(levels))
        kernels.dof_blend(layers, weights, out_u8)

    @staticmethod
    def _burr_params(T_tool_to_cam: np.ndarray, drill: DrillGeometry) -> np.ndarray:
        """(cx, cy, cz, r) float32 of ``render_kernels.drill_hits``: burr centre (m, {C}) and radius (m)."""
        return np.array([*T_tool_to_cam[:3, 3], drill.burr_radius_m], np.float64).astype(np.float32)

    @staticmethod
    def _shaft_params(T_tool_to_cam: np.ndarray, drill: DrillGeometry) -> np.ndarray:
        """(segments, 13) float32 cylinder rows of ``render_kernels.drill_hits`` (m, {C}): unit axis
        u, start a, a.u, o = -a + (a.u) u, |o|^2 - radius^2, length, radius; the scalar products
        in float32, in the order of the former NumPy form."""
        rows = []
        for a_t, b_t, rad in drill.segments():
            pa = apply(T_tool_to_cam, a_t)
            axis = apply(T_tool_to_cam, b_t) - pa
            length = float(np.linalg.norm(axis))
            ux, uy, uz = (axis / length).astype(np.float32)
            ax_, ay_, az_ = pa.astype(np.float32)
            au = ax_ * ux + ay_ * uy + az_ * uz
            ox, oy, oz = -ax_ + au * ux, -ay_ + au * uy, -az_ + au * uz
            C = np.float32(ox * ox + oy * oy + oz * oz - rad * rad)
            rows.append([ux, uy, uz, ax_, ay_, az_, au, ox, oy, oz, C, np.float32(length), np.float32(rad)])
        return np.array(rows, np.float32).reshape(-1, 13)

    # ---- frame ---------------------------------------------------------------------------
    def render(self, T_tool_to_r: np.ndarray | None, drill: DrillGeometry, lighting: Lighting,
               rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """BGR uint8 image and ground-truth labels. ``rng=None`` renders without noise."""
        if self._cache_version != self.texture.skull.version:
            self._refresh_skull()
        return self._finish(self.skull_bgr.copy(), self.labels_skull.copy(), self.depth_t,
                            T_tool_to_r, drill, lighting, rng)

    def deferred_render(self, T_tool_to_r: np.ndarray | None, drill: DrillGeometry, lighting: Lighting,
                        rng: np.random.Generator | None) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """``render`` of the skull as it is now, split: the skull layer is brought up to date now
        and shared (``SharedSkullLayer``: copied only if the camera changes it before the render
        is drawn); the returned function, called once, draws the drill and the noise (later
        changes of the skull do not reach it). The image equals ``render``'s if nothing else
        draws from ``rng`` in between."""
        if self._cache_version != self.texture.skull.version:
            self._refresh_skull()
        layer = SharedSkullLayer(self.skull_bgr, self.labels_skull, self.depth_t)
        self._shared_layers.add(layer)
        return partial(self._finish_deferred, layer, T_tool_to_r, drill, lighting, rng)

    def _finish_deferred(self, layer: SharedSkullLayer, T_tool_to_r: np.ndarray | None, drill: DrillGeometry,
                         lighting: Lighting, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """``_finish`` on a deferred render's skull layer: on copies of its image and labels while
        they are still the camera's (its ray depths are only read)."""
        self._shared_layers.discard(layer)
        img, labels = (layer.img.copy(), layer.labels.copy()) if layer.shared else (layer.img, layer.labels)
        return self._finish(img, labels, layer.depth_t, T_tool_to_r, drill, lighting, rng)

    def _finish(self, img: np.ndarray, labels: np.ndarray, depth_t: np.ndarray, T_tool_to_r: np.ndarray | None,
                drill: DrillGeometry, lighting: Lighting,
                rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """Drill and sensor noise drawn in place into ``img`` and ``labels``, copies of the skull
        layer that the caller hands over (ray depths ``depth_t``, m, only read)."""
        if T_tool_to_r is not None:
            self._draw_drill(img, labels, depth_t, T_tool_to_r, drill, lighting)
        if rng is not None:
            k = int(rng.integers(len(self._noise_bank)))
            dy, dx = rng.integers(self._noise_pad, size=2)
            kernels.add_sensor_noise(img, self._noise_bank[k], int(dy), int(dx), self._sigma_lut)
        return img, labels


class StereoRenderer:
    """Both MSCS cameras over one skull."""

    def __init__(self, skull: Skull, T_s_to_r: np.ndarray, cameras: tuple[CameraModel, CameraModel],
                 lighting: Lighting, drill: DrillGeometry, noise: SensorNoise, seed: int):
        self.skull = skull
        self.T_s_to_r = T_s_to_r
        self.lighting = lighting
        self.drill = drill
        self.camera_models = cameras
        extent = self._footprint(skull, T_s_to_r, cameras)
        self.texture = SkullTexture(skull, extent, lighting)
        self.cameras = [CameraRenderer(c, self.texture, T_s_to_r, noise, seed * 2 + i)
                        for i, c in enumerate(cameras)]

    @staticmethod
    def _footprint(skull: Skull, T_s_to_r: np.ndarray, cameras) -> tuple[float, float, float, float]:
        """Extent (x0, x1, y0, y1) in {S} of what both cameras see of the skull's region, + margin."""
        T_r_to_s = invert(T_s_to_r)
        pts = []
        z_ref = skull.outer_height(0.0, skull.apex_y_m)
        for cam in cameras:
            w, h = cam.width_px - 1, cam.height_px - 1
            uv = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, 0], [w / 2, h], [0, h / 2], [w, h / 2]])
            d_s = cam.rays_for_pixels(uv) @ (T_r_to_s[:3, :3] @ cam.T_cam_to_r[:3, :3]).T
            o_s = apply(T_r_to_s, cam.centre_r)
            for dz_off in (-3e-3, 1e-3):
                t = (z_ref + dz_off - o_s[2]) / d_s[:, 2]
                pts.append(o_s + t[:, None] * d_s)
        pts = np.concatenate(pts)
        m = 0.5e-3
        return (pts[:, 0].min() - m, pts[:, 0].max() + m, pts[:, 1].min() - m, pts[:, 1].max() + m)

    def render(self, T_tool_to_r: np.ndarray | None, rng: np.random.Generator | None,
               drill: DrillGeometry | None = None, defer_right: bool = False) -> StereoImages:
        """Both images; ``rng=None`` renders without noise, ``drill`` overrides the geometry.
        ``defer_right``: draw the right image's drill and noise only when it is first read
        (``CameraRenderer.deferred_render``); the caller must then draw nothing more from ``rng``."""
        drill = drill or self.drill
        left, right = self.cameras
        l, ll = left.render(T_tool_to_r, drill, self.lighting, rng)
        if defer_right:
            return StereoImages(l, None, ll, None, right.deferred_render(T_tool_to_r, drill, self.lighting, rng))
        r, lr = right.render(T_tool_to_r, drill, self.lighting, rng)
        return StereoImages(l, r, ll, lr)
