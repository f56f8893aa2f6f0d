"""The thickness completion sensor (issue 15): per-camera drill occlusion, fusion of the two
cameras' class probabilities, the thickness -> completion mapping, its settings and the one
place that chooses the milling sensor. The classifier here is a TEST DOUBLE (its reading follows
the crop's mean brightness); the real one is ``controllers.perception.thickness_classifier``."""
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from controllers import pipeline
from controllers.completion_sensing import (MAX_UNFINISHED_COMPLETION, CameraCompletionSensor,
                                            ThicknessCompletionSensor, completion_from_thickness)
from controllers.perception.thickness_classes import CLASS_CENTRES_M, CROP_PX, N_CLASSES
from controllers.reconstruction import OrthoStereoModel
from controllers.settings import (ControllerSettings, MillingSettings, MillingSetupError, PerceptionSettings,
                                  SettingsError)
from hw_bridge.interface import StereoFrame
from scenes.schema import ConfigError
from scenes.spec import DrillSpec, load_scene

# 10 um/px, 0.2 px of disparity per um of height: a point 1 mm up is 200 px apart in the two images
MODEL = OrthoStereoModel(cx_px=320.0, cy_px=240.0, prx_m_per_px=1e-5, pry_m_per_px=1e-5, h_px_per_m=2e5)
DRILL = DrillSpec(burr_radius_m=0.25e-3, neck_radius_m=0.2e-3, neck_length_m=2e-3, shank_radius_m=1.2e-3,
                  shank_length_m=20e-3, max_speed_rpm=50000.0)
STOP_M = 10e-6


@dataclass
class _Reading:
    probs: np.ndarray
    thickness_m: np.ndarray
    p_through: np.ndarray


class BrightnessClassifier:
    """TEST DOUBLE of ``ThicknessClassifier``: one-hot on class ``mean brightness // 20``."""

    crop_px = CROP_PX

    def __init__(self):
        self.batches: list[int] = []

    def classify(self, crops_bgr: np.ndarray) -> _Reading:
        assert crops_bgr.shape[1:] == (CROP_PX, CROP_PX, 3) and crops_bgr.dtype == np.uint8
        self.batches.append(len(crops_bgr))
        k = np.clip(crops_bgr.reshape(len(crops_bgr), -1).mean(axis=1) // 20, 0, N_CLASSES - 1).astype(int)
        probs = np.eye(N_CLASSES)[k]
        return _Reading(probs, probs @ CLASS_CENTRES_M, probs[:, 0])


def tool_pose(tip_r) -> np.ndarray:
    """Tool pose with the burr at ``tip_r`` and the shaft going up (+z of {R})."""
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = tip_r
    return T


def frame(left_level: int, right_level: int) -> StereoFrame:
    return StereoFrame(0.0, 0, np.full((480, 640, 3), left_level, np.uint8),
                       np.full((480, 640, 3), right_level, np.uint8))


def probes(points_r: np.ndarray, k: int = 5) -> np.ndarray:
    """(n, k, 3) probes across x around each point (the middle one is the point)."""
    off = np.linspace(-0.1e-3, 0.1e-3, k)
    return points_r[:, None, :] + off[None, :, None] * np.array([1.0, 0.0, 0.0])


def sensor(classifier=None) -> ThicknessCompletionSensor:
    return ThicknessCompletionSensor(classifier or BrightnessClassifier(), MODEL, np.eye(4), DRILL, STOP_M)


#: points 2 mm apart: outside the 1.2 mm shank disc the vertical drill makes in the left image
POINTS = np.array([[0.0, 0.0, 0.0], [2.0e-3, 0.0, 0.0], [-2.0e-3, 1.0e-3, 0.0]])
FAR_AWAY = tool_pose([10e-3, 10e-3, 0.03])       # off both images


# ----- occlusion per camera ----------------------------------------------------------------

def test_hidden_per_camera_follows_the_drill_silhouette():
    s = sensor()
    uv = s.project(POINTS)
    # burr 1 mm above point 0: over it in the left image, 200 px aside in the right one
    hid = s.hidden(uv, tool_pose(POINTS[0] + [0.0, 0.0, 1e-3]))
    assert hid[:, 0].tolist() == [True, False]
    assert not hid[:, 1:].any()
    # burr on point 0 (no disparity): hidden in both
    assert s.hidden(uv, tool_pose(POINTS[0])).tolist() == [[True, False, False], [True, False, False]]
    assert not s.hidden(uv, FAR_AWAY)[:, 1:].any()


def _hidden_before_the_split(points_px, T_tool_to_r, model, margin_px=4.0):
    """CameraCompletionSensor.hidden as it was written before it was shared (the reference)."""
    from controllers.completion_sensing import _distance_to_segment
    d = DRILL
    px_per_m = 1.0 / abs(float(model.prx_m_per_px))
    axis_up = -T_tool_to_r[:3, 2]
    tip = T_tool_to_r[:3, 3]
    neck_end = tip + d.neck_length_m * axis_up
    shank_end = neck_end + d.shank_length_m * axis_up
    a, b, c = model.project(np.stack([tip, neck_end, shank_end]))[0]
    hide = np.linalg.norm(points_px - a, axis=1) <= d.burr_radius_m * px_per_m + margin_px
    for (s, e, radius_m) in ((a, b, d.neck_radius_m), (b, c, d.shank_radius_m)):
        hide |= _distance_to_segment(points_px, s, e) <= radius_m * px_per_m + margin_px
    return hide


@settings(max_examples=60, deadline=None)
@given(st.floats(-2e-3, 2e-3), st.floats(-2e-3, 2e-3), st.floats(0.0, 3e-3), st.floats(-0.3, 0.3))
def test_regression_sensor_occlusion_unchanged_and_equal_to_the_left_row(x, y, z, tilt):
    T = tool_pose([x, y, z])
    c, s_ = np.cos(tilt), np.sin(tilt)
    T[:3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, c, -s_], [0.0, s_, c]]) @ T[:3, :3]
    grid = np.stack(np.meshgrid(np.linspace(-2e-3, 2e-3, 9), np.linspace(-2e-3, 2e-3, 9), [0.0]),
                    axis=-1).reshape(-1, 3)
    cam = CameraCompletionSensor(None, MODEL, np.eye(4), np.zeros(3), DRILL)
    px = cam.left_px(grid)
    expected = _hidden_before_the_split(px, T, MODEL)
    assert np.array_equal(cam.hidden(px, T), expected)
    th = sensor()
    assert np.array_equal(th.hidden(th.project(grid), T)[0], expected)


# ----- fusion ------------------------------------------------------------------------------

def test_both_cameras_seen_probabilities_averaged_in_one_batch():
    clf = BrightnessClassifier()
    s = sensor(clf)
    s.estimate(frame(40, 100), probes(POINTS), FAR_AWAY)    # left class 2 (10-20 um), right class 5 (40-50 um)
    assert clf.batches == [2 * len(POINTS)]
    np.testing.assert_allclose(s.last_probs[:, 2], 0.5)
    np.testing.assert_allclose(s.last_probs[:, 5], 0.5)
    np.testing.assert_allclose(s.last_thickness_m, (CLASS_CENTRES_M[2] + CLASS_CENTRES_M[5]) / 2)


def test_point_hidden_in_one_camera_gets_the_others_reading_and_in_both_nan():
    clf = BrightnessClassifier()
    s = sensor(clf)
    s.estimate(frame(40, 100), probes(POINTS), tool_pose(POINTS[0] + [0.0, 0.0, 1e-3]))  # point 0: left hidden
    assert s.last_thickness_m[0] == pytest.approx(CLASS_CENTRES_M[5])                      # the right's reading
    np.testing.assert_allclose(s.last_thickness_m[1:], (CLASS_CENTRES_M[2] + CLASS_CENTRES_M[5]) / 2)
    assert clf.batches == [2 * len(POINTS) - 1]
    c = s.estimate(frame(40, 100), probes(POINTS), tool_pose(POINTS[0]))                   # point 0: both hidden
    assert np.isnan(s.last_thickness_m[0]) and np.isnan(c[0]) and np.isnan(s.last_probs[0]).all()
    assert np.isfinite(c[1:]).all()


def test_an_image_no_point_is_seen_in_is_not_read():
    read = []

    def right():
        read.append("right")
        return np.full((480, 640, 3), 100, np.uint8)
    s = sensor()
    one = POINTS[:1]
    c = s.estimate(StereoFrame(0.0, 0, np.full((480, 640, 3), 40, np.uint8), right), probes(one), tool_pose(one[0]))
    assert read == [] and np.isnan(c).all()


# ----- thickness -> completion -------------------------------------------------------------

@given(st.floats(0.0, STOP_M))
def test_through_exactly_at_or_below_the_stop_thickness(t):
    assert completion_from_thickness(t, STOP_M, 400e-6) == 1.0


@given(st.floats(STOP_M, 1e-3, exclude_min=True), st.floats(1e-6, 1e-3))
def test_above_the_stop_thickness_never_reaches_the_through_level(t, ref):
    c = float(completion_from_thickness(t, STOP_M, ref))
    assert 0.0 <= c <= MAX_UNFINISHED_COMPLETION < 0.99


@given(st.lists(st.floats(0.0, 1e-3), min_size=2, max_size=20), st.floats(20e-6, 1e-3))
def test_completion_never_increases_with_thickness(ts, ref):
    t = np.sort(np.array(ts))
    c = completion_from_thickness(t, STOP_M, ref)
    assert np.all(np.diff(c) <= 0.0)


def test_the_reference_is_each_points_starting_thickness():
    clf = BrightnessClassifier()
    s = sensor(clf)
    p = probes(POINTS)
    assert np.isnan(completion_from_thickness(np.nan, STOP_M, 1e-4))
    np.testing.assert_allclose(s.estimate(frame(255, 255), p, FAR_AWAY), 0.0)          # > 300 um: 400 um, c = 0
    np.testing.assert_allclose(s.estimate(frame(160, 160), p, FAR_AWAY), 1 - 90e-6 / 400e-6)   # 80-100 um
    np.testing.assert_allclose(s.estimate(frame(20, 20), p, FAR_AWAY), 1.0)            # 0-10 um: through
    s2 = sensor()
    np.testing.assert_allclose(s2.estimate(frame(160, 160), p, FAR_AWAY), 0.0)         # first seen at 90 um


# ----- settings ----------------------------------------------------------------------------

def test_bad_completion_sensor_names_field_value_and_allowed():
    with pytest.raises(SettingsError) as err:
        PerceptionSettings(completion_sensor="foo")
    (p,) = err.value.problems
    assert p.field == "completion_sensor" and p.value == "foo"
    assert "regression" in p.allowed and "thickness" in p.allowed
    with pytest.raises(ConfigError, match=r"controllers\.perception\.completion_sensor.*'foo'.*regression.*thickness"):
        load_scene(None, {"controllers.perception.completion_sensor": "foo"})


def test_bad_stop_thickness_names_field_value_and_bounds():
    with pytest.raises(MillingSetupError, match=r"MillingSettings\.stop_thickness_m=-1 .*\[0, 6e-05\]"):
        MillingSettings(stop_thickness_m=-1)
    with pytest.raises(ConfigError, match=r"controllers\.milling\.stop_thickness_m"):
        load_scene(None, {"controllers.milling.stop_thickness_m": 1e-3})


def test_thickness_weights_checked_only_for_the_thickness_sensor(tmp_path):
    missing = str(tmp_path / "none.pt")
    assert PerceptionSettings(completion_sensor="regression",
                              thickness_weights=missing).thickness_weights == missing       # not read
    with pytest.raises(SettingsError, match=r"thickness_weights=.*completion_sensor = \"thickness\" \(none at .*none\.pt"):
        PerceptionSettings(completion_sensor="thickness", thickness_weights=missing)
    (tmp_path / "t.pt").write_bytes(b"")
    PerceptionSettings(completion_sensor="thickness", thickness_weights=str(tmp_path / "t.pt"))


# ----- which sensor ------------------------------------------------------------------------

@dataclass
class _Trajectory:
    T_mi_to_r: np.ndarray
    centre_mi: np.ndarray


@dataclass
class _Surface:
    trajectory: _Trajectory


SURFACE = _Surface(_Trajectory(np.eye(4), np.zeros(3)))


def test_the_default_scene_reads_thickness_with_the_loop_tuned_weights_and_regression_stays_selectable():
    scene = load_scene(None)
    perception = scene.controllers.perception
    assert (perception.completion_sensor, perception.thickness_weights) == ("thickness", "thickness_loop")
    clf = BrightnessClassifier()
    made = pipeline.completion_sensor(pipeline.Networks(tip=None, thickness=clf), DRILL, scene.controllers)(
        SURFACE, MODEL)
    assert isinstance(made, ThicknessCompletionSensor) and made.classifier is clf
    regression = load_scene(None, {"controllers.perception.completion_sensor": "regression"}).controllers
    made = pipeline.completion_sensor(pipeline.Networks(tip=None, completion=object()), DRILL, regression)(
        SURFACE, MODEL)
    assert type(made) is CameraCompletionSensor


def test_the_thickness_scene_gets_the_thickness_sensor_and_its_network(tmp_path, monkeypatch):
    (tmp_path / "t.pt").write_bytes(b"")
    ctl = ControllerSettings.model_validate(
        {"perception": {"completion_sensor": "thickness", "thickness_weights": str(tmp_path / "t.pt")},
         "milling": {"stop_thickness_m": 15e-6}})
    clf = BrightnessClassifier()
    monkeypatch.setattr(pipeline, "load_classifier", lambda name: clf if name == str(tmp_path / "t.pt") else None)
    monkeypatch.setattr(pipeline, "load_detector", lambda *a, **k: "detector")
    nets = pipeline.load_networks(ctl.perception)
    assert nets.thickness is clf and nets.completion is None
    made = pipeline.completion_sensor(nets, DRILL, ctl)(SURFACE, MODEL)
    assert isinstance(made, ThicknessCompletionSensor) and made.stop_thickness_m == 15e-6
    assert made.classifier is clf
    with pytest.raises(ValueError, match="networks.thickness"):
        pipeline.completion_sensor(pipeline.Networks(tip=None, completion=object()), DRILL, ctl)


def test_job_thickness_mae_scores_only_the_decision_range():
    from scenarios.jobs.milling import thickness_mae_um

    @dataclass
    class Row:
        thickness_m: np.ndarray
    rows = [Row(np.array([100e-6, 50e-6, 10e-6])), Row(np.array([0.0, 30e-6, 70e-6]))]
    est = [np.array([0.0, 40e-6, np.nan]), np.array([5e-6, 30e-6, 0.0])]
    assert thickness_mae_um(est, rows) == pytest.approx((10 + 5 + 0) / 3)
    assert np.isnan(thickness_mae_um([], []))


def test_right_crops_follow_the_stereo_match():
    """The right image is the left one shifted by (1.5, 4) px beyond what the model predicts:
    the sensor finds the shift by matching and cuts the right crops there."""
    rng = np.random.default_rng(0)
    import cv2
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (480, 640)).astype(np.float32), (0, 0), 2.0)
    left = np.repeat(np.clip(tex, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    pts = np.array([[x, y, 0.0] for x in (-1.5e-3, 0.0, 1.5e-3) for y in (-1e-3, 1e-3)])
    uv_l, uv_r = MODEL.project(pts)
    shift = np.array([1.5, 4.0])
    M = np.float32([[1, 0, (uv_r - uv_l)[0, 0] + shift[0]], [0, 1, (uv_r - uv_l)[0, 1] + shift[1]]])
    right = cv2.warpAffine(left, M, (640, 480), borderMode=cv2.BORDER_REFLECT)
    s = sensor()
    for _ in range(3):
        s.estimate(StereoFrame(0.0, 0, left, right), probes(pts), FAR_AWAY)
    np.testing.assert_allclose(s.right_offset_px, shift, atol=0.6)


def test_no_texture_no_correction():
    s = sensor()
    s.estimate(frame(40, 100), probes(POINTS), FAR_AWAY)
    np.testing.assert_array_equal(s.right_offset_px, [0.0, 0.0])
