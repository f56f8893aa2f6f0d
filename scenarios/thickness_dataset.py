"""Training samples for the remaining-thickness classifier (issue 15), rendered by the twin.

Each sample is one camera's ``CROP_PX`` x ``CROP_PX`` crop (``controllers.perception.
thickness_classes.crop_points``) centred on a groove sampling point, labelled with the true
remaining bone thickness under the groove's cross-section there. Left and right crops are
separate samples (the in-loop sensor classifies each camera on its own, then fuses).

- Scenes, windows and grooves are ``scenarios.completion_dataset.WindowScene``'s: randomised
  skull, rig, lighting and sensor noise; grooves cut by the rate-limited bone model
  (``BoneMill.step`` every 20 ms, the burr circling at 4 mm/s, 5-40 um descent a lap, the
  planner's closed constrained spline between points): the grooves the controller makes.
- Milled states (``random_thickness_profile``): the classes near through are where the
  decision is made, so most states aim the points' remaining thickness there:
  ``thin`` (45 %): t*(theta) = U(-25, 70) um + a smooth random wave (first and second
  harmonic, amplitude up to 25 um / k); ``mid`` (15 %): U(60, 250) um + a wave up to 50 um;
  otherwise (40 %) the completion dataset's profiles (untouched, through, uniform depth,
  smooth, steps). A negative t* cuts through (c* = 1 - t*/t0 > 1, at most ``THROUGH_LEVEL``).
  The label is what the bone model really left, not t*.
- Label (``thickness_m``): the thinnest bone over ``cross_section_probes`` points across the
  groove (radial offsets within +-``cross_section_half_width_m`` of the circle), i.e. the
  bone a crack would have to break there (0 = cut through at this point). The twin's bridge
  criterion looks at the same cross-section.
- Crop centre: the point on the untouched outer surface (the controller knows the fitted
  surface) projected through the true camera, plus Gaussian jitter ``crop_jitter_px`` (sd, px)
  for the controller's calibration and fit errors (~0.1 mm = 2.6 px).
- Drill: in ``drill_fraction`` of the views at a random point of the circle (as
  ``WindowScene.drill_pose``); a crop whose centre pixel does not show bone (the drill hides
  the point) is not a sample: the sensor marks such points hidden from their silhouette and
  does not classify them. Crops partly covered by the burr are kept.
- View-level arrays (for the regression baseline, the window-crop completion CNN): per view,
  the left image's window crop (``completion_detector.window_crop_box``/``crop_window``, the
  completion CNN's convention), the points in crop px, their true thickness, initial
  thickness and whether the left camera sees them.

Cost (one core, measured in ``generate_thickness_samples``' docstring of the run): a scene
~3.6 s, a rate-limited state ~0.6 s, a view (both cameras) ~0.2 s.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from controllers.perception.completion_detector import CropConfig, crop_window, window_crop_box
from controllers.perception.thickness_classes import CROP_PX, crop_points
from scenarios.completion_dataset import (THROUGH_LEVEL, CompletionDataSettings, WindowScene, _sample_field,
                                          random_completion_profile)
from scenarios.keypoint_dataset import collect_scenes
from scenes.frames import apply
from twin.render import LABEL_BONE

THICKNESS_PROFILE_KINDS = ("thin", "mid", "completion")
THICKNESS_PROFILE_PROBABILITIES = (0.45, 0.15, 0.40)
MAX_SCENES = 2000           # bound on what a user can ask for (~10 s and ~2,000 crops a scene)


@dataclass(frozen=True)
class ThicknessDataSettings:
    """``n_scenes`` scenes x ``states_per_scene`` milled states x ``views_per_state`` renders of
    both cameras; every visible point of every render is a sample. Lengths in m."""

    n_scenes: int
    states_per_scene: int = 8
    views_per_state: int = 3
    seed: int = 0
    n_points: int = 32
    crop_jitter_px: float = 2.5
    cross_section_half_width_m: float = 0.15e-3
    cross_section_probes: int = 7
    drill_fraction: float = 0.85
    lap_descent_range_m: tuple[float, float] = (5e-6, 40e-6)
    view_crop: CropConfig = CropConfig()

    def __post_init__(self):
        if not 1 <= self.n_scenes <= MAX_SCENES:
            raise ValueError(f"ThicknessDataSettings.n_scenes={self.n_scenes} must be in [1, {MAX_SCENES}]")
        for name in ("states_per_scene", "views_per_state"):
            if not 1 <= getattr(self, name) <= 100:
                raise ValueError(f"ThicknessDataSettings.{name}={getattr(self, name)} must be in [1, 100]")
        if not 3 <= self.n_points <= 256:
            raise ValueError(f"ThicknessDataSettings.n_points={self.n_points} must be in [3, 256]")
        if not 0.0 <= self.crop_jitter_px <= 10.0:
            raise ValueError(f"ThicknessDataSettings.crop_jitter_px={self.crop_jitter_px} must be in [0, 10] px")
        if not 0.0 <= self.cross_section_half_width_m <= 0.5e-3:
            raise ValueError(f"ThicknessDataSettings.cross_section_half_width_m={self.cross_section_half_width_m} "
                             f"must be in [0, 0.5e-3] m")
        if not 1 <= self.cross_section_probes <= 51:
            raise ValueError(f"ThicknessDataSettings.cross_section_probes={self.cross_section_probes} must be in "
                             f"[1, 51]")
        if not 0.0 <= self.drill_fraction <= 1.0:
            raise ValueError(f"ThicknessDataSettings.drill_fraction={self.drill_fraction} must be in [0, 1]")

    def completion_settings(self) -> CompletionDataSettings:
        """The ``WindowScene`` settings: same seed (so scene i is the completion dataset's scene
        i of that seed), rate-limited grooves."""
        return CompletionDataSettings(n_scenes=self.n_scenes, states_per_scene=self.states_per_scene,
                                      views_per_state=self.views_per_state, seed=self.seed, n_points=self.n_points,
                                      grooves="rate_limited", lap_descent_range_m=self.lap_descent_range_m,
                                      drill_fraction=self.drill_fraction, crop=self.view_crop)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lap_descent_range_m"] = list(d["lap_descent_range_m"])
        return d


@dataclass
class ThicknessSamples:
    """N point crops and V left-camera views.

    Point crops: ``crops`` (N, 32, 32, 3) uint8 BGR; ``thickness_m`` (N,) float32 true remaining
    thickness (m, 0 = through); ``initial_thickness_m`` (N,) float32; ``camera`` (N,) int8 (0
    left, 1 right); ``scene_index`` (N,) int32; ``view_id`` (N,) int32 (the render the crop is
    from, unique in the data set); ``point_index`` (N,) int16; ``profile`` (N,) int8 (index into
    ``THICKNESS_PROFILE_KINDS``).

    Views (left camera, the completion CNN's window crop): ``view_crops`` (V, S, S, 3) uint8;
    ``view_points_uv`` (V, n, 2) float32 crop px; ``view_thickness_m``,
    ``view_initial_thickness_m`` (V, n) float32; ``view_visible`` (V, n) bool; ``view_ids`` (V,)."""

    crops: np.ndarray
    thickness_m: np.ndarray
    initial_thickness_m: np.ndarray
    camera: np.ndarray
    scene_index: np.ndarray
    view_id: np.ndarray
    point_index: np.ndarray
    profile: np.ndarray
    view_crops: np.ndarray
    view_points_uv: np.ndarray
    view_thickness_m: np.ndarray
    view_initial_thickness_m: np.ndarray
    view_visible: np.ndarray
    view_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.crops)

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (.npz, uncompressed: crops do not compress much and load faster)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f.name: getattr(self, f.name) for f in fields(self)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> ThicknessSamples:
        """Read a file written by ``save``; a missing file or array is a ValueError naming it."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"thickness data: no file {path} (write one with `micromill train thickness`)")
        with np.load(path) as z:
            missing = [f.name for f in fields(cls) if f.name not in z.files]
            if missing:
                raise ValueError(f"thickness data {path}: arrays missing: {', '.join(missing)}")
            return cls(**{f.name: z[f.name] for f in fields(cls)})


def random_thickness_profile(rng: np.random.Generator, theta_rad: np.ndarray,
                             t0_m: np.ndarray) -> tuple[np.ndarray, int]:
    """Target completion c* (n,) in [0, THROUGH_LEVEL] at angles ``theta_rad`` of points with
    initial thickness ``t0_m`` (m), and the kind's index in ``THICKNESS_PROFILE_KINDS``."""
    kind = int(rng.choice(len(THICKNESS_PROFILE_KINDS), p=THICKNESS_PROFILE_PROBABILITIES))
    name = THICKNESS_PROFILE_KINDS[kind]
    if name == "completion":
        c, _ = random_completion_profile(rng, theta_rad, t0_m)
        return c, kind
    base, wave = ((rng.uniform(-25e-6, 70e-6), 25e-6) if name == "thin" else (rng.uniform(60e-6, 250e-6), 50e-6))
    t_star = np.full(len(theta_rad), base)
    for k in (1, 2):
        t_star += rng.uniform(0.0, wave) / k * np.cos(k * theta_rad + rng.uniform(0, 2 * np.pi))
    return np.clip(1.0 - t_star / np.maximum(t0_m, 1e-9), 0.0, THROUGH_LEVEL), kind


class ThicknessScene(WindowScene):
    """A ``WindowScene`` (rate-limited grooves) that renders both cameras and cuts point crops."""

    def __init__(self, settings: ThicknessDataSettings, index: int):
        super().__init__(settings.completion_settings(), index)
        self.tsettings = settings

    def point_truth(self, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampling points (n, 3) on the untouched surface in {S}, the thinnest bone across the
        groove at each (n,) and the initial thickness there (n,), m."""
        s, sk = self.tsettings, self.skull
        theta = 2 * np.pi * np.arange(s.n_points) / s.n_points
        off = np.linspace(-s.cross_section_half_width_m, s.cross_section_half_width_m, s.cross_section_probes)
        rr = radius + off[None, :]
        px = centre[0] + rr * np.cos(theta)[:, None]
        py = centre[1] + rr * np.sin(theta)[:, None]
        t_left = np.maximum(sk.thickness(px.ravel(), py.ravel()).reshape(px.shape), 0.0).min(axis=1)
        x, y = centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta)
        pts = np.stack([x, y, _sample_field(self.outer0, sk.grid, x, y)], axis=1)
        return pts, t_left, _sample_field(self.t0_grid, sk.grid, x, y)

    def carve_thickness(self, centre: np.ndarray, radius: float) -> int:
        """Mill a random ``random_thickness_profile`` groove with the rate-limited model."""
        n = self.tsettings.n_points
        theta = 2 * np.pi * np.arange(n) / n
        x, y = centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta)
        c_star, kind = random_thickness_profile(self.rng, theta, _sample_field(self.t0_grid, self.skull.grid, x, y))
        self.mill_rate_limited(centre, radius, c_star)
        return kind

    def samples(self) -> dict[str, list]:
        s, rng = self.tsettings, self.rng
        out: dict[str, list] = {k: [] for k in ("crops", "thickness_m", "initial_thickness_m", "camera", "view",
                                               "point_index", "profile", "view_crops", "view_points_uv",
                                               "view_thickness_m", "view_initial_thickness_m", "view_visible",
                                               "view_local")}
        n_views = 0
        for _ in range(s.states_per_scene):
            self.reset()
            centre, radius = self.random_window()
            kind = self.carve_thickness(centre, radius)
            pts_s, t_left, t0 = self.point_truth(centre, radius)
            pts_r = apply(self.scene.T_s_to_r, pts_s)
            c_r = apply(self.scene.T_s_to_r, np.array([[*centre, _sample_field(self.outer0, self.skull.grid,
                                                                               centre[:1], centre[1:])[0]]]))
            for _ in range(s.views_per_state):
                T = self.drill_pose(centre, radius) if rng.random() < s.drill_fraction else None
                view = n_views
                n_views += 1
                for cam_index, (cam_r, model) in enumerate(zip(self.renderer.cameras, self.renderer.camera_models)):
                    img, labels = cam_r.render(T, self.renderer.drill, self.renderer.lighting, rng)
                    uv = model.project(pts_r)
                    ui, vi = np.round(uv).astype(int).T
                    inside = (ui >= 0) & (ui < labels.shape[1]) & (vi >= 0) & (vi < labels.shape[0])
                    visible = np.zeros(s.n_points, bool)
                    visible[inside] = labels[vi[inside], ui[inside]] == LABEL_BONE
                    idx = np.flatnonzero(visible)
                    jittered = uv[idx] + rng.normal(0.0, s.crop_jitter_px, (len(idx), 2))
                    out["crops"].extend(crop_points(img, jittered))
                    out["thickness_m"].extend(t_left[idx])
                    out["initial_thickness_m"].extend(t0[idx])
                    out["camera"].extend([cam_index] * len(idx))
                    out["view"].extend([view] * len(idx))
                    out["point_index"].extend(idx)
                    out["profile"].extend([kind] * len(idx))
                    if cam_index == 0:
                        centre_px = model.project(c_r)[0]
                        box = window_crop_box(centre_px, uv, s.view_crop)
                        out["view_crops"].append(crop_window(img, box))
                        out["view_points_uv"].append(box.to_crop(uv).astype(np.float32))
                        out["view_thickness_m"].append(t_left.astype(np.float32))
                        out["view_initial_thickness_m"].append(t0.astype(np.float32))
                        out["view_visible"].append(visible)
                        out["view_local"].append(view)
        return out


def _render_scene(args: tuple[ThicknessDataSettings, int]) -> dict[str, list]:
    """Scene ``index``'s samples, with view ids unique in the data set (scene x views per scene + view)."""
    cv2.setNumThreads(1)
    settings, index = args
    part = ThicknessScene(settings, index).samples()
    base = index * settings.states_per_scene * settings.views_per_state
    part["view_id"] = [base + v for v in part.pop("view")]
    part["view_ids"] = [base + v for v in part.pop("view_local")]
    return part


def generate_thickness_samples(settings: ThicknessDataSettings, workers: int = 1, first_scene: int = 0,
                               progress=None) -> ThicknessSamples:
    """Render scenes ``first_scene`` ... ``first_scene + n_scenes - 1`` (scene i seeded by
    ``SeedSequence([seed, i])``, so deterministic whatever ``workers`` is). ``progress``:
    optional callable invoked with 1 after each scene."""
    jobs = [(settings, first_scene + i) for i in range(settings.n_scenes)]
    acc, scene_index = collect_scenes(_render_scene, jobs, workers, progress)
    crop_shape = (0, CROP_PX, CROP_PX, 3)
    vc = settings.view_crop.input_px
    n = settings.n_points

    def arr(key, dtype, empty_shape=(0,)):
        v = acc.get(key, [])
        return np.asarray(v, dtype=dtype) if len(v) else np.zeros(empty_shape, dtype)

    return ThicknessSamples(
        crops=np.stack(acc["crops"]).astype(np.uint8) if acc.get("crops") else np.zeros(crop_shape, np.uint8),
        thickness_m=arr("thickness_m", np.float32), initial_thickness_m=arr("initial_thickness_m", np.float32),
        camera=arr("camera", np.int8), scene_index=np.asarray(scene_index, np.int32),
        view_id=arr("view_id", np.int32), point_index=arr("point_index", np.int16), profile=arr("profile", np.int8),
        view_crops=np.stack(acc["view_crops"]).astype(np.uint8) if acc.get("view_crops")
        else np.zeros((0, vc, vc, 3), np.uint8),
        view_points_uv=arr("view_points_uv", np.float32, (0, n, 2)),
        view_thickness_m=arr("view_thickness_m", np.float32, (0, n)),
        view_initial_thickness_m=arr("view_initial_thickness_m", np.float32, (0, n)),
        view_visible=arr("view_visible", bool, (0, n)), view_ids=arr("view_ids", np.int32))
