"""Training images for the keypoint networks, rendered by the twin with ground-truth labels.

The paper trained on manually annotated frames of real videos with blur, noise, colour,
geometric and resolution augmentation. Here the labels are exact (the projections of the
true 3-D points through each camera) and the variety comes from domain randomisation of
the *world* (this module) plus image augmentation at training time
(``controllers.perception.training``):

- skull shape and texture: seed, unevenness, thickness, dome radii, bregma-lambda distance,
  suture width and waviness, pose on the holder;
- rig: working distance, vergence, baseline azimuth, target, focal lengths, principal points,
  mount errors (so the networks do not learn one rig);
- lighting direction, intensity and ambient; sensor read and shot noise;
- drill pose (``drill_tip``: free poses in the reconstruction space and poses touching the
  bone; ``cranial``: mostly no drill, sometimes a drill partly occluding the skull).

A keypoint is *visible* when it projects inside the image and can be seen there: for the
drill tip, at least ``MIN_VISIBLE_BURR_FRACTION`` of the burr's projected disc shows the burr
(the burr centre itself is often hidden, e.g. below the bone surface while milling, yet an
annotator would still mark the tip); for bregma and lambda, the pixel shows bone (not the
drill). Invisible keypoints are kept as negatives: the network must output low confidence.

Targets: ``drill_tip`` = the burr centre (the tool frame origin, the point every setpoint
commands); ``cranial`` = (bregma, lambda).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from scenes.frames import apply, make_transform
from scenes.robot_description import RobotDescription
from scenes.spec import SceneSpec, load_scene
from twin.render import LABEL_BONE, LABEL_BURR
from twin.skull import Skull, SkullParams
from twin.world import make_stereo_renderer

TARGETS = {"drill_tip": ("drill_tip",), "cranial": ("bregma", "lambda")}
MIN_VISIBLE_BURR_FRACTION = 0.3


@dataclass(frozen=True)
class KeypointDataSettings:
    """What to render. ``views_per_scene`` drill poses (or views) per randomised scene, two
    images (left, right) each."""

    target: str
    n_scenes: int
    views_per_scene: int
    seed: int = 0
    contact_fraction: float = 0.25     # drill_tip: poses touching the bone
    drill_fraction: float = 0.3        # cranial: views with a drill in the picture

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target={self.target!r} is not one of {sorted(TARGETS)}")
        if self.n_scenes < 1 or self.views_per_scene < 1:
            raise ValueError(f"n_scenes={self.n_scenes} and views_per_scene={self.views_per_scene} must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KeypointSamples:
    """``images`` (N, H, W, 3) BGR uint8; ``keypoints_px`` (N, K, 2) ground-truth (x, y);
    ``visible`` (N, K) bool; ``scene_index`` (N,) which randomised scene each image came from."""

    images: np.ndarray
    keypoints_px: np.ndarray
    visible: np.ndarray
    scene_index: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)


def random_scene_overrides(rng: np.random.Generator) -> dict:
    """Scene overrides (dotted keys, file units) for one randomised skull, rig and lighting."""
    base = load_scene(None)
    target_mm = base.mscs.target_r * 1e3 + rng.uniform(-1.0, 1.0, 3)
    tmin = rng.uniform(0.2, 0.32)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0])
    o = {
        "skull.seed": int(rng.integers(0, 1_000_000)),
        "skull.unevenness_amplitude_mm": rng.uniform(0.0, 0.15),
        "skull.thickness_min_mm": tmin, "skull.thickness_max_mm": rng.uniform(max(tmin, 0.42), 0.6),
        "skull.dome_radius_ml_mm": rng.uniform(5.5, 9.0), "skull.dome_radius_ap_mm": rng.uniform(11.0, 17.0),
        "skull.bregma_lambda_mm": rng.uniform(3.8, 4.6),
        "skull.suture_width_mm": rng.uniform(0.025, 0.06), "skull.suture_waviness_mm": rng.uniform(0.02, 0.1),
        "skull.offset_mm": [rng.uniform(-1.0, 1.0), rng.uniform(-1.5, 1.5), rng.uniform(6.5, 7.5)],
        "skull.yaw_deg": rng.uniform(-8.0, 8.0), "skull.roll_deg": rng.uniform(-4.0, 4.0),
        "skull.pitch_deg": rng.uniform(-4.0, 4.0),
        "mscs.target_mm": target_mm.tolist(),
        "mscs.working_distance_mm": rng.uniform(480.0, 520.0),
        "mscs.vergence_half_angle_deg": rng.uniform(6.0, 9.0),
        "mscs.baseline_azimuth_deg": rng.uniform(85.0, 95.0),
        "lighting.direction_s": (light / np.linalg.norm(light)).tolist(),
        "lighting.intensity": rng.uniform(0.6, 1.1), "lighting.ambient": rng.uniform(0.15, 0.4),
        "sensors.cameras.read_noise_dn": rng.uniform(0.5, 4.0),
        "sensors.cameras.shot_noise_gain": rng.uniform(0.03, 0.15),
    }
    for side, cam in (("left", base.mscs.left), ("right", base.mscs.right)):
        f = rng.uniform(0.97, 1.03)
        o[f"mscs.{side}.fx_px"] = cam.fx_px * f
        o[f"mscs.{side}.fy_px"] = cam.fy_px * f * rng.uniform(0.99, 1.01)
        o[f"mscs.{side}.cx_px"] = cam.cx_px + rng.uniform(-10.0, 10.0)
        o[f"mscs.{side}.cy_px"] = cam.cy_px + rng.uniform(-10.0, 10.0)
        o[f"mscs.{side}.mount_error_deg"] = rng.uniform(-0.3, 0.3, 3).tolist()
    return o


def _visible_disc_fraction(labels: np.ndarray, uv: np.ndarray, r_px: float, label: int) -> float:
    """Fraction of the disc of radius ``r_px`` around ``uv`` whose pixels show ``label``."""
    h, w = labels.shape
    r = int(np.ceil(r_px))
    u0, v0 = int(round(uv[0])), int(round(uv[1]))
    vs, us = np.mgrid[max(v0 - r, 0):min(v0 + r + 1, h), max(u0 - r, 0):min(u0 + r + 1, w)]
    disc = (us - uv[0]) ** 2 + (vs - uv[1]) ** 2 <= r_px ** 2
    return float(np.mean(labels[vs[disc], us[disc]] == label)) if disc.any() else 0.0


def _random_rotation(rng: np.random.Generator, max_angle_rad: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return Rotation.from_rotvec(axis * rng.uniform(0.0, max_angle_rad)).as_matrix()


def _drill_pose(rng: np.random.Generator, scene: SceneSpec, skull: Skull, R_home: np.ndarray,
                contact: bool) -> np.ndarray:
    """A tool pose T_tool_to_r: the home orientation tilted by up to 12 deg; free (in the
    reconstruction space above the skull) or touching the bone near the window."""
    R = R_home @ _random_rotation(rng, np.deg2rad(12.0))
    T_s_to_r = scene.T_s_to_r
    apex_r = apply(T_s_to_r, np.array([0.0, skull.apex_y_m, float(skull.outer_height(0.0, skull.apex_y_m))]))
    if contact:
        x_s, y_s = rng.uniform(-3e-3, 3e-3), skull.apex_y_m + rng.uniform(-3.5e-3, 3.5e-3)
        p_s = np.array([x_s, y_s, float(skull.outer_height(x_s, y_s))])
        p_r = apply(T_s_to_r, p_s)
        p_r[2] += scene.drill.burr_radius_m * rng.uniform(-0.5, 1.0)
    else:
        p_r = apex_r + np.array([rng.uniform(-9e-3, 9e-3), rng.uniform(-14e-3, 14e-3), rng.uniform(0.8e-3, 7e-3)])
    return make_transform(R, p_r)


def _render_scene(args: tuple[KeypointDataSettings, int]) -> tuple[list, list, list]:
    settings, index = args
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, index]))
    scene = load_scene(None, random_scene_overrides(rng))
    skull = Skull(SkullParams(**scene.skull.params))
    renderer = make_stereo_renderer(scene, skull, int(rng.integers(2**31)))
    R_home = RobotDescription(scene.robot.description_path).fk(scene.robot.home_q)[:3, :3]
    points_r = {"bregma": apply(scene.T_s_to_r, skull.bregma_s), "lambda": apply(scene.T_s_to_r, skull.lambda_s)}
    images, keypoints, visible = [], [], []
    for _ in range(settings.views_per_scene):
        if settings.target == "drill_tip":
            T = _drill_pose(rng, scene, skull, R_home, rng.random() < settings.contact_fraction)
            names = ("drill_tip",)
            pts = T[:3, 3][None]
        else:
            T = (_drill_pose(rng, scene, skull, R_home, rng.random() < 0.5)
                 if rng.random() < settings.drill_fraction else None)
            names = ("bregma", "lambda")
            pts = np.stack([points_r[n] for n in names])
        stereo = renderer.render(T, rng)
        for cam, img, labels in zip(renderer.camera_models, (stereo.left, stereo.right),
                                    (stereo.labels_left, stereo.labels_right)):
            uv = cam.project(pts)
            inside = cam.in_image(uv, margin_px=2.0) & (cam.depth(pts) > 0)
            vis = np.zeros(len(names), bool)
            for k in np.nonzero(inside)[0]:
                if settings.target == "drill_tip":
                    r_px = scene.drill.burr_radius_m * cam.fx_px / float(cam.depth(pts[k])[0])
                    vis[k] = _visible_disc_fraction(labels, uv[k], r_px, LABEL_BURR) >= MIN_VISIBLE_BURR_FRACTION
                else:
                    u, v = (int(round(c)) for c in uv[k])
                    vis[k] = labels[v, u] == LABEL_BONE
            images.append(img)
            keypoints.append(uv.astype(np.float32))
            visible.append(vis)
    return images, keypoints, visible


def render_scenes(render, jobs: list, workers: int):
    """``render(job)`` for every job, in order: in this process (``workers`` <= 1) or in a pool of
    ``workers`` processes. Shared by the keypoint and completion datasets."""
    if workers <= 1:
        yield from map(render, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(render, jobs)


def collect_scenes(render, jobs: list[tuple[object, int]], workers: int, progress=None,
                   count_key: str = "crops") -> tuple[dict[str, list], list[int]]:
    """``render_scenes`` over ``(settings, scene index)`` jobs whose results are dicts of lists:
    the lists concatenated per key, and per element of ``count_key`` the scene it came from.
    ``progress``: optional callable invoked with 1 after each scene. Shared by the completion and
    thickness datasets."""
    parts: dict[str, list] = {}
    scene_index: list[int] = []
    for (_, index), result in zip(jobs, render_scenes(render, jobs, workers)):
        for k, v in result.items():
            parts.setdefault(k, []).extend(v)
        scene_index.extend([index] * len(result[count_key]))
        if progress is not None:
            progress(1)
    return parts, scene_index


def generate_keypoint_samples(settings: KeypointDataSettings, workers: int = 1, progress=None) -> KeypointSamples:
    """Render ``n_scenes * views_per_scene * 2`` labelled images. Deterministic for a seed
    whatever ``workers`` is (each scene has its own ``SeedSequence([seed, index])``).
    ``progress``: optional callable invoked with 1 after each scene (e.g. ``tqdm.update``)."""
    jobs = [(settings, i) for i in range(settings.n_scenes)]
    images, keypoints, visible, scene_index = [], [], [], []

    for i, (imgs, kps, vis) in enumerate(render_scenes(_render_scene, jobs, workers)):
        images.extend(imgs)
        keypoints.extend(kps)
        visible.extend(vis)
        scene_index.extend([i] * len(imgs))
        if progress is not None:
            progress(1)
    return KeypointSamples(np.stack(images), np.stack(keypoints), np.stack(visible),
                           np.array(scene_index), TARGETS[settings.target])
