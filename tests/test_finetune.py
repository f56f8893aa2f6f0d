"""Training on the user's own images (issue 16): export frames from a recording, read COCO
keypoint labels with checked errors, and fine-tune the shipped drill-tip detector on images of a
renderer that is not the twin's (``scenarios.painted_dataset``)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from controllers.perception.completion_detector import CropConfig, load_estimator
from controllers.perception.completion_detector import model_card as load_completion_card
from controllers.perception.keypoint_detector import DetectorConfig, KeypointDetector, load_detector, model_card
from controllers.perception.keypoint_net import KeypointUNet, NetConfig
from controllers.perception.training import TrainSettings, train_detector
from hw_bridge.interface import JointState, StereoFrame
from hw_bridge.recording import McapRecorder, RunMetadata
from scenarios.cli import main
from scenarios.coco_labels import LabelError, held_out_split, load_keypoint_labels, read_coco
from scenarios.completion_labels import completion_crops, load_completion_labels
from scenarios.painted_dataset import write_painted_completion, write_painted_dataset


# --- train_detector(initial=...) ---

def _tiny_detector(seed: int) -> KeypointDetector:
    torch.manual_seed(seed)
    cfg = DetectorConfig("drill_tip", ("drill_tip",), (64, 48), roi_px=16)
    return KeypointDetector(KeypointUNet(NetConfig(3, 1, 4, 2)), KeypointUNet(NetConfig(3, 1, 4, 2)), cfg)


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_train_detector_starts_from_the_initial_weights_and_leaves_them_alone():
    base = _tiny_detector(1)
    before = _state(base.coarse), _state(base.fine)
    images = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    kp = np.full((4, 1, 2), 20.0, np.float32)
    vis = np.ones((4, 1), bool)
    fine_only = TrainSettings(coarse_epochs=0, fine_epochs=1, batch_size=2, threads=1)
    tuned, _ = train_detector(images, kp, vis, base.config, fine_only, progress=False, initial=base)
    assert all(torch.equal(v, before[0][k]) for k, v in tuned.coarse.state_dict().items())    # 0 epochs: the base's
    assert any(not torch.equal(v, before[1][k]) for k, v in tuned.fine.state_dict().items())  # 1 epoch: moved on
    for net, ref in ((base.coarse, before[0]), (base.fine, before[1])):                       # base untouched
        assert all(torch.equal(v, ref[k]) for k, v in net.state_dict().items())
    cranial = DetectorConfig("cranial", ("bregma", "lambda"), (64, 48))
    with pytest.raises(ValueError, match="1 output channels.*needs 2"):
        train_detector(images, np.zeros((4, 2, 2), np.float32), np.ones((4, 2), bool), cranial, fine_only,
                       progress=False, initial=base)


# --- COCO labels ---

def _labelled_folder(tmp_path, doc_changes=None, size=(40, 30)):
    """Two 40 x 30 px images and drill / skull labels typed by hand."""
    (tmp_path / "images").mkdir()
    w, h = size
    for name in ("a_left", "a_right", "b_left"):
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.full((h, w, 3), 100, np.uint8))
    doc = {"images": [{"id": 7, "file_name": "a_left.png", "width": w, "height": h},
                      {"id": 8, "file_name": "images/a_right.png", "width": w, "height": h},
                      {"id": 9, "file_name": "b_left.png", "width": w, "height": h}],
           "categories": [{"id": 1, "name": "drill", "keypoints": ["drill_tip"]},
                          {"id": 2, "name": "skull", "keypoints": ["lambda", "bregma", "other"]}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "keypoints": [12.5, 3.0, 2]},
                           {"id": 2, "image_id": 8, "category_id": 1, "keypoints": [1.0, 2.0, 1]},
                           {"id": 3, "image_id": 7, "category_id": 2,
                            "keypoints": [5.0, 6.0, 2, 30.0, 20.0, 2, 0, 0, 0]}]}
    if doc_changes:
        doc_changes(doc)
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    return tmp_path


def test_labels_are_read_as_typed(tmp_path):
    folder = _labelled_folder(tmp_path)
    tip = load_keypoint_labels(folder, "drill_tip")
    assert tip.images.shape == (3, 30, 40, 3) and tip.names == ("drill_tip",)
    assert np.allclose(tip.keypoints_px[0, 0], [12.5, 3.0])
    assert tip.visible[:, 0].tolist() == [True, False, False]       # v=2, v=1 (hidden), no annotation
    assert tip.groups == ["a", "a", "b"]
    cranial = load_keypoint_labels(folder / "annotations.json", "cranial")
    assert np.allclose(cranial.keypoints_px[0], [[30.0, 20.0], [5.0, 6.0]])     # (bregma, lambda) by name
    assert cranial.visible.tolist() == [[True, True], [False, False], [False, False]]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["categories"][0].update(keypoints=["tip"]),
     r"categories\[\]\.keypoints: none of the categories .*'drill': \['tip'\].* holds all of \['drill_tip'\]"),
    (lambda d: d["annotations"][0].update(keypoints=[1.0, 2.0]),
     r"annotations\[0\]\.keypoints has 2 values.*3 x 1 = 3 values"),
    (lambda d: d["annotations"][0].update(keypoints=[41.0, 2.0, 2]),
     r"annotations\[0\]\.keypoints \(point 'drill_tip'\) = \(41\.0, 2\.0\) px is outside image 7 .*0 <= x <= 40"),
    (lambda d: d["annotations"][0].update(keypoints=[1.0, 2.0, 3]),
     r"annotations\[0\]\.keypoints\[2\] \(visibility of 'drill_tip'\) = 3\.0: allowed 0"),
    (lambda d: d["annotations"][0].update(image_id=99), r"annotations\[0\]\.image_id = 99: no such image"),
    (lambda d: d["annotations"][0].update(category_id=5), r"annotations\[0\]\.category_id = 5: no such category"),
    (lambda d: d["annotations"][1].update(image_id=7), r"annotations\[1\]\.image_id = 7: image already annotated"),
    (lambda d: d["images"][1].update(id=7), r"images\[1\]\.id = 7 repeats images\[0\]\.id"),
    (lambda d: d["images"][0].update(width=-3), r"images\[0\]\.width = -3: Input should be greater than or equal to 1"),
    (lambda d: d["images"][0].pop("height"), r"images\[0\]\.height.*Field required"),
    (lambda d: d["images"][0].update(file_name="nope.png"), r"images\[0\]\.file_name = 'nope\.png': no such file"),
    (lambda d: d["images"][0].update(width=41), r"images\[0\] \('a_left\.png'\) says width x height = 41 x 30 px, "
                                                r"the file is 40 x 30 px"),
])
def test_bad_labels_name_the_file_field_value_and_what_is_allowed(tmp_path, change, message):
    folder = _labelled_folder(tmp_path, change)
    with pytest.raises(LabelError, match=message) as err:
        load_keypoint_labels(folder, "drill_tip")
    assert str(folder / "annotations.json") in str(err.value)


def test_labels_file_that_is_not_json_or_not_coco(tmp_path):
    (tmp_path / "annotations.json").write_text("{images: ")
    with pytest.raises(LabelError, match="annotations.json: not valid JSON"):
        load_keypoint_labels(tmp_path, "drill_tip")
    (tmp_path / "annotations.json").write_text("[]")
    with pytest.raises(LabelError, match="top level must be a JSON object"):
        load_keypoint_labels(tmp_path, "drill_tip")
    with pytest.raises(LabelError, match="no such labels file or data folder"):
        load_keypoint_labels(tmp_path / "missing", "drill_tip")


def test_held_out_split_is_seeded_and_keeps_groups_together():
    groups = [f"f{i // 2}" for i in range(40)]             # 20 stereo frames
    a = held_out_split(groups, 0.25, seed=3)
    assert a.tolist() == held_out_split(list(groups), 0.25, seed=3).tolist()
    assert a.sum() == 10                                     # 5 of 20 frames, 2 images each
    assert all(a[i] == a[i + 1] for i in range(0, 40, 2))
    assert a.tolist() != held_out_split(groups, 0.25, seed=4).tolist()
    with pytest.raises(LabelError, match="at least 2 different frames"):
        held_out_split(["x", "x"], 0.2, 0)


# --- export-frames ---

def test_export_frames_writes_every_nth_frame_and_a_coco_skeleton(tmp_path):
    meta = RunMetadata("demo", {}, "twin", 0, "scene.toml", "", {})
    rec = McapRecorder(tmp_path / "run.mcap", meta)
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
             for _ in range(5)]
    for i, (left, right) in enumerate(pairs):
        rec.on_tick(0.1 * i, JointState(0.1 * i, np.zeros(8), np.zeros(8)))
        rec.on_frame(0.1 * i, StereoFrame(0.1 * i, i, left, right))
    rec.close()
    out = tmp_path / "frames"
    assert main(["export-frames", str(tmp_path / "run.mcap"), "--out", str(out), "--every", "2", "--max", "2",
                 "--no-progress"]) == 0
    doc = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == ["images/run_f000000_left.png", "images/run_f000000_right.png",
                                                         "images/run_f000002_left.png", "images/run_f000002_right.png"]
    assert np.array_equal(cv2.imread(str(out / "images/run_f000002_right.png")), pairs[2][1])
    coco = read_coco(out / "annotations.json")
    assert {c.name: c.keypoints for c in coco.categories} == {"drill": ["drill_tip"], "skull": ["bregma", "lambda"]}
    labels = load_keypoint_labels(out, "cranial")          # unlabelled: loads, nothing visible yet
    assert len(labels) == 4 and not labels.visible.any() and labels.groups[0] == labels.groups[1]
    assert main(["export-frames", str(tmp_path / "run.mcap"), "--out", str(out)]) == 2       # not empty
    with pytest.raises(SystemExit):
        main(["export-frames", str(tmp_path / "run.mcap"), "--out", str(tmp_path / "x"), "--every", "0"])


# --- end to end: painted images, shipped weights, fine-tuning ---

def _held_out_errors(weights, folder, held_out_files):
    """Per held-out image with a visible tip: the detection error (px), inf when not found;
    ground truth straight from the painter's annotations.json."""
    doc = json.loads((folder / "annotations.json").read_text())
    truth = {im["file_name"].split("/")[-1]: a["keypoints"] for im in doc["images"] for a in doc["annotations"]
             if a["image_id"] == im["id"] and a["category_id"] == 1}
    det = load_detector(weights, expected_target="drill_tip")
    errors = []
    for name in held_out_files:
        x, y, v = truth[name]
        if v == 2:
            (tip,) = det.detect(cv2.imread(str(folder / "images" / name)))
            errors.append(float(np.hypot(*(tip.xy_px - [x, y]))) if tip.found else np.inf)
    return np.array(errors)


@pytest.mark.parametrize("n_images, width, height, seed", [
    (160, 320, 192, 0),                                        # about a minute on one core
    pytest.param(300, 960, 540, 1, marks=pytest.mark.slow),    # the run recorded in docs/training_on_your_images.md
])
def test_fine_tuning_on_another_renderers_images_passes_where_the_twin_weights_fail(tmp_path, n_images, width,
                                                                                     height, seed):
    torch.set_num_threads(1)
    data = write_painted_dataset(tmp_path / "painted", n_images, width, height, seed=seed).parent
    out = tmp_path / "ft"
    assert main(["train", "keypoints", "--target", "drill_tip", "--data", str(data), "--out", str(out),
                 "--no-progress"]) == 0
    assert load_detector(out / "drill_tip.pt").config.image_size_px == (width, height)
    card = model_card(out / "drill_tip.pt")
    assert card["fine_tuned"] and card["base"]["path"].endswith("weights/drill_tip.pt")
    assert card["n_train"] + card["n_val"] == n_images and card["n_val"] == round(0.2 * n_images)
    base = _held_out_errors("drill_tip", data, card["held_out_files"])
    tuned = _held_out_errors(out / "drill_tip.pt", data, card["held_out_files"])
    assert len(base) == len(tuned) >= 20
    # the twin weights fail: almost never within the paper's 10 px
    assert np.mean(base <= 10.0) < 0.2
    # fine-tuned: most tips found, all found ones within 10 px, far better than the base
    found = np.isfinite(tuned)
    assert found.mean() >= 0.5 and np.mean(tuned <= 10.0) > np.mean(base <= 10.0) + 0.3
    assert np.sqrt(np.mean(tuned[found] ** 2)) <= 10.0
    # the card reports the same figures
    assert card["validation"][0]["n_found"] == found.sum() and card["meets_requirement"]
    assert "RMSE <= 10 px. Fine-tuned: **met**" in (out / "drill_tip.md").read_text()


def test_train_data_errors_exit_2(tmp_path, capsys):
    folder = _labelled_folder(tmp_path, lambda d: d["annotations"][0].update(keypoints=[1.0, 2.0]))
    assert main(["train", "keypoints", "--target", "drill_tip", "--data", str(folder), "--no-progress"]) == 2
    assert "annotations[0].keypoints has 2 values" in capsys.readouterr().err
    (tmp_path / "ok").mkdir()
    good = _labelled_folder(tmp_path / "ok")
    assert main(["train", "keypoints", "--target", "drill_tip", "--data", str(good), "--base",
                 str(tmp_path / "none.pt"), "--no-progress"]) == 2
    assert "none.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "keypoints", "--target", "drill_tip", "--data", str(folder), "--held-out", "0.95"])


@pytest.mark.parametrize("args, message", [
    (["export-frames", "r.mcap", "--out", "x", "--every", "0"], "--every: must be an integer in [1, 1000000], got 0"),
    (["export-frames", "r.mcap", "--out", "x", "--max", "20001"], "--max: must be an integer in [1, 20000], got 20001"),
    (["train", "keypoints", "--target", "drill_tip", "--data", "d", "--batch-size", "257"],
     "--batch-size: must be an integer in [1, 256], got 257"),
    (["train", "keypoints", "--target", "drill_tip", "--data", "d", "--held-out", "0.01"],
     "--held-out: must be in [0.05, 0.9], got 0.01"),
    (["train", "keypoints", "--target", "drill_tip", "--data", "d", "--learning-rate", "0"],
     "--learning-rate: must be in (0, 1], got 0.0"),
    (["train", "thickness", "--budget-min", "1e9"], "--budget-min: must be a number in (0, 10080], got 1e9"),
    (["train", "completion", "--budget-min", "0"], "--budget-min: must be a number in (0, 10080], got 0"),
    (["train", "keypoints", "--target", "drill_tip", "--budget-min", "nan"],
     "--budget-min: must be a number in (0, 10080], got nan"),
    (["sas-twin", "--prefix", "/arm1", "--image-rate-hz", "1e6"],
     "--image-rate-hz: must be a number in [0, 100], got 1e6"),
])
def test_cli_bounds_the_counts_of_export_and_fine_tuning(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


# --- completion levels ---

def _completion_folder(tmp_path, change=None):
    """One 200 x 120 px image, a window of 4 points around (100, 60) with levels typed by hand."""
    (tmp_path / "images").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "images" / "w_left.png"), np.full((120, 200, 3), 90, np.uint8))
    doc = {"images": [{"id": 1, "file_name": "w_left.png", "width": 200, "height": 120,
                       "window_centre_px": [100.0, 60.0],
                       "points_px": [[120.0, 60.0], [100.0, 80.0], [80.0, 60.0], [100.0, 40.0]],
                       "levels": [0.0, 0.5, None, 1.0]}],
           "label_radius_px": 3.0}
    if change:
        change(doc)
    (tmp_path / "completion.json").write_text(json.dumps(doc))
    return tmp_path


def test_completion_labels_are_read_as_typed_and_painted_around_their_points(tmp_path):
    labels = load_completion_labels(_completion_folder(tmp_path))
    assert np.allclose(labels.centres_px, [[100.0, 60.0]]) and np.allclose(labels.points_px[0][1], [100.0, 80.0])
    assert np.array_equal(np.isnan(labels.levels[0]), [False, False, True, False])
    crops = completion_crops(labels, CropConfig(input_px=32, radius_scale=1.5, margin_px=2.0))
    # half-size 1.5 x 20 + 2 = 32 image px, so a crop px is 2 image px and (100, 60) is crop (15.5, 15.5)
    for (u, v), level in (((25.5, 15.5), 0.0), ((15.5, 25.5), 0.5), ((15.5, 5.5), 1.0)):
        assert np.allclose(crops.points_uv[0][[0, 1, 3]][[0.0, 0.5, 1.0].index(level)], [u, v])
        for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):          # the 4 crop pixels around the point
            assert crops.valid[0, int(v) + dv, int(u) + du] and crops.target[0, int(v) + dv, int(u) + du] == level
    assert not crops.valid[0, 16, 5:7].any()                    # the null-level point (80, 60) is not a target
    assert not crops.valid[0, 0, 0] and crops.valid.sum() < 0.1 * 32 * 32


@pytest.mark.parametrize("change, message", [
    (lambda d: d["images"][0].update(levels=[0.0, 0.5, 1.0]), r"images\[0\]\.levels has 3 values for 4 points_px"),
    (lambda d: d["images"][0]["levels"].__setitem__(0, 1.5),
     r"images\[0\]\.levels\[0\] = 1\.5: Input should be less than or equal to 1"),
    (lambda d: d["images"][0]["points_px"].__setitem__(2, [-4.0, 60.0]),
     r"images\[0\]\.points_px\[2\] = \[-4\.0, 60\.0\] px is outside the 200 x 120 px image"),
    (lambda d: d["images"][0].update(points_px=[[1.0, 2.0]], levels=[0.0]),
     r"images\[0\]\.points_px = \[\[1\.0, 2\.0\]\]: List should have at least 3 items"),
    (lambda d: d["images"][0].update(window_centre_px=[1.0]), r"images\[0\]\.window_centre_px = \[1\.0\]"),
    (lambda d: d.update(label_radius_px=0.0), r"label_radius_px = 0\.0: Input should be greater than or equal to 0\.5"),
    (lambda d: d["images"][0].update(file_name="gone.png"), r"images\[0\]\.file_name = 'gone\.png': no such file"),
])
def test_bad_completion_labels_name_the_file_field_value_and_what_is_allowed(tmp_path, change, message):
    folder = _completion_folder(tmp_path, change)
    with pytest.raises(LabelError, match=message) as err:
        load_completion_labels(folder)
    assert str(folder / "completion.json") in str(err.value)


def test_completion_fine_tuning_on_painted_grooves_beats_the_twin_weights(tmp_path):
    torch.set_num_threads(1)
    data = write_painted_completion(tmp_path / "windows", 64, 480, 288, seed=0).parent
    out = tmp_path / "ftc"
    assert main(["train", "completion", "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    card = load_completion_card(out / "completion.pt")
    assert card["fine_tuned"] and card["n_val"] == 13 and card["base"]["path"].endswith("weights/completion.pt")
    doc = {im["file_name"].split("/")[-1]: im for im in json.loads((data / "completion.json").read_text())["images"]}
    errors = {}
    for name, weights in (("base", "completion"), ("tuned", out / "completion.pt")):
        est = load_estimator(weights)
        e = []
        for f in card["held_out_files"]:
            im = doc[f]
            got = est.estimate(cv2.imread(str(data / "images" / f)), im["window_centre_px"], np.array(im["points_px"]))
            e.extend(np.abs(got.levels - np.array(im["levels"])))
        errors[name] = 100 * float(np.mean(e))
    assert errors["base"] > 25.0                      # the twin weights misread the painted grooves
    assert errors["tuned"] < 15.0 and errors["tuned"] < errors["base"] - 15.0
    assert abs(card["validation"]["mae_pct"] - errors["tuned"]) < 0.5       # the card reports the same figure
