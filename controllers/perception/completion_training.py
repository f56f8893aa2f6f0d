"""Training and evaluation of the completion network from labelled window crops.

Source-agnostic: it takes crops (``completion_detector.crop_window``), target completion maps
and masks, whether the twin rendered them (``scenarios.completion_dataset``) or a person labelled
real frames.

Labels: a target completion map and two masks, ``valid`` (the pixel shows bone) and
``hidden`` (bone hidden by the drill, with the hidden bone's completion as target). The loss
weighs valid pixels 1 and hidden ones ``hidden_weight`` (0.2). Without the hidden pixels the
map under the drill was unconstrained (first full run, held-out: estimates from 0.001 to
0.999 at hidden points; through recall 0.79 over all points against 0.98 over visible ones);
with them the network fills the drill's silhouette from the groove around it (second run:
through recall 0.86 over all points, MAE 5.3 against 10.1 points), and the visible points
did not get worse (MAE 3.0 against 3.2 points, recall 0.985 against 0.981).

Loss: ``"l1"`` on the sigmoid map, weighted as above. Chosen by measurement: on 864 crops,
240 s of training each, it matched ``"bce"`` (binary cross-entropy with soft targets) on the
error at visible trajectory points (MAE 9.7 against 10.0 points) and had the better through
recall (0.92 against 0.87).

Training: Adam, the learning rate divided by 10 after a third and two thirds of the planned
epochs. Until the first division the plan is re-made after every epoch: ``epochs``, or fewer
if the mean epoch time so far says the time budget allows fewer (so the schedule completes
even when the budget, not ``epochs``, ends training); after it, the plan stays.
Augmentation: the 8 flips/rotations of the crop (with its maps) and the photometric
augmentation of the keypoint training (gain, gamma, brightness, blur, noise).

Evaluation (``completion_metrics``) is at the trajectory points, the numbers the planner
uses: the mean absolute error of c in percentage points, the same on untouched (c <= 0.05)
and through (c >= 0.95) points, and precision/recall of the decision "through" (c >= 0.95).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from controllers.perception.completion_detector import CompletionEstimator, CropConfig, sample_map
from controllers.perception.completion_net import CompletionNet, CompletionNetConfig
from controllers.perception.keypoint_detector import to_tensor
from controllers.perception.training import photometric_augment

LOSSES = ("bce", "l1")
THROUGH_LEVEL = 0.95        # c at or above this counts as cut through (the planner's stop test)
UNTOUCHED_LEVEL = 0.05


@dataclass(frozen=True)
class CompletionTrainSettings:
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 2e-3
    base_channels: int = 12
    depth: int = 3
    loss: str = "l1"
    hidden_weight: float = 0.2           # loss weight of bone pixels hidden by the drill (valid: 1)
    seed: int = 0
    # One thread: on the shared 2-core machine, 2 torch threads ran a training step at 19-234
    # ms/crop (OpenMP threads waiting on each other under contention), one thread at ~10 ms/crop.
    threads: int = 1
    time_budget_s: float = 12 * 60.0     # training stops early (and says so) past it

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"CompletionTrainSettings.loss={self.loss!r} is not one of {LOSSES}")
        if not self.hidden_weight >= 0.0:
            raise ValueError(f"CompletionTrainSettings.hidden_weight={self.hidden_weight} must be >= 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"CompletionTrainSettings epochs={self.epochs}, batch_size={self.batch_size}: "
                             f"both must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CompletionTrainLog:
    epochs_done: int = 0
    epochs_planned: int = 0
    first_loss: float = math.nan         # mean loss of the first epoch
    loss: float = math.nan               # mean loss of the last epoch
    wall_s: float = 0.0
    stopped_by_budget: bool = False


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations (k in 0..7) of the last two dimensions."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def masked_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, loss: str) -> torch.Tensor:
    """Weighted mean per-pixel loss of (B, 1, H, W) logits against targets in [0, 1]; ``weight``
    (B, 1, H, W) >= 0, 0 where a pixel does not count."""
    if loss == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        per_pixel = (torch.sigmoid(logits) - target).abs()
    return (per_pixel * weight).sum() / weight.sum().clamp(min=1.0)


def train_completion(crops: np.ndarray, target: np.ndarray, valid: np.ndarray, crop_config: CropConfig,
                     settings: CompletionTrainSettings, hidden: np.ndarray | None = None,
                     progress: bool = True,
                     initial: CompletionEstimator | None = None) -> tuple[CompletionEstimator, CompletionTrainLog]:
    """Train on (N, S, S, 3) uint8 BGR crops, (N, S, S) target completion maps, (N, S, S)
    validity masks and optional (N, S, S) hidden-bone masks (S = ``crop_config.input_px``).

    ``initial``: fine-tune, i.e. start from a copy of this estimator's network (it is not
    modified; ``settings.base_channels`` and ``depth`` are then unused); its crop settings must
    be ``crop_config``. Without it the network starts from a seeded random initialisation."""
    from tqdm import tqdm

    if initial is not None and initial.config != crop_config:
        raise ValueError(f"initial estimator crops {initial.config}, the crops given are {crop_config}")

    n, s = len(crops), crop_config.input_px
    hidden = np.zeros_like(valid) if hidden is None else hidden
    if (crops.shape[1:] != (s, s, 3) or target.shape != (n, s, s) or valid.shape != (n, s, s)
            or hidden.shape != (n, s, s)):
        raise ValueError(f"crops {crops.shape}, target {target.shape}, valid {valid.shape}, hidden {hidden.shape}: "
                         f"expected (N, {s}, {s}, 3) and (N, {s}, {s}) for the others")
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    gen = torch.Generator().manual_seed(settings.seed)
    t0 = time.perf_counter()
    deadline = t0 + settings.time_budget_s
    net = (copy.deepcopy(initial.net) if initial is not None
           else CompletionNet(CompletionNetConfig(3, settings.base_channels, settings.depth)))
    opt = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    x_all = torch.from_numpy(crops)
    y_all = torch.from_numpy(target)
    w_all = torch.from_numpy(valid.astype(np.float32) + settings.hidden_weight * (hidden & ~valid))
    log = CompletionTrainLog(epochs_planned=settings.epochs)
    bar = tqdm(total=settings.epochs, desc="completion train", unit="epoch", disable=not progress)
    decays = 0                                      # learning-rate divisions by 10 so far
    while log.epochs_done < log.epochs_planned and not log.stopped_by_budget:
        decays = max(decays, min(2, 3 * log.epochs_done // log.epochs_planned))
        lr = settings.learning_rate * 0.1 ** decays
        for group in opt.param_groups:
            group["lr"] = lr
        net.train()
        total, count = 0.0, 0
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, settings.batch_size):
            if time.perf_counter() > deadline:
                log.stopped_by_budget = True
                break
            idx = order[i:i + settings.batch_size]
            k = int(torch.randint(8, (1,), generator=gen))
            x = _dihedral(to_tensor(x_all[idx].numpy()), k)
            y = _dihedral(y_all[idx].float()[:, None], k)
            w = _dihedral(w_all[idx][:, None], k)
            loss = masked_loss(net(photometric_augment(x, gen)), y, w, settings.loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        if count < n:
            break                                   # a partial epoch (budget) is not counted
        log.loss = total / count
        if log.epochs_done == 0:
            log.first_loss = log.loss
        log.epochs_done += 1
        if decays == 0:                             # re-plan from the mean epoch time so far
            now = time.perf_counter()
            affordable = log.epochs_done + int((deadline - now) // ((now - t0) / log.epochs_done))
            log.epochs_planned = max(log.epochs_done, min(settings.epochs, affordable))
            bar.total = log.epochs_planned
        bar.update(1)
        bar.set_postfix(loss=f"{log.loss:.4f}", lr=f"{lr:.0e}")
    bar.close()
    log.wall_s = time.perf_counter() - t0
    return CompletionEstimator(net.eval(), crop_config), log


@dataclass
class CompletionMetrics:
    """At the trajectory points of held-out crops (all of them, or those a mask selects).
    Errors in percentage points of completion (|c_estimated - c_true| x 100); the "through"
    decision is c >= ``THROUGH_LEVEL`` for the estimate and for the truth."""

    n_points: int
    mae_pct: float                    # all selected points
    mae_untouched_pct: float          # points with c_true <= UNTOUCHED_LEVEL
    mae_through_pct: float            # points with c_true >= THROUGH_LEVEL
    p95_abs_error_pct: float
    n_untouched: int
    n_through: int
    through_precision: float
    through_recall: float
    untouched_max_pct: float          # the largest estimate on an untouched point
    through_min_pct: float            # the smallest estimate on a through point

    def to_dict(self) -> dict:
        return asdict(self)


def predict_levels(estimator: CompletionEstimator, crops: np.ndarray, points_uv: np.ndarray,
                   batch_size: int = 32) -> np.ndarray:
    """(N, n) completion at the points ``points_uv`` (N, n, 2, crop px) of the crops."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            maps = torch.sigmoid(estimator.net(to_tensor(crops[i:i + batch_size])))[:, 0].numpy()
            out.extend(np.clip(sample_map(m, uv), 0.0, 1.0) for m, uv in zip(maps, points_uv[i:i + batch_size]))
    return np.stack(out)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else math.nan


def completion_metrics(estimated: np.ndarray, true: np.ndarray) -> CompletionMetrics:
    """Metrics of estimated against true completion levels (any shape, same for both)."""
    est, true = np.ravel(estimated), np.ravel(true)
    err = 100.0 * np.abs(est - true)
    untouched, through = true <= UNTOUCHED_LEVEL, true >= THROUGH_LEVEL
    called = est >= THROUGH_LEVEL
    return CompletionMetrics(
        n_points=int(true.size), mae_pct=_mean(err), mae_untouched_pct=_mean(err[untouched]),
        mae_through_pct=_mean(err[through]),
        p95_abs_error_pct=float(np.percentile(err, 95)) if err.size else math.nan,
        n_untouched=int(untouched.sum()), n_through=int(through.sum()),
        through_precision=float((called & through).sum() / called.sum()) if called.any() else math.nan,
        through_recall=float((called & through).sum() / through.sum()) if through.any() else math.nan,
        untouched_max_pct=float(100 * est[untouched].max()) if untouched.any() else math.nan,
        through_min_pct=float(100 * est[through].min()) if through.any() else math.nan)


READING_LEVELS = (0.95, 0.98, 0.99, 0.995)                # through thresholds a planner may use
TRUE_LEVEL_BINS = ((0.0, 0.9), (0.9, 0.98), (0.98, 0.999), (0.999, 1.0))


def reading_rates(estimated: np.ndarray, true: np.ndarray) -> list[dict]:
    """For each bin [lo, hi) of the true completion (the last bin includes 1), how many points
    it holds and the fraction of their estimates at or above each of ``READING_LEVELS``: how
    often one frame calls a point through at that threshold, early (c_true < 0.98) or in time."""
    est, true = np.ravel(estimated), np.ravel(true)
    rows = []
    for lo, hi in TRUE_LEVEL_BINS:
        sel = (true >= lo) & ((true < hi) if hi < 1.0 else (true <= hi))
        rows.append({"true_min": lo, "true_max": hi, "n": int(sel.sum()),
                     "at_or_above": {str(t): float(np.mean(est[sel] >= t)) if sel.any() else math.nan
                                     for t in READING_LEVELS}})
    return rows


#: bands [lo, hi) of the true completion for ``band_errors``; the last row, exactly 1, is added
COMPLETION_BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 0.9), (0.9, 0.97), (0.97, 1.0))
EARLY_READING_LEVEL = 0.99      # a reading at or above this is taken as "through" (``band_errors``)
EARLY_TRUE_LEVEL = 0.97         # true completion below this is not yet close to through


@dataclass
class BandErrors:
    """Errors of estimated completion by band of the true completion. ``bands``: one row per band
    of ``COMPLETION_BANDS`` and one for exactly 1 (through), each ``{"band", "n", "mae", "bias"}``
    (completion units; bias = mean of estimated - true; NaN where the band is empty);
    ``read_through_early``: fraction of points with true c < ``EARLY_TRUE_LEVEL`` read >=
    ``EARLY_READING_LEVEL`` (the dangerous error: the planner stops such a point too early);
    ``through_read_late``: fraction of true-through points (c = 1) read < ``EARLY_READING_LEVEL``."""

    bands: list[dict]
    n_points: int
    read_through_early: float
    through_read_late: float

    def to_dict(self) -> dict:
        return asdict(self)


def band_errors(estimated: np.ndarray, true: np.ndarray) -> BandErrors:
    """``BandErrors`` of estimated against true completion levels (any shape, same for both)."""
    est, true = np.ravel(estimated), np.ravel(true)
    if est.shape != true.shape:
        raise ValueError(f"band_errors: {est.size} estimates for {true.size} true levels")
    rows = []
    for name, sel in [(f"[{lo}, {hi})", (true >= lo) & (true < hi)) for lo, hi in COMPLETION_BANDS] + \
            [("1 (through)", true == 1.0)]:
        err = est[sel] - true[sel]
        rows.append({"band": name, "n": int(sel.sum()), "mae": _mean(np.abs(err)), "bias": _mean(err)})
    early, through = true < EARLY_TRUE_LEVEL, true == 1.0
    return BandErrors(rows, int(true.size), _mean(est[early] >= EARLY_READING_LEVEL),
                      _mean(est[through] < EARLY_READING_LEVEL))


def band_table_markdown(results: dict[str, BandErrors]) -> list[str]:
    """Markdown lines: one MAE / bias column pair per named result (all on the same points),
    then the two through-reading error rates."""
    names = list(results)
    first = results[names[0]]
    lines = ["| true c | points | " + " | ".join(f"{n}: MAE | {n}: bias" for n in names) + " |",
             "| --- | --- |" + " --- | --- |" * len(names)]
    for i, row in enumerate(first.bands):
        lines.append(f"| {row['band']} | {row['n']} | "
                     + " | ".join(f"{r.bands[i]['mae']:.3f} | {r.bands[i]['bias']:+.3f}" for r in results.values())
                     + " |")
    n_early = sum(row["n"] for row in first.bands[:-2])           # the bands below EARLY_TRUE_LEVEL
    lines.append(f"| c < {EARLY_TRUE_LEVEL}: read >= {EARLY_READING_LEVEL} (early) | {n_early} | "
                 + " | ".join(f"{r.read_through_early:.4f} | " for r in results.values()) + " |")
    lines.append(f"| c = 1: read < {EARLY_READING_LEVEL} (late) | {first.bands[-1]['n']} | "
                 + " | ".join(f"{r.through_read_late:.4f} | " for r in results.values()) + " |")
    return lines
