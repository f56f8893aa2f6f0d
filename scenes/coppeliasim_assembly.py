"""Populate a running CoppeliaSim with the micromill scene: the skull as a mesh and the two
MSCS cameras as vision sensors (the arm itself comes with the .ttt scene).

Start CoppeliaSim headless with a scene that holds the arm, its joints at the paths of
``[backends.coppeliasim] joint_paths`` and its reference frame {R} at CoppeliaSim's world origin:

    coppeliaSim.sh -h -GzmqRemoteApi.rpcPort=23000 scene.ttt

(vision sensors render with OpenGL even headless; on a machine without a display, run it
under ``xvfb-run``). The ``coppeliasim`` backend calls ``populate`` on an armed configure when ``populate = true``. What it
adds, with the CoppeliaSim 4.6+ API (world frame = {R}, SI units):
- the skull's outer surface: the twin's height field (``twin.skull``, its milling region)
  sampled every ``SKULL_MESH_CELL_M`` (0.25 mm: about 4,000 triangles for the twin's 1.2
  million 10 um cells), vertices mapped to {R} with ``scene.T_s_to_r``, created with
  ``sim.createShape(options, shadingAngle, vertices, indices)`` (the shape's frame is placed by
  CoppeliaSim; the vertices are already in the world frame) and named ``micromill_skull``;
- two perspective vision sensors (``sim.createVisionSensor(options, intParams[4],
  floatParams[11])``), explicitly handled (rendered only by ``sim.handleVisionSensor``, i.e.
  at the camera rate, not at every 1 ms step), resolution from ``[mscs] width_px/height_px``,
  view angle ``2 atan(max(W, H) / (2 f))`` (CoppeliaSim applies it to the larger image side;
  f = fx for landscape images), posed with ``sim.setObjectPose(h, [x, y, z, qx, qy, qz, qw],
  sim.handle_world)`` from the twin's camera models (``twin.cameras``) and named after
  ``left_sensor_path`` / ``right_sensor_path`` (``"/mscs_left"`` -> alias ``mscs_left``) with
  ``sim.setObjectAlias`` so ``sim.getObject(path)`` finds them.
Objects with those names left by an earlier run are removed first (``sim.getObject(path,
{noError = true})``, ``sim.removeObjects``), so configuring twice does not duplicate them.

Approximations, stated plainly: CoppeliaSim's pinhole has square pixels and a centred
principal point, so fy, cx, cy and the lens distortion of the MSCS are dropped; the skull is
its outer surface only (no thickness, membrane, sutures or bone texture, CoppeliaSim's
default shape colour) and does not change when milled; no defocus blur or sensor noise.
CoppeliaSim's vision sensor looks along its +z axis with +y up in the image, so its frame is
the OpenCV camera frame {C} turned 180 deg about z (x and y flipped).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from scenes.frames import apply
from scenes.spec import SceneSpec

#: CoppeliaSim alias (and root path "/micromill_skull") of the skull mesh
SKULL_ALIAS = "micromill_skull"
#: vertex spacing of the skull mesh (m)
SKULL_MESH_CELL_M = 0.25e-3
#: sim.createShape options: 0 = both faces drawn, no edges
SKULL_SHAPE_OPTIONS = 0
#: sim.createShape shading angle (rad): smooth shading below 20 deg between faces
SKULL_SHADING_ANGLE_RAD = math.radians(20.0)
#: sim.createVisionSensor options: bit0 explicitly handled, bit1 perspective
VISION_SENSOR_OPTIONS = 1 | 2
#: visual size of the sensor body (m); it does not affect the image
SENSOR_BODY_SIZE_M = 0.02
#: rotation from CoppeliaSim's sensor frame to the OpenCV camera frame {C} (and back): x, y flipped
R_CV_TO_COPPELIA = np.diag([-1.0, -1.0, 1.0])
_ROOT_PATH = re.compile(r"^/([A-Za-z0-9_]+)$")


@dataclass(frozen=True)
class SkullMesh:
    """A triangle mesh of the skull's outer surface in {R}."""

    vertices_r: np.ndarray       # (N, 3) m
    indices: np.ndarray          # (M, 3) vertex indices, counter-clockwise seen from above (+z of {S})

    @property
    def triangle_count(self) -> int:
        return int(self.indices.shape[0])


def skull_mesh(scene: SceneSpec, cell_m: float = SKULL_MESH_CELL_M) -> SkullMesh:
    """The twin skull's outer height field over its milling region, sampled every ``cell_m`` (m), in {R}."""
    from twin.skull import Skull, SkullParams

    skull = Skull(SkullParams(**scene.skull.params))
    g = skull.grid
    nx = max(2, round((g.nx - 1) * g.cell / cell_m) + 1)
    ny = max(2, round((g.ny - 1) * g.cell / cell_m) + 1)
    xs = np.linspace(g.x0, g.x0 + (g.nx - 1) * g.cell, nx)
    ys = np.linspace(g.y0, g.y0 + (g.ny - 1) * g.cell, ny)
    z = skull.initial_outer_grid(xs, ys)                     # rows are y
    X, Y = np.meshgrid(xs, ys)
    vertices_s = np.stack([X.ravel(), Y.ravel(), z.ravel()], axis=1)
    i, j = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    a = (i * nx + j).ravel()                                 # corners of each cell: a, b = a+1 (x+), c = a+nx (y+)
    b, c, d = a + 1, a + nx, a + nx + 1
    indices = np.concatenate([np.stack([a, b, d], axis=1), np.stack([a, d, c], axis=1)])
    return SkullMesh(apply(scene.T_s_to_r, vertices_s), indices.astype(np.int64))


@dataclass(frozen=True)
class VisionSensorParams:
    """What ``sim.createVisionSensor`` and ``sim.setObjectPose`` get for one MSCS camera."""

    alias: str
    resolution: tuple[int, int]           # (width, height) px
    view_angle_rad: float                 # along the larger image side
    near_m: float
    far_m: float
    pose_world: tuple[float, ...]         # (x, y, z, qx, qy, qz, qw) of the sensor frame in {R}

    def int_params(self) -> list[int]:
        return [self.resolution[0], self.resolution[1], 0, 0]

    def float_params(self) -> list[float]:
        """near, far, view angle, sensor size x, 2 reserved, null-pixel RGB, 2 reserved."""
        return [self.near_m, self.far_m, self.view_angle_rad, SENSOR_BODY_SIZE_M, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def root_alias(path: str, field: str) -> str:
    """The alias of an object at the scene root, from its path ``"/alias"``."""
    m = _ROOT_PATH.match(path)
    if m is None:
        raise ValueError(f"{field}={path!r}: populate creates objects at the scene root, so the path must be "
                         f"\"/alias\" (letters, digits, _)")
    return m.group(1)


def vision_sensor_params(scene: SceneSpec) -> tuple[VisionSensorParams, VisionSensorParams]:
    """Left and right sensor parameters from the twin's camera models of ``scene``."""
    from twin.cameras import cameras_from_spec

    spec = scene.backends.coppeliasim
    wd = scene.mscs.working_distance_m
    out = []
    for cam, path, field in zip(cameras_from_spec(scene.mscs), (spec.left_sensor_path, spec.right_sensor_path),
                                ("backends.coppeliasim.left_sensor_path", "backends.coppeliasim.right_sensor_path")):
        w, h = cam.width_px, cam.height_px
        f = cam.fx_px if w >= h else cam.fy_px
        R = cam.T_cam_to_r[:3, :3] @ R_CV_TO_COPPELIA
        pose = (*cam.centre_r.tolist(), *Rotation.from_matrix(R).as_quat().tolist())
        out.append(VisionSensorParams(root_alias(path, field), (w, h), 2.0 * math.atan(max(w, h) / (2.0 * f)),
                                      0.5 * wd, 2.0 * wd, pose))
    return out[0], out[1]


def _remove_existing(sim: Any, alias: str) -> None:
    handle = sim.getObject(f"/{alias}", {"noError": True})
    if handle != -1:
        sim.removeObjects([handle])


def populate(sim: Any, scene: SceneSpec) -> None:
    """Add the skull mesh and (when the scene has sensor paths) the two MSCS vision sensors.

    ``sim`` is the remote ``sim`` object of the official client (``client.require('sim')``).
    """
    mesh = skull_mesh(scene)
    sensors = vision_sensor_params(scene) if scene.backends.coppeliasim.left_sensor_path else ()
    for alias in (SKULL_ALIAS, *(s.alias for s in sensors)):
        _remove_existing(sim, alias)
    skull = sim.createShape(SKULL_SHAPE_OPTIONS, SKULL_SHADING_ANGLE_RAD, mesh.vertices_r.ravel().tolist(),
                            mesh.indices.ravel().tolist())
    sim.setObjectAlias(skull, SKULL_ALIAS)
    for s in sensors:
        h = sim.createVisionSensor(VISION_SENSOR_OPTIONS, s.int_params(), s.float_params())
        sim.setObjectPose(h, list(s.pose_world), sim.handle_world)
        sim.setObjectAlias(h, s.alias)
