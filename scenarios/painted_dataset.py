"""A second renderer, deliberately unlike the twin's, that writes a labelled COCO keypoints data
set: the stand-in for a lab's own annotated images when testing the fine-tuning path
(``micromill train keypoints --data DIR``) without a rig.

The twin (``twin.render``) ray-casts a 3-D skull height field and a Blinn-Phong metal drill
through calibrated pinhole cameras, with skin-coloured surroundings, depth of field and sensor
noise. This one paints 2-D images with OpenCV and shares none of that code or its look:

- background: a green surgical drape with a woven texture (the twin: skin);
- skull: an ellipse of cool grey-blue bone with a blotchy texture and a linear shading ramp,
  crossed by dark red sutures: a sagittal line along image x, a coronal and a lambdoid curve;
  bregma and lambda are where they cross the sagittal line (bregma at the larger x);
- drill: a dark blue anodised shaft from outside the image to the tip, with a gold burr (a disc
  with flutes and a specular spot) whose centre is the ``drill_tip`` keypoint (the twin: a
  silver sphere on a steel shank);
- camera: a random gamma and contrast, Gaussian blur, strong colour noise and JPEG artefacts.

In ``no_drill_fraction`` of the images there is no drill (``drill_tip`` v = 0); the burr
drawn partly outside the image counts as visible when its centre is inside. Bregma and lambda
are labelled visible in every image, even where the drill's shaft covers one (not tested). Sizes scale with
the image width (tuned at 320 px: burr radius 4-6 px). Deterministic for a seed.

With ``window``, an image instead holds a circular groove around a point of the bone whose
completion varies along it (``_paint_groove``: untouched bone shows nothing, deeper cuts a darker
band, cut-through stretches the dura's red), written as ``completion.json``
(``scenarios.completion_labels``) with ``WINDOW_POINTS`` labelled points.

    python -m scenarios.painted_dataset OUT_DIR [--images N] [--width PX] [--height PX] [--seed S] [--completion]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from scenarios.export_frames import CATEGORIES

#: the most images one call writes
MAX_PAINTED_IMAGES = 5000


#: trajectory points of a painted window
WINDOW_POINTS = 24


@dataclass(frozen=True)
class PaintedImage:
    """One painted image (BGR uint8) and its keypoints (px, pixel centres at integers); with a
    window: its centre (px), its ``WINDOW_POINTS`` trajectory points (px) and their completion."""

    image: np.ndarray
    drill_tip_xy: np.ndarray | None      # None: no drill in the picture
    bregma_xy: np.ndarray
    lambda_xy: np.ndarray
    window_centre_xy: np.ndarray | None = None
    window_points_xy: np.ndarray | None = None
    window_levels: np.ndarray | None = None


def _paint_groove(rng: np.random.Generator, img: np.ndarray, centre: np.ndarray, radius: float, s: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Paint a circular groove into ``img`` (float BGR, in place): a dark band, deeper and redder
    (the dura showing through) where the completion c is higher; c varies smoothly around the
    circle, clipped to [0, 1] so that stretches are untouched or cut through. Returns the
    ``WINDOW_POINTS`` points (px) on the circle and their completion."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    harmonics = rng.normal(0, 0.5, (3, 2))
    offset = rng.uniform(-0.2, 1.0)

    def level(theta):
        c = offset + sum(a * np.cos((k + 1) * theta) + b * np.sin((k + 1) * theta)
                         for k, (a, b) in enumerate(harmonics))
        return np.clip(c, 0.0, 1.0)

    theta = np.arctan2(yy - centre[1], xx - centre[0])
    across = np.abs(np.hypot(xx - centre[0], yy - centre[1]) - radius) / (3.0 * s)   # 0 on the line, 1 at the edge
    band = np.clip(1.0 - across, 0.0, 1.0) ** 0.7
    c = level(theta)
    dura = np.array([70, 60, 160], np.float32)
    groove = img * (1.0 - 0.45 * c[..., None]) * (1.0 - 0.35 * c[..., None] ** 3) \
        + (c[..., None] ** 3) * 0.35 * dura[None, None]
    a = (band * np.clip(0.25 + c, 0.0, 1.0))[..., None]
    img[:] = img * (1.0 - a) + groove * a
    t = np.linspace(-np.pi, np.pi, WINDOW_POINTS, endpoint=False)
    return centre + radius * np.stack([np.cos(t), np.sin(t)], axis=1), level(t)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell_px: float) -> np.ndarray:
    """Blotchy noise in [0, 1]: random values on a coarse grid, bicubically upsampled."""
    gh, gw = max(2, int(h / cell_px) + 2), max(2, int(w / cell_px) + 2)
    small = rng.random((gh, gw)).astype(np.float32)
    n = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(n, 0.0, 1.0)


def _suture(rng: np.random.Generator, x0: float, y_range: tuple[float, float], bend: float, wave: float,
            n: int = 40) -> np.ndarray:
    """Points (n, 2) of a wavy curve crossing the sagittal line at (x0, 0): x = x0 + bend y^2 + waves."""
    y = np.linspace(*y_range, n)
    f, p = rng.uniform(0.08, 0.2), rng.uniform(0, 6.3)
    x = x0 + bend * y ** 2 + wave * (np.sin(f * y + p) - np.sin(p))
    return np.stack([x, y], axis=1)


def paint_image(rng: np.random.Generator, width: int, height: int, drill: bool, window: bool = False
                ) -> PaintedImage:
    """One image of ``width`` x ``height`` px; ``drill``: paint the drill; ``window``: paint a
    groove with random completion levels around a point of the bone."""
    s = width / 320.0
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # drape: green, woven
    weave = 0.5 + 0.25 * np.sin(xx * 1.7 / s) * np.sin(yy * 1.3 / s)
    drape = np.array([60, 120, 40], np.float32) * rng.uniform(0.7, 1.2)
    img = drape[None, None] * (0.7 + 0.5 * weave[..., None])
    # skull: an ellipse of grey-blue bone
    c = np.array([width / 2 + rng.uniform(-0.08, 0.08) * width, height / 2 + rng.uniform(-0.08, 0.08) * height])
    ax = np.array([rng.uniform(0.36, 0.44) * width, rng.uniform(0.33, 0.42) * height])
    ang = np.deg2rad(rng.uniform(-8, 8))
    dx, dy = xx - c[0], yy - c[1]
    u = (np.cos(ang) * dx + np.sin(ang) * dy) / ax[0]
    v = (-np.sin(ang) * dx + np.cos(ang) * dy) / ax[1]
    inside = np.clip((1.0 - (u ** 2 + v ** 2)) * 8.0, 0.0, 1.0)
    bone = np.array([205, 185, 165], np.float32) * rng.uniform(0.8, 1.1)            # BGR: cool grey-blue
    blotch = _smooth_noise(rng, height, width, 12 * s)
    light = rng.normal(size=2)
    ramp = 0.8 + 0.2 * np.clip((light[0] * u + light[1] * v) / (np.linalg.norm(light) + 1e-9), -1, 1)
    bone_img = bone[None, None] * (ramp * (0.8 + 0.35 * blotch))[..., None]
    img = img * (1 - inside[..., None]) + bone_img * inside[..., None]
    # sutures: sagittal along the ellipse's u axis; coronal (bregma, larger x) and lambdoid
    e_u, e_v = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
    t_b, t_l = rng.uniform(0.15, 0.3) * ax[0], -rng.uniform(0.2, 0.35) * ax[0]
    bregma, lam = c + t_b * e_u, c + t_l * e_u
    suture_colour = tuple(float(k) for k in np.array([50, 50, 120]) * rng.uniform(0.8, 1.2))
    thickness = max(1, int(round(1.5 * s)))
    ends = c + np.array([-0.95, 0.95])[:, None] * ax[0] * e_u
    sag = np.linspace(ends[0], ends[1], 60) + rng.normal(0, 0.6 * s, (60, 2)) * e_v
    curves = [sag]
    for t0, bend in ((t_b, rng.uniform(0.002, 0.006) / s), (t_l, -rng.uniform(0.004, 0.01) / s)):
        local = _suture(rng, t0, (-0.85 * ax[1], 0.85 * ax[1]), bend, 1.5 * s)
        curves.append(c + local[:, :1] * e_u + local[:, 1:] * e_v)
    suture_layer = np.zeros((height, width), np.uint8)
    for pts in curves:
        cv2.polylines(suture_layer, [np.round(pts * 4).astype(np.int32)], False, 255, thickness, cv2.LINE_AA, shift=2)
    a = (suture_layer.astype(np.float32) / 255.0 * inside)[..., None]
    img = img * (1 - a) + np.array(suture_colour, np.float32)[None, None] * a
    window_xy = points = levels = None
    if window:
        window_xy = c + rng.uniform(-0.3, 0.3) * ax[0] * e_u + rng.uniform(-0.3, 0.3) * ax[1] * e_v
        points, levels = _paint_groove(rng, img, window_xy, rng.uniform(0.12, 0.2) * ax[1], s)
    tip = None
    if drill:
        tip = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height])
        r = rng.uniform(4.0, 6.0) * s
        phi = rng.uniform(0, 2 * np.pi)
        far = tip + 3 * width * np.array([np.cos(phi), np.sin(phi)])
        shaft = tuple(float(k) for k in np.array([120, 60, 30]) * rng.uniform(0.8, 1.2))    # dark blue
        layer = img.astype(np.float32)
        cv2.line(layer, tuple(int(k) for k in np.round(tip * 4)), tuple(int(k) for k in np.round(far * 4)),
                 shaft, max(2, int(round(1.1 * r))), cv2.LINE_AA, shift=2)
        burr = np.clip(1.0 - np.hypot(xx - tip[0], yy - tip[1]) / r, 0.0, 1.0)
        mask = np.clip(burr * r, 0.0, 1.0)[..., None]
        flutes = 0.75 + 0.25 * np.sin(6 * np.arctan2(yy - tip[1], xx - tip[0]) + rng.uniform(0, 6.3))
        spot = tip + 0.35 * r * rng.normal(size=2)
        spec = np.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / (2 * (0.3 * r) ** 2))
        gold = np.array([40, 160, 210], np.float32)
        burr_img = gold[None, None] * flutes[..., None] * (0.7 + 0.3 * burr[..., None]) + 120 * spec[..., None]
        img = layer * (1 - mask) + burr_img * mask
    # camera: gamma and contrast, blur, colour noise, JPEG
    img = np.clip(img, 0, 255) / 255.0
    img = img ** rng.uniform(0.7, 1.4) * rng.uniform(0.75, 1.2) + rng.uniform(-0.08, 0.08)
    img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2) * s)
    img = np.clip(img + rng.normal(0, rng.uniform(3, 10), img.shape), 0, 255).astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 90))])
    img = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    return PaintedImage(img, tip, bregma, lam, window_xy, points, levels)


def _keypoints(xy: np.ndarray | None, width: int, height: int) -> list[float]:
    """[x, y, v] of one point: v = 2 inside the image, 0 (and 0, 0) when absent or outside."""
    if xy is None or not (0 <= xy[0] <= width - 1 and 0 <= xy[1] <= height - 1):
        return [0.0, 0.0, 0]
    return [round(float(xy[0]), 3), round(float(xy[1]), 3), 2]


def _prepare(out: Path | str, n_images: int, width: int, height: int, seed: int) -> tuple[Path, np.random.Generator]:
    """Check the counts a user typed (images, size in px), make ``out/images``; the output folder
    and the generator seeded by ``seed``."""
    if not 1 <= n_images <= MAX_PAINTED_IMAGES:
        raise ValueError(f"n_images={n_images} must be in [1, {MAX_PAINTED_IMAGES}]")
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise ValueError(f"width x height = {width} x {height} px must be within 64..4096 px each")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    return out, np.random.default_rng(seed)


def write_painted_dataset(out: Path | str, n_images: int, width: int = 320, height: int = 192, seed: int = 0,
                          no_drill_fraction: float = 0.15) -> Path:
    """Paint ``n_images`` labelled images into ``out/images`` and write ``out/annotations.json``
    (COCO keypoints, the categories of ``micromill export-frames``); returns the JSON's path."""
    out, rng = _prepare(out, n_images, width, height, seed)
    images, annotations = [], []
    for i in range(n_images):
        p = paint_image(rng, width, height, drill=rng.random() >= no_drill_fraction)
        name = f"images/painted_{i:05d}.png"
        cv2.imwrite(str(out / name), p.image)
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
        annotations.append({"id": 2 * i + 1, "image_id": i + 1, "category_id": 1,
                            "keypoints": _keypoints(p.drill_tip_xy, width, height)})
        annotations.append({"id": 2 * i + 2, "image_id": i + 1, "category_id": 2,
                            "keypoints": _keypoints(p.bregma_xy, width, height)
                            + _keypoints(p.lambda_xy, width, height)})
    doc = {"info": {"description": f"scenarios.painted_dataset, seed {seed}"}, "images": images,
           "annotations": annotations, "categories": CATEGORIES}
    path = out / "annotations.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def write_painted_completion(out: Path | str, n_images: int, width: int = 480, height: int = 288,
                             seed: int = 0) -> Path:
    """Paint ``n_images`` images, each with a groove of random completion, into ``out/images`` and
    write ``out/completion.json`` (``scenarios.completion_labels``); returns the JSON's path."""
    out, rng = _prepare(out, n_images, width, height, seed)
    images = []
    for i in range(n_images):
        p = paint_image(rng, width, height, drill=False, window=True)
        name = f"images/window_{i:05d}.png"
        cv2.imwrite(str(out / name), p.image)
        images.append({"file_name": name, "width": width, "height": height, "id": i + 1,
                       "window_centre_px": np.round(p.window_centre_xy, 3).tolist(),
                       "points_px": np.round(p.window_points_xy, 3).tolist(),
                       "levels": np.round(p.window_levels, 4).tolist()})
    path = out / "completion.json"
    path.write_text(json.dumps({"images": images, "label_radius_px": round(3.0 * width / 320.0, 3)}, indent=1))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (images/ and annotations.json)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--width", type=int, default=960, help="px (default 960, the MSCS size)")
    parser.add_argument("--height", type=int, default=540, help="px (default 540)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--completion", action="store_true",
                        help="paint grooves and write completion.json instead of keypoints")
    args = parser.parse_args(argv)
    write = write_painted_completion if args.completion else write_painted_dataset
    print(write(args.out, args.images, args.width, args.height, args.seed))


if __name__ == "__main__":
    main()
