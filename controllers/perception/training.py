"""Training and evaluation of a two-pass keypoint detector from labelled images.

Source-agnostic: it takes images with keypoint positions and visibility flags, whether the
twin rendered them (``scenarios.keypoint_dataset``) or a person annotated real frames.

As in the paper: Adam on Gaussian confidence maps, the learning rate divided by 10 after a
third and two thirds of the epochs. Differences, each for a reason:
- the loss is binary cross-entropy on the logits (the map is ``sigmoid(logits)``) weighted
  ``1 + foreground_weight * target`` per pixel, not the paper's MSE: a keypoint map is almost
  all zeros, and with MSE our first CPU runs learnt a constant map in 6 epochs (measured,
  coarse net, 400 images); weighted BCE is the usual heatmap fix (CenterNet-style);
- augmentation at training time on top of the twin's domain randomisation: per-channel gain,
  gamma, brightness, Gaussian blur, extra noise, and random occluders (an occluder covering a
  keypoint makes it invisible, so the target there is zero);
- the fine network trains on crops around the true keypoint with a random offset of up to
  ``fine_jitter_fraction * roi_px`` (more than the coarse pass leaves, so the network cannot
  settle for "the keypoint is at the crop centre"), plus random crops as negatives.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from controllers.perception.keypoint_detector import DetectorConfig, KeypointDetector, crop, downscale, to_tensor
from controllers.perception.keypoint_net import KeypointUNet, NetConfig, pad_to_multiple
from controllers.perception.peaks import gaussian_map


@dataclass(frozen=True)
class TrainSettings:
    coarse_epochs: int = 30
    fine_epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-3
    base_channels: int = 8
    depth: int = 3
    foreground_weight: float = 20.0
    negative_fraction: float = 0.15       # fine crops taken anywhere in the image
    fine_jitter_fraction: float = 0.25    # fine crops centred up to this fraction of roi_px off the keypoint
    occluder_probability: float = 0.2
    seed: int = 0
    threads: int = 2
    time_budget_s: float = 16 * 60.0      # both networks; epochs stop early (and say so) past it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainLog:
    coarse_epochs_done: int = 0
    fine_epochs_done: int = 0
    coarse_loss: float = math.nan
    fine_loss: float = math.nan
    wall_s: float = 0.0
    stopped_by_budget: bool = False


def _lr(settings: TrainSettings, epoch: int, epochs: int) -> float:
    return settings.learning_rate * (0.1 ** min(2, (3 * epoch) // max(epochs, 1)))


def photometric_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random gain, gamma, brightness, blur and noise on a (B, 3, H, W) batch in [0, 1]."""
    b = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    gain = 0.85 + 0.3 * u(b, 3, 1, 1)
    gamma = 0.8 + 0.45 * u(b, 1, 1, 1)
    shift = 0.12 * (u(b, 1, 1, 1) - 0.5)
    x = (x.clamp(1e-4, 1.0) ** gamma) * gain + shift
    if float(u(1)) < 0.4:
        sigma = 0.3 + 1.0 * float(u(1))
        r = int(math.ceil(3 * sigma))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
        k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k, groups=3)
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(2, 3), groups=3)
    x = x + (4.0 / 255.0) * u(b, 1, 1, 1) * torch.randn(x.shape, generator=gen)
    return x.clamp(0.0, 1.0)


def _occlude(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random soft-coloured ellipse (tissue, debris, a tool): returns the occluded pixel mask."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    centre = (int(rng.integers(w)), int(rng.integers(h)))
    axes = (int(rng.integers(3, max(4, w // 4))), int(rng.integers(3, max(4, h // 4))))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    colour = rng.uniform(30, 200, 3)
    img[mask > 0] = (0.3 * img[mask > 0] + 0.7 * colour).astype(np.uint8)
    return mask > 0


def _targets(shape_hw: tuple[int, int], xy: np.ndarray, visible: np.ndarray, sigma: float,
             channels: tuple[int, ...]) -> np.ndarray:
    """One map per channel: the maximum of the Gaussians of the visible keypoints it holds."""
    out = np.zeros((max(channels) + 1, *shape_hw), np.float32)
    for p, v, ch in zip(xy, visible, channels):
        if v:
            np.maximum(out[ch], gaussian_map(shape_hw, p, sigma), out=out[ch])
    return out


def _fit(net: KeypointUNet, batches, epochs: int, settings: TrainSettings, deadline: float, desc: str,
         progress: bool) -> tuple[int, float, bool]:
    """Train ``net`` for ``epochs``; ``batches(epoch)`` yields (input, target) tensors."""
    from tqdm import tqdm

    opt = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    loss_value = math.nan
    done = 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        if time.perf_counter() > deadline:
            return done, loss_value, True
        for group in opt.param_groups:
            group["lr"] = _lr(settings, epoch, epochs)
        net.train()
        total, n = 0.0, 0
        for x, y in batches(epoch):
            out = net(pad_to_multiple(x, 2 ** net.config.depth))[..., :y.shape[-2], :y.shape[-1]]
            loss = F.binary_cross_entropy_with_logits(out, y, weight=1.0 + settings.foreground_weight * y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
            n += len(x)
        loss_value = total / max(n, 1)
        done = epoch + 1
        bar.set_postfix(loss=f"{loss_value:.5f}")
    return done, loss_value, False


def train_detector(images: np.ndarray, keypoints_px: np.ndarray, visible: np.ndarray, config: DetectorConfig,
                   settings: TrainSettings, progress: bool = True,
                   initial: KeypointDetector | None = None) -> tuple[KeypointDetector, TrainLog]:
    """Train the coarse and the fine network on (N, H, W, 3) BGR images with (N, K, 2) keypoints (px).

    ``initial``: fine-tune, i.e. start both networks from copies of this detector's (it is not
    modified); its network sizes are kept (``settings.base_channels`` and ``depth`` are then
    unused) and its output channels must be ``config``'s. Without it the networks start from a
    seeded random initialisation."""
    if initial is not None and initial.config.n_channels != config.n_channels:
        raise ValueError(f"initial detector has {initial.config.n_channels} output channels "
                         f"({initial.config.names}), config {config.target!r} needs {config.n_channels}")
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    rng = np.random.default_rng(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    t0 = time.perf_counter()
    deadline = t0 + settings.time_budget_s
    log = TrainLog()
    k = len(config.names)
    s = config.coarse_scale
    n = len(images)

    # --- coarse: the whole image, downscaled ---
    small = np.stack([downscale(im, s) for im in images])
    small_kp = (keypoints_px + 0.5) / s - 0.5
    x_small = to_tensor(small)
    y_small = torch.from_numpy(np.stack([_targets(small.shape[1:3], small_kp[i], visible[i], config.sigma_coarse_px,
                                                  config.channels) for i in range(n)]))

    def coarse_batches(epoch):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, settings.batch_size):
            idx = order[i:i + settings.batch_size]
            yield photometric_augment(x_small[idx], gen), y_small[idx]

    coarse = (copy.deepcopy(initial.coarse) if initial is not None
              else KeypointUNet(NetConfig(3, config.n_channels, settings.base_channels, settings.depth)))
    log.coarse_epochs_done, log.coarse_loss, stop = _fit(
        coarse, coarse_batches, settings.coarse_epochs, settings,
        t0 + settings.time_budget_s * settings.coarse_epochs / (settings.coarse_epochs + settings.fine_epochs),
        f"{config.target} coarse", progress)
    log.stopped_by_budget |= stop

    # --- fine: full-resolution crops around each keypoint (or anywhere, as negatives) ---
    roi = config.roi_px
    h, w = images.shape[1:3]

    def fine_batches(epoch):
        pairs = [(i, j) for i in range(n) for j in range(k)]
        order = rng.permutation(len(pairs))
        for b0 in range(0, len(order), settings.batch_size):
            xs, ys = [], []
            for p in order[b0:b0 + settings.batch_size]:
                i, j = pairs[p]
                kp = keypoints_px[i, j]
                inside = 0 <= kp[0] < w and 0 <= kp[1] < h
                if inside and rng.random() > settings.negative_fraction:
                    centre = kp + rng.uniform(-1.0, 1.0, 2) * settings.fine_jitter_fraction * roi
                else:
                    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
                c, origin = crop(images[i], centre, roi)
                vis = visible[i].copy()
                local = keypoints_px[i] - origin
                if rng.random() < settings.occluder_probability:
                    c = c.copy()
                    mask = _occlude(c, rng)
                    for q in range(k):
                        u, v = (int(round(t)) for t in local[q])
                        if 0 <= u < roi and 0 <= v < roi and mask[v, u]:
                            vis[q] = False
                xs.append(c)
                ys.append(_targets((roi, roi), local, vis, config.sigma_fine_px, config.channels))
            yield photometric_augment(to_tensor(np.stack(xs)), gen), torch.from_numpy(np.stack(ys))

    fine = (copy.deepcopy(initial.fine) if initial is not None
            else KeypointUNet(NetConfig(3, config.n_channels, settings.base_channels, settings.depth)))
    log.fine_epochs_done, log.fine_loss, stop = _fit(fine, fine_batches, settings.fine_epochs, settings, deadline,
                                                     f"{config.target} fine", progress)
    log.stopped_by_budget |= stop
    log.wall_s = time.perf_counter() - t0
    return KeypointDetector(coarse, fine, config), log


@dataclass
class KeypointMetrics:
    """Per keypoint name, over a set of images with ground truth."""

    name: str
    n_visible: int
    n_found: int                 # found among visible
    n_false_positive: int        # found among invisible
    n_invisible: int
    rmse_px: float               # over visible and found
    median_px: float
    p95_px: float
    max_px: float
    n_over_5px: int

    @property
    def detection_rate(self) -> float:
        return self.n_found / self.n_visible if self.n_visible else math.nan

    def to_dict(self) -> dict:
        d = asdict(self)
        d["detection_rate"] = self.detection_rate
        return d


def evaluate_detector(detector: KeypointDetector, images: np.ndarray, keypoints_px: np.ndarray,
                      visible: np.ndarray) -> list[KeypointMetrics]:
    names = detector.config.names
    errors = [[] for _ in names]
    found_inv = [0] * len(names)
    for im, kp, vis in zip(images, keypoints_px, visible):
        for j, det in enumerate(detector.detect(im)):
            if vis[j] and det.found:
                errors[j].append(float(np.linalg.norm(det.xy_px - kp[j])))
            elif not vis[j] and det.found:
                found_inv[j] += 1
    out = []
    for j, name in enumerate(names):
        e = np.array(errors[j])
        out.append(KeypointMetrics(
            name, int(visible[:, j].sum()), len(e), found_inv[j], int((~visible[:, j]).sum()),
            float(np.sqrt(np.mean(e ** 2))) if e.size else math.nan,
            float(np.median(e)) if e.size else math.nan, float(np.percentile(e, 95)) if e.size else math.nan,
            float(e.max()) if e.size else math.nan, int((e > 5.0).sum())))
    return out
