"""3D surface fitting (paper section III-B): dense stereo cloud, trajectory centre, eq. 5-7.

On the twin: the skull rendered without drill and noise, a camera model estimated from
ground-truth projections of a 3D grid around the MSCS target, heights and normals compared
with the skull's analytic outer surface. On synthetic clouds from analytic quadric surfaces:
the fit is exact.
"""
import time

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from controllers.dense_stereo import PointCloud, StereoParams, dense_point_cloud, estimate_vertical_offset_px
from controllers.reconstruction import OrthoStereoModel, estimate_camera_model
from controllers.surface_fit import SurfaceFitError, fit_initial_trajectory, trajectory_centre_px
from scenes.frames import apply, invert, make_transform
from twin.render import LABEL_BONE

RADIUS_M, N_POINTS, BURR_M, SAFETY_M = 2e-3, 32, 0.5e-3, 0.5e-3


# ----- twin fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(world):
    return world.renderer.render(None, None)          # skull only, no noise


@pytest.fixture(scope="module")
def calib(world, scene):
    """Camera model and T_mi_to_r from ground-truth projections of a grid around the target."""
    g = np.linspace(-8e-3, 8e-3, 5)
    gz = np.linspace(-4e-3, 4e-3, 5)
    p_r = np.array([[x, y, z] for x in g for y in g for z in gz]) + scene.mscs.target_r
    left, right = world.cameras
    return estimate_camera_model(left.project(p_r), right.project(p_r), p_r)


@pytest.fixture(scope="module")
def centre_px(world):
    left = world.cameras[0]
    b = left.project(apply(world.T_s_to_r, world.skull.bregma_s))[0]
    lam = left.project(apply(world.T_s_to_r, world.skull.lambda_s))[0]
    return trajectory_centre_px(b, lam)


@pytest.fixture(scope="module")
def bone_roi(images):
    v, u = np.nonzero(images.labels_left == LABEL_BONE)
    return int(u.min()), int(v.min()), int(u.max()) + 1, int(v.max()) + 1


@pytest.fixture(scope="module")
def bone_cloud(images, calib, bone_roi):
    return dense_point_cloud(images.left, images.right, calib.model, bone_roi)


def _trajectory_roi(c):
    """Left-image region covering the circle (2 mm ~ 50 px) and its fitting neighbourhoods."""
    half = 90
    return int(c[0]) - half, int(c[1]) - half, int(c[0]) + half, int(c[1]) + half


def _height_errors_m(world, calib, cloud, labels_left, erode_px=0):
    """Signed height errors (m) in {S} of the cloud points seen on bone (optionally away from its edge)."""
    bone = (labels_left == LABEL_BONE).astype(np.uint8)
    if erode_px:
        bone = cv2.erode(bone, np.ones((2 * erode_px + 1,) * 2, np.uint8))
    pix = np.round(cloud.pixels_left).astype(int)
    on_bone = bone[pix[:, 1], pix[:, 0]].astype(bool)
    p_s = apply(invert(world.T_s_to_r), apply(calib.T_mi_to_r, cloud.points_mi[on_bone]))
    inside = world.skull.grid.contains(p_s[:, 0], p_s[:, 1])
    p_s = p_s[inside]
    return p_s[:, 2] - world.skull.outer_height(p_s[:, 0], p_s[:, 1])


# ----- twin tests ------------------------------------------------------------------------------

def test_model_fit_is_good_enough(calib):
    # The orthographic model on a verged perspective rig: ~70 um RMS over +-8 x +-8 x +-4 mm.
    print(f"\ncamera model fit RMS {calib.rms_m * 1e6:.1f} um over {calib.n_points} points")
    assert calib.rms_m < 0.2e-3
    assert calib.model.towards_cameras_mi[2] < -0.9


def test_rows_almost_match_after_one_vertical_shift(world, images, bone_roi):
    """How true yr = yl is: ground truth yl - yr over the exposed bone, and the estimated shift."""
    left, right = world.cameras
    rend = world.renderer.cameras[0]
    mask = images.labels_left == LABEL_BONE
    p_r = apply(world.T_s_to_r, rend.skull_intersection_s()[mask][::25])
    dv = left.project(p_r)[:, 1] - right.project(p_r)[:, 1]
    gl, gr = (cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) for im in (images.left, images.right))
    est = estimate_vertical_offset_px(gl, gr, bone_roi)
    print(f"\nyl - yr on bone (ground truth): mean {dv.mean():.3f} px, range [{dv.min():.3f}, "
          f"{dv.max():.3f}] px; estimated {est.offset_px:.3f} px from {est.n_features} features "
          f"(spread {est.spread_px:.3f} px)")
    assert abs(est.offset_px - dv.mean()) < 0.1
    assert est.n_features >= 50
    assert dv.max() - dv.min() < 1.0      # a single shift is enough over the bone


def test_dense_cloud_matches_the_skull_surface(world, calib, images, bone_cloud):
    err = _height_errors_m(world, calib, bone_cloud, images.labels_left)
    inner = _height_errors_m(world, calib, bone_cloud, images.labels_left, erode_px=10)
    n_bone = int((images.labels_left == LABEL_BONE).sum())
    med, p95 = np.median(np.abs(err)) * 1e6, np.percentile(np.abs(err), 95) * 1e6
    print(f"\ndense cloud: {len(bone_cloud)} points in the bone ROI, {err.size} on bone "
          f"({err.size / n_bone:.1%} of bone pixels); |height error| median {med:.1f} um, p95 "
          f"{p95:.1f} um, mean signed {err.mean() * 1e6:.1f} um; 10 px inside the bone edge: median "
          f"{np.median(np.abs(inner)) * 1e6:.1f} um, p95 {np.percentile(np.abs(inner), 95) * 1e6:.1f} um")
    # ~0.15 mm of depth per px of disparity; SGBM (8-path) reaches ~0.1 px median on this
    # texture and the orthographic model adds ~35 um of bias over the calibration volume.
    assert med < 50.0
    assert err.size > 0.9 * n_bone
    assert np.all(np.isfinite(bone_cloud.points_mi))
    assert bone_cloud.points_mi.shape == (len(bone_cloud), 3)
    assert bone_cloud.pixels_left.shape == (len(bone_cloud), 2)
    assert bone_cloud.disparity_px.shape == (len(bone_cloud),)


def test_matching_without_the_vertical_shift_is_much_worse(world, calib, images, centre_px):
    roi = _trajectory_roi(centre_px)
    shifted = dense_point_cloud(images.left, images.right, calib.model, roi)
    raw = dense_point_cloud(images.left, images.right, calib.model, roi, StereoParams(vertical_offset_px=0.0))
    e_shift = np.median(np.abs(_height_errors_m(world, calib, shifted, images.labels_left)))
    e_raw = np.median(np.abs(_height_errors_m(world, calib, raw, images.labels_left)))
    print(f"\nmedian |height error|: {e_shift * 1e6:.1f} um with the vertical shift "
          f"({shifted.vertical_offset_px:.2f} px), {e_raw * 1e6:.1f} um without")
    assert e_raw > 3 * e_shift


def test_dense_stereo_on_the_window_region_stays_inside_it(calib, images, centre_px):
    """The pipeline reconstructs only the window region (its speed is in benchmarks/perception_speed)."""
    roi = _trajectory_roi(centre_px)
    cloud = dense_point_cloud(images.left, images.right, calib.model, roi)
    full = dense_point_cloud(images.left, images.right, calib.model)
    assert 0 < len(cloud) < len(full)
    u, v = cloud.pixels_left.T
    assert np.all((u >= roi[0]) & (u < roi[2]) & (v >= roi[1]) & (v < roi[3]))


def test_trajectory_on_the_twin(world, calib, images, centre_px):
    cloud = dense_point_cloud(images.left, images.right, calib.model, _trajectory_roi(centre_px))
    t0 = time.perf_counter()
    tr = fit_initial_trajectory(cloud, centre_px, calib.model, calib.T_mi_to_r, radius_m=RADIUS_M,
                                n=N_POINTS, burr_radius_m=BURR_M, offset_m=SAFETY_M)
    t_fit = time.perf_counter() - t0
    # Eq. 5: a circle in the {Mi} x-y plane around the centre, points in order.
    ang = 2 * np.pi * np.arange(N_POINTS) / N_POINTS
    expected_xy = tr.centre_mi[:2] + RADIUS_M * np.column_stack([np.cos(ang), np.sin(ang)])
    np.testing.assert_allclose(tr.points_fit_mi[:, :2], expected_xy, rtol=0, atol=1e-15)
    # Eq. 6, normals unit and towards the cameras.
    np.testing.assert_allclose(np.linalg.norm(tr.normals_mi, axis=1), 1.0, atol=1e-12)
    assert np.all(tr.normals_mi @ calib.model.towards_cameras_mi > 0)
    np.testing.assert_allclose(tr.points_ini_mi - tr.points_fit_mi, (BURR_M + SAFETY_M) * tr.normals_mi,
                               rtol=0, atol=1e-15)
    # Eq. 7.
    np.testing.assert_allclose(tr.points_ini_r, apply(calib.T_mi_to_r, tr.points_ini_mi), atol=1e-15)
    np.testing.assert_allclose(tr.normals_r, tr.normals_mi @ calib.T_mi_to_r[:3, :3].T, atol=1e-15)
    cams = np.array([c.centre_r for c in world.cameras])
    for cam in cams:
        assert np.all(np.sum((cam - tr.points_ini_r) * tr.normals_r, axis=1) > 0)

    # Against the skull, in {S}.
    T_r_to_s = invert(world.T_s_to_r)
    p_s = apply(T_r_to_s, tr.points_fit_r)
    h_err = p_s[:, 2] - world.skull.outer_height(p_s[:, 0], p_s[:, 1])
    n_s = tr.normals_r @ T_r_to_s[:3, :3].T
    n_true = world.skull.outer_normal(p_s[:, 0], p_s[:, 1])
    ang_err = np.degrees(np.arccos(np.clip(np.sum(n_s * n_true, axis=1), -1, 1)))
    c_s = apply(T_r_to_s, apply(calib.T_mi_to_r, tr.centre_mi))
    radius_s = np.linalg.norm(p_s[:, :2] - c_s[:2], axis=1)
    print(f"\ntrajectory: |height error| max {np.abs(h_err).max() * 1e6:.1f} um (mean signed "
          f"{h_err.mean() * 1e6:.1f} um); normal error max {ang_err.max():.2f} deg (mean "
          f"{ang_err.mean():.2f}); centre in {{S}} ({c_s[0] * 1e3:.3f}, {c_s[1] * 1e3:.3f}) mm; "
          f"radius in {{S}} x-y {radius_s.min() * 1e3:.3f}-{radius_s.max() * 1e3:.3f} mm; points per "
          f"fit {tr.n_points_used.min()}-{tr.n_points_used.max()}, residual RMS max "
          f"{tr.residual_rms_m.max() * 1e6:.1f} um; fit {t_fit * 1e3:.0f} ms")
    assert np.abs(h_err).max() < 0.1e-3
    assert ang_err.max() < 5.0
    # The centre pixel is bregma + (lambda - bregma) / 3 in the image: (0, -L/3) in {S}, nearly.
    L = world.skull.params.bregma_lambda_m
    assert np.linalg.norm(c_s[:2] - [0.0, -L / 3]) < 0.1e-3
    assert abs(c_s[2] - world.skull.outer_height(c_s[0], c_s[1])) < 0.1e-3
    assert np.all(tr.n_points_used >= 100)
    assert np.all(tr.residual_rms_m < 50e-6)


def test_trajectory_on_noisy_images(world, calib, centre_px):
    """With the twin's sensor noise: looser, but still within the milling tolerances."""
    noisy = world.renderer.render(None, np.random.default_rng(0))
    cloud = dense_point_cloud(noisy.left, noisy.right, calib.model, _trajectory_roi(centre_px))
    tr = fit_initial_trajectory(cloud, centre_px, calib.model, calib.T_mi_to_r)
    T_r_to_s = invert(world.T_s_to_r)
    p_s = apply(T_r_to_s, tr.points_fit_r)
    h_err = p_s[:, 2] - world.skull.outer_height(p_s[:, 0], p_s[:, 1])
    n_s = tr.normals_r @ T_r_to_s[:3, :3].T
    ang_err = np.degrees(np.arccos(np.clip(np.sum(n_s * world.skull.outer_normal(p_s[:, 0], p_s[:, 1]),
                                                  axis=1), -1, 1)))
    err = _height_errors_m(world, calib, cloud, noisy.labels_left)
    print(f"\nnoisy images: cloud |height error| median {np.median(np.abs(err)) * 1e6:.1f} um, p95 "
          f"{np.percentile(np.abs(err), 95) * 1e6:.1f} um; trajectory |height error| max "
          f"{np.abs(h_err).max() * 1e6:.1f} um, normal error max {ang_err.max():.2f} deg (mean "
          f"{ang_err.mean():.2f})")
    assert np.abs(h_err).max() < 0.2e-3
    assert ang_err.max() < 15.0


def test_centre_px_formula():
    b, lam = np.array([512.0, 272.0]), np.array([407.0, 275.0])
    np.testing.assert_allclose(trajectory_centre_px(b, lam), b + (lam - b) / 3)
    np.testing.assert_allclose(trajectory_centre_px(b, lam, l=0.5), (b + lam) / 2)
    both = trajectory_centre_px(np.stack([b, lam]), np.stack([lam, b]))
    np.testing.assert_allclose(both, [b + (lam - b) / 3, lam + (b - lam) / 3])


def test_stereo_params_are_checked():
    with pytest.raises(ValueError, match="multiple of 16"):
        StereoParams(num_disparities_px=40).validate()
    with pytest.raises(ValueError, match="odd"):
        StereoParams(block_size_px=4).validate()
    with pytest.raises(ValueError, match="mode"):
        StereoParams(mode="fast").validate()


# ----- synthetic clouds ------------------------------------------------------------------------

def _quadric(coef):
    a, b, c, d, e, f = coef

    def z(x, y):
        return a + b * x + c * y + d * x * x + e * x * y + f * y * y

    def grad(x, y):
        return np.stack([b + 2 * d * x + e * y, c + e * x + 2 * f * y], axis=-1)

    return z, grad


def _synthetic_cloud(model, coef, spacing_m, half_m, rng, hole=None):
    z, _ = _quadric(coef)
    g = np.arange(-half_m, half_m + 1e-12, spacing_m)
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    x = x + rng.uniform(-0.3, 0.3, x.shape) * spacing_m
    y = y + rng.uniform(-0.3, 0.3, y.shape) * spacing_m
    if hole is not None:
        keep = np.hypot(x - hole[0], y - hole[1]) > hole[2]
        x, y = x[keep], y[keep]
    p = np.column_stack([x, y, z(x, y)])
    uv_l, uv_r = model.project(p)
    return PointCloud(p, uv_l, uv_l[:, 0] - uv_r[:, 0])


models = st.builds(
    lambda prx, pry, h, sxd, syd, sxy, de: OrthoStereoModel(480.0, 270.0, prx, pry, h, de, sxy, sxd, syd),
    st.floats(35e-6, 45e-6), st.floats(35e-6, 45e-6), st.floats(-7000.0, -5000.0),
    st.floats(-3e-5, 3e-5), st.floats(-3e-6, 3e-6), st.floats(-1e-7, 1e-7), st.floats(-2e-3, 2e-3))
surfaces = st.tuples(st.floats(-1e-3, 1e-3), st.floats(-0.4, 0.4), st.floats(-0.4, 0.4),
                     st.floats(-60.0, 60.0), st.floats(-60.0, 60.0), st.floats(-60.0, 60.0))
rigid = st.tuples(st.lists(st.floats(-np.pi, np.pi), min_size=3, max_size=3),
                  st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3)).map(
    lambda rt: make_transform(cv2.Rodrigues(np.array(rt[0]))[0], np.array(rt[1])))


@settings(max_examples=25, deadline=None)
@given(models, surfaces, rigid, st.floats(1e-3, 3e-3), st.integers(3, 48), st.floats(0.0, 1e-3),
       st.floats(0.0, 1e-3), st.floats(-0.5e-3, 0.5e-3), st.floats(-0.5e-3, 0.5e-3), st.floats(0.4e-3, 1e-3),
       st.integers(0, 2**32 - 1))
def test_fit_is_exact_on_quadric_surfaces(model, coef, T, radius, n, rd, dd, xc, yc, nb, seed):
    rng = np.random.default_rng(seed)
    z, grad = _quadric(coef)
    cloud = _synthetic_cloud(model, coef, 0.1e-3, radius + 0.5e-3 + nb + 0.3e-3, rng)
    centre = np.array([xc, yc, z(xc, yc)])
    centre_px = model.project(centre)[0]
    tr = fit_initial_trajectory(cloud, centre_px, model, T, radius_m=radius, n=n, burr_radius_m=rd,
                                offset_m=dd, neighbourhood_m=nb)
    np.testing.assert_allclose(tr.centre_mi, centre, rtol=0, atol=1e-12)
    ang = 2 * np.pi * np.arange(n) / n
    xy = centre[:2] + radius * np.column_stack([np.cos(ang), np.sin(ang)])
    np.testing.assert_allclose(tr.points_fit_mi[:, :2], xy, rtol=0, atol=1e-12)
    radii = np.linalg.norm(tr.points_fit_mi[:, :2] - centre[:2], axis=1)
    np.testing.assert_allclose(radii, radius, atol=1e-12)
    np.testing.assert_allclose(tr.points_fit_mi[:, 2], z(xy[:, 0], xy[:, 1]), rtol=0, atol=1e-9)
    g = grad(xy[:, 0], xy[:, 1])
    n_true = np.column_stack([-g, np.ones(n)])
    n_true /= np.linalg.norm(n_true, axis=1, keepdims=True)
    n_true *= np.sign(n_true @ model.towards_cameras_mi)[:, None]
    np.testing.assert_allclose(tr.normals_mi, n_true, rtol=0, atol=1e-9)
    assert np.all(tr.normals_mi @ model.towards_cameras_mi > 0)
    np.testing.assert_allclose(tr.points_ini_mi, tr.points_fit_mi + (rd + dd) * tr.normals_mi,
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(tr.points_ini_r, apply(T, tr.points_ini_mi), rtol=0, atol=1e-15)
    np.testing.assert_allclose(tr.normals_r, tr.normals_mi @ T[:3, :3].T, rtol=0, atol=1e-15)
    assert tr.offset_m == rd + dd
    assert np.all(tr.residual_rms_m < 1e-12)
    assert np.all(tr.n_points_used >= 30)


@settings(max_examples=15, deadline=None)
@given(models, surfaces, st.integers(0, 7), st.integers(0, 2**32 - 1))
def test_sparse_or_holed_clouds_raise(model, coef, k, seed):
    rng = np.random.default_rng(seed)
    z, _ = _quadric(coef)
    centre_px = model.project(np.array([0.0, 0.0, z(0.0, 0.0)]))[0]
    args = (model, np.eye(4))
    nb = dict(neighbourhood_m=0.5e-3)
    # Too sparse everywhere: ~3 points per 0.5 mm neighbourhood (the centre fails first).
    sparse = _synthetic_cloud(model, coef, 0.5e-3, 3.5e-3, rng)
    with pytest.raises(SurfaceFitError, match="cloud points"):
        fit_initial_trajectory(sparse, centre_px, *args, centre_search_px=30.0, **nb)
    # A hole at trajectory point k of 8 (neighbours 1.5 mm apart): that point, and only it, fails.
    hole_xy = 2e-3 * np.array([np.cos(2 * np.pi * k / 8), np.sin(2 * np.pi * k / 8)])
    holed = _synthetic_cloud(model, coef, 0.1e-3, 3.5e-3, rng, hole=(*hole_xy, 0.6e-3))
    with pytest.raises(SurfaceFitError) as info:
        fit_initial_trajectory(holed, centre_px, *args, n=8, **nb)
    assert info.value.point_index == k
    assert f"trajectory point {k}" in str(info.value)
    # The cloud ends inside the circle (1.9 mm half-width): points on the axes are extrapolated.
    small = _synthetic_cloud(model, coef, 0.1e-3, 1.9e-3, rng)
    with pytest.raises(SurfaceFitError, match="one side") as info:
        fit_initial_trajectory(small, centre_px, *args, **nb)
    assert info.value.point_index == 0
    # No point near the centre pixel.
    with pytest.raises(SurfaceFitError) as info:
        fit_initial_trajectory(holed, centre_px + 1000.0, *args)
    assert info.value.point_index is None
    assert isinstance(info.value, ValueError)
