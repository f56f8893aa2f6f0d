"""Compiled (numba) forms of the renderer's per-pixel loops, bit-identical to their NumPy forms.

Each kernel repeats, pixel by pixel and in the same float32 / float64 operation order, what
``twin.render`` used to compute with whole-array NumPy expressions; fusing them removes the
temporary arrays and passes over memory that dominated a frame. No fast-math (no reordering,
no fused multiply-add), so every result is the one NumPy gives; ``tests/test_cameras_render.py``
compares each kernel with its NumPy reference with ``np.array_equal``. Powers (``x ** 40`` of
the specular term) stay in NumPy: its ``pow`` need not round like the compiled one.
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: ground-truth labels of the drill's pixels (``twin.render`` re-exports them with skin 0, bone 1)
LABEL_BURR, LABEL_SHAFT = 2, 3
_F0 = np.float32(0.0)
_A_MIN = np.float32(1e-12)          # the ray-axis degeneracy bound, compared in float32


@njit(cache=True, nogil=True)
def drill_hits(flat: np.ndarray, dx_all: np.ndarray, dy_all: np.ndarray, dz_all: np.ndarray,
               depth_flat: np.ndarray, burr: np.ndarray, segs: np.ndarray, light: np.ndarray,
               t_out: np.ndarray, ndl_out: np.ndarray, spec_base_out: np.ndarray,
               label_out: np.ndarray, keep_out: np.ndarray) -> int:
    """Compiled form of the drill's ray casting and the angle terms of its Blinn-Phong shading.

    For each candidate pixel ``flat[i]`` (index into the image's flattened ray planes
    ``d*_all``, unit rays in {C}): ray-sphere with the burr (``burr`` = cx, cy, cz, r, float32,
    m, {C}), then ray vs each finite cylinder of ``segs`` (rows ux, uy, uz, ax, ay, az, au, ox,
    oy, oz, C, length, radius: unit axis, start point, ``au = a.u``, ``o = -a + au u``,
    ``C = |o|^2 - radius^2``, all float32), nearest hit kept; visible where nearer than the
    skull (``depth_flat``, m). For the visible pixels, written compactly in order: ``keep_out``
    (candidate index), ``t_out`` (ray length, m), ``label_out``, ``ndl_out`` = max(n.L, 0) and
    ``spec_base_out`` = max(n.h / |h|, 0) with ``light`` = (lx, ly, lz) the unit light direction
    in {C} and h = L - d. Returns the number of visible pixels.
    """
    cx, cy, cz, r = burr[0], burr[1], burr[2], burr[3]
    lx, ly, lz = light[0], light[1], light[2]
    n_vis = 0
    for i in range(flat.size):
        f = flat[i]
        dx, dy, dz = dx_all[f], dy_all[f], dz_all[f]
        t_best = np.float32(np.inf)
        label = 0
        # Burr, ray-sphere (rays start at the optical centre, unit length): disc = r^2 - |c - b d|^2
        # from the perpendicular offset itself; the textbook b^2 - (|c|^2 - r^2) cancels
        # catastrophically in float32 (|c|^2 ~ 0.25 m^2 vs r^2 ~ 2.5e-7).
        b = dx * cx + dy * cy + dz * cz
        wx, wy, wz = cx - b * dx, cy - b * dy, cz - b * dz
        disc = r * r - (wx * wx + wy * wy + wz * wz)
        ncx, ncy, ncz, nrad = cx, cy, cz, r
        if disc >= _F0:
            t_best = b - np.sqrt(disc)
            label = LABEL_BURR
        for k in range(segs.shape[0]):      # shaft: finite cylinders, no caps (they face away)
            s = segs[k]
            ux, uy, uz, ax, ay, az, au = s[0], s[1], s[2], s[3], s[4], s[5], s[6]
            du = dx * ux + dy * uy + dz * uz
            ddx, ddy, ddz = dx - du * ux, dy - du * uy, dz - du * uz
            A = ddx * ddx + ddy * ddy + ddz * ddz
            B = np.float32(2) * (ddx * s[7] + ddy * s[8] + ddz * s[9])
            dsc = B * B - np.float32(4) * A * s[10]
            if not (dsc >= _F0 and A > _A_MIN):
                continue
            tc = (-B - np.sqrt(dsc)) / (np.float32(2) * A)
            s_ax = tc * du - au
            if tc > _F0 and s_ax >= _F0 and s_ax <= s[11] and tc < t_best:
                t_best = tc
                label = LABEL_SHAFT
                ncx, ncy, ncz, nrad = ax + s_ax * ux, ay + s_ax * uy, az + s_ax * uz, s[12]
        if not (np.isfinite(t_best) and t_best < depth_flat[f]):
            continue
        inv_r = np.float32(1) / nrad        # normal: (hit - centre or axis point) / radius
        nx = (dx * t_best - ncx) * inv_r
        ny = (dy * t_best - ncy) * inv_r
        nz = (dz * t_best - ncz) * inv_r
        hx, hy, hz = lx - dx, ly - dy, lz - dz
        hn = np.sqrt(hx * hx + hy * hy + hz * hz)
        keep_out[n_vis] = i
        t_out[n_vis] = t_best
        label_out[n_vis] = label
        ndl_out[n_vis] = max(nx * lx + ny * ly + nz * lz, _F0)
        spec_base_out[n_vis] = max((nx * hx + ny * hy + nz * hz) / hn, _F0)
        n_vis += 1
    return n_vis


@njit(cache=True, nogil=True)
def shade_metal(patch: np.ndarray, rows: np.ndarray, cols: np.ndarray, diffuse: np.ndarray,
                spec: np.ndarray, vig: np.ndarray, metal_bgr: np.ndarray, srgb_lut: np.ndarray) -> None:
    """Compiled form of the drill's metal colour: for visible pixel i, channel c (BGR),
    ``patch[rows[i], cols[i], c] = srgb(metal_bgr[c] * diffuse[i] + 0.6 * spec[i]) * vig[i]``
    (float64 sum of a float64 and a float32 product, then the 12-bit sRGB table, as
    ``twin.render._to_srgb_u8`` does)."""
    k06 = np.float32(0.6)
    for i in range(rows.size):
        sp = np.float64(k06 * spec[i])
        for c in range(3):
            lin = metal_bgr[c] * np.float64(diffuse[i]) + sp
            lin = min(max(lin, 0.0), 1.0)
            patch[rows[i], cols[i], c] = np.float32(srgb_lut[np.intp(lin * 4095.0 + 0.5)]) * vig[i]


@njit(cache=True, nogil=True)
def dof_weights(sigma: np.ndarray, levels: np.ndarray, weights: np.ndarray) -> None:
    """Compiled form of the depth-of-field tent weights: ``weights[k]`` (float32, the shape of
    ``sigma``) of blur level ``levels[k]`` (px) at each pixel's ``sigma`` (px), clipped to [0, 1];
    level 0 takes weight 1 at and below its sigma."""
    n = levels.size
    one = np.float32(1.0)
    for k in range(n):
        s_k = levels[k]
        lo = levels[k - 1] if k > 0 else s_k - one
        hi = levels[k + 1] if k + 1 < n else s_k + one
        rise, fall = s_k - lo, hi - s_k
        for v in range(sigma.shape[0]):
            for u in range(sigma.shape[1]):
                s = sigma[v, u]
                if s <= s_k:
                    w = one if k == 0 else (s - lo) / rise
                else:
                    w = (hi - s) / fall
                weights[k, v, u] = min(max(w, _F0), one)


@njit(cache=True, nogil=True)
def dof_blend(layers: tuple, weights: np.ndarray, out_u8: np.ndarray) -> None:
    """Compiled form of the depth-of-field blend: ``out_u8 = uint8(clip(sum_k layers[k] *
    weights[k], 0, 255))`` summed in level order in float32 (``layers``: one (H, W, 3) float32
    image per level, ``weights`` (levels, H, W)); zero-weight terms are skipped (adding +0 changes
    nothing)."""
    for v in range(out_u8.shape[0]):
        for u in range(out_u8.shape[1]):
            for c in range(3):
                acc = _F0
                for k in range(len(layers)):
                    w = weights[k, v, u]
                    if w > _F0:
                        acc += layers[k][v, u, c] * w
                out_u8[v, u, c] = np.uint8(min(max(acc, _F0), np.float32(255.0)))


@njit(cache=True, nogil=True)
def add_sensor_noise(img: np.ndarray, bank: np.ndarray, dy: int, dx: int, sigma_lut: np.ndarray) -> None:
    """Compiled form of the sensor noise, in place: ``img = clip(img + rint(bank[dy + v, dx + u]
    * sigma_lut[img] / 4096), 0, 255)`` per pixel and channel (uint8 ``img`` (H, W, 3), int16
    ``bank``), rounding half to even as ``cv2.multiply`` with scale 1/4096 into int16 and then
    ``cv2.add`` do (the product is an exact integer, so the rounding is done exactly in
    integers). In place because each value depends on its own pixel only: no new image, whose
    fresh memory costs as much as the noise. Per row, the table look-up is a loop of its own
    into an int32 buffer: without the gather the arithmetic loop is vectorised."""
    h, w, ch = img.shape
    n = w * ch
    lut = sigma_lut.astype(np.int32)
    sigma = np.empty(n, np.int32)          # sigma_lut of the row's pixel values
    for v in range(h):
        row = img[v].reshape(-1)
        noise = bank[dy + v, dx:dx + w].reshape(-1)
        for i in range(n):
            sigma[i] = lut[row[i]]
        for i in range(n):
            p = np.int32(row[i])
            prod = np.int32(noise[i]) * sigma[i]
            # round(prod / 4096) half to even: floor((prod + 2047 + (floor(prod / 4096) odd)) / 4096)
            q = (prod + 2047 + ((prod >> 12) & 1)) >> 12
            row[i] = np.uint8(min(max(p + q, 0), 255))


@njit(cache=True, nogil=True)
def surface_normals(gx: np.ndarray, gy: np.ndarray, n_out: np.ndarray) -> None:
    """Compiled form of the texture's unit normals ``(-gx, -gy, 1) / |(-gx, -gy, 1)|`` in the
    precision of ``gx``, ``gy`` (the height field's slopes): the squared norm summed as NumPy's
    ``linalg.norm`` over the last axis of (H, W, 3) does, (n0^2 + n1^2) + n2^2."""
    for i in range(gx.shape[0]):
        for j in range(gx.shape[1]):
            x, y, z = -gx[i, j], -gy[i, j], np.float32(1.0)
            norm = np.sqrt((x * x + y * y) + z * z)
            n_out[i, j, 0] = x / norm
            n_out[i, j, 1] = y / norm
            n_out[i, j, 2] = z / norm


@njit(cache=True, nogil=True)
def shade_texture(bone_albedo: np.ndarray, translucency: np.ndarray, skin: np.ndarray, skin_albedo: np.ndarray,
                  dura_rgb: np.ndarray, shade: np.ndarray, srgb_lut: np.ndarray, out_bgr: np.ndarray) -> None:
    """Compiled form of the texture's colour: per cell and RGB channel c,
    ``bone = bone_albedo * (1 - tr) + dura_rgb * tr``, ``albedo = bone * (1 - skin) + skin_albedo * skin``,
    ``out_bgr[..., 2 - c] = srgb(albedo * shade)`` (float32 products of float32 maps promoted to
    float64 where NumPy promotes them, float64 throughout for float64 ``translucency``; ``shade``
    float64 Lambertian factor; 12-bit sRGB table)."""
    one = np.float32(1.0)
    for i in range(shade.shape[0]):
        for j in range(shade.shape[1]):
            tr, sk = translucency[i, j], skin[i, j]
            for c in range(3):
                bone = np.float64(bone_albedo[i, j, c] * (one - tr)) + dura_rgb[c] * np.float64(tr)
                alb = bone * np.float64(one - sk) + np.float64(skin_albedo[i, j, c] * sk)
                lin = min(max(alb * shade[i, j], 0.0), 1.0)
                out_bgr[i, j, 2 - c] = srgb_lut[np.intp(lin * 4095.0 + 0.5)]
