"""NumPy reference forms of the renderer's compiled pieces (``twin.render_kernels``): the
drill's ray casting, shading and depth of field, the sensor noise and the skull texture's
shading, as ``twin.render`` computed them before they were compiled. The tests check the
compiled renderer against these bit for bit."""
from __future__ import annotations

import cv2
import numpy as np

from scenes.frames import apply
from twin.render import (_SRGB_LUT, DURA_RGB, LABEL_BURR, LABEL_SHAFT, METAL_RGB, CameraRenderer, CellBox,
                         DrillGeometry, Lighting, SkullTexture, _blur)


def _to_srgb_u8(linear: np.ndarray) -> np.ndarray:
    """Linear intensity in [0, 1] to 8-bit with display gamma 2.2 (12-bit lookup table)."""
    return _SRGB_LUT[(np.clip(linear, 0.0, 1.0) * 4095.0 + 0.5).astype(np.intp)]


class ReferenceSkullTexture(SkullTexture):
    """``SkullTexture`` shaded by the NumPy form (``update_texture``)."""

    def _update(self, heights: CellBox, shade: CellBox, outer: np.ndarray, thick: np.ndarray,
                skip: CellBox | None = None) -> None:
        # ``skip`` (the milling region, which the first refresh shades from the skull's grid) is
        # shaded here too: the old whole-grid form; the refresh overwrites it either way.
        update_texture(self, heights, shade, outer, thick)


def render(self: CameraRenderer, T_tool_to_r: np.ndarray | None, drill: DrillGeometry, lighting: Lighting,
           rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """``CameraRenderer.render`` with the reference drill and noise."""
    self.render(None, drill, lighting, None)          # brings the skull layer up to date
    img, labels = self.skull_bgr.copy(), self.labels_skull.copy()
    if T_tool_to_r is not None:
        draw_drill(self, img, labels, self.depth_t, T_tool_to_r, drill, lighting)
    if rng is not None:
        k = int(rng.integers(len(self._noise_bank)))
        dy, dx = rng.integers(self._noise_pad, size=2)
        h, w = img.shape[:2]
        bank = self._noise_bank[k][dy:dy + h, dx:dx + w]
        sig = cv2.LUT(img, self._sigma_lut).astype(np.int16)
        noise = cv2.multiply(bank, sig, scale=1 / (16 * 256), dtype=cv2.CV_16S)
        img = cv2.add(img.astype(np.int16), noise, dtype=cv2.CV_16S)
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img, labels


def draw_drill(self: CameraRenderer, img: np.ndarray, labels: np.ndarray, depth_t: np.ndarray,
               T_tool_to_r: np.ndarray, drill: DrillGeometry, lighting: Lighting) -> None:
    """``CameraRenderer._draw_drill`` as whole-array NumPy expressions."""
    # Structure-of-arrays float32 throughout: (N, 3) @ (3,) products and 2-D boolean
    # indexing are ~30x slower in NumPy than elementwise ops on contiguous 1-D arrays.
    T_tool_to_cam = self.camera.T_r_to_cam @ T_tool_to_r
    found = self._drill_candidates(T_tool_to_cam, drill)
    if found is None:
        return
    (v0, v1, u0, u1), mask = found
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return
    flat = (rows + v0) * self.camera.width_px + (cols + u0)
    dx, dy, dz = (self._rays_planes[k].take(flat) for k in range(3))
    n_pix = flat.size
    t_best = np.full(n_pix, np.inf, np.float32)
    label = np.zeros(n_pix, np.uint8)
    # Burr: ray-sphere (rays start at the optical centre, unit length).
    cx, cy, cz = T_tool_to_cam[:3, 3].astype(np.float32)
    r = np.float32(drill.burr_radius_m)
    b = dx * cx + dy * cy + dz * cz
    # disc = r^2 - |c - b d|^2, from the perpendicular offset itself: the textbook
    # b^2 - (|c|^2 - r^2) cancels catastrophically in float32 (|c|^2 ~ 0.25 m^2 vs r^2 ~ 2.5e-7).
    wx, wy, wz = cx - b * dx, cy - b * dy, cz - b * dz
    disc = r * r - (wx * wx + wy * wy + wz * wz)
    hit = disc >= 0
    t_best[hit] = b[hit] - np.sqrt(disc[hit])
    label[hit] = LABEL_BURR
    # Normal of the burr: (p - c) / r; of a cylinder: (p - axis point) / radius.
    ncx = np.full(n_pix, cx, np.float32)
    ncy = np.full(n_pix, cy, np.float32)
    ncz = np.full(n_pix, cz, np.float32)
    nrad = np.full(n_pix, r, np.float32)
    # Shaft: ray vs finite cylinders (no caps: their faces point away from the cameras).
    for a_t, b_t, rad in drill.segments():
        pa = apply(T_tool_to_cam, a_t)
        axis = apply(T_tool_to_cam, b_t) - pa
        length = float(np.linalg.norm(axis))
        ux, uy, uz = (axis / length).astype(np.float32)
        ax_, ay_, az_ = pa.astype(np.float32)
        du = dx * ux + dy * uy + dz * uz
        ddx, ddy, ddz = dx - du * ux, dy - du * uy, dz - du * uz
        au = ax_ * ux + ay_ * uy + az_ * uz
        ox, oy, oz = -ax_ + au * ux, -ay_ + au * uy, -az_ + au * uz
        A = ddx * ddx + ddy * ddy + ddz * ddz
        B = 2 * (ddx * ox + ddy * oy + ddz * oz)
        C = np.float32(ox * ox + oy * oy + oz * oz - rad * rad)
        disc = B * B - 4 * A * C
        ok = (disc >= 0) & (A > 1e-12)
        tc = np.full(n_pix, np.inf, np.float32)
        tc[ok] = (-B[ok] - np.sqrt(disc[ok])) / (2 * A[ok])
        s_ax = np.where(ok, tc, 0) * du - au                      # axial coordinate of the hit
        closer = ok & (tc > 0) & (s_ax >= 0) & (s_ax <= length) & (tc < t_best)
        if np.any(closer):
            t_best[closer] = tc[closer]
            label[closer] = LABEL_SHAFT
            sc = s_ax[closer]
            ncx[closer] = ax_ + sc * ux
            ncy[closer] = ay_ + sc * uy
            ncz[closer] = az_ + sc * uz
            nrad[closer] = rad
    visible = np.isfinite(t_best) & (t_best < depth_t.take(flat))
    if not np.any(visible):
        return
    flat, rows, cols, t = flat[visible], rows[visible], cols[visible], t_best[visible]
    dx, dy, dz = dx[visible], dy[visible], dz[visible]
    inv_r = 1 / nrad[visible]
    nx = (dx * t - ncx[visible]) * inv_r
    ny = (dy * t - ncy[visible]) * inv_r
    nz = (dz * t - ncz[visible]) * inv_r
    L = self.T_cam_to_s[:3, :3].T @ np.asarray(lighting.direction_s, float)
    lx, ly, lz = (L / np.linalg.norm(L)).astype(np.float32)
    hx, hy, hz = lx - dx, ly - dy, lz - dz                        # Blinn-Phong half vector
    hn = np.sqrt(hx * hx + hy * hy + hz * hz)
    ndl = np.clip(nx * lx + ny * ly + nz * lz, 0, None)
    spec = np.clip((nx * hx + ny * hy + nz * hz) / hn, 0, None) ** 40
    diffuse = lighting.ambient + lighting.intensity * ndl
    vig = self._vignette_flat.take(flat)
    patch = img[v0:v1, u0:u1].astype(np.float32)
    for ch, k in enumerate((2, 1, 0)):                            # BGR
        lin = (METAL_RGB[k] * diffuse + 0.6 * spec)
        patch[rows, cols, ch] = _to_srgb_u8(lin).astype(np.float32) * vig

    # Depth of field on the drill: blend between blur levels by each pixel's sigma; the
    # sigma map is dilated so that blurred edges spill over the background.
    sigma = np.zeros(mask.shape, np.float32)
    sigma[rows, cols] = self.camera.blur_sigma_px(t * dz)
    sigma = cv2.dilate(sigma, np.ones((9, 9), np.uint8), iterations=2)
    levels = np.asarray(self.DOF_LEVELS_PX, np.float32)
    sigma = np.clip(sigma, 0, levels[-1])
    # Tent weights over the levels sum to 1 at every pixel; levels above the largest sigma
    # in view get zero weight and are skipped.
    out = np.zeros_like(patch)
    for k, s_k in enumerate(levels):
        lo = levels[k - 1] if k > 0 else s_k - 1.0
        hi = levels[k + 1] if k + 1 < len(levels) else s_k + 1.0
        w = np.where(sigma <= s_k, (sigma - lo) / (s_k - lo), (hi - sigma) / (hi - s_k))
        if k == 0:
            w = np.where(sigma <= s_k, 1.0, w)
        w = np.clip(w, 0.0, 1.0).astype(np.float32)
        if w.max() <= 0:
            continue
        out += (patch if s_k == 0 else _blur(patch, float(s_k))) * w[..., None]
    img[v0:v1, u0:u1] = np.clip(out, 0, 255).astype(np.uint8)
    labels[v0:v1, u0:u1][rows, cols] = label[visible]


def update_texture(self: SkullTexture, heights: CellBox, shade: CellBox, outer: np.ndarray, thick: np.ndarray) -> None:
    """``SkullTexture._update`` as whole-array NumPy expressions."""
    skin = self._skin[heights.rows, heights.cols]
    height = outer + self.SKIN_THICKNESS_M * skin
    self.height[heights.rows, heights.cols] = height
    gy, gx = np.gradient(height, self.grid.cell)
    crop = (slice(shade.r0 - heights.r0, shade.r1 - heights.r0),
            slice(shade.c0 - heights.c0, shade.c1 - heights.c0))
    gy, gx, thick, skin = gy[crop], gx[crop], thick[crop], skin[crop]
    translucency = (0.85 * np.exp(-np.maximum(thick, 0.0) / 0.12e-3))[..., None]
    bone = self._bone_albedo[shade.rows, shade.cols] * (1 - translucency) + DURA_RGB * translucency
    albedo = bone * (1 - skin[..., None]) + self._skin_albedo[shade.rows, shade.cols] * skin[..., None]
    n = np.stack([-gx, -gy, np.ones_like(gx)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    L = np.asarray(self.lighting.direction_s, float)
    L = L / np.linalg.norm(L)
    shade_f = self.lighting.ambient + self.lighting.intensity * np.clip(n @ L, 0.0, None)
    self.bgr_u8[shade.rows, shade.cols] = _to_srgb_u8(albedo * shade_f[..., None])[..., ::-1]
