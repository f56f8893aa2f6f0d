"""Training and evaluation of the thickness network (``thickness_net``) on 32 x 32 point crops.

Source-agnostic: it takes (N, 32, 32, 3) uint8 BGR crops and their true remaining thickness
(m), whether the twin rendered them (``scenarios.thickness_dataset``) or someone measured them.

Loss (classes): ``depth_weighted_loss``, cross-entropy plus ``lam`` times the expected depth
error of the predicted distribution (seed 000's "loss weighting errors by the depth difference
between classes"); ``lam = 0`` is the "without weighted loss" ablation. Regression head: L1 on
thickness in units of 100 um.

Training: AdamW, a linear warm-up over the first 5 % of the steps then a cosine decay to zero
over the planned epochs. The plan is ``epochs``, or fewer when the mean epoch time so far says
the time budget allows fewer; it is re-made after each epoch of the first third, then stays
(so the cosine completes even when the budget, not ``epochs``, ends training). A partial epoch
at the budget is dropped. The best epoch on the validation crops (top-1, ties by MAE) is kept;
without validation crops, the last.

Class balance: training batches are drawn with replacement, each crop with probability
proportional to count(class)^-1/2 (square-root balancing): a class with 1/16 of another's crops
is drawn 1/4 as often, not 1/16. Thin classes (through, 0-60 um) are the rare ones in milling
data (most of a groove's life is thick bone) and the ones the stop decision depends on; full
balancing would repeat their few crops so often that it overfits them. The loss itself is
unweighted.

Augmentation (what a real microscope view of the same point could look like): the 8
rotations/flips of the crop (the groove runs in every direction around the circle), a random
shift of up to +-0.5 px in x and y (the projected point's sub-pixel error; bilinear, border
replicated), gain 0.9-1.1 per channel and an offset of +-0.03 (illumination and white balance),
and Gaussian noise of up to 2/255. No blur, no large shifts: the crop's centre is the point.

Determinism: the same seed gives the same weights on one thread (``threads=1``) when the time
budget does not end training.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from controllers.perception.thickness_classes import (CLASS_CENTRES_M, CLASS_NAMES, N_CLASSES, THROUGH_CLASS,
                                                      thickness_class)
from controllers.perception.thickness_net import REGRESSION_UNIT_M, ThicknessNet, ThicknessNetConfig

#: depth differences in the weighted loss are divided by this (see ``depth_weighted_loss``)
D_SCALE_M = 20e-6
THIN_LIMIT_M = 60e-6          # "MAE below 60 um": true thickness under this


def depth_weighted_loss(logits: torch.Tensor, target_class: torch.Tensor, centres_m, lam: float) -> torch.Tensor:
    """Mean over the batch of  CE(logits, y) + lam * sum_k p_k |d_k - d_y| / d_scale.

    ``logits`` (B, K); ``target_class`` (B,) int64; ``centres_m`` (K,) class centres d_k (m);
    p = softmax(logits). The second term is the expected depth error of the predicted
    distribution in units of d_scale = ``D_SCALE_M`` = 20 um: 20 um is the bridge threshold at
    which a point must stop and about the width of the window between "stop" and "burr in the
    membrane" (two of the fine 10 um classes), so one unit of the term is one decision window of
    error. Cross-entropy treats every wrong class alike; this term makes probability on a class
    200 um away cost 20x as much as on one 10 um away, so errors that remain are near the truth.
    (It also grows with the coarse classes' wide spacing: confusing 200-300 with > 300 costs 7.5
    units; ``lam`` trades that against the fine classes' cross-entropy.) ``lam = 0``: plain
    cross-entropy (the ablation)."""
    ce = F.cross_entropy(logits, target_class)
    if lam == 0.0:
        return ce
    d = torch.as_tensor(np.asarray(centres_m, dtype=np.float32), dtype=logits.dtype, device=logits.device)
    dist = (d[None, :] - d[target_class][:, None]).abs() / D_SCALE_M            # (B, K)
    return ce + lam * (F.softmax(logits, dim=1) * dist).sum(dim=1).mean()


@dataclass(frozen=True)
class ThicknessTrainSettings:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    lam: float = 0.2                    # weight of the depth term (untuned: the coordinator's runs set it)
    seed: int = 0
    threads: int = 1                    # one thread: deterministic, and the shared 2-core machine's best
    time_budget_s: float = 15 * 60.0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"ThicknessTrainSettings epochs={self.epochs}, batch_size={self.batch_size}: "
                             f"need epochs >= 1 and batch_size >= 2")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.lam >= 0 and self.threads >= 1):
            raise ValueError(f"ThicknessTrainSettings lr={self.lr}, weight_decay={self.weight_decay}, "
                             f"lam={self.lam}, threads={self.threads}: need lr > 0, the others >= 0 (threads >= 1)")

    def to_dict(self) -> dict:
        return asdict(self)


TrainSettings = ThicknessTrainSettings


@dataclass
class ThicknessTrainLog:
    epochs_done: int = 0
    epochs_planned: int = 0
    best_epoch: int = 0                 # 1-based epoch whose weights were kept (0: none)
    first_loss: float = math.nan
    loss: float = math.nan              # mean training loss of the last epoch
    best_val: dict = field(default_factory=dict)    # ``evaluate_thickness`` of the kept epoch (no tables)
    history: list = field(default_factory=list)     # per epoch: loss, lr, val top-1 and MAE, wall s
    wall_s: float = 0.0
    stopped_by_budget: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _arrays(data) -> tuple[np.ndarray, np.ndarray]:
    """(crops, thickness_m) of a ``ThicknessSamples``-like object, a dict or a pair."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)):
        crops, t = data
    elif isinstance(data, dict):
        crops, t = data["crops"], data["thickness_m"]
    else:
        crops, t = data.crops, data.thickness_m
    crops, t = np.asarray(crops), np.asarray(t, dtype=np.float64)
    if crops.ndim != 4 or crops.shape[3] != 3 or crops.dtype != np.uint8 or t.shape != (len(crops),):
        raise ValueError(f"crops {crops.shape} {crops.dtype}, thickness_m {t.shape}: expected (N, H, W, 3) uint8 "
                         f"and (N,)")
    return crops, t


def to_input(crops_bgr: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 BGR -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops_bgr)).permute(0, 3, 1, 2).float().div_(255.0)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The training augmentation (module docstring) of a (B, 3, H, W) batch in [0, 1]."""
    b = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    k = torch.randint(8, (b,), generator=gen)
    out = torch.empty_like(x)
    for j in range(8):
        sel = k == j
        if sel.any():
            y = x[sel].flip(-1) if j >= 4 else x[sel]
            out[sel] = torch.rot90(y, j % 4, dims=(-2, -1))
    h, w = x.shape[-2:]
    shift = (u(b, 2) - 0.5) * torch.tensor([2.0 / w, 2.0 / h])          # +-0.5 px in normalised units
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out * (0.9 + 0.2 * u(b, 3, 1, 1)) + 0.06 * (u(b, 1, 1, 1) - 0.5)
    out = out + (2.0 / 255.0) * u(b, 1, 1, 1) * torch.randn(out.shape, generator=gen)
    return out.clamp(0.0, 1.0)


def sampling_weights(classes: np.ndarray) -> np.ndarray:
    """Per-crop draw probabilities proportional to count(class)^-1/2 (module docstring)."""
    counts = np.bincount(classes, minlength=N_CLASSES).astype(float)
    w = 1.0 / np.sqrt(counts[classes])
    return w / w.sum()


def predict(net: ThicknessNet, crops_bgr: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, K) class probabilities, or (N,) thickness (m) for a regression head, eval mode."""
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops_bgr), batch_size):
            y = net(to_input(crops_bgr[i:i + batch_size]))
            out.append(F.softmax(y, dim=1) if net.config.head == "classes" else y * REGRESSION_UNIT_M)
    if not out:
        return np.zeros((0, net.config.n_classes) if net.config.head == "classes" else (0,))
    return torch.cat(out).double().numpy()


def _is_better(m: dict, best: dict | None) -> bool:
    if best is None:
        return True
    return (m["top1"], -m["mae_um"]) > (best["top1"], -best["mae_um"])


def train_thickness_net(train, val, config: ThicknessNetConfig, settings: ThicknessTrainSettings,
                        progress: Callable[[int, int, dict], None] | None = None,
                        initial: ThicknessNet | None = None) -> tuple[ThicknessNet, ThicknessTrainLog]:
    """Train a ``ThicknessNet(config)`` on ``train`` and keep its best epoch on ``val`` (None:
    the last). Both: ``ThicknessSamples``-like (``.crops`` (N, 32, 32, 3) uint8 BGR,
    ``.thickness_m`` (N,)), a dict with those keys, or a (crops, thickness_m) pair.
    ``progress(epochs_done, epochs_planned, info)`` is called after every epoch. ``initial``:
    fine-tune, i.e. start from a copy of this network (not modified; ``config`` must be its
    config) instead of a seeded random initialisation. Returns the network in eval mode and the log."""
    if initial is not None and initial.config != config:
        raise ValueError(f"train_thickness_net: initial network {initial.config} is not {config}")
    crops, thick = _arrays(train)
    val_arrays = _arrays(val)
    if len(crops) < settings.batch_size:
        raise ValueError(f"{len(crops)} training crops: fewer than one batch of {settings.batch_size}")
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    t0 = time.perf_counter()
    deadline = t0 + settings.time_budget_s
    net = ThicknessNet(config) if initial is None else copy.deepcopy(initial).train()
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    x_all = torch.from_numpy(np.ascontiguousarray(crops))     # uint8; converted per batch (N may be ~10^5)
    cls_all = torch.from_numpy(thickness_class(thick))
    reg_all = torch.from_numpy((thick / REGRESSION_UNIT_M).astype(np.float32))
    probs = torch.from_numpy(sampling_weights(cls_all.numpy()))
    steps_per_epoch = max(len(crops) // settings.batch_size, 1)
    log = ThicknessTrainLog(epochs_planned=settings.epochs)
    best_state, best = None, None
    step = 0
    while log.epochs_done < log.epochs_planned:
        net.train()
        total_steps = log.epochs_planned * steps_per_epoch
        warmup = max(1, int(0.05 * total_steps))
        draw = torch.multinomial(probs, steps_per_epoch * settings.batch_size, replacement=True, generator=gen)
        total, count = 0.0, 0
        for i in range(steps_per_epoch):
            if time.perf_counter() > deadline:
                log.stopped_by_budget = True
                break
            lr = settings.lr * (min(1.0, (step + 1) / warmup) if step < warmup else
                                0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total_steps - warmup, 1)))))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = draw[i * settings.batch_size:(i + 1) * settings.batch_size]
            out = net(augment(x_all[idx].permute(0, 3, 1, 2).float().div_(255.0), gen))
            if config.head == "classes":
                loss = depth_weighted_loss(out, cls_all[idx], CLASS_CENTRES_M, settings.lam)
            else:
                loss = (out - reg_all[idx]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total += float(loss.detach())
            count += 1
        if log.stopped_by_budget:
            break                                   # a partial epoch is not counted
        log.loss = total / count
        if log.epochs_done == 0:
            log.first_loss = log.loss
        log.epochs_done += 1
        entry = {"epoch": log.epochs_done, "loss": log.loss, "lr": lr}
        if val_arrays is not None:
            m = evaluate_thickness(predict(net, val_arrays[0]), val_arrays[1], tables=False)
            entry.update(val_top1=m["top1"], val_mae_um=m["mae_um"])
            if _is_better(m, best):
                best, best_state, log.best_epoch = m, copy.deepcopy(net.state_dict()), log.epochs_done
        entry["wall_s"] = time.perf_counter() - t0
        log.history.append(entry)
        if 3 * log.epochs_done < log.epochs_planned:             # re-plan from the mean epoch time so far
            now = time.perf_counter()
            affordable = log.epochs_done + int((deadline - now) // ((now - t0) / log.epochs_done))
            log.epochs_planned = max(log.epochs_done, min(settings.epochs, affordable))
        if progress is not None:
            progress(log.epochs_done, log.epochs_planned, entry)
    if best_state is not None:
        net.load_state_dict(best_state)
        log.best_val = best
    elif log.epochs_done:
        log.best_epoch = log.epochs_done
    log.wall_s = time.perf_counter() - t0
    return net.eval(), log


def _nearest_classes(thickness_m: np.ndarray, k: int = 3) -> np.ndarray:
    """(N, k) for a regression estimate: its own class, then the k - 1 other classes whose
    centres are nearest to it."""
    own = thickness_class(np.clip(thickness_m, 0.0, None))
    dist = np.abs(thickness_m[:, None] - CLASS_CENTRES_M[None, :])
    dist[np.arange(len(own)), own] = -1.0                     # own class first
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def evaluate_thickness(predicted: np.ndarray, true_thickness_m: np.ndarray, tables: bool = True) -> dict:
    """Metrics of predictions against true thicknesses (m), (N,).

    ``predicted``: (N, K) class probabilities (a classifier) or (N,) thickness estimates (m, a
    regressor). Classifier: predicted class = argmax; top-3 = the true class among the 3 most
    probable; thickness estimate = the expected value sum_k p_k CLASS_CENTRES_M[k].
    Regressor: predicted class = the class of the estimate (``thickness_class``, negatives as 0);
    top-3 = the true class is the estimate's class or one of the two other classes whose centres
    are nearest to the estimate (the regressor's counterpart of "three best guesses").
    Returns ``n``, ``top1``, ``top3``, ``within_one`` (|predicted - true class| <= 1), ``mae_um``,
    ``mae_below_60um_um`` (true thickness < 60 um; NaN if none), ``n_below_60um``,
    ``mae_bone_below_60um_um`` / ``n_bone_below_60um`` (the same without the through crops:
    bone is left, 0.5-60 um),
    ``through_precision`` / ``through_recall`` (the decision "through" = predicted class 0;
    NaN when undefined), and with ``tables``: ``per_class`` (one row per class: name, true and
    predicted counts, recall) and ``confusion`` (K x K counts, rows true, columns predicted)."""
    true_t = np.asarray(true_thickness_m, dtype=float).ravel()
    pred = np.asarray(predicted, dtype=float)
    y = thickness_class(true_t)
    n = len(true_t)
    if pred.ndim == 2:
        if pred.shape != (n, N_CLASSES):
            raise ValueError(f"evaluate_thickness: probabilities {pred.shape} for {n} crops of {N_CLASSES} classes")
        cls = pred.argmax(axis=1)
        top3 = np.argsort(-pred, axis=1, kind="stable")[:, :3]
        est = pred @ CLASS_CENTRES_M
    elif pred.ndim == 1 and len(pred) == n:
        est = pred
        cls = thickness_class(np.clip(pred, 0.0, None))
        top3 = _nearest_classes(pred)
    else:
        raise ValueError(f"evaluate_thickness: predictions {pred.shape} for {n} crops: expected (N, K) or (N,)")
    err_um = 1e6 * np.abs(est - true_t)
    thin = true_t < THIN_LIMIT_M
    bone = thin & (y != THROUGH_CLASS)          # bone left, under 60 um: the through crops excluded
    called, through = cls == THROUGH_CLASS, y == THROUGH_CLASS
    mean = lambda a: float(np.mean(a)) if a.size else math.nan  # noqa: E731
    out = {"n": n, "top1": mean(cls == y), "top3": mean((top3 == y[:, None]).any(axis=1)),
           "within_one": mean(np.abs(cls - y) <= 1), "mae_um": mean(err_um),
           "mae_below_60um_um": mean(err_um[thin]), "n_below_60um": int(thin.sum()),
           "mae_bone_below_60um_um": mean(err_um[bone]), "n_bone_below_60um": int(bone.sum()),
           "through_precision": float((called & through).sum() / called.sum()) if called.any() else math.nan,
           "through_recall": float((called & through).sum() / through.sum()) if through.any() else math.nan}
    if tables:
        conf = np.zeros((N_CLASSES, N_CLASSES), dtype=int)
        np.add.at(conf, (y, cls), 1)
        out["per_class"] = [{"class": k, "name": CLASS_NAMES[k], "n_true": int(conf[k].sum()),
                             "n_predicted": int(conf[:, k].sum()),
                             "recall": float(conf[k, k] / conf[k].sum()) if conf[k].sum() else math.nan}
                            for k in range(N_CLASSES)]
        out["confusion"] = conf.tolist()
    return out
