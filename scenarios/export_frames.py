"""``micromill export-frames RUN.mcap --out DIR``: the stereo frames of a recorded run as PNG files
plus a COCO keypoints skeleton, ready to be labelled in CVAT or Label Studio and then read back
by ``micromill train keypoints --data DIR`` (``scenarios.coco_labels``).

Output (``DIR`` must be new or empty):

- ``images/<run>_f<index>_left.png`` and ``..._right.png``: every ``every``-th recorded frame, at
  most ``max_frames`` of them, at the original camera size (a recording made with
  ``--record-image-scale`` < 1 is upsampled back, and ``annotations.json`` says so: label such
  frames only if nothing better exists, their detail is lost);
- ``annotations.json``: ``images`` (id, file_name relative to ``DIR``, width, height, and
  ``group``, ``frame_index``, ``stamp_s``, ``side``: the two images of a frame share a group, so
  the held-out split keeps them together), ``annotations`` empty, and ``categories`` naming the
  points the detectors need: ``drill`` with ``drill_tip``, ``skull`` with ``bregma`` and
  ``lambda``; ``info`` records the source recording.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
from tqdm import tqdm

from hw_bridge.recording import RecordingError
from hw_bridge.recording_reader import load_recording
from scenarios.coco_labels import TARGET_NAMES
from scenarios.limits import MAX_EXPORT_EVERY, MAX_EXPORT_FRAMES

CATEGORIES = [{"id": 1, "name": "drill", "supercategory": "tool", "keypoints": list(TARGET_NAMES["drill_tip"]),
               "skeleton": []},
              {"id": 2, "name": "skull", "supercategory": "anatomy", "keypoints": list(TARGET_NAMES["cranial"]),
               "skeleton": [[1, 2]]}]


def export_frames(recording: Path | str, out: Path | str, every: int = 1, max_frames: int = 500,
                  progress: bool = True) -> dict:
    """Write every ``every``-th frame of ``recording`` (at most ``max_frames``) into ``out`` as
    PNGs plus ``annotations.json``; returns that COCO document. RecordingError for a bad
    recording, one without frames, or an ``out`` that is not new or empty."""
    if not 1 <= every <= MAX_EXPORT_EVERY:
        raise ValueError(f"every={every} must be in [1, {MAX_EXPORT_EVERY}]")
    if not 1 <= max_frames <= MAX_EXPORT_FRAMES:
        raise ValueError(f"max_frames={max_frames} must be in [1, {MAX_EXPORT_FRAMES}]")
    recording, out = Path(recording), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RecordingError(f"--out {out}: must be a new or empty folder")
    rec = load_recording(recording)
    if not rec.frames:
        raise RecordingError(f"{recording}: holds no camera frames (was the run recorded with --record?)")
    chosen = rec.frames[::every][:max_frames]
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for frame in tqdm(chosen, desc="frames", unit="frame", disable=not progress):
        stereo = frame.decode()
        group = f"{recording.stem}_f{frame.index:06d}"
        for side, image in (("left", stereo.left), ("right", stereo.right)):
            name = f"images/{group}_{side}.png"
            if not cv2.imwrite(str(out / name), image):
                raise RecordingError(f"{out / name}: cannot write the image")
            images.append({"id": len(images) + 1, "file_name": name, "width": int(image.shape[1]),
                           "height": int(image.shape[0]), "group": group, "frame_index": frame.index,
                           "stamp_s": frame.stamp_s, "side": side})
    doc = {"info": {"description": f"frames of {recording.name} for labelling (micromill export-frames)",
                    "source": str(recording), "program": rec.metadata.program, "backend": rec.metadata.backend,
                    "recorded_utc": rec.metadata.created_utc, "every": every, "frames": len(chosen),
                    "frames_in_recording": len(rec.frames), "stored_image_scale": min(f.scale for f in chosen),
                    "upsampled": any(f.scale < 1.0 for f in chosen)},
           "licenses": [], "images": images, "annotations": [], "categories": CATEGORIES}
    (out / "annotations.json").write_text(json.dumps(doc, indent=1))
    return doc
