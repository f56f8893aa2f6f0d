"""Labelled completion levels on the user's own images, for fine-tuning the completion estimator
(``micromill train completion --data DIR``).

COCO has no field for "how far through the bone is this point of the groove", so the format is
micromill's own, one JSON file (``completion.json`` in ``DIR``) in the spirit of COCO:

```json
{"images": [{"file_name": "images/rig1_f000120_left.png", "width": 960, "height": 540,
             "window_centre_px": [480.2, 270.9],
             "points_px": [[530.0, 270.9], [529.1, 280.2], ...],
             "levels": [0.0, 0.35, null, ...]}],
 "label_radius_px": 6.0}
```

- ``window_centre_px``: where the window's centre is in the (left) image, px; ``points_px``: the
  trajectory points around it (at least 3), px, as the controller projects them (a labelling
  tool's polygon or points along the groove work); both inside the image;
- ``levels``: one per point, the completion c in [0, 1] (0 untouched bone, 1 cut through to the
  dura) or ``null`` where it cannot be judged (hidden by the drill, glare);
- ``label_radius_px`` (optional, default 6, 0.5..100): each labelled point's level is the target
  of the completion map in a disc of this radius (image px) around the point; the rest of the
  crop does not count in the loss. The estimator reads its map only at the points, so discs
  about the groove's half-width are what it needs;
- ``group`` (optional, per image): images of one group stay on one side of the held-out split
  (default: the file name without a ``_left``/``_right`` suffix).

File names resolve against the JSON's folder, then its ``images/``; all images of one data set
have one size. Everything is checked when loading (pydantic, then the image files); every
problem is a ``LabelError`` naming the file, the field, the value and what is allowed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field, ValidationError

from controllers.perception.completion_detector import CropConfig, crop_window, window_crop_box
from scenarios.coco_labels import CocoImage, LabelError, LabelModel, error_location, group_of, read_label_image
from scenarios.limits import MAX_LABELLED_IMAGES

Level = Annotated[float, Field(ge=0.0, le=1.0)]
Point = Annotated[list[float], Field(min_length=2, max_length=2)]
#: the most trajectory points per image (the paper's windows have 30-60)
MAX_WINDOW_POINTS = 1000


class CompletionImage(CocoImage):
    window_centre_px: Point
    points_px: list[Point] = Field(min_length=3, max_length=MAX_WINDOW_POINTS)
    levels: list[Level | None] = Field(max_length=MAX_WINDOW_POINTS)


class CompletionFile(LabelModel):
    images: list[CompletionImage] = Field(min_length=1, max_length=MAX_LABELLED_IMAGES)
    label_radius_px: Annotated[float, Field(ge=0.5, le=100.0)] = 6.0


@dataclass
class CompletionLabels:
    """``images`` (N, H, W, 3) BGR uint8; ``centres_px`` (N, 2); ``points_px`` and ``levels`` lists
    of (n_i, 2) px and (n_i,) completion (NaN: not labelled); ``files``, ``groups`` per image."""

    images: np.ndarray
    centres_px: np.ndarray
    points_px: list[np.ndarray]
    levels: list[np.ndarray]
    files: list[Path]
    groups: list[str]
    label_radius_px: float
    labels_path: Path

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "CompletionLabels":
        """The images at ``index`` (an int array), in that order."""
        return CompletionLabels(self.images[index], self.centres_px[index], [self.points_px[i] for i in index],
                                [self.levels[i] for i in index], [self.files[i] for i in index],
                                [self.groups[i] for i in index], self.label_radius_px, self.labels_path)


def _labels_file(data: Path) -> Path:
    if data.is_file():
        return data
    if not (data / "completion.json").is_file():
        raise LabelError(f"{data}: no completion.json in it (and it is not a labels file)")
    return data / "completion.json"


def load_completion_labels(data: Path | str, progress: bool = False) -> CompletionLabels:
    """Images, windows and completion levels from ``DIR/completion.json`` (or the JSON given)."""
    path = _labels_file(Path(data))
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    try:
        doc = CompletionFile.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{error_location(e['loc'])} = {repr(e.get('input'))[:80]}: {e['msg']}" for e in exc.errors()[:20]]
        raise LabelError(f"{path}: not a completion labels file:\n  " + "\n  ".join(problems)) from None
    from tqdm import tqdm

    images, files, points, levels = [], [], [], []
    for i, im in enumerate(tqdm(doc.images, desc="images", unit="img", disable=not progress)):
        where = f"{path}: images[{i}]"
        if len(im.levels) != len(im.points_px):
            raise LabelError(f"{where}.levels has {len(im.levels)} values for {len(im.points_px)} points_px: "
                             f"one level (or null) per point is required")
        xy = np.array([im.window_centre_px, *im.points_px], float)
        outside = ~(np.isfinite(xy).all(axis=1) & (xy[:, 0] >= 0) & (xy[:, 0] <= im.width) & (xy[:, 1] >= 0)
                    & (xy[:, 1] <= im.height))
        if outside.any():
            k = int(np.argmax(outside))
            field = "window_centre_px" if k == 0 else f"points_px[{k - 1}]"
            raise LabelError(f"{where}.{field} = {xy[k].tolist()} px is outside the {im.width} x {im.height} px "
                             f"image: allowed 0 <= x <= {im.width}, 0 <= y <= {im.height}")
        if np.mean(np.linalg.norm(xy[1:] - xy[0], axis=1)) < 1.0:
            raise LabelError(f"{where}.points_px lie less than 1 px from window_centre_px on average: not a window")
        file, image = read_label_image(path, im, i, None if not images else (files[0], images[0]))
        images.append(image)
        files.append(file)
        points.append(xy[1:])
        levels.append(np.array([np.nan if c is None else c for c in im.levels], float))
    return CompletionLabels(np.stack(images), np.array([im.window_centre_px for im in doc.images], float), points,
                            levels, files, [group_of(im) for im in doc.images], doc.label_radius_px, path)


@dataclass
class CompletionCrops:
    """What ``train_completion`` and ``predict_levels`` take: (N, S, S, 3) crops, (N, S, S)
    target maps and valid masks, and per image the points (n_i, 2, crop px) and their levels."""

    crops: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    points_uv: list[np.ndarray]
    levels: list[np.ndarray]


def completion_crops(labels: CompletionLabels, config: CropConfig) -> CompletionCrops:
    """Cut each window's crop as the estimator does (``window_crop_box``, ``crop_window``) and
    paint each labelled point's level into a disc of ``label_radius_px`` (image px) around it;
    pixels in no disc are not valid. Where discs overlap, the nearer point's level wins."""
    s = config.input_px
    crops, targets, valids, uvs = [], [], [], []
    vv, uu = np.mgrid[0:s, 0:s].astype(float)
    for image, centre, pts, lv in zip(labels.images, labels.centres_px, labels.points_px, labels.levels):
        box = window_crop_box(centre, pts, config)
        uv = box.to_crop(pts)
        r = max(labels.label_radius_px / box.scale, 0.75)          # crop px
        dist = np.hypot(uu[None] - uv[:, 0, None, None], vv[None] - uv[:, 1, None, None])
        dist[np.isnan(lv)] = np.inf
        nearest = np.argmin(dist, axis=0)
        valid = np.min(dist, axis=0) <= r
        crops.append(crop_window(image, box))
        targets.append(np.where(valid, np.nan_to_num(lv)[nearest], 0.0).astype(np.float32))
        valids.append(valid)
        uvs.append(uv.astype(np.float32))
    return CompletionCrops(np.stack(crops), np.stack(targets), np.stack(valids), uvs, list(labels.levels))
