"""Loop crops (issue 13): the recorder of the thickness crops the milling loop sees, their file,
the fine-tune on them (``micromill train thickness --loop-data``) and its split and tables.

The recorder is driven here by a TEST DOUBLE of the scored sensor (readings with a truth row
each) and of the crop cutter (crops whose brightness encodes the point index); one real case of
``scenarios/thickness_loop_data.toml`` runs behind the ``slow`` marker."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from controllers.perception.thickness_classes import CLASS_CENTRES_M, CROP_PX, N_CLASSES
from controllers.perception.thickness_classifier import load_classifier, save_classifier
from controllers.perception.thickness_net import ThicknessNet, ThicknessNetConfig
from controllers.perception.thickness_training import ThicknessTrainSettings, train_thickness_net
from scenarios.loop_crops import FILE_PATTERN, LoopCropRecorder, LoopCrops, LoopCropSettings, load_run
from scenarios.train_thickness_loop import band_table, fine_tune_on_loop, load_runs, split_by_case
from tests.test_thickness_classifier import SMALL, synthetic_crops
from tests.test_thickness_sensor import DRILL, MODEL

N = 6


@dataclass
class _Truth:
    t_s: float
    c_true: np.ndarray
    thickness_m: np.ndarray


class FakeScored:
    """TEST DOUBLE of ``ScoredSensor``: returns ``c`` and appends the truth row it is told."""

    uses_images = True

    def __init__(self):
        self.rows: list[_Truth] = []
        self.next_truth: _Truth | None = None

    def estimate(self, frame, probes_r, T_tool_to_r):
        self.rows.append(self.next_truth)
        return np.full(N, 0.5)


def fake_point_crops(frame, centres_r, T_tool_to_r):
    """TEST DOUBLE of ``ThicknessCompletionSensor.point_crops``: every point in both cameras, crop
    brightness = 10 * point index + camera."""
    rows = np.tile(np.arange(N), 2)
    camera = np.repeat(np.array([0, 1], np.int8), N)
    crops = np.zeros((2 * N, CROP_PX, CROP_PX, 3), np.uint8) + (10 * rows + camera)[:, None, None, None].astype(np.uint8)
    return crops, rows, camera


def recorder(settings: LoopCropSettings, seed: int = 0):
    scored = FakeScored()
    rec = LoopCropRecorder(scored, MODEL, np.eye(4), DRILL, case=3, rng=np.random.default_rng(seed), settings=settings)
    rec.cropper.point_crops = fake_point_crops
    return scored, rec


def feed(scored, rec, c_max: float, thickness_m: np.ndarray, t_s: float):
    scored.next_truth = _Truth(t_s, np.full(N, c_max), np.asarray(thickness_m, float))
    return rec.estimate(object(), np.zeros((N, 3, 3)), np.eye(4))


THICK = np.array([0.0, 5e-6, 25e-6, 80e-6, 150e-6, 400e-6])      # through, thin ... thick


def test_passes_readings_through_and_starts_at_the_completion_level():
    scored, rec = recorder(LoopCropSettings(every=1, through_fraction=1.0, thick_fraction=1.0))
    c = feed(scored, rec, 0.3, THICK, 1.0)
    assert np.all(c == 0.5) and rec.recorded == 0                    # below start_completion (0.5): nothing
    feed(scored, rec, 0.6, THICK, 1.2)
    got = rec.crops()
    assert rec.recorded == len(got) == 2 * N
    # each crop carries its own point's label and camera (the fake's brightness says which it is)
    assert np.array_equal(got.crops[:, 0, 0, 0], 10 * got.point + got.camera)
    assert np.allclose(got.thickness_m, THICK[got.point].astype(np.float32))
    assert np.all(got.t_s == 1.2) and np.all(got.case == 3)


def test_every_nth_reading_and_the_keep_fractions():
    scored, rec = recorder(LoopCropSettings(every=3, through_fraction=0.0, thick_fraction=0.0))
    for k in range(9):
        feed(scored, rec, 0.9, THICK, float(k))
    got = rec.crops()
    assert sorted(set(got.t_s.tolist())) == [0.0, 3.0, 6.0]        # readings 0, 3, 6 after the start
    # through (0 um) and thick (> 120 um) points are never kept at fraction 0; 5, 25, 80 um always
    assert set(got.point.tolist()) == {1, 2, 3}


def test_keep_fraction_is_drawn_and_seeded():
    def run(seed):
        scored, rec = recorder(LoopCropSettings(every=1, through_fraction=0.3, thick_fraction=0.0), seed)
        for k in range(400):
            feed(scored, rec, 0.9, np.zeros(N), float(k))             # every point through
        return rec.crops()
    a, b = run(1), run(1)
    assert np.array_equal(a.point, b.point) and np.array_equal(a.t_s, b.t_s)
    assert 0.25 < len(a) / (400 * 2 * N) < 0.35


def test_max_crops_bounds_a_case():
    scored, rec = recorder(LoopCropSettings(every=1, through_fraction=1.0, thick_fraction=1.0, max_crops=17))
    for k in range(10):
        feed(scored, rec, 0.9, THICK, float(k))
    assert rec.recorded == len(rec.crops()) == 17


@pytest.mark.parametrize("field, value", [("every", 0), ("start_completion", 1.5), ("keep_below_m", 0.0),
                                          ("through_fraction", -0.1), ("max_crops", 10**7)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"LoopCropSettings.{field}="):
        LoopCropSettings(**{field: value})


def test_file_round_trip_and_run_loading(tmp_path):
    scored, rec = recorder(LoopCropSettings(every=1, through_fraction=1.0, thick_fraction=1.0))
    feed(scored, rec, 0.9, THICK, 2.0)
    path = rec.save(tmp_path / "artifacts")
    assert path.name == FILE_PATTERN.format(index=3)
    back = load_run(tmp_path)
    for k, v in vars(rec.crops()).items():
        assert np.array_equal(getattr(back, k), v), k
    with pytest.raises(FileNotFoundError, match="record_loop_crops"):
        load_run(tmp_path / "empty")
    bad = tmp_path / "bad" / "artifacts"
    bad.mkdir(parents=True)
    np.savez(bad / "loop_crops_case000.npz", crops=np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="missing"):
        load_run(bad.parent)


# ----- the fine-tune ------------------------------------------------------------------------

def crops_of_cases(cases: list[int], per_class: int = 3) -> LoopCrops:
    parts = []
    for c in cases:
        crops, t = synthetic_crops(per_class, c)
        n = len(crops)
        parts.append(LoopCrops(crops, t.astype(np.float32), np.zeros(n, np.int8), np.zeros(n, np.int16),
                               np.zeros(n), np.full(n, c, np.int32)))
    return LoopCrops.concatenate(parts)


def test_split_holds_out_the_last_quarter_of_the_cases():
    train, held = split_by_case(crops_of_cases(list(range(8)), 1))
    assert set(np.unique(held.case)) == {6, 7} and set(np.unique(train.case)) == set(range(6))
    train, held = split_by_case(crops_of_cases([4, 9], 1))
    assert set(np.unique(held.case)) == {9}
    with pytest.raises(ValueError, match="at least 2"):
        split_by_case(crops_of_cases([5], 1))


def test_band_table_by_hand():
    probs = np.zeros((4, N_CLASSES))
    probs[0, 0] = 1.0                        # reads through (0 um) on a through crop
    probs[1, 2] = 1.0                        # reads class 2 on a 15 um crop
    probs[2, 0] = 0.5
    probs[2, 2] = 0.5                        # half through, half class 2 on a 15 um crop
    probs[3, 5] = 1.0                        # a 45 um crop read as class 5
    t = np.array([0.0, 15e-6, 15e-6, 45e-6])
    rows = {tuple(r["band_um"]): r for r in band_table(probs, t)}
    assert rows[(0.0, 0.2)]["n"] == 1 and rows[(0.0, 0.2)]["read_through"] == 1.0
    r = rows[(10.0, 20.0)]
    assert r["n"] == 2
    assert r["mean_um"] == pytest.approx(1e6 * (CLASS_CENTRES_M[2] + 0.5 * CLASS_CENTRES_M[2]) / 2)
    assert r["read_through"] == (0.5 * CLASS_CENTRES_M[2] <= 10e-6) / 2
    assert rows[(40.0, 60.0)]["mean_um"] == pytest.approx(1e6 * CLASS_CENTRES_M[5])
    assert rows[(60.0, 100.0)]["n"] == 0


def test_train_from_an_initial_network_starts_from_it_and_leaves_it_alone():
    torch.manual_seed(12345)          # not the training seed, so that a fresh start differs from it
    base = ThicknessNet(SMALL).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    crops, t = synthetic_crops(2, 0)
    frozen = ThicknessTrainSettings(epochs=1, batch_size=8, lr=1e-30, weight_decay=0.0, seed=0, time_budget_s=60)
    net, _ = train_thickness_net((crops, t), None, SMALL, frozen, initial=base)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())        # not modified
    # a step of ~0 from it: its trainable weights (normalisation statistics still update in training)
    start = dict(base.named_parameters())
    assert all(torch.allclose(v, start[k]) for k, v in net.named_parameters())
    scratch, _ = train_thickness_net((crops, t), None, SMALL, frozen)
    assert not all(torch.allclose(v, start[k]) for k, v in scratch.named_parameters())
    with pytest.raises(ValueError, match="initial network"):
        train_thickness_net((crops, t), None, ThicknessNetConfig(base_channels=4), frozen, initial=base)


def write_run(root: Path, crops: LoopCrops) -> Path:
    for c in np.unique(crops.case):
        (root / "artifacts").mkdir(parents=True, exist_ok=True)
        crops.subset(crops.case == c).save(root / "artifacts" / FILE_PATTERN.format(index=int(c)))
    return root


def test_fine_tune_writes_weights_card_and_metrics_that_load(tmp_path):
    torch.manual_seed(0)
    init = tmp_path / "init.pt"
    save_classifier(init, ThicknessNet(SMALL), None, {"note": "test"})
    run_a = write_run(tmp_path / "a", crops_of_cases([0, 1, 2], 4))
    run_b = write_run(tmp_path / "b", crops_of_cases([0, 1], 4))           # same case numbers, another run
    assert np.unique(load_runs([run_a, run_b]).case).size == 5
    card = fine_tune_on_loop([run_a, run_b], tmp_path / "out", initial=str(init), name="tuned", epochs=3,
                             progress=False)
    assert card["n_cases"] == 5 and card["n_held_out_cases"] == 1 and card["n_train_cases"] == 4
    assert card["n_train"] + card["n_held_out"] == 5 * 4 * N_CLASSES
    clf = load_classifier(tmp_path / "out" / "tuned.pt")
    assert clf.config == SMALL and clf.card["initial"] == str(init)
    text = (tmp_path / "out" / "tuned.md").read_text()
    assert "Held-out cases" in text and "through (< 0.2)" in text
    assert (tmp_path / "out" / "tuned_metrics.json").is_file()
    # training moved the network: the held-out thickness error is not the initial one's
    assert card["held_out"]["fine_tuned"]["mae_um"] != card["held_out"]["initial"]["mae_um"]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    from scenarios.cli import main

    assert main(["train", "thickness", "--loop-data", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no artifacts/loop_crops_case" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "thickness", "--loop-data", str(tmp_path), "--name", "../evil"])
    assert "file stem" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_case_records_crops_whose_labels_match_the_scoring_truth(tmp_path):
    """One case of the data suite on the twin: crops from both cameras, labels equal to the
    thinnest bone the scoring kept for the same reading and point."""
    from scenarios.cases import make_cases, run_case
    from scenarios.suite import load_suite

    suite = load_suite(Path("scenarios") / "thickness_loop_data.toml")
    ctx = make_cases(suite, 1, suite.seed, tmp_path, n_artifact_cases=0)[0]
    res = run_case(suite.job, ctx)
    assert res.error is None, res.error
    got = load_run(tmp_path)
    assert res.metrics["loop_crops"] == len(got) > 1000
    assert set(np.unique(got.camera)) == {0, 1}
    assert got.thickness_m.min() == 0.0 and 10e-6 < np.median(got.thickness_m) < 120e-6
