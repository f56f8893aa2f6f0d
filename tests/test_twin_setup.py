"""The set-up shortcuts (issue 12) change no number: the skull texture equals its plain
whole-grid form, Fourier fields are the same on any sub-grid, cached pixel rays equal fresh ones,
frames rendered when first read equal frames rendered when grabbed, and a remembered
matrix-to-DQ conversion equals a fresh one."""
import numpy as np
import pytest

from scenes.spec import load_scene
from twin.cameras import CameraModel, cameras_from_spec
from render_reference import _to_srgb_u8
from twin.render import BONE_RGB, DURA_RGB, SKIN_RGB, SUTURE_RGB, SkullTexture
from twin.skull import CellBox, FourierField, Skull, SkullParams
from twin.world import TwinWorld


def _plain_shade(tex: SkullTexture, bone_albedo, skin_albedo, heights: CellBox, shade: CellBox, outer, thick):
    """The texture's shading as one whole-array expression per step (its form before the
    speed work): heights, gradients, translucency, bone/skin mix, Lambert, sRGB."""
    skin = tex._skin[heights.rows, heights.cols]
    height = outer + tex.SKIN_THICKNESS_M * skin
    gy, gx = np.gradient(height, tex.grid.cell)
    crop = (slice(shade.r0 - heights.r0, shade.r1 - heights.r0), slice(shade.c0 - heights.c0, shade.c1 - heights.c0))
    gy, gx, thick, skin = gy[crop], gx[crop], thick[crop], skin[crop]
    translucency = (0.85 * np.exp(-np.maximum(thick, 0.0) / 0.12e-3))[..., None]
    bone = bone_albedo[shade.rows, shade.cols] * (1 - translucency) + DURA_RGB * translucency
    albedo = bone * (1 - skin[..., None]) + skin_albedo[shade.rows, shade.cols] * skin[..., None]
    n = np.stack([-gx, -gy, np.ones_like(gx)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    L = np.asarray(tex.lighting.direction_s, float)
    shade_f = tex.lighting.ambient + tex.lighting.intensity * np.clip(n @ (L / np.linalg.norm(L)), 0.0, None)
    return height, _to_srgb_u8(albedo * shade_f[..., None])[..., ::-1]


@pytest.mark.parametrize("seed", [0, 7])
def test_skull_texture_equals_its_plain_whole_grid_form(monkeypatch, seed):
    """Bit for bit: shading in row blocks, the bone's albedo and thickness only where skin does
    not cover it, the skin's albedo taken as is under skin, the milling region shaded once."""
    calls = []
    update = SkullTexture._update

    def recorded(self, heights, shade, outer, thick, skip=None):
        calls.append((heights, shade, np.array(outer), np.array(thick)))
        update(self, heights, shade, outer, thick, skip)

    monkeypatch.setattr(SkullTexture, "_update", recorded)
    world = TwinWorld(load_scene(None, {"skull.seed": seed}), seed=seed)
    try:
        tex, sk = world.renderer.texture, world.skull
        xs, ys = tex.grid.xs, tex.grid.ys
        t = sk.texture(xs, ys).astype(np.float32)
        sut = np.exp(-(sk.suture_distance(xs, ys) / sk.params.suture_width_m) ** 2) * 0.8
        bone_albedo = (BONE_RGB * (1.0 + 0.07 * t[..., None]) * (1 - sut[..., None])
                       + SUTURE_RGB * sut[..., None]).astype(np.float32)
        skin_albedo = (SKIN_RGB * (1.0 + 0.15 * t[..., None])).astype(np.float32)
        height, bgr = np.empty_like(tex.height), np.empty_like(tex.bgr_u8)
        whole = CellBox(0, tex.grid.ny, 0, tex.grid.nx)
        first = True
        for heights, shade, outer, thick in calls:
            if first:        # the plain form computes the thickness everywhere
                outer, thick = sk.initial_outer_grid(xs, ys), sk.initial_thickness_grid(xs, ys)
                assert (heights, shade) == (whole, whole)
            h, c = _plain_shade(tex, bone_albedo, skin_albedo, heights, shade, outer, thick)
            height[heights.rows, heights.cols] = h
            bgr[shade.rows, shade.cols] = c
            first = False
        assert len(calls) == 2          # the whole grid, then the milling region from the skull's grid
        np.testing.assert_array_equal(tex.height, height)
        np.testing.assert_array_equal(tex.bgr_u8, bgr)
    finally:
        world.close()


def test_fourier_field_is_the_same_on_any_sub_grid():
    f = FourierField(np.random.default_rng(3), 12, 0.2e-3, 2e-3)
    xs, ys = np.linspace(-4e-3, 4e-3, 301), np.linspace(-6e-3, 2e-3, 213)
    whole = f.grid(xs, ys)
    np.testing.assert_array_equal(f.grid(xs[17:250], ys[5:37]), whole[5:37, 17:250])
    np.testing.assert_array_equal(f.grid(xs[3:4], ys), whole[:, 3:4])
    expected = np.zeros_like(whole)
    for kx, ky, phi, amp in zip(f.kx, f.ky, f.phi, f.amp):        # the textbook sum, wave by wave
        a, b = kx * xs + phi, ky * ys
        expected += amp * (np.outer(np.cos(b), np.sin(a)) + np.outer(np.sin(b), np.cos(a)))
    np.testing.assert_array_equal(whole, expected)


def test_skull_fields_unchanged_by_blocked_sums():
    sk = Skull(SkullParams(seed=11))
    xs, ys = sk.grid.xs[::7], sk.grid.ys[::5]
    sub = sk.initial_outer_grid(xs, ys)
    np.testing.assert_array_equal(sub, sk.initial_outer_grid(sk.grid.xs, sk.grid.ys)[::5, ::7])


def test_pixel_rays_are_shared_read_only_and_exact(scene):
    left, _ = cameras_from_spec(scene.mscs)
    again, _ = cameras_from_spec(scene.mscs)
    rays = left.pixel_rays()
    assert again.pixel_rays() is rays
    assert not rays.flags.writeable
    uv = np.array([[0, 0], [left.width_px - 1, 17], [400, left.height_px - 1]])
    fresh = left.rays_for_pixels(uv).astype(np.float32)
    np.testing.assert_array_equal(rays[uv[:, 1], uv[:, 0]], fresh)
    other = CameraModel(**{**left.__dict__, "fx_px": left.fx_px * 1.01})
    assert other.pixel_rays() is not rays


def _step_to_new_frame(world: TwinWorld):
    k = None if world.latest_frame() is None else world.latest_frame().index
    while world.latest_frame() is None or world.latest_frame().index == k:
        world.step()
    return world.latest_frame()


def _counted(world: TwinWorld) -> list[int]:
    count = [0]
    render = world.renderer.render

    def counting(*a, **k):
        count[0] += 1
        return render(*a, **k)

    world.renderer.render = counting
    return count


def test_frames_render_when_read_with_the_images_of_their_exposure(scene):
    eager, lazy = TwinWorld(scene, seed=3), TwinWorld(scene, seed=3)
    try:
        renders = _counted(lazy)
        for _ in range(3):
            a, b = _step_to_new_frame(eager), _step_to_new_frame(lazy)
            a.images                                         # eager reads at once
        assert renders[0] == 0                               # frames only waited for are never rendered
        a, b = _step_to_new_frame(eager), _step_to_new_frame(lazy)
        left, right = a.images.left.copy(), a.images.right.copy()
        for _ in range(3):
            lazy.step()                                      # drill off: the frame's time has passed
        np.testing.assert_array_equal(b.images.left, left)
        np.testing.assert_array_equal(b.images.right, right)
        assert renders[0] == 1
    finally:
        eager.close()
        lazy.close()


def test_held_frames_render_before_the_drill_can_mill(scene):
    world = TwinWorld(scene, seed=4)
    try:
        renders = _counted(world)
        frame = _step_to_new_frame(world)
        world.drill_on = True
        world.step()                                         # renders the held frame first
        assert renders[0] == 1
        world.skull.mark_changed()                           # later changes do not reach it
        frame.images
        assert renders[0] == 1
        world.drill_on = False
        frame = _step_to_new_frame(world)
        world.skull.mark_changed()                           # changed outside a step, frame not read
        with pytest.raises(RuntimeError, match="skull changed"):
            frame.images
    finally:
        world.close()


def test_matrix_to_dq_remembers_only_exact_repeats():
    """The remembered last conversion gives a new, equal DQ; any other matrix is converted."""
    from dqrobotics import vec8
    from scipy.spatial.transform import Rotation

    from scenes.frames import make_transform, matrix_to_dq

    T = make_transform(Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix(), [0.01, 0.02, -0.03])
    a, b = matrix_to_dq(T), matrix_to_dq(T.copy())
    assert a is not b
    np.testing.assert_array_equal(vec8(a), vec8(b))
    a.q = np.zeros(8)                                    # a caller's DQ is its own
    np.testing.assert_array_equal(vec8(matrix_to_dq(T)), vec8(b))
    U = T.copy()
    U[0, 3] = np.nextafter(U[0, 3], 1.0)                  # one ulp away: converted afresh
    assert vec8(matrix_to_dq(U))[5] != vec8(b)[5]
    np.testing.assert_array_equal(vec8(matrix_to_dq(T)), vec8(b))
