"""Projection and rendering agree; images look like the scene spec says."""
import numpy as np
from hypothesis import assume, given, settings, strategies as st

from scenes.frames import apply
from twin.render import LABEL_BONE, LABEL_BURR, SkullTexture


@settings(max_examples=30, deadline=None)
@given(st.floats(0.05, 0.95), st.floats(0.05, 0.95))
def test_rendered_surface_point_projects_back_to_its_pixel(world, fu, fv):
    """Ray-cast surface point of pixel (u, v) -> cv2.projectPoints -> the same (u, v)."""
    for cam, cr in zip(world.cameras, world.renderer.cameras):
        u, v = int(fu * (cam.width_px - 1)), int(fv * (cam.height_px - 1))
        p_s = cr.skull_intersection_s()[v, u]
        p_r = apply(world.T_s_to_r, p_s)
        uv = cam.project(p_r)[0]
        assert np.linalg.norm(uv - [u, v]) < 0.02


@settings(max_examples=30, deadline=None)
@given(st.floats(-3e-3, 3e-3), st.floats(-5e-3, 2e-3))
def test_skull_point_lands_on_rendered_surface(world, x, y):
    """A point of the outer surface projects to a pixel whose ray hits the surface there."""
    sk = world.skull
    # Only exposed bone: outside the incision the visible surface is skin, 0.6 mm higher.
    ax, ay = SkullTexture.EXPOSURE_HALF_AXES_M
    assume((x / ax) ** 2 + ((y - sk.apex_y_m) / ay) ** 2 < 0.9)
    p_s = np.array([x, y, float(sk.outer_height(x, y))])
    p_r = apply(world.T_s_to_r, p_s)
    for cam, cr in zip(world.cameras, world.renderer.cameras):
        uv = cam.project(p_r)[0]
        assert cam.in_image(uv)[0]
        u, v = (int(round(c)) for c in uv)
        hit = cr.skull_intersection_s()[v, u]
        # one pixel is ~40 um at the skull
        assert np.linalg.norm(hit[:2] - p_s[:2]) < 60e-6
        assert abs(hit[2] - p_s[2]) < 20e-6


def test_pixel_scale_is_about_40_um(world):
    cam = world.cameras[0]
    target = world.scene.mscs.target_r
    a, b = cam.project(np.array([target, target + [0.0, 1e-3, 0.0]]))
    mm_per_px = 1.0 / np.linalg.norm(b - a)
    assert 0.035 < mm_per_px < 0.045


def test_images_have_spec_shape_and_show_bone(world, robot, scene):
    T = robot.fk(scene.robot.home_q)
    imgs = world.renderer.render(T, np.random.default_rng(0))
    for img, lab in ((imgs.left, imgs.labels_left), (imgs.right, imgs.labels_right)):
        assert img.shape == (540, 960, 3) and img.dtype == np.uint8
        # exposed bone: the incision ellipse (pi * 4.2 * 5.6 mm^2) over the ~38 x 21.6 mm field
        expected = np.pi * 4.2 * 5.6 / (960 * 540 * 0.04 ** 2)
        assert abs((lab == LABEL_BONE).mean() - expected) < 0.3 * expected
        assert (lab == LABEL_BURR).sum() > 100


def test_noise_is_seeded(world, robot, scene):
    T = robot.fk(scene.robot.home_q)
    a = world.renderer.render(T, np.random.default_rng(5)).left
    b = world.renderer.render(T, np.random.default_rng(5)).left
    c = world.renderer.render(T, np.random.default_rng(6)).left
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bone_hides_the_burr_below_the_surface(world, robot, scene):
    """Occlusion: a burr sunk 2 mm into the skull is not drawn."""
    T = robot.fk(scene.robot.home_q).copy()
    target = scene.mscs.target_r
    T[:3, 3] = target - [0.0, 0.0, 2e-3]
    imgs = world.renderer.render(T, None, world.drill_geometry.burr_only())
    assert (imgs.labels_left == LABEL_BURR).sum() == 0
    T[:3, 3] = target + [0.0, 0.0, 2e-3]
    imgs = world.renderer.render(T, None, world.drill_geometry.burr_only())
    assert (imgs.labels_left == LABEL_BURR).sum() > 100


def test_skull_change_refreshes_the_image(scene):
    from twin.world import TwinWorld

    w = TwinWorld(scene, seed=0)
    try:
        before = w.renderer.render(None, None).left.copy()
        w.skull.outer_z -= 0.2e-3          # lower the whole milling region by 0.2 mm
        w.skull.mark_changed()
        after = w.renderer.render(None, None).left
        assert np.abs(after.astype(int) - before.astype(int)).max() > 10
    finally:
        w.close()


def test_deferred_right_image_is_the_image_of_its_exposure(scene, robot):
    """``defer_right``: the right image and labels, read after the skull changed, equal the
    eager render of the same instant (same generator, bit for bit), and the left image too."""
    from twin.milling import carve_sphere
    from twin.world import TwinWorld

    w = TwinWorld(scene, seed=0)
    try:
        T = robot.fk(scene.robot.home_q).copy()
        T[:3, 3] = scene.mscs.target_r + [0.0, 0.0, 0.3e-3]
        eager = w.renderer.render(T, np.random.default_rng(3))
        right, labels = eager.right.copy(), eager.labels_right.copy()
        lazy = w.renderer.render(T, np.random.default_rng(3), defer_right=True)
        assert np.array_equal(lazy.left, eager.left)
        sk = w.skull
        assert carve_sphere(sk, np.array([0.0, sk.apex_y_m, float(sk.outer_height(0.0, sk.apex_y_m))]), 1e-3) > 0
        w.renderer.render(T, np.random.default_rng(4))          # the cameras move on
        assert np.array_equal(lazy.right, right) and np.array_equal(lazy.labels_right, labels)
    finally:
        w.close()


def test_deferred_right_images_share_the_layer_until_the_skull_changes(scene, robot):
    """Deferred right images refer to the camera's skull layer until the camera changes it: one
    read at once and two held over later changes of the skull each equal the eager render of
    their own exposure, bit for bit."""
    from twin.milling import carve_sphere
    from twin.world import TwinWorld

    w = TwinWorld(scene, seed=0)
    try:
        T = robot.fk(scene.robot.home_q).copy()
        T[:3, 3] = scene.mscs.target_r + [0.0, 0.0, 0.3e-3]
        sk = w.skull
        held, expected = [], []
        for k in range(3):
            eager = w.renderer.render(T, np.random.default_rng(k))
            expected.append((eager.right.copy(), eager.labels_right.copy()))
            held.append(w.renderer.render(T, np.random.default_rng(k), defer_right=True))
            if k == 0:
                assert np.array_equal(held[0].right, expected[0][0])        # read before any change
            centre = np.array([0.4e-3 * k, sk.apex_y_m, float(sk.outer_height(0.4e-3 * k, sk.apex_y_m))])
            assert carve_sphere(sk, centre, 0.5e-3) > 0
        w.renderer.render(T, np.random.default_rng(9))                       # the cameras move on
        for lazy, (right, labels) in zip(held, expected):
            assert np.array_equal(lazy.right, right) and np.array_equal(lazy.labels_right, labels)
        assert not np.array_equal(expected[0][0], expected[2][0])
    finally:
        w.close()


def test_stereo_frame_renders_a_deferred_right_image_once():
    from hw_bridge.interface import StereoFrame

    calls = []
    img = np.zeros((2, 3, 3), np.uint8)
    frame = StereoFrame(0.5, 7, img, lambda: calls.append(1) or img + 1)
    assert not calls
    assert np.array_equal(frame.right, img + 1) and frame.right is frame.right and calls == [1]


def test_compiled_drill_and_noise_equal_the_numpy_reference(world, robot, scene):
    """The compiled drill (ray casting, shading, depth of field) and sensor noise give the very
    images of their NumPy forms (tests/render_reference.py): burr above, on and in the bone,
    at several places and heights, with and without noise."""
    import render_reference

    T = robot.fk(scene.robot.home_q).copy()
    cam = world.renderer.cameras[0]
    for k in range(8):
        a = 2 * np.pi * k / 8
        T[:3, 3] = scene.mscs.target_r + [2e-3 * np.cos(a), 2e-3 * np.sin(a), 0.2e-3 - 0.3e-3 * (k % 3)]
        for rng_seed in (None, k):
            args = (T, world.drill_geometry, world.renderer.lighting)
            fast = cam.render(*args, None if rng_seed is None else np.random.default_rng(rng_seed))
            ref = render_reference.render(cam, *args, None if rng_seed is None else np.random.default_rng(rng_seed))
            assert np.array_equal(fast[0], ref[0]) and np.array_equal(fast[1], ref[1])
            assert (fast[1] == LABEL_BURR).any() or k % 3 == 2


def test_compiled_texture_shading_equals_the_numpy_reference(scene):
    """The skull texture's compiled normals and colour give the very heights and colours of the
    NumPy form, for the whole render grid and after incremental refreshes of milled regions."""
    import copy

    from render_reference import ReferenceSkullTexture
    from twin.milling import carve_sphere
    from twin.render import SkullTexture, StereoRenderer
    from twin.world import TwinWorld

    w = TwinWorld(scene, seed=0)
    try:
        extent = StereoRenderer._footprint(w.skull, w.T_s_to_r, w.cameras)
        skulls = [copy.deepcopy(w.skull) for _ in range(2)]
        fast, ref = SkullTexture(skulls[0], extent, w.renderer.lighting), ReferenceSkullTexture(
            skulls[1], extent, w.renderer.lighting)
        for k in range(4):
            assert np.array_equal(fast.height, ref.height) and np.array_equal(fast.bgr_u8, ref.bgr_u8)
            for sk in skulls:
                x, y = 1e-3 * np.cos(k), sk.apex_y_m + 1e-3 * np.sin(k)
                carve_sphere(sk, np.array([x, y, float(sk.outer_height(x, y)) + 0.2e-3 * (k - 2)]), 0.6e-3)
            fast.refresh()
            ref.refresh()
    finally:
        w.close()
