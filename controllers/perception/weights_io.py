"""Checked reading of the shipped network weights (``weights/<name>.pt``), shared by every detector.

A weights file is a ``torch.save`` dictionary with a ``format`` tag naming the code that wrote
it (e.g. ``"micromill-keypoints/1"``); ``read_weights`` checks that the file exists, loads it
without executing pickled code (``weights_only=True``) and checks the tag, and every failure is
a ``DetectorLoadError`` that names the file, the problem and, for a missing file, the command
that trains it.
"""
from __future__ import annotations

from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"


class DetectorLoadError(RuntimeError):
    """A weights file is missing, unreadable or does not fit this code."""


def weights_path(name_or_path: str | Path) -> Path:
    """A shipped name (``"drill_tip"``, ``"cranial"``, ``"completion"``) -> its file in
    ``WEIGHTS_DIR``; anything ending in ``.pt`` or existing is taken as a path."""
    p = Path(name_or_path)
    if p.suffix != ".pt" and not p.exists():
        return WEIGHTS_DIR / f"{name_or_path}.pt"
    return p


def read_weights(name_or_path: str | Path, fmt: str, what: str, train_command: str) -> tuple[Path, dict]:
    """The checked contents of a weights file: it exists, is readable and has format ``fmt``.

    ``what`` names the kind of weights in messages (``"keypoint"``); ``train_command`` is the
    command that produces them, quoted in the not-found message."""
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
    return path, blob
