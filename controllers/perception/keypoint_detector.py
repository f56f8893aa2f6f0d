"""Keypoint detection in one MSCS image: drill tip, or bregma and lambda (paper section III-A1, III-B).

Two passes of the same small U-Net architecture (``keypoint_net``), so the detector runs at
the camera's rate on one CPU core:

1. coarse: the whole image, area-downscaled by ``coarse_scale`` (8: 960 x 540 -> 120 x 68),
   gives one confidence map per keypoint; its peak locates each keypoint to a few pixels;
2. fine: a ``roi_px`` square crop of the full-resolution image around each coarse peak gives
   the sub-pixel position (``peaks.find_peak``) and the confidence reported.

Several keypoints may share one output channel (the cranial detector's "suture crossing"
channel holds bregma and lambda): the coarse pass then takes that many peaks and names them by
their order along ``instance_order_px``. A keypoint whose fine confidence is below
``threshold`` (or whose coarse confidence is below ``coarse_threshold``) is returned with
``found = False`` and no position: the caller decides
what to do (calibration skips or repeats the setpoint), nothing raises deep in a loop.

Weights live in one file per target (``weights/<target>.pt``) holding both networks, the
detector settings and a format tag; ``load_detector`` checks all of it and says what is wrong.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from controllers.perception.keypoint_net import KeypointUNet, NetConfig, pad_to_multiple
from controllers.perception.peaks import Peak, find_peak, find_peaks
from controllers.perception.weights_io import WEIGHTS_DIR, DetectorLoadError, read_weights  # noqa: F401 (re-exported)

FORMAT = "micromill-keypoints/1"


@dataclass(frozen=True)
class DetectorConfig:
    """Detector settings, stored with the weights. Pixel quantities in full-resolution px
    unless the name says coarse."""

    target: str                      # "drill_tip" | "cranial"
    names: tuple[str, ...]           # the keypoints
    image_size_px: tuple[int, int]   # (width, height) the detector was trained for
    channels: tuple[int, ...] = ()   # output channel of each name (default: one channel per name)
    # Names sharing a channel are told apart by position: in decreasing order of the peak's
    # projection on this image direction (cranial: bregma is anterior of lambda, and anterior is
    # image +x on the default rig; set it from how the head holder sits in the images).
    instance_order_px: tuple[float, float] = (1.0, 0.0)
    min_separation_px: float = 40.0  # between peaks of a shared channel (full-resolution px)
    coarse_scale: int = 8
    roi_px: int = 64
    sigma_coarse_px: float = 1.0     # target Gaussian sigma, coarse px
    sigma_fine_px: float = 2.0       # target Gaussian sigma, full-resolution px
    coarse_threshold: float = 0.2
    threshold: float = 0.4

    def __post_init__(self):
        if not self.channels:
            object.__setattr__(self, "channels", tuple(range(len(self.names))))
        if len(self.channels) != len(self.names) or sorted(set(self.channels)) != list(range(self.n_channels)):
            raise ValueError(f"channels={self.channels} must map each of {self.names} to channels 0..n-1")

    @property
    def n_channels(self) -> int:
        return max(self.channels, default=-1) + 1 if self.channels else len(self.names)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("names", "image_size_px", "channels", "instance_order_px"):
            d[key] = list(d[key])
        return d

    @staticmethod
    def from_dict(d: dict) -> "DetectorConfig":
        d = dict(d)
        for key in ("names", "image_size_px", "channels", "instance_order_px"):
            if key in d:
                d[key] = tuple(d[key])
        return DetectorConfig(**d)


@dataclass(frozen=True)
class Keypoint:
    """One detection. ``xy_px`` is None when not found."""

    name: str
    found: bool
    xy_px: np.ndarray | None
    confidence: float


def to_tensor(images_bgr: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) or (H, W, 3) uint8 BGR -> (B, 3, H, W) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images_bgr))
    if x.ndim == 3:
        x = x[None]
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def downscale(image_bgr: np.ndarray, scale: int) -> np.ndarray:
    """Pad bottom/right to a multiple of ``scale`` (edge replicate), then area-average by ``scale``.
    Coarse pixel (i, j) covers full pixels [scale*i, scale*(i+1)); full x = (coarse x + 0.5) * scale - 0.5."""
    h, w = image_bgr.shape[:2]
    ph, pw = (-h) % scale, (-w) % scale
    if ph or pw:
        image_bgr = cv2.copyMakeBorder(image_bgr, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
    return cv2.resize(image_bgr, ((w + pw) // scale, (h + ph) // scale), interpolation=cv2.INTER_AREA)


def crop(image_bgr: np.ndarray, centre_xy: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` x ``size`` crop whose centre pixel is round(centre_xy), zero outside the image.
    Returns the crop and its origin (x0, y0) in image px (crop px + origin = image px)."""
    h, w = image_bgr.shape[:2]
    x0 = int(round(float(centre_xy[0]))) - size // 2
    y0 = int(round(float(centre_xy[1]))) - size // 2
    out = np.zeros((size, size, image_bgr.shape[2]), image_bgr.dtype)
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + size, w), min(y0 + size, h)
    if xe > xs and ye > ys:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = image_bgr[ys:ye, xs:xe]
    return out, np.array([x0, y0], dtype=float)


class KeypointDetector:
    def __init__(self, coarse: KeypointUNet, fine: KeypointUNet, config: DetectorConfig):
        if coarse.config.out_channels != config.n_channels or fine.config.out_channels != config.n_channels:
            raise DetectorLoadError(f"networks have {coarse.config.out_channels}/{fine.config.out_channels} "
                                    f"output channels, config expects {config.n_channels}")
        self.coarse = coarse.eval()
        self.fine = fine.eval()
        self.config = config

    def coarse_maps(self, image_bgr: np.ndarray) -> np.ndarray:
        """(K, h, w) coarse confidence maps of one full-resolution image."""
        small = downscale(image_bgr, self.config.coarse_scale)
        with torch.inference_mode():
            x = pad_to_multiple(to_tensor(small), 2 ** self.coarse.config.depth)
            out = torch.sigmoid(self.coarse(x)[0, :, :small.shape[0], :small.shape[1]])
        return out.numpy()

    def detect(self, image_bgr: np.ndarray) -> list[Keypoint]:
        """Every keypoint of ``config.names`` in one BGR uint8 image (H, W, 3)."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
        cfg = self.config
        s = cfg.coarse_scale
        maps = self.coarse_maps(image_bgr)
        coarse: list[Peak | None] = [None] * len(cfg.names)
        for ch in range(cfg.n_channels):
            members = [k for k, c in enumerate(cfg.channels) if c == ch]
            peaks = find_peaks(maps[ch], len(members), cfg.min_separation_px / s)
            peaks = [p for p in peaks if p.confidence >= cfg.coarse_threshold]
            if len(peaks) == len(members) > 1:      # name shared-channel peaks by position
                peaks.sort(key=lambda p: -float(np.dot(p.xy, cfg.instance_order_px)))
            for k, p in zip(members, peaks if len(peaks) == len(members) else []):
                coarse[k] = p
        result = [Keypoint(n, False, None, coarse[k].confidence if coarse[k] else 0.0)
                  for k, n in enumerate(cfg.names)]
        todo = [k for k, p in enumerate(coarse) if p is not None]
        if not todo:
            return result
        crops, origins = [], []
        for k in todo:
            c, o = crop(image_bgr, (coarse[k].xy + 0.5) * s - 0.5, cfg.roi_px)
            crops.append(c)
            origins.append(o)
        with torch.inference_mode():
            fine = torch.sigmoid(self.fine(to_tensor(np.stack(crops)))).numpy()
        r = cfg.roi_px
        yy, xx = np.mgrid[0:r, 0:r]
        central = (xx - r // 2) ** 2 + (yy - r // 2) ** 2 <= (0.4 * r) ** 2    # the peak the coarse pass chose
        for i, k in enumerate(todo):
            p = find_peak(fine[i, cfg.channels[k]], central)
            found = p.confidence >= cfg.threshold
            result[k] = Keypoint(cfg.names[k], found, p.xy + origins[i] if found else None, p.confidence)
        return result

    def save(self, path: Path | str, card: dict) -> None:
        torch.save({"format": FORMAT, "config": self.config.to_dict(),
                    "coarse": {"net": self.coarse.config.to_dict(), "state": self.coarse.state_dict()},
                    "fine": {"net": self.fine.config.to_dict(), "state": self.fine.state_dict()},
                    "card": card}, str(path))


def _read_weights(target_or_path: str | Path) -> tuple[Path, dict]:
    """The checked contents of a keypoint weights file (exists, readable, right format)."""
    return read_weights(target_or_path, FORMAT, "keypoint", "micromill train keypoints --target <drill_tip|cranial>")


def load_detector(target_or_path: str | Path, expected_target: str | None = None) -> KeypointDetector:
    """Load a detector; every failure is a ``DetectorLoadError`` that names the file and the problem."""
    path, blob = _read_weights(target_or_path)
    try:
        config = DetectorConfig.from_dict(blob["config"])
        nets = []
        for key in ("coarse", "fine"):
            net = KeypointUNet(NetConfig(**blob[key]["net"]))
            net.load_state_dict(blob[key]["state"])
            nets.append(net)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise DetectorLoadError(f"{path}: incompatible with this code ({type(exc).__name__}: {exc})") from None
    if expected_target is not None and config.target != expected_target:
        raise DetectorLoadError(f"{path}: holds a {config.target!r} detector, expected {expected_target!r}")
    return KeypointDetector(nets[0], nets[1], config)


def model_card(target_or_path: str | Path) -> dict:
    """The training record stored with the weights (settings, seed, epochs, validation metrics);
    the file is checked like ``load_detector`` does."""
    return _read_weights(target_or_path)[1].get("card", {})
