"""Completion level recognition: how far the groove is cut through at each trajectory point
(paper section III-C; c = 0 untouched bone, c = 1 fully penetrated).

The controller knows where the window is: it projects the trajectory's centre and its n points
through its calibration into the left image. ``CompletionEstimator.estimate`` then

1. cuts a square crop of the left image centred on the window centre pixel, with half-size
   ``radius_scale * radius_px + margin_px`` (``radius_px``: the mean distance of the points
   from the centre; the margin holds the groove's outer edge, one burr radius beyond the
   circle), resampled to ``input_px`` x ``input_px`` (``crop_window``, bilinear);
2. runs the completion network (``completion_net``) on it: a completion map over the crop;
3. samples the map bilinearly at the points' crop coordinates (``sample_map``).

Coordinate convention (shared by training and inference, see ``CropBox``): pixel centres are
integers, (0, 0) is the centre of the top-left pixel, in the image and in the crop. The crop
covers image x in [cx - half, cx + half] (pixel edges), so crop pixel u has its centre at
image x = cx - half + (u + 0.5) * s with s = 2 * half / input_px image px per crop px, and
likewise for y. Crop pixels outside the image are black.

Weights: ``weights/completion.pt`` (network, crop settings, format tag, model card), read by
the shared checked reader (``weights_io``); every failure is a ``DetectorLoadError``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from controllers.perception.completion_net import CompletionNet, CompletionNetConfig
from controllers.perception.keypoint_detector import to_tensor
from controllers.perception.weights_io import DetectorLoadError, read_weights

FORMAT = "micromill-completion/1"
TRAIN_COMMAND = "micromill train completion"


@dataclass(frozen=True)
class CropConfig:
    """How the window crop is cut (stored with the weights: training and inference must agree).

    ``input_px``: side of the network input (px); ``radius_scale`` (-) and ``margin_px``
    (image px) give the crop half-size from the window radius in image px."""

    input_px: int = 96
    radius_scale: float = 1.35
    margin_px: float = 20.0

    def __post_init__(self):
        if self.input_px < 8:
            raise ValueError(f"CropConfig.input_px={self.input_px} must be >= 8")
        if self.radius_scale < 1.0:
            raise ValueError(f"CropConfig.radius_scale={self.radius_scale} must be >= 1 (the crop holds the circle)")
        if self.margin_px < 0.0:
            raise ValueError(f"CropConfig.margin_px={self.margin_px} must be >= 0")

    def half_size_px(self, radius_px: float) -> float:
        """Crop half-size (image px) for a window of radius ``radius_px`` (image px)."""
        return self.radius_scale * radius_px + self.margin_px

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CropBox:
    """A square crop of an image: centre (image px), half-size (image px), output side (px)."""

    centre_px: tuple[float, float]
    half_size_px: float
    input_px: int

    @property
    def scale(self) -> float:
        """Image px per crop px."""
        return 2.0 * self.half_size_px / self.input_px

    @property
    def origin_px(self) -> np.ndarray:
        """Image coordinates of crop pixel (0, 0)'s centre."""
        return np.asarray(self.centre_px, float) - self.half_size_px + 0.5 * self.scale

    def to_crop(self, xy_px: np.ndarray) -> np.ndarray:
        """Image px (..., 2) -> crop px (..., 2)."""
        return (np.asarray(xy_px, float) - self.origin_px) / self.scale

    def to_image(self, uv_px: np.ndarray) -> np.ndarray:
        """Crop px (..., 2) -> image px (..., 2)."""
        return np.asarray(uv_px, float) * self.scale + self.origin_px

    def bounds_px(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1): the crop's outer pixel edges in image px."""
        cx, cy = self.centre_px
        h = self.half_size_px
        return (cx - h, cy - h, cx + h, cy + h)


def window_crop_box(centre_px, points_px, config: CropConfig) -> CropBox:
    """The crop for a window whose centre and trajectory points project to ``centre_px`` (2,) and
    ``points_px`` (n, 2) in the image (px)."""
    c = np.asarray(centre_px, float)
    p = np.asarray(points_px, float)
    if c.shape != (2,) or not np.all(np.isfinite(c)):
        raise ValueError(f"centre_px must be 2 finite numbers (x, y), got {centre_px!r}")
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3 or not np.all(np.isfinite(p)):
        raise ValueError(f"points_px must be (n, 2) finite pixel coordinates with n >= 3, got shape {p.shape}")
    radius_px = float(np.mean(np.linalg.norm(p - c, axis=1)))
    if radius_px < 1.0:
        raise ValueError(f"points_px lie {radius_px:.3g} px from centre_px on average: not a window (need >= 1 px)")
    return CropBox((float(c[0]), float(c[1])), config.half_size_px(radius_px), config.input_px)


def crop_window(image: np.ndarray, box: CropBox, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """The ``box`` crop of ``image`` ((H, W) or (H, W, C), any OpenCV dtype) resampled to
    ``input_px`` x ``input_px``; outside the image: 0. When the crop shrinks the image (scale
    s > 1 image px per crop px) the region is first low-pass filtered (Gaussian, sigma
    (s - 1) / 2 image px, zero outside the image) so that noise and texture do not alias;
    symmetric, so positions do not move. (OpenCV resamples at 1/32 px steps.)"""
    s = box.scale
    offset = np.zeros(2)
    if s > 1.0:
        sigma = 0.5 * (s - 1.0)
        pad = int(np.ceil(3.0 * sigma)) + 2
        x0, y0, x1, y1 = box.bounds_px()
        h, w = image.shape[:2]
        u0, v0 = max(int(np.floor(x0)) - pad, 0), max(int(np.floor(y0)) - pad, 0)
        u1, v1 = min(int(np.ceil(x1)) + pad + 1, w), min(int(np.ceil(y1)) + pad + 1, h)
        if u1 <= u0 or v1 <= v0:
            return np.zeros((box.input_px, box.input_px) + image.shape[2:], image.dtype)
        image = cv2.GaussianBlur(image[v0:v1, u0:u1], (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        offset = np.array([u0, v0], float)
    ox, oy = box.origin_px - offset
    M = np.array([[s, 0.0, ox], [0.0, s, oy]])
    return cv2.warpAffine(image, M, (box.input_px, box.input_px), flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def sample_map(values: np.ndarray, uv_px: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 2-D map at (n, 2) pixel coordinates (u = column, v = row; pixel
    centres at integers); coordinates outside are clamped to the border pixels."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"map must be 2-D, got shape {values.shape}")
    h, w = values.shape
    uv = np.asarray(uv_px, float).reshape(-1, 2)
    u = np.clip(uv[:, 0], 0.0, w - 1.0)
    v = np.clip(uv[:, 1], 0.0, h - 1.0)
    u0 = np.minimum(np.floor(u).astype(int), max(w - 2, 0))
    v0 = np.minimum(np.floor(v).astype(int), max(h - 2, 0))
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    a, b = u - u0, v - v0
    m = values.astype(float)
    return ((1 - a) * (1 - b) * m[v0, u0] + a * (1 - b) * m[v0, u1]
            + (1 - a) * b * m[v1, u0] + a * b * m[v1, u1])


@dataclass(frozen=True)
class CompletionEstimate:
    """``levels`` (n,): completion in [0, 1] at each trajectory point; ``map`` (input_px,
    input_px) float32: the completion map over the crop; ``box``: where the crop lies."""

    levels: np.ndarray
    map: np.ndarray
    box: CropBox


class CompletionEstimator:
    """Completion levels at the trajectory points of one left image."""

    def __init__(self, net: CompletionNet, config: CropConfig):
        if config.input_px % net.config.size_multiple:
            raise DetectorLoadError(f"crop input_px={config.input_px} is not a multiple of the network's "
                                    f"{net.config.size_multiple}")
        self.net = net.eval()
        self.config = config

    def predict_map(self, crop_bgr: np.ndarray) -> np.ndarray:
        """(S, S) float32 completion map of one (S, S, 3) uint8 BGR crop."""
        with torch.inference_mode():
            return torch.sigmoid(self.net(to_tensor(crop_bgr)))[0, 0].numpy()

    def estimate(self, image_bgr: np.ndarray, centre_px, points_px) -> CompletionEstimate:
        """Completion at ``points_px`` (n, 2) of a window centred at ``centre_px`` (2,), both in
        px of ``image_bgr`` ((H, W, 3) uint8 BGR, the left MSCS image)."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
        box = window_crop_box(centre_px, points_px, self.config)
        cmap = self.predict_map(crop_window(image_bgr, box))
        levels = np.clip(sample_map(cmap, box.to_crop(points_px)), 0.0, 1.0)
        return CompletionEstimate(levels, cmap, box)

    def save(self, path: Path | str, card: dict) -> None:
        torch.save({"format": FORMAT, "crop": self.config.to_dict(),
                    "net": {"config": self.net.config.to_dict(), "state": self.net.state_dict()},
                    "card": card}, str(path))


def load_estimator(name_or_path: str | Path = "completion") -> CompletionEstimator:
    """Load the estimator; every failure is a ``DetectorLoadError`` that names the file and the problem."""
    path, blob = read_weights(name_or_path, FORMAT, "completion", TRAIN_COMMAND)
    try:
        config = CropConfig(**blob["crop"])
        net = CompletionNet(CompletionNetConfig(**blob["net"]["config"]))
        net.load_state_dict(blob["net"]["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DetectorLoadError(f"{path}: incompatible with this code ({type(exc).__name__}: {exc})") from None
    return CompletionEstimator(net, config)


def model_card(name_or_path: str | Path = "completion") -> dict:
    """The training record stored with the weights, read through the same checks as ``load_estimator``."""
    return read_weights(name_or_path, FORMAT, "completion", TRAIN_COMMAND)[1].get("card", {})
