"""Checked reading of the shipped network weights (``weights/<name>.pt``), shared by every detector.

A weights file is a ``torch.save`` dictionary with a ``format`` tag naming the code that wrote
it (e.g. ``"micromill-keypoints/1"``); ``read_weights`` checks that the file exists, loads it
without executing pickled code (``weights_only=True``), checks the tag and that every
floating-point tensor is finite (a NaN or inf weight would load silently and make the network
find nothing), and every failure is a ``DetectorLoadError`` that names the file, the problem
(the tensor, for a non-finite one) and, for a missing file, the command that trains it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights"


class DetectorLoadError(RuntimeError):
    """A weights file is missing, unreadable or does not fit this code."""


def weights_path(name_or_path: str | Path) -> Path:
    """A shipped name (``"drill_tip"``, ``"cranial"``, ``"completion"``, ``"thickness"``) -> its file in
    ``WEIGHTS_DIR``; anything ending in ``.pt`` or existing is taken as a path."""
    p = Path(name_or_path)
    if p.suffix != ".pt" and not p.exists():
        return WEIGHTS_DIR / f"{name_or_path}.pt"
    return p


def _non_finite_tensor(value: Any, key: str) -> str | None:
    """The key path (``"coarse.state.enc.0.weight"``) of the first floating-point tensor in
    ``value`` (nested dicts, lists, tuples) holding NaN or inf, or None when all are finite."""
    import torch
    if isinstance(value, torch.Tensor):
        return key if value.is_floating_point() and not bool(torch.isfinite(value).all()) else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        bad = _non_finite_tensor(v, f"{key}.{k}" if key else str(k))
        if bad is not None:
            return bad
    return None


def read_weights(name_or_path: str | Path, fmt: str, what: str, train_command: str) -> tuple[Path, dict]:
    """The checked contents of a weights file: it exists, is readable, has format ``fmt`` and
    every floating-point tensor in it is finite.

    ``what`` names the kind of weights in messages (``"keypoint"``); ``train_command`` is the
    command that produces them, quoted in the not-found message."""
    import torch          # here, not at module level: scene validation resolves weights paths without torch

    path = weights_path(name_or_path)
    if not path.is_file():
        raise DetectorLoadError(f"{what} weights not found: {path} (train them with `{train_command}`)")
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise DetectorLoadError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise DetectorLoadError(f"{path}: format {got!r}, expected {fmt!r}")
    bad = _non_finite_tensor(blob, "")
    if bad is not None:
        raise DetectorLoadError(f"{path}: tensor {bad!r} holds NaN or inf values (a damaged or diverged "
                                f"training; train again with `{train_command}`)")
    return path, blob
