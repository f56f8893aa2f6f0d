"""Labelled images in COCO keypoints format, as CVAT and Label Studio export them, for fine-tuning
the keypoint detectors on a lab's own images (``micromill train keypoints --data DIR``).

A data folder holds one COCO JSON file (``annotations.json``, or the only ``*.json`` at its top
level, or the one given) and the images it names: an image's ``file_name`` is resolved against
the JSON's folder, then against its ``images/`` sub-folder (CVAT's layout). The fields read:

- ``images``: ``id``, ``file_name``, ``width``, ``height`` (px); an optional ``group`` (any
  string) keeps images that must not be split apart together (default: the file name's stem
  without a ``_left``/``_right`` suffix, so both images of a stereo frame stay on one side of
  the held-out split);
- ``categories``: ``id``, ``name``, ``keypoints`` (the point names, in order). The target's
  names must appear in one category's ``keypoints``: ``drill_tip`` (target ``drill_tip``), or
  ``bregma`` and ``lambda`` (target ``cranial``); other categories are ignored;
- ``annotations``: ``id``, ``image_id``, ``category_id``, ``keypoints`` = [x, y, v] per name
  of the category (x, y in px, 0 <= x <= width, 0 <= y <= height; v: 0 not labelled, 1
  labelled but hidden, 2 visible). At most one annotation of the target's category per image.

What the detector learns from it: a point with v = 2 is visible at (x, y); v = 0 or 1, or an
image without an annotation of the category, means the point is not visible in that image
(the network is trained to report "not found" there, as for the twin's hidden keypoints).
Coordinates are used as they are: COCO's convention (integers are pixel indices, i.e. pixel
centres) is the detector's; tools that put pixel centres at +0.5 shift points by half a
pixel, which is far below the detector's error.

Everything is checked when loading (pydantic models, then the cross-references and the image
files); every problem is a ``LabelError`` naming the file, the field, the value and what is
allowed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scenarios.limits import MAX_LABELLED_IMAGES

#: the keypoint names of each detector target (as in ``scenarios.keypoint_dataset.TARGETS``)
TARGET_NAMES = {"drill_tip": ("drill_tip",), "cranial": ("bregma", "lambda")}
#: the largest image side accepted (px)
MAX_IMAGE_SIDE_PX = 8192

NonNegInt = Annotated[int, Field(ge=0)]
Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE_PX)]


class LabelError(ValueError):
    """A labels file or its images do not fit the format described in ``scenarios.coco_labels``."""


class LabelModel(BaseModel):
    """Base of the label schemas: unknown fields (bbox, area, info, ...) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=False)


class CocoImage(LabelModel):
    id: NonNegInt
    file_name: Annotated[str, Field(min_length=1, max_length=1000)]
    width: Side
    height: Side
    group: Annotated[str, Field(min_length=1, max_length=1000)] | None = None


class CocoCategory(LabelModel):
    id: NonNegInt
    name: str
    keypoints: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=1000)


class CocoAnnotation(LabelModel):
    id: NonNegInt
    image_id: NonNegInt
    category_id: NonNegInt
    keypoints: list[float] = Field(default_factory=list, max_length=3000)


class CocoFile(LabelModel):
    images: list[CocoImage] = Field(max_length=MAX_LABELLED_IMAGES)
    annotations: list[CocoAnnotation] = Field(default_factory=list)
    categories: list[CocoCategory] = Field(min_length=1)


@dataclass
class LabelledImages:
    """Images and their keypoints, ready for ``train_detector`` / ``evaluate_detector``.

    ``images`` (N, H, W, 3) BGR uint8; ``keypoints_px`` (N, K, 2) float32 (x, y) in px, pixel
    centres at integers ((-1, -1), outside the image, where v = 0); ``visible`` (N, K) bool; ``files`` the image
    paths; ``groups`` the split groups; ``names`` the K keypoint names."""

    images: np.ndarray
    keypoints_px: np.ndarray
    visible: np.ndarray
    files: list[Path]
    groups: list[str]
    names: tuple[str, ...]
    labels_path: Path

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "LabelledImages":
        """The images at ``index`` (an int array), in that order."""
        return LabelledImages(self.images[index], self.keypoints_px[index], self.visible[index],
                              [self.files[i] for i in index], [self.groups[i] for i in index], self.names,
                              self.labels_path)


def find_labels_file(data: Path) -> Path:
    """The COCO JSON of a data folder: ``annotations.json``, else the only ``*.json`` in it; a
    file path is returned as it is."""
    data = Path(data)
    if data.is_file():
        return data
    if not data.is_dir():
        raise LabelError(f"{data}: no such labels file or data folder")
    if (data / "annotations.json").is_file():
        return data / "annotations.json"
    found = sorted(data.glob("*.json"))
    if len(found) != 1:
        raise LabelError(f"{data}: expected annotations.json or exactly one *.json (COCO keypoints) in the folder, "
                         f"found {[p.name for p in found] or 'none'}")
    return found[0]


def error_location(loc: tuple) -> str:
    """A pydantic error location as a path, e.g. ``annotations[3].keypoints``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_coco(path: Path) -> CocoFile:
    """Parse and schema-check a COCO file; LabelError lists every offending field."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    except json.JSONDecodeError as exc:
        raise LabelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise LabelError(f"{path}: the top level must be a JSON object with images, annotations, categories; "
                         f"got a {type(raw).__name__}")
    try:
        return CocoFile.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{error_location(e['loc'])} = {repr(e.get('input'))[:80]}: {e['msg']}" for e in exc.errors()[:20]]
        more = f" (and {exc.error_count() - 20} more)" if exc.error_count() > 20 else ""
        raise LabelError(f"{path}: not COCO keypoints:\n  " + "\n  ".join(problems) + more) from None


def _target_category(coco: CocoFile, target: str, path: Path) -> tuple[CocoCategory, list[int]]:
    """The category holding the target's names, and each name's index in its keypoints."""
    if target not in TARGET_NAMES:
        raise LabelError(f"target {target!r} is not one of {sorted(TARGET_NAMES)}")
    names = TARGET_NAMES[target]
    matches = [c for c in coco.categories if all(n in c.keypoints for n in names)]
    if len(matches) != 1:
        have = {c.name: c.keypoints for c in coco.categories}
        raise LabelError(f"{path}: categories[].keypoints: {'none' if not matches else 'more than one'} of the "
                         f"categories {have} holds all of {list(names)} (target {target!r}); name the points "
                         f"exactly so in the labelling tool")
    cat = matches[0]
    for n in names:
        if cat.keypoints.count(n) != 1:
            raise LabelError(f"{path}: category {cat.name!r} keypoints {cat.keypoints} name {n!r} more than once")
    return cat, [cat.keypoints.index(n) for n in names]


def _check_ids(coco: CocoFile, path: Path) -> None:
    for what, items in (("images", coco.images), ("categories", coco.categories), ("annotations", coco.annotations)):
        seen: dict[int, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                raise LabelError(f"{path}: {what}[{i}].id = {item.id} repeats {what}[{seen[item.id]}].id "
                                 f"(ids must be unique)")
            seen[item.id] = i


def group_of(image: CocoImage) -> str:
    """The image's split group: its ``group``, else its file stem without ``_left``/``_right``."""
    return image.group if image.group is not None else re.sub(r"[_-](left|right)$", "", Path(image.file_name).stem)


def read_label_image(path: Path, im: CocoImage, index: int,
                     first: tuple[Path, np.ndarray] | None) -> tuple[Path, np.ndarray]:
    """``images[index]`` of the labels file ``path``: its file (``resolve_image``) and the image
    (BGR uint8), checked to be readable, of the size the labels say, and of the size of the data
    set's ``first`` image (file, image) when given; ``LabelError`` naming the file otherwise."""
    file = resolve_image(path.parent, im, index, path)
    image = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if image is None:
        raise LabelError(f"{file}: not a readable image (images[{index}] of {path})")
    if image.shape[:2] != (im.height, im.width):
        raise LabelError(f"{path}: images[{index}] ({im.file_name!r}) says width x height = {im.width} x "
                         f"{im.height} px, the file is {image.shape[1]} x {image.shape[0]} px")
    if first is not None and image.shape != first[1].shape:
        raise LabelError(f"{file}: {image.shape[1]} x {image.shape[0]} px, but {first[0]} is "
                         f"{first[1].shape[1]} x {first[1].shape[0]} px: one data set holds images of one "
                         f"size (the camera's)")
    return file, image


def resolve_image(root: Path, image: CocoImage, index: int, path: Path) -> Path:
    """The file of ``images[index]`` of the labels file ``path``: under ``root``, else ``root/images``."""
    for base in (root, root / "images"):
        candidate = base / image.file_name
        if candidate.is_file():
            return candidate
    raise LabelError(f"{path}: images[{index}].file_name = {image.file_name!r}: no such file in {root} or "
                     f"{root / 'images'}")


def load_keypoint_labels(data: Path | str, target: str, progress: bool = False) -> LabelledImages:
    """Images and the ``target``'s keypoints from a COCO keypoints data folder (or JSON file);
    every problem is a LabelError naming the file, the field, the value and what is allowed."""
    path = find_labels_file(Path(data))
    coco = read_coco(path)
    _check_ids(coco, path)
    cat, columns = _target_category(coco, target, path)
    names = TARGET_NAMES[target]
    n_values = 3 * len(cat.keypoints)
    image_index = {im.id: i for i, im in enumerate(coco.images)}
    if not coco.images:
        raise LabelError(f"{path}: images is empty")
    k = len(names)
    keypoints = np.full((len(coco.images), k, 2), -1.0, np.float32)
    visible = np.zeros((len(coco.images), k), bool)
    annotated: dict[int, int] = {}
    category_ids = {c.id for c in coco.categories}
    for a_i, ann in enumerate(coco.annotations):
        where = f"{path}: annotations[{a_i}]"
        if ann.category_id not in category_ids:
            raise LabelError(f"{where}.category_id = {ann.category_id}: no such category (ids "
                             f"{sorted(category_ids)})")
        if ann.category_id != cat.id:
            continue
        if ann.image_id not in image_index:
            raise LabelError(f"{where}.image_id = {ann.image_id}: no such image in images[]")
        i = image_index[ann.image_id]
        if i in annotated:
            raise LabelError(f"{where}.image_id = {ann.image_id}: image already annotated by annotations"
                             f"[{annotated[i]}] for category {cat.name!r} (one per image)")
        annotated[i] = a_i
        if len(ann.keypoints) != n_values:
            raise LabelError(f"{where}.keypoints has {len(ann.keypoints)} values; category {cat.name!r} has "
                             f"{len(cat.keypoints)} points {cat.keypoints}, so 3 x {len(cat.keypoints)} = "
                             f"{n_values} values [x, y, v] are required")
        im = coco.images[i]
        for j, col in enumerate(columns):
            x, y, v = ann.keypoints[3 * col:3 * col + 3]
            name = names[j]
            if v not in (0, 1, 2):
                raise LabelError(f"{where}.keypoints[{3 * col + 2}] (visibility of {name!r}) = {v}: allowed 0 "
                                 f"(not labelled), 1 (hidden), 2 (visible)")
            if v == 0:
                continue
            if not (np.isfinite(x) and np.isfinite(y) and 0.0 <= x <= im.width and 0.0 <= y <= im.height):
                raise LabelError(f"{where}.keypoints (point {name!r}) = ({x}, {y}) px is outside image "
                                 f"{im.id} ({im.file_name!r}, {im.width} x {im.height} px): allowed 0 <= x <= "
                                 f"{im.width}, 0 <= y <= {im.height}")
            keypoints[i, j] = (x, y)
            visible[i, j] = v == 2
    images, files = [], []
    from tqdm import tqdm

    for i, im in enumerate(tqdm(coco.images, desc="images", unit="img", disable=not progress)):
        file, image = read_label_image(path, im, i, None if not images else (files[0], images[0]))
        images.append(image)
        files.append(file)
    return LabelledImages(np.stack(images), keypoints, visible, files, [group_of(im) for im in coco.images], names, path)


def held_out_split(groups: list[str], fraction: float, seed: int) -> np.ndarray:
    """A boolean mask, True for held-out images: a seeded random ``fraction`` of the groups (at
    least one, and at least one group left for training), so the split does not depend on the
    order of the file; images of a group stay together."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction {fraction} must be in (0, 1)")
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise LabelError(f"{len(groups)} images in {len(unique)} group(s): a held-out split needs images from at "
                         f"least 2 different frames")
    n_val = min(len(unique) - 1, max(1, int(round(fraction * len(unique)))))
    rng = np.random.default_rng(seed)
    held = {unique[i] for i in rng.permutation(len(unique))[:n_val]}
    return np.array([g in held for g in groups])
