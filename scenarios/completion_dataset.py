"""Training samples for the completion network, rendered by the twin with exact labels.

Each sample is one window crop of a left MSCS image (``controllers.perception.
completion_detector``'s crop convention) with the true completion map over the crop, a
validity mask and the truth at the n trajectory points. The variety comes from domain
randomisation:

- scene: skull shape, thickness and texture, rig, lighting and sensor noise
  (``keypoint_dataset.random_scene_overrides``);
- window: centre at bregma + (lambda - bregma) / 3 in {S} plus up to ``centre_jitter_m`` in x
  and y; radius ``radius_default_m`` in ``radius_default_fraction`` of the states, otherwise
  uniform in ``radius_range_m``;
- milled state (``random_completion_profile``): a target completion c*(theta) along the circle,
  one of: untouched; through everywhere; a constant depth in metres (so c varies with the
  bone's thickness, as in real milling); a smooth random profile (low-order Fourier series,
  clipped: untouched, partial and through arcs); steps (arcs of constant level with sharp
  transitions). c* > 1 cuts through over a wider groove bottom; no groove goes below the
  inner surface. ``grooves`` says how the groove is cut:

  - ``"rate_limited"`` (default): as the milling loop cuts it, with the rate-limited bone
    model ``twin.milling.BoneMill.step`` (the scene's ``[milling]`` parameters, drill on at
    the scene's ``controllers.milling.drill_speed_rpm``). c* is taken at the ``n_points``
    sampling points (angles 2 pi i / n); each point's burr-centre target height is the
    untouched surface + burr radius - c* x initial thickness. The burr starts touching the
    surface at every point and circles the window at ``traverse_speed_m_s``, one
    ``mill.step`` per ``mill_period_s``, from a random start angle; before each lap every
    point's commanded height descends by that lap's descent (uniform in
    ``lap_descent_range_m``), never below its target (so never more than one lap's descent
    below the cut floor), and the path between points is the planner's closed constrained
    spline (``controllers.planning.spline``) of the commanded heights, as in the milling
    loop. Once every point is at its target, laps go on until one removes no bone (at most
    ``max_finishing_laps``). The burr moves along {S} z (the loop moves along the fitted
    window axis, within a few degrees of it). The groove floor is the union of the laps'
    rate-limited passes: ridged where the cut lagged, with knot-to-knot transitions where
    the profile steps;
  - ``"carve"`` (the data of the weights trained before issue 13): ``twin.milling.carve_sphere``
    (no rate limit) at points <= ``step_m`` apart along the circle, burr bottom at depth
    c* x initial thickness below the untouched surface, c* evaluated at every point;
- drill: in ``drill_fraction`` of the renders, at a random point of the circle, from touching
  the groove bottom to ``drill_max_height_m`` above it (half of the drill renders within
  50 um of the bottom), in the orientation of the robot's home pose;
- crop: the controller's crop is computed from projections through its own calibration, so
  the crop centre is jittered by ``crop_centre_jitter_px`` (sd) and its radius by
  ``crop_radius_jitter`` (relative sd).

Labels, per left-image pixel: c = clip(1 - thickness / initial thickness, 0, 1) at the skull
point the pixel's ray meets (``CameraRenderer.skull_intersection_s``, behind the drill where
the drill is in front), valid where the pixel shows bone (not skin, not the drill), hidden
where the drill hides bone. All are resampled into the crop like the image is (``crop_window``;
valid: crop pixels whose filtered, bilinear footprint is all valid; hidden: any hidden bone in
the footprint, and not valid). The
truth at the trajectory points is computed in {S} at the circle's points (not through
pixels), with a flag saying whether each point's pixel shows bone (the drill may hide it).

Cost (one core, measured): a scene ~3.6 s (skull, renderer: its texture covers both cameras'
views), a milled state ~0.15 s with ``"carve"`` (carve ~0.1 s, texture refresh), ~0.6 s with
``"rate_limited"`` (every period simulated: 1,300-5,700 ``BoneMill.step`` calls of ~0.16 ms,
0.15-1.0 s a state; 12 states x 3 views: ~10 s a scene against ~3.5 s), a view ~0.08 s
(only the left camera is rendered). Hence several states and views per scene.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from controllers.perception.completion_detector import CropBox, CropConfig, crop_window, window_crop_box
from scenarios.keypoint_dataset import collect_scenes, random_scene_overrides
from scenes.frames import apply, make_transform
from scenes.robot_description import RobotDescription
from scenes.spec import load_scene
from controllers.planning.spline import ClosedConstrainedSpline
from twin.milling import BoneMill, carve_sphere
from twin.render import LABEL_BONE
from twin.skull import Grid, Skull, SkullParams
from twin.world import make_stereo_renderer

PROFILE_KINDS = ("untouched", "through", "uniform_depth", "smooth", "steps")
PROFILE_PROBABILITIES = (0.07, 0.08, 0.2, 0.4, 0.25)
THROUGH_LEVEL = 1.15        # c* of "through": the burr bottom 15 % of the thickness below the inner surface
GROOVE_MODELS = ("rate_limited", "carve")


@dataclass(frozen=True)
class CompletionDataSettings:
    """What to render: ``n_scenes`` randomised scenes x ``states_per_scene`` milled states x
    ``views_per_state`` renders (drill pose, crop jitter) = samples. ``grooves``: how the
    grooves are cut, one of ``GROOVE_MODELS`` (module docstring). Lengths in m, times in s."""

    n_scenes: int
    states_per_scene: int = 12
    views_per_state: int = 3
    seed: int = 0
    crop: CropConfig = field(default_factory=CropConfig)
    n_points: int = 32                     # trajectory points per window (paper: 32)
    radius_default_m: float = 2.0e-3
    radius_default_fraction: float = 0.7
    radius_range_m: tuple[float, float] = (1.5e-3, 4.0e-3)
    centre_jitter_m: float = 0.3e-3
    grooves: str = "rate_limited"
    step_m: float = 20e-6                  # "carve": spacing of the carved spheres along the circle
    traverse_speed_m_s: float = 4e-3       # "rate_limited": burr speed around the circle
    mill_period_s: float = 0.02            # "rate_limited": one BoneMill.step per period
    lap_descent_range_m: tuple[float, float] = (5e-6, 40e-6)   # "rate_limited": per-lap descent, uniform
    max_finishing_laps: int = 5            # "rate_limited": laps at the target until one removes no bone
    drill_fraction: float = 0.85
    drill_max_height_m: float = 1.0e-3
    crop_centre_jitter_px: float = 2.0
    crop_radius_jitter: float = 0.03

    def __post_init__(self):
        for name in ("n_scenes", "states_per_scene", "views_per_state"):
            if getattr(self, name) < 1:
                raise ValueError(f"CompletionDataSettings.{name}={getattr(self, name)} must be >= 1")
        if self.n_points < 3:
            raise ValueError(f"CompletionDataSettings.n_points={self.n_points} must be >= 3")
        lo, hi = self.radius_range_m
        if not 0 < lo <= hi <= 4.5e-3:
            raise ValueError(f"CompletionDataSettings.radius_range_m={self.radius_range_m} must satisfy "
                             f"0 < lo <= hi <= 4.5e-3 m (the window must stay on the exposed skull)")
        if self.grooves not in GROOVE_MODELS:
            raise ValueError(f"CompletionDataSettings.grooves={self.grooves!r} is not one of {GROOVE_MODELS}")
        if not 0 < self.step_m <= 50e-6:
            raise ValueError(f"CompletionDataSettings.step_m={self.step_m} must be in (0, 50e-6] m")
        if not 0 < self.traverse_speed_m_s <= 0.05:
            raise ValueError(f"CompletionDataSettings.traverse_speed_m_s={self.traverse_speed_m_s} must be in "
                             f"(0, 0.05] m/s")
        if not 0 < self.mill_period_s <= 0.1:
            raise ValueError(f"CompletionDataSettings.mill_period_s={self.mill_period_s} must be in (0, 0.1] s")
        lo, hi = self.lap_descent_range_m
        if not 0 < lo <= hi <= 0.2e-3:
            raise ValueError(f"CompletionDataSettings.lap_descent_range_m={self.lap_descent_range_m} must satisfy "
                             f"0 < lo <= hi <= 0.2e-3 m")
        if self.max_finishing_laps < 1:
            raise ValueError(f"CompletionDataSettings.max_finishing_laps={self.max_finishing_laps} must be >= 1")
        if not 0.0 <= self.drill_fraction <= 1.0:
            raise ValueError(f"CompletionDataSettings.drill_fraction={self.drill_fraction} must be in [0, 1]")

    @property
    def samples_per_scene(self) -> int:
        return self.states_per_scene * self.views_per_state

    def to_dict(self) -> dict:
        d = asdict(self)
        d["radius_range_m"] = list(d["radius_range_m"])
        d["lap_descent_range_m"] = list(d["lap_descent_range_m"])
        return d


@dataclass
class CompletionSamples:
    """N labelled crops. ``crops`` (N, S, S, 3) uint8 BGR; ``target`` (N, S, S) float16 completion;
    ``valid`` (N, S, S) bool, pixels showing bone; ``hidden`` (N, S, S) bool, bone hidden by the
    drill (``target`` holds the hidden bone's completion there); ``points_uv`` (N, n, 2) float32
    trajectory points in crop px; ``levels`` (N, n) float32 true completion at the points;
    ``point_visible`` (N, n) bool (the point's pixel shows bone); ``radius_m`` (N,); ``profile``
    (N,) index into ``PROFILE_KINDS``; ``scene_index`` (N,)."""

    crops: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    hidden: np.ndarray
    points_uv: np.ndarray
    levels: np.ndarray
    point_visible: np.ndarray
    radius_m: np.ndarray
    profile: np.ndarray
    scene_index: np.ndarray

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, mask: np.ndarray) -> CompletionSamples:
        return CompletionSamples(**{k: v[mask] for k, v in vars(self).items()})


def random_completion_profile(rng: np.random.Generator, theta_rad: np.ndarray,
                              thickness_m: np.ndarray) -> tuple[np.ndarray, int]:
    """Target completion c*(theta) >= 0 (values above 1 cut through) at angles ``theta_rad`` of
    points with initial bone thickness ``thickness_m``; returns it and the profile kind's index."""
    kind = int(rng.choice(len(PROFILE_KINDS), p=PROFILE_PROBABILITIES))
    name = PROFILE_KINDS[kind]
    n = len(theta_rad)
    if name == "untouched":
        c = np.zeros(n)
    elif name == "through":
        c = np.full(n, THROUGH_LEVEL)
    elif name == "uniform_depth":
        c = rng.uniform(0.0, 0.6e-3) / thickness_m
    elif name == "smooth":
        c = np.full(n, rng.uniform(-0.3, 1.3))
        for k in range(1, int(rng.integers(1, 4)) + 1):
            c += rng.uniform(0.1, 0.8) / k * np.cos(k * theta_rad + rng.uniform(0, 2 * np.pi))
    else:                                   # steps: arcs of constant level, sharp transitions
        m = int(rng.integers(2, 6))
        edges = np.sort(rng.uniform(0, 2 * np.pi, m))
        levels = np.where(rng.random(m) < 0.35, THROUGH_LEVEL,
                          np.where(rng.random(m) < 0.4, 0.0, rng.uniform(0.0, 1.0, m)))
        arc = np.searchsorted(edges, np.mod(theta_rad, 2 * np.pi)) % m
        c = levels[arc]
    return np.clip(c, 0.0, THROUGH_LEVEL), kind


def _sample_field(field_: np.ndarray, grid: Grid, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of a skull-grid field at points inside the grid."""
    return ndimage.map_coordinates(field_, [(y - grid.y0) / grid.cell, (x - grid.x0) / grid.cell],
                                   order=1, mode="nearest")


def _completion_at(skull: Skull, t0_grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True completion 1 - thickness / initial thickness at points (x, y) inside the skull grid."""
    t0 = _sample_field(t0_grid, skull.grid, x, y)
    return np.clip(1.0 - skull.thickness(x, y) / np.maximum(t0, 1e-9), 0.0, 1.0)


@dataclass
class WindowView:
    """One render of a milled window: the left image (H, W, 3) BGR uint8, its labels and the
    labels without the drill (what each pixel's ray meets on the skull); the window's centre (2,)
    and trajectory points (n, 2) projected into it (px; points on the untouched surface, as the
    controller's pre-measurement has them); the true completion ``levels`` (n,) at the points
    and ``point_visible`` (n,) whether each point's pixel shows bone."""

    image: np.ndarray
    labels: np.ndarray
    skull_labels: np.ndarray
    centre_px: np.ndarray
    points_px: np.ndarray
    levels: np.ndarray
    point_visible: np.ndarray


class WindowScene:
    """One randomised scene (``SeedSequence([seed, index])``): skull, left camera, and the
    untouched skull to reset to between milled states. With ``grooves = "rate_limited"``, also
    the scene's bone model (``BoneMill``, built on the untouched skull, reused across states:
    a reset restores the bone it measures completion from) and a random stream of its own for
    the milling (start angles, lap descents), so the other draws are those of ``"carve"``."""

    def __init__(self, settings: CompletionDataSettings, index: int):
        self.settings = settings
        self.rng = np.random.default_rng(np.random.SeedSequence([settings.seed, index, 0xC0]))
        self.scene = load_scene(None, random_scene_overrides(self.rng))
        self.skull = Skull(SkullParams(**self.scene.skull.params))
        self.renderer = make_stereo_renderer(self.scene, self.skull, int(self.rng.integers(2**31)))
        self.left = self.renderer.cameras[0]
        self.camera = self.renderer.camera_models[0]
        self.outer0 = self.skull.outer_z.copy()
        self._untouched_version = self.skull.version
        self.t0_grid = self.skull.outer_z - self.skull.inner_z
        self.R_home = RobotDescription(self.scene.robot.description_path).fk(self.scene.robot.home_q)[:3, :3]
        self.burr_radius_m = self.scene.drill.burr_radius_m
        if settings.grooves == "rate_limited":
            self.mill = BoneMill(self.skull, self.scene.milling)
            self.mill_rng = np.random.default_rng(np.random.SeedSequence([settings.seed, index, 0xC1]))
            self.drill_speed_rpm = self.scene.controllers.milling.drill_speed_rpm

    def reset(self) -> None:
        """Back to the untouched skull (only the cells changed since the last reset)."""
        box = self.skull.changed_since(self._untouched_version)
        if box is not None:
            self.skull.outer_z[box.rows, box.cols] = self.outer0[box.rows, box.cols]
            self.skull.mark_changed(box.rows, box.cols)
        self._untouched_version = self.skull.version

    def random_window(self) -> tuple[np.ndarray, float]:
        """A window centre (x, y) in {S} (m) and radius (m), drawn as the settings say."""
        s, rng, sk = self.settings, self.rng, self.skull
        centre = np.array([0.0, -sk.params.bregma_lambda_m / 3.0]) + rng.uniform(-1, 1, 2) * s.centre_jitter_m
        radius = (s.radius_default_m if rng.random() < s.radius_default_fraction
                  else rng.uniform(*s.radius_range_m))
        return centre, radius

    def carve(self, centre: np.ndarray, radius: float, level: float | None = None) -> int:
        """Mill a groove along the circle with the settings' groove model: target completion
        ``level`` everywhere (0 untouched, ``THROUGH_LEVEL`` through) or, with None, a random
        profile. Returns the profile kind's index into ``PROFILE_KINDS`` (-1 for a given level)."""
        sk = self.skull
        rate_limited = self.settings.grooves == "rate_limited"
        n = (self.settings.n_points if rate_limited
             else int(np.ceil(2 * np.pi * radius / self.settings.step_m)))
        theta = 2 * np.pi * np.arange(n) / n
        x, y = centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta)
        t0 = _sample_field(self.t0_grid, sk.grid, x, y)
        if level is None:
            c_star, kind = random_completion_profile(self.rng, theta, t0)
        else:
            c_star, kind = np.full(n, float(level)), -1
        if rate_limited:
            self.mill_rate_limited(centre, radius, c_star)
            return kind
        rb = self.burr_radius_m
        z_bottom = _sample_field(self.outer0, sk.grid, x, y) - c_star * t0
        for i in np.nonzero(c_star > 0)[0]:
            carve_sphere(sk, np.array([x[i], y[i], z_bottom[i] + rb]), rb)
        return kind

    def mill_rate_limited(self, centre: np.ndarray, radius: float, c_star: np.ndarray) -> int:
        """Cut the groove of target completion ``c_star`` (one value per sampling point i at
        angle 2 pi i / n about ``centre``, m, {S}; ``radius`` m) lap by lap with ``BoneMill.step``
        (module docstring). Returns the number of mill steps (control periods) it took: 0 when
        every target is 0 (the burr never comes down; elsewhere, circling at the surface it may
        graze a few um off bone of c* = 0)."""
        if not np.any(np.asarray(c_star) > 0):
            return 0
        s, sk, rb = self.settings, self.skull, self.burr_radius_m
        n = len(c_star)
        theta = 2 * np.pi * np.arange(n) / n
        x, y = centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta)
        touching = _sample_field(self.outer0, sk.grid, x, y) + rb
        target = touching - np.asarray(c_star, float) * _sample_field(self.t0_grid, sk.grid, x, y)
        steps = int(np.ceil(2 * np.pi * radius / (s.traverse_speed_m_s * s.mill_period_s)))
        dt_s = 2 * np.pi * radius / steps / s.traverse_speed_m_s
        angle = self.mill_rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(steps + 1) / steps
        path = np.stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle),
                         np.zeros(steps + 1)], axis=1)
        height = touching
        t_s, done, finishing, end = 0.0, 0, 0, None
        while finishing < s.max_finishing_laps:
            if np.all(height <= target):
                finishing += 1
            else:
                height = np.maximum(target, height - self.mill_rng.uniform(*s.lap_descent_range_m))
            path[:, 2] = ClosedConstrainedSpline(theta, height)(angle)
            if end is not None:
                path[0] = end               # descend from where the last lap ended
            removed_m3 = 0.0
            for k in range(steps):
                t_s += dt_s
                removed_m3 += self.mill.step(t_s, path[k], path[k + 1], True, self.drill_speed_rpm,
                                             dt_s).removed_volume_m3
            done += steps
            end = path[-1].copy()
            if finishing and removed_m3 == 0.0:
                break
        return done

    def drill_pose(self, centre: np.ndarray, radius: float) -> np.ndarray:
        """Tool pose T_tool_to_r: burr centre above a random circle point (touching to
        ``drill_max_height_m`` above the current bottom; half of the poses within 50 um),
        home orientation."""
        rng, rb = self.rng, self.burr_radius_m
        a = rng.uniform(0, 2 * np.pi)
        x, y = centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a)
        h = rng.uniform(0.0, 50e-6) if rng.random() < 0.5 else rng.uniform(0.0, self.settings.drill_max_height_m)
        p_s = np.array([x, y, float(self.skull.outer_height(x, y)) + rb + h])
        return make_transform(self.R_home, apply(self.scene.T_s_to_r, p_s))

    def render(self, centre: np.ndarray, radius: float, T_tool_to_r: np.ndarray | None) -> WindowView:
        """The left image of the current state with the drill at ``T_tool_to_r`` (None: no drill)."""
        s, sk = self.settings, self.skull
        theta = 2 * np.pi * np.arange(s.n_points) / s.n_points
        px, py = centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta)
        pts_s = np.stack([px, py, _sample_field(self.outer0, sk.grid, px, py)], axis=1)
        c_s = np.array([*centre, _sample_field(self.outer0, sk.grid, centre[:1], centre[1:])[0]])
        pts_px = self.camera.project(apply(self.scene.T_s_to_r, pts_s))
        centre_px = self.camera.project(apply(self.scene.T_s_to_r, c_s[None]))[0]
        img, labels = self.left.render(T_tool_to_r, self.renderer.drill, self.renderer.lighting, self.rng)
        skull_labels = (labels if T_tool_to_r is None
                        else self.left.render(None, self.renderer.drill, self.renderer.lighting, None)[1])
        ui, vi = np.round(pts_px).astype(int).T
        inside = (ui >= 0) & (ui < labels.shape[1]) & (vi >= 0) & (vi < labels.shape[0])
        visible = np.zeros(s.n_points, bool)
        visible[inside] = labels[vi[inside], ui[inside]] == LABEL_BONE
        return WindowView(img, labels, skull_labels, centre_px, pts_px, _completion_at(sk, self.t0_grid, px, py),
                          visible)

    def pixel_labels(self, view: WindowView, box: CropBox) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Completion of the bone each pixel under ``box`` looks at (the current state; under the
        drill: the bone its ray meets behind it), and which pixels show that bone (``valid``) or
        have it hidden by the drill (``hidden``), resampled into the crop: (S, S) float32, bool, bool."""
        h, w = view.labels.shape
        x0, y0, x1, y1 = box.bounds_px()
        u0, v0 = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
        u1, v1 = min(int(np.ceil(x1)) + 2, w), min(int(np.ceil(y1)) + 2, h)
        c_img = np.zeros((h, w), np.float32)
        valid_img = np.zeros((h, w), np.float32)
        hidden_img = np.zeros((h, w), np.float32)
        if u1 > u0 and v1 > v0:
            pts = self.left.skull_intersection_s()[v0:v1, u0:u1]
            xs, ys = pts[..., 0].ravel(), pts[..., 1].ravel()
            bone = self.skull.grid.contains(xs, ys) & (view.skull_labels[v0:v1, u0:u1].ravel() == LABEL_BONE)
            shown = view.labels[v0:v1, u0:u1].ravel() == LABEL_BONE
            c = np.zeros(xs.size, np.float32)
            c[bone] = _completion_at(self.skull, self.t0_grid, xs[bone], ys[bone])
            shape = (v1 - v0, u1 - u0)
            c_img[v0:v1, u0:u1] = c.reshape(shape)
            valid_img[v0:v1, u0:u1] = (bone & shown).reshape(shape)
            hidden_img[v0:v1, u0:u1] = (bone & ~shown).reshape(shape)
        return crop_window(c_img, box), crop_window(valid_img, box) > 0.999, crop_window(hidden_img, box) > 0.001

    def samples(self) -> dict[str, list]:
        """``states_per_scene`` random milled states x ``views_per_state`` labelled crops."""
        s, rng = self.settings, self.rng
        out: dict[str, list] = {k: [] for k in ("crops", "target", "valid", "hidden", "points_uv", "levels",
                                               "point_visible", "radius_m", "profile")}
        for _ in range(s.states_per_scene):
            self.reset()
            centre, radius = self.random_window()
            kind = self.carve(centre, radius)
            for _ in range(s.views_per_state):
                T = self.drill_pose(centre, radius) if rng.random() < s.drill_fraction else None
                view = self.render(centre, radius, T)
                jc = view.centre_px + rng.normal(0.0, s.crop_centre_jitter_px, 2)
                box = window_crop_box(jc, jc + (view.points_px - view.centre_px)
                                      * (1 + rng.normal(0.0, s.crop_radius_jitter)), s.crop)
                target, valid, hidden = self.pixel_labels(view, box)
                out["crops"].append(crop_window(view.image, box))
                out["target"].append(target.astype(np.float16))
                out["valid"].append(valid)
                out["hidden"].append(hidden & ~valid)
                out["points_uv"].append(box.to_crop(view.points_px).astype(np.float32))
                out["levels"].append(view.levels.astype(np.float32))
                out["point_visible"].append(view.point_visible)
                out["radius_m"].append(radius)
                out["profile"].append(kind)
        return out


def _render_scene(args: tuple[CompletionDataSettings, int]) -> dict[str, list]:
    cv2.setNumThreads(1)
    settings, index = args
    return WindowScene(settings, index).samples()


def generate_completion_samples(settings: CompletionDataSettings, workers: int = 1, first_scene: int = 0,
                                progress=None) -> CompletionSamples:
    """Render ``n_scenes * samples_per_scene`` labelled crops from scenes ``first_scene`` ...
    ``first_scene + n_scenes - 1``. Deterministic for a seed whatever ``workers`` is (each scene
    has its own ``SeedSequence``). ``progress``: optional callable invoked with 1 after each scene."""
    jobs = [(settings, first_scene + i) for i in range(settings.n_scenes)]
    parts, scene_index = collect_scenes(_render_scene, jobs, workers, progress)
    arrays = {k: np.stack(v) if k not in ("radius_m", "profile") else np.asarray(v) for k, v in parts.items()}
    return CompletionSamples(**arrays, scene_index=np.asarray(scene_index))
