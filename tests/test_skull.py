"""Skull invariants: thickness in range, inner below outer, determinism, clear errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from twin.skull import Skull, SkullParameterError, SkullParams

params = st.builds(
    lambda seed, tmin, span, amp, bl: SkullParams(seed=seed, thickness_min_m=tmin * 1e-3,
                                                 thickness_max_m=(tmin + span) * 1e-3,
                                                 unevenness_amplitude_m=amp * 1e-3, bregma_lambda_m=bl * 1e-3,
                                                 grid_cell_m=10e-6, milling_half_width_m=2e-3,
                                                 milling_half_length_m=3e-3),
    st.integers(0, 10**6), st.floats(0.1, 0.5), st.floats(0.0, 0.4), st.floats(0.0, 0.3), st.floats(3.0, 5.5))


@settings(max_examples=25, deadline=None)
@given(params)
def test_thickness_in_range_and_inner_below_outer(p):
    sk = Skull(p)
    t = sk.outer_z - sk.inner_z
    assert t.min() >= p.thickness_min_m - 1e-9 and t.max() <= p.thickness_max_m + 1e-9
    assert np.all(sk.inner_z < sk.outer_z)
    assert np.all(sk.membrane_z <= sk.inner_z + 1e-12)
    rng = np.random.default_rng(p.seed)
    g = sk.grid
    x = rng.uniform(g.x0, g.x0 + g.cell * (g.nx - 1), 50)
    y = rng.uniform(g.y0, g.y0 + g.cell * (g.ny - 1), 50)
    th = sk.thickness(x, y)
    assert np.all(th >= p.thickness_min_m - 1e-9) and np.all(th <= p.thickness_max_m + 1e-9)
    n = sk.outer_normal(x, y)
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0) and np.all(n[:, 2] > 0)


def test_same_seed_same_skull_different_seed_different_skull():
    a, b, c = Skull(SkullParams(seed=3)), Skull(SkullParams(seed=3)), Skull(SkullParams(seed=4))
    assert np.array_equal(a.outer_z, b.outer_z) and np.array_equal(a.inner_z, b.inner_z)
    assert not np.array_equal(a.outer_z, c.outer_z)


def test_landmarks_and_resolution():
    p = SkullParams(bregma_lambda_m=4.2e-3)
    sk = Skull(p)
    assert sk.grid.cell <= 10e-6
    d = np.linalg.norm(sk.bregma_s[:2] - sk.lambda_s[:2])
    assert abs(d - 4.2e-3) < 1e-12
    # bregma sits on the sagittal and coronal sutures, lambda on the sagittal and lambdoid ones
    assert sk.suture_distance(np.array([0.0]), np.array([0.0]))[0, 0] < 1e-9
    assert sk.suture_distance(np.array([0.0]), np.array([-4.2e-3]))[0, 0] < 1e-9
    assert sk.outer_height(0.0, 0.0) == pytest.approx(sk.bregma_s[2])


@pytest.mark.parametrize("field,value", [("thickness_min_m", -1.0), ("unevenness_amplitude_m", 1.0),
                                         ("bregma_lambda_m", 10e-3), ("grid_cell_m", 20e-6),
                                         ("dome_radius_ml_m", float("nan"))])
def test_out_of_range_parameters_raise_clear_error(field, value):
    with pytest.raises(SkullParameterError, match=f"skull.{field}"):
        Skull(SkullParams(**{field: value}))


def test_min_above_max_is_an_error():
    with pytest.raises(SkullParameterError, match="exceeds"):
        Skull(SkullParams(thickness_min_m=0.5e-3, thickness_max_m=0.3e-3))


def test_query_outside_region_is_a_clear_error():
    sk = Skull(SkullParams())
    with pytest.raises(ValueError, match="outside the skull's milling region"):
        sk.outer_height(1.0, 0.0)
