"""Stereo reconstruction model (controllers.reconstruction) and landmark calibration
(controllers.calibration): exact inverses, exact recovery from noise-free data, outlier
rejection, error prediction, handedness on a verged rig, and clear errors."""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from scipy.spatial.transform import Rotation

from controllers.calibration import CalibrationError, apply, calibrate, fit_rigid
from controllers.reconstruction import (CameraModelError, OrthoStereoModel, estimate_camera_model,
                                        load_camera_model, model_error, save_camera_model)
from scenes.frames import invert, make_transform
from scenes.schema import ConfigError

seeds = st.integers(0, 2**32 - 1)
quaternions = st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).filter(
    lambda q: np.linalg.norm(q) > 0.1)
translations = st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3)
rigid_transforms = st.builds(lambda q, t: make_transform(Rotation.from_quat(q).as_matrix(), t),
                             quaternions, translations)
h_px_per_mm = st.one_of(st.floats(-20.0, -2.0), st.floats(2.0, 20.0))
shears_mm_per_px = st.floats(-0.02, 0.02)


def make_model(prx_mm, pry_mm, h_mm, sxy=0.0, sxd=0.0, syd=0.0, cx=480.0, cy=270.0, de_mm=0.0):
    """A model from mm / px values, as written in camera-model files."""
    return OrthoStereoModel(cx_px=cx, cy_px=cy, prx_m_per_px=prx_mm * 1e-3, pry_m_per_px=pry_mm * 1e-3,
                            h_px_per_m=h_mm * 1e3, de_m=de_mm * 1e-3, shear_xy_m_per_px=sxy * 1e-3,
                            shear_xd_m_per_px=sxd * 1e-3, shear_yd_m_per_px=syd * 1e-3)


models = st.builds(make_model, st.floats(0.01, 0.1), st.floats(0.01, 0.1), h_px_per_mm,
                   shears_mm_per_px, shears_mm_per_px, shears_mm_per_px,
                   st.floats(0.0, 1000.0), st.floats(0.0, 1000.0), st.floats(-10.0, 10.0))
centred_models = st.builds(make_model, st.floats(0.01, 0.1), st.floats(0.01, 0.1), h_px_per_mm,
                           shears_mm_per_px, shears_mm_per_px, shears_mm_per_px)


def workspace_points(seed: int, n: int, size_m=(0.02, 0.03, 0.01)) -> np.ndarray:
    """n points spread in a box the size of the paper's reconstruction space (m)."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (n, 3)) * size_m


# ---------------------------------------------------------------- landmark calibration

@settings(deadline=None, max_examples=100)
@given(rigid_transforms, seeds, st.integers(3, 12), st.floats(2e-3, 0.1))
def test_fit_rigid_recovers_any_rigid_transform(T, seed, k, spread_m):
    p_mi = np.random.default_rng(seed).uniform(-spread_m, spread_m, (k, 3))
    s = np.linalg.svd(p_mi - p_mi.mean(axis=0), compute_uv=False)
    assume(s[1] > 0.05 * s[0] and s[1] > 1e-3)
    T_fit = fit_rigid(p_mi, apply(T, p_mi))
    assert np.allclose(T_fit, T, atol=1e-9)


@settings(deadline=None, max_examples=50)
@given(rigid_transforms, rigid_transforms, seeds)
def test_fit_rigid_is_equivariant(T, G, seed):
    rng = np.random.default_rng(seed)
    p_mi = workspace_points(seed, 6)
    p_r = apply(T, p_mi) + rng.normal(0.0, 1e-4, p_mi.shape)
    assert np.allclose(fit_rigid(p_mi, apply(G, p_r)), G @ fit_rigid(p_mi, p_r), atol=1e-9)


@settings(deadline=None, max_examples=50)
@given(rigid_transforms, seeds, st.integers(8, 20), st.data())
def test_calibrate_rejects_one_gross_outlier(T, seed, k, data):
    rng = np.random.default_rng(seed)
    p_r = workspace_points(seed, k, (0.03, 0.03, 0.01))
    p_mi = apply(invert(T), p_r) + rng.normal(0.0, 20e-6, (k, 3))
    bad = data.draw(st.integers(0, k - 1))
    direction = rng.normal(size=3)
    p_mi[bad] += 5e-3 * direction / np.linalg.norm(direction)
    cal = calibrate(p_mi, p_r)
    assert not cal.inliers[bad]
    assert cal.inliers.sum() >= k - np.floor(0.3 * k)
    assert cal.residuals_m[bad] > 4e-3  # against the final transform, in the input order
    assert np.max(np.linalg.norm(apply(cal.T_mi_to_r, apply(invert(T), p_r)) - p_r, axis=1)) < 1e-4


def test_calibrate_keeps_every_point_of_noise_free_data_and_of_four_points():
    p_r = workspace_points(1, 10)
    T = make_transform(Rotation.from_rotvec([0.3, -0.2, 2.0]).as_matrix(), [0.3, -0.1, 0.2])
    cal = calibrate(apply(invert(T), p_r), p_r)
    assert cal.inliers.all() and cal.rms_m < 1e-12 and np.allclose(cal.T_mi_to_r, T, atol=1e-12)
    p_mi = apply(invert(T), p_r[:4])
    p_mi[0] += 0.01  # grossly wrong, but 4 points leave nothing to reject
    assert calibrate(p_mi, p_r[:4]).inliers.all()


def test_expected_error_matches_monte_carlo():
    rng = np.random.default_rng(7)
    sigma = 50e-6
    p_r = workspace_points(3, 6)
    T = make_transform(Rotation.from_rotvec([0.1, 2.5, -0.4]).as_matrix(), [0.2, 0.4, 0.1])
    p_mi_true = apply(invert(T), p_r)
    targets_r = np.array([p_r.mean(axis=0), [0.01, 0.01, 0.0], [0.04, -0.03, 0.01]])
    targets_mi = apply(invert(T), targets_r)
    errors, predicted, sigmas = [], [], []
    for _ in range(200):
        cal = calibrate(p_mi_true + rng.normal(0.0, sigma, p_r.shape), p_r, outlier_threshold_m=np.inf)
        errors.append(np.linalg.norm(apply(cal.T_mi_to_r, targets_mi) - targets_r, axis=1))
        predicted.append(cal.expected_error_m(targets_r))
        sigmas.append(cal.sigma_m)
    actual_rms = np.sqrt(np.mean(np.square(errors), axis=0))
    predicted_rms = np.sqrt(np.mean(np.square(predicted), axis=0))
    assert np.all((predicted_rms > actual_rms / 2) & (predicted_rms < actual_rms * 2))
    assert predicted_rms[0] < predicted_rms[2]  # further from the landmarks, larger error
    assert sigma / 1.5 < np.sqrt(np.mean(np.square(sigmas))) < sigma * 1.5
    assert np.isscalar(cal.expected_error_m(targets_r[0]))


@pytest.mark.parametrize("p_mi, p_r, words", [
    (np.eye(3)[:2], np.eye(3)[:2], "at least 3"),
    (np.eye(3), np.eye(4)[:, :3], "shape"),
    (np.array([[0, 0, 0], [1e-3, 0, 0], [2e-3, 0, 0], [3e-3, 1e-9, 0]]), np.eye(4)[:, :3], "collinear"),
    (np.array([[0, 0, 0], [1e-3, 0, 0], [1e-3, 1e-7, 0], [0, 1e-3, 0]]), np.eye(4)[:, :3], "repeated"),
    (np.array([[0, 0, 0], [1e-3, 0, 0], [0, np.nan, 0], [0, 1e-3, 0]]), np.eye(4)[:, :3], "p_mi[2]"),
    (np.eye(4)[:, :3], np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, np.inf]]), "p_r[3]"),
])
def test_degenerate_landmarks_raise(p_mi, p_r, words):
    for fn in (fit_rigid, calibrate):
        with pytest.raises(CalibrationError, match=words.replace("[", r"\[").replace("]", r"\]")):
            fn(p_mi, p_r)


# ---------------------------------------------------------------- reconstruction model

@settings(deadline=None, max_examples=100)
@given(models, seeds)
def test_project_and_reconstruct_are_exact_inverses(model, seed):
    p_mi = workspace_points(seed, 20) + [0.0, 0.0, 0.1]
    uv_l, uv_r = model.project(p_mi)
    assert np.allclose(model.reconstruct(uv_l, uv_r), p_mi, rtol=0, atol=1e-12)
    assert np.allclose(model.reconstruct_disparity(uv_l, uv_l[:, 0] - uv_r[:, 0]), p_mi, rtol=0, atol=1e-12)
    rng = np.random.default_rng(seed)
    left = rng.uniform(0, [960, 540], (20, 2))
    right = np.column_stack([left[:, 0] - rng.uniform(-50, 50, 20), left[:, 1]])
    back_l, back_r = model.project(model.reconstruct(left, right))
    assert np.allclose(back_l, left, rtol=0, atol=1e-8) and np.allclose(back_r, right, rtol=0, atol=1e-8)
    single_l, single_r = model.project(p_mi[0])
    assert single_l.shape == (2,) and np.allclose(model.reconstruct(single_l, single_r), p_mi[0], atol=1e-12)


def test_towards_cameras_and_u_of_paper_preset():
    m = load_camera_model("paper")
    assert (m.cx_px, m.cy_px, m.name) == (480.0, 270.0, "paper")
    assert m.prx_m_per_px == pytest.approx(0.03947e-3) and m.pry_m_per_px == pytest.approx(0.03894e-3)
    assert m.h_px_per_m == pytest.approx(-6400.0) and m.de_m == 0.0
    assert np.allclose(m.U, np.diag([0.03947e-3, 0.03894e-3, -1 / 6400.0]))
    assert np.allclose(m.towards_cameras_mi, [0.0, 0.0, -1.0])
    # 6.4 px more disparity = 1 mm closer to the cameras
    p0, p1 = m.reconstruct_disparity(np.array([[500.0, 300.0]] * 2), np.array([0.0, 6.4]))
    assert np.allclose(p1 - p0, [0.0, 0.0, -1e-3])


@pytest.mark.parametrize("field, value, words", [
    ("prx_m_per_px", -1e-5, "prx_m_per_px"), ("pry_m_per_px", 0.0, "pry_m_per_px"),
    ("h_px_per_m", 0.0, "h_px_per_m"), ("cx_px", np.nan, "cx_px"), ("shear_xd_m_per_px", np.inf, "shear_xd"),
])
def test_invalid_model_parameters_raise(field, value, words):
    with pytest.raises(CameraModelError, match=words):
        replace(load_camera_model("paper"), **{field: value})


@settings(deadline=None, max_examples=50)
@given(centred_models, rigid_transforms, seeds)
def test_estimate_recovers_model_and_pose_exactly(model, T, seed):
    p_mi = workspace_points(seed, 10)
    uv_l, uv_r = model.project(p_mi)
    fit = estimate_camera_model(uv_l, uv_r, apply(T, p_mi))
    for key in ("prx_m_per_px", "pry_m_per_px", "h_px_per_m", "shear_xy_m_per_px",
                "shear_xd_m_per_px", "shear_yd_m_per_px"):
        assert getattr(fit.model, key) == pytest.approx(getattr(model, key), rel=1e-7, abs=1e-12), key
    assert (fit.model.cx_px, fit.model.cy_px, fit.model.de_m) == (480.0, 270.0, 0.0)
    assert np.allclose(fit.T_mi_to_r, T, atol=1e-9)
    assert fit.rms_m < 1e-10 and fit.n_points == 10 and fit.residuals_m.shape == (10,)


@settings(deadline=None, max_examples=50)
@given(models, rigid_transforms, seeds)
def test_estimate_absorbs_any_principal_point_and_offset(model, T, seed):
    p_mi = workspace_points(seed, 8)
    uv_l, uv_r = model.project(p_mi)
    fit = estimate_camera_model(uv_l, uv_r, apply(T, p_mi))
    assert np.all(model_error(fit.model, fit.T_mi_to_r, uv_l, uv_r, apply(T, p_mi)) < 1e-10)
    assert np.isclose(np.linalg.det(fit.T_mi_to_r[:3, :3]), 1.0)


@settings(deadline=None, max_examples=30)
@given(st.floats(0.01, 0.1), st.floats(0.01, 0.1), h_px_per_mm, rigid_transforms, seeds)
def test_paper_form_recovers_a_diagonal_model(prx, pry, h, T, seed):
    model = make_model(prx, pry, h)
    p_mi = workspace_points(seed, 8)
    uv_l, uv_r = model.project(p_mi)
    fit = estimate_camera_model(uv_l, uv_r, apply(T, p_mi), paper_form=True)
    assert np.allclose(fit.model.U, model.U, rtol=1e-7, atol=0) and np.allclose(fit.T_mi_to_r, T, atol=1e-9)


@settings(deadline=None, max_examples=20)
@given(centred_models, rigid_transforms, seeds)
def test_paper_form_is_no_worse_than_dropping_the_shears(model, T, seed):
    p_mi = workspace_points(seed, 12)
    uv_l, uv_r = model.project(p_mi)
    p_r = apply(T, p_mi)
    full = estimate_camera_model(uv_l, uv_r, p_r)
    paper = estimate_camera_model(uv_l, uv_r, p_r, paper_form=True)
    truncated = replace(full.model, shear_xy_m_per_px=0.0, shear_xd_m_per_px=0.0, shear_yd_m_per_px=0.0)
    truncated_rms = np.sqrt(np.mean(model_error(truncated, full.T_mi_to_r, uv_l, uv_r, p_r) ** 2))
    assert paper.rms_m <= truncated_rms * (1 + 1e-9) + 1e-15


def verged_rig(p_rig: np.ndarray, half_angle_rad: float, m_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of points in a rig frame (x right, y down, z away from the cameras) seen by two
    orthographic cameras turned by +-half_angle about y, the left one on the -x side looking
    towards +x, their image x along the baseline: disparity grows towards the cameras."""
    uv = []
    for sign in (1.0, -1.0):
        R = Rotation.from_rotvec([0.0, sign * half_angle_rad, 0.0]).as_matrix()  # camera axes in the rig
        p_cam = p_rig @ R
        uv.append(np.array([480.0, 270.0]) + p_cam[:, :2] / m_per_px)
    return uv[0], uv[1]


@settings(deadline=None, max_examples=30)
@given(rigid_transforms, seeds, st.floats(0.05, 0.3))
def test_verged_rig_gives_right_handed_mi_with_negative_h(T, seed, half_angle):
    p_rig = workspace_points(seed, 12)
    uv_l, uv_r = verged_rig(p_rig, half_angle, 4e-5)
    d_near = verged_rig(np.array([[0, 0, -1e-3]]), half_angle, 4e-5)
    assert d_near[0][0, 0] - d_near[1][0, 0] > 0  # the rig's disparity grows towards the cameras
    fit = estimate_camera_model(uv_l, uv_r, apply(T, p_rig))
    assert fit.model.h_px_per_m < 0 and fit.rms_m < 1e-10
    assert np.allclose(fit.T_mi_to_r, T, atol=1e-9)  # {Mi} is the rig frame itself
    # x shears against depth by tan(half-angle): dx/dz at fixed xl, yl = sxd * h
    assert fit.model.shear_xd_m_per_px * fit.model.h_px_per_m == pytest.approx(np.tan(half_angle), rel=1e-6)
    towards_r = fit.T_mi_to_r[:3, :3] @ fit.model.towards_cameras_mi
    left_axis_rig = Rotation.from_rotvec([0.0, half_angle, 0.0]).apply([0.0, 0.0, 1.0])
    assert np.allclose(towards_r, T[:3, :3] @ -left_axis_rig, atol=1e-9)
    paper = estimate_camera_model(uv_l, uv_r, apply(T, p_rig), paper_form=True)
    assert paper.rms_m > 1e-5  # the paper's form cannot absorb the shear (0.36 mm at 0.13 rad)


@settings(deadline=None, max_examples=30)
@given(models, seeds)
def test_save_and_load_round_trip(tmp_path_factory, model, seed):
    path = tmp_path_factory.mktemp("cam") / "m.toml"
    named = replace(model, name='rig "A"\\ \n')
    save_camera_model(named, path, {"method": "estimate_camera_model", "rms_mm": np.float64(0.01),
                                    "n points": 12, "note": "µm \x7f"})
    loaded = load_camera_model(path)
    assert loaded.name == named.name
    for key in ("cx_px", "cy_px", "prx_m_per_px", "pry_m_per_px", "h_px_per_m", "de_m",
                "shear_xy_m_per_px", "shear_xd_m_per_px", "shear_yd_m_per_px"):
        assert getattr(loaded, key) == pytest.approx(getattr(named, key), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("body, words", [
    (None, "file not found"),
    ("[camera_model\n", "not valid TOML"),
    ("cx_px = 480.0\ncy_px = 270.0\nprx_mm_per_px = 0.04\npry_mm_per_px = 0.04\nh_px_per_mm = -6.4\n"
     "fov_deg = 3.0\n", "camera_model.fov_deg is not a known field"),
    ("cx_px = 480.0\ncy_px = 270.0\nprx_mm_per_px = -0.04\npry_mm_per_px = 0.04\nh_px_per_mm = -6.4\n",
     "camera_model.prx_mm_per_px=-0.04 is outside"),
    ("cx_px = 480.0\ncy_px = 270.0\nprx_mm_per_px = 0.04\npry_mm_per_px = 0.04\nh_px_per_mm = 0\n",
     "camera_model.h_px_per_mm=0 must be non-zero"),
    ("cx_px = 480.0\nprx_mm_per_px = 0.04\npry_mm_per_px = 0.04\nh_px_per_mm = 6.4\n",
     "camera_model.cy_px is required"),
    ("cx_px = 480.0\ncy_px = 270.0\nprx_mm_per_px = 0.04\npry_mm_per_px = 0.04\nh_px_per_mm = -6.4\n"
     "[provenance]\nrun = [1, 2]\n", "provenance.run"),
])
def test_bad_camera_model_files_name_the_problem(tmp_path, body, words):
    path = tmp_path / "bad.toml"
    if body is not None:
        path.write_text(body if body.startswith("[") else "[camera_model]\n" + body)
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        load_camera_model(path)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="paper"):
        load_camera_model("no_such_rig")


@pytest.mark.parametrize("change, words", [
    (lambda l, r, p: (l[:5], r[:5], p[:5]), "at least 6"),
    (lambda l, r, p: (l, r[:-1], p), "shapes"),
    (lambda l, r, p: (l, r, p * [1.0, 1.0, 0.0]), "p_r does not span 3D"),
    (lambda l, r, p: (l, np.where(np.arange(len(r))[:, None] == 4, np.nan, r), p), r"uv_right\[4\]"),
])
def test_estimate_refuses_degenerate_input(change, words):
    model = load_camera_model("paper")
    p_mi = workspace_points(5, 10)
    uv_l, uv_r = model.project(p_mi)
    with pytest.raises(CameraModelError, match=words):
        estimate_camera_model(*change(uv_l, uv_r, p_mi))
