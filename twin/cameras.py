"""MSCS camera models: pinhole intrinsics with OpenCV lens distortion, posed in {R}.

Camera frame {C}: OpenCV convention (x right, y down, z along the optical axis). Pixel
coordinates (u, v) with (0, 0) at the centre of the top-left pixel. Distortion coefficients
(k1, k2, p1, p2, k3) follow OpenCV's model.

``project`` is the ground-truth projection (for labels and scoring, via
``cv2.projectPoints``); ``pixel_rays`` inverts it for every pixel (``cv2.undistortPoints`` with a tight iteration criterion)
and is what the renderer casts. The two are independent code paths; the property tests check
that they agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from scenes.frames import invert, make_transform


#: ``CameraModel.pixel_rays`` by intrinsics, the oldest dropped beyond ``_PIXEL_RAYS_KEPT``
_PIXEL_RAYS: dict[tuple, np.ndarray] = {}
_PIXEL_RAYS_KEPT = 8


@dataclass
class CameraModel:
    """One MSCS camera (SI units except pixel quantities, which say px)."""

    name: str
    width_px: int
    height_px: int
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    dist: np.ndarray              # (5,) k1, k2, p1, p2, k3
    T_cam_to_r: np.ndarray        # 4x4 pose of {C} in {R}
    focus_distance_m: float       # distance along the optical axis that is in focus
    aperture_diameter_m: float    # entrance pupil, sets the depth of field

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx_px, 0, self.cx_px], [0, self.fy_px, self.cy_px], [0, 0, 1.0]])

    @property
    def T_r_to_cam(self) -> np.ndarray:
        return invert(self.T_cam_to_r)

    @property
    def centre_r(self) -> np.ndarray:
        """Optical centre (m) in {R}."""
        return self.T_cam_to_r[:3, 3]

    def project(self, p_r: np.ndarray) -> np.ndarray:
        """Ground-truth pixel coordinates (N, 2) of points ``p_r`` (N, 3) in {R} (m)."""
        p_r = np.atleast_2d(np.asarray(p_r, dtype=float))
        T = self.T_r_to_cam
        rvec, _ = cv2.Rodrigues(T[:3, :3])
        uv, _ = cv2.projectPoints(p_r.reshape(-1, 1, 3), rvec, T[:3, 3], self.K, self.dist)
        return uv.reshape(-1, 2)

    def depth(self, p_r: np.ndarray) -> np.ndarray:
        """z coordinate (m) of points in {C} (positive in front of the camera)."""
        p_r = np.atleast_2d(np.asarray(p_r, dtype=float))
        T = self.T_r_to_cam
        return p_r @ T[2, :3] + T[2, 3]

    def in_image(self, uv: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
        uv = np.atleast_2d(uv)
        return ((uv[:, 0] >= margin_px) & (uv[:, 0] <= self.width_px - 1 - margin_px)
                & (uv[:, 1] >= margin_px) & (uv[:, 1] <= self.height_px - 1 - margin_px))

    def rays_for_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Unit ray directions (N, 3) in {C} through pixel coordinates ``uv`` (N, 2)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
        xy = cv2.undistortPoints(uv, self.K, self.dist, criteria=crit).reshape(-1, 2)
        d = np.concatenate([xy, np.ones((xy.shape[0], 1))], axis=1)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def pixel_rays(self) -> np.ndarray:
        """Unit ray directions (H, W, 3) float32 in {C} for every pixel centre: read-only, cached
        per intrinsics (size, focal lengths, principal point, distortion) for the whole process,
        since every case on a rig builds cameras with the same ones."""
        key = (self.width_px, self.height_px, float(self.fx_px), float(self.fy_px), float(self.cx_px),
               float(self.cy_px), *(float(d) for d in np.ravel(self.dist)))
        rays = _PIXEL_RAYS.get(key)
        if rays is None:
            u, v = np.meshgrid(np.arange(self.width_px), np.arange(self.height_px))
            uv = np.stack([u, v], axis=-1).reshape(-1, 2)
            rays = self.rays_for_pixels(uv).reshape(self.height_px, self.width_px, 3).astype(np.float32)
            rays.flags.writeable = False
            if len(_PIXEL_RAYS) >= _PIXEL_RAYS_KEPT:
                _PIXEL_RAYS.pop(next(iter(_PIXEL_RAYS)))
            _PIXEL_RAYS[key] = rays
        return rays

    def blur_sigma_px(self, depth_m: np.ndarray) -> np.ndarray:
        """Gaussian sigma (px) of defocus blur at optical depth ``depth_m``.

        Thin-lens circle of confusion at the object: c = D |z - f| / z, converted to image
        pixels with the focal length; sigma ~ c / 2.5 (a common disc-to-Gaussian match).
        """
        z = np.maximum(np.asarray(depth_m, dtype=np.float32), 1e-6)
        coc_m = self.aperture_diameter_m * np.abs(z - self.focus_distance_m) / z
        return coc_m * (self.fx_px / self.focus_distance_m) / 2.5


def look_at(centre_r: np.ndarray, target_r: np.ndarray, x_hint_r: np.ndarray) -> np.ndarray:
    """T_cam_to_r of a camera at ``centre_r`` looking at ``target_r``, its x axis close to ``x_hint_r``."""
    z = np.asarray(target_r, float) - np.asarray(centre_r, float)
    z /= np.linalg.norm(z)
    x = np.asarray(x_hint_r, float) - np.dot(x_hint_r, z) * z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_transform(np.stack([x, y, z], axis=1), np.asarray(centre_r, float))


def cameras_from_spec(mscs) -> tuple[CameraModel, CameraModel]:
    """The left and right MSCS cameras of a ``scenes.spec.MSCSSpec``.

    Both sit at ``working_distance_m`` from ``target_r``, tilted by +-vergence half-angle from
    vertical along the baseline direction, looking at the target; image x runs along the
    baseline (left camera on the -baseline side). ``mount_error_rad`` rotates each camera
    about its own axes, as a mounting error would.
    """
    from scipy.spatial.transform import Rotation

    az, beta, wd = mscs.baseline_azimuth_rad, mscs.vergence_half_angle_rad, mscs.working_distance_m
    b = np.array([np.cos(az), np.sin(az), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    cams = []
    for name, spec, sign in (("left", mscs.left, -1.0), ("right", mscs.right, 1.0)):
        centre = mscs.target_r + wd * (np.cos(beta) * up + sign * np.sin(beta) * b)
        T = look_at(centre, mscs.target_r, b)
        T[:3, :3] = T[:3, :3] @ Rotation.from_rotvec(spec.mount_error_rad).as_matrix()
        cams.append(CameraModel(name, mscs.width_px, mscs.height_px, spec.fx_px, spec.fy_px, spec.cx_px,
                                spec.cy_px, np.asarray(spec.distortion, float), T, wd,
                                mscs.aperture_diameter_m))
    return cams[0], cams[1]
