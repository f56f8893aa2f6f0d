"""The thickness classifier's training data (scenarios.thickness_dataset): labels from the bone
model, crops where the points are, determinism, checked settings and file round trip."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from controllers.perception.thickness_classes import CROP_PX, thickness_class
from scenarios.completion_dataset import THROUGH_LEVEL
from scenarios.thickness_dataset import (ThicknessDataSettings, ThicknessSamples, ThicknessScene,
                                         generate_thickness_samples, random_thickness_profile)


@pytest.fixture(scope="module")
def scene():
    return ThicknessScene(ThicknessDataSettings(n_scenes=1, states_per_scene=1, views_per_state=1, seed=3), 0)


def test_labels_follow_the_bone_model(scene):
    centre, radius = np.array([0.0, -scene.skull.params.bregma_lambda_m / 3]), 2e-3
    scene.reset()
    _, untouched, t0 = scene.point_truth(centre, radius)
    # untouched: the thinnest bone across the groove is the skull's own (within its variation over 0.3 mm)
    assert np.all(untouched > 0.8 * t0) and np.all(untouched <= 1.2 * t0)
    scene.mill_rate_limited(centre, radius, np.full(32, THROUGH_LEVEL))
    _, through, _ = scene.point_truth(centre, radius)
    assert np.all(through < 0.5e-6)
    assert np.all(thickness_class(through) == 0)
    scene.reset()
    scene.mill_rate_limited(centre, radius, np.full(32, 0.5))
    _, half, t0 = scene.point_truth(centre, radius)
    # half the bone cut at the points: the groove's thinnest cross-section is near half (rate-limited
    # laps stop at the target; the sphere's bottom is the deepest point across the groove)
    assert np.median(np.abs(half / t0 - 0.5)) < 0.1


def test_generation_is_deterministic_and_shaped():
    s = ThicknessDataSettings(n_scenes=1, states_per_scene=2, views_per_state=1, seed=5)
    a = generate_thickness_samples(s)
    b = generate_thickness_samples(s)
    assert a.crops.shape[1:] == (CROP_PX, CROP_PX, 3) and a.crops.dtype == np.uint8
    assert 0 < len(a) <= 2 * 2 * 32
    np.testing.assert_array_equal(a.crops, b.crops)
    np.testing.assert_array_equal(a.thickness_m, b.thickness_m)
    assert set(np.unique(a.camera)) <= {0, 1}
    assert a.view_crops.shape == (2, 96, 96, 3)
    assert np.all(a.thickness_m >= 0) and np.all(a.thickness_m <= a.initial_thickness_m * 1.3)


def test_save_and_load_round_trip(tmp_path):
    s = generate_thickness_samples(ThicknessDataSettings(n_scenes=1, states_per_scene=1, views_per_state=1, seed=1))
    path = s.save(tmp_path / "d.npz")
    back = ThicknessSamples.load(path)
    np.testing.assert_array_equal(back.crops, s.crops)
    np.testing.assert_array_equal(back.view_points_uv, s.view_points_uv)
    with pytest.raises(ValueError, match="no file"):
        ThicknessSamples.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("field, value", [("n_scenes", 0), ("n_scenes", 10**6), ("states_per_scene", 0),
                                          ("crop_jitter_px", -1.0), ("cross_section_probes", 0)])
def test_bad_settings_name_the_field(field, value):
    kwargs = {"n_scenes": 1, field: value}
    with pytest.raises(ValueError, match=field):
        ThicknessDataSettings(**kwargs)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t0=st.floats(0.2e-3, 0.6e-3))
def test_profiles_stay_in_range(seed, t0):
    theta = 2 * np.pi * np.arange(32) / 32
    c, kind = random_thickness_profile(np.random.default_rng(seed), theta, np.full(32, t0))
    assert c.shape == (32,) and np.all(c >= 0) and np.all(c <= THROUGH_LEVEL)
    assert 0 <= kind < 3
