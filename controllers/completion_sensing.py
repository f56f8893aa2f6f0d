"""Completion levels c_i at the milling path's sampling points, from what the robot gives.

``CompletionSensor`` is what the milling loop asks: given a stereo frame, the sampling points
in {R} and the tool pose at the frame's exposure, the levels c_i in [0, 1] (NaN where the
point cannot be seen). ``CameraCompletionSensor`` is the real one: it projects the points into
the left image through the calibration (T_mi_to_r) and the stereo camera model, marks points
hidden behind the drill (burr, neck and shank silhouettes, from the rig's drill geometry and
the tool pose) and runs the completion CNN. ``ThicknessCompletionSensor`` (issue 15) reads the
remaining bone thickness at each point with the thickness classifier on both cameras and maps
it to c_i (``completion_from_thickness``); the scene's ``[controllers.perception]
completion_sensor`` chooses between the two (``controllers.pipeline.completion_sensor``). A
sim-only oracle with the same interface lives in ``twin/completion_oracle.py``.

``CompletionFilter`` is the per-point median of the last k valid readings, applied by the
milling loop to whatever sensor it is given.
"""
from __future__ import annotations

from collections import deque
from typing import Protocol

import cv2
import numpy as np

from controllers.perception.completion_detector import CompletionEstimator
from controllers.perception.thickness_classes import CLASS_CENTRES_M, CROP_PX, crop_points
from controllers.reconstruction import OrthoStereoModel
from hw_bridge.interface import StereoFrame
from scenes.frames import apply, invert


class CompletionSensor(Protocol):
    #: False for a sensor that never looks at the images (the sim-only oracle): the loop then
    #: passes ``frame=None`` and does not ask the cameras for a frame it would not use.
    uses_images: bool
    #: the remaining bone thickness (m, (n,), NaN: unseen) behind the last ``estimate``, for a
    #: sensor that reads it (``ThicknessCompletionSensor``); None for one that reads completion
    #: only. The milling planner's settle (``DamperParams.settle_below_m``) needs it.
    last_thickness_m: np.ndarray | None

    def estimate(self, frame: StereoFrame | None, probes_r: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        """c_i (n,) in [0, 1]: for each sampling point the highest level among its k probe points
        ``probes_r`` (n, k, 3) (m, {R}) across the groove; NaN where unknown."""


class CameraCompletionSensor:
    """The completion CNN on the left image, at points projected through the calibration."""

    uses_images = True
    last_thickness_m = None       # reads completion only

    def __init__(self, estimator: CompletionEstimator, model: OrthoStereoModel, T_mi_to_r: np.ndarray,
                 centre_r: np.ndarray, drill, occlusion_margin_px: float = 4.0):
        self.estimator = estimator
        self.model = model
        self.T_r_to_mi = invert(T_mi_to_r)
        self.centre_r = np.asarray(centre_r, float)
        self.drill = drill            # the rig's drill (DrillSpec): burr/neck/shank radii and lengths (m)
        self.margin_px = occlusion_margin_px
        self.px_per_m = 1.0 / abs(float(model.prx_m_per_px))

    def left_px(self, p_r: np.ndarray) -> np.ndarray:
        """Left-image pixels (N, 2) of {R} points, through the calibration and the camera model."""
        uv_l, _ = self.model.project(np.atleast_2d(apply(self.T_r_to_mi, np.asarray(p_r, float))))
        return uv_l

    def hidden(self, points_px: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        """Points (bool (n,)) inside the drill's silhouette (burr disc, neck and shank bands)."""
        ends_px = self.left_px(drill_axis_points_r(self.drill, T_tool_to_r))
        return inside_drill_silhouette(points_px, ends_px, self.drill, self.px_per_m, self.margin_px)

    def estimate(self, frame: StereoFrame, probes_r: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        n, k = probes_r.shape[:2]
        pts_px = self.left_px(probes_r.reshape(-1, 3))
        centre_px = self.left_px(self.centre_r)[0]
        c = np.array(self.estimator.estimate(frame.left, centre_px, pts_px).levels, dtype=float).reshape(n, k)
        c[self.hidden(pts_px, T_tool_to_r).reshape(n, k)] = np.nan
        return np.fmax.reduce(c, axis=1)          # highest seen probe; NaN only if all are hidden


#: the highest level a point that is not yet through reports (below the damper's 0.99 through level)
MAX_UNFINISHED_COMPLETION = 0.98


def completion_from_thickness(thickness_m, stop_thickness_m: float, reference_m) -> np.ndarray:
    """Completion levels from remaining thicknesses (the ``ThicknessCompletionSensor`` mapping).

    c = 1.0 exactly where ``thickness_m`` <= ``stop_thickness_m`` (the point is through for the
    planner, whose through level is < 1); elsewhere c = clip(1 - t / ``reference_m``, 0, 0.98),
    which stays below the damper's through level 0.99, so a point is declared through only by
    the thickness criterion. ``reference_m`` (scalar or per point, > 0): the thickness at which
    c = 0. NaN in, NaN out. Non-increasing in t for a fixed reference."""
    t = np.asarray(thickness_m, dtype=float)
    ref = np.maximum(np.asarray(reference_m, dtype=float), 1e-12)
    with np.errstate(invalid="ignore"):
        c = np.clip(1.0 - t / ref, 0.0, MAX_UNFINISHED_COMPLETION)
        c = np.where(t <= stop_thickness_m, 1.0, c)
    return np.where(np.isfinite(t), c, np.nan)


#: stereo matching of the right crops (``ThicknessCompletionSensor._match_right``)
MATCH_TEMPLATE_PX = 48
MATCH_SEARCH_PX = 8
MATCH_MIN_SCORE = 0.6
RIGHT_OFFSET_READINGS = 15


class ThicknessCompletionSensor:
    """Completion from the remaining-bone-thickness classifier (issue 15), on both cameras.

    Per sampling point, the centre probe (the middle of its k probes: the point on the fitted
    surface) is projected into both images through the calibration (T_mi_to_r inverse) and the
    stereo model; a 32 x 32 crop (``thickness_classes.crop_points``) is cut around it in each
    image where the point is outside the drill's silhouette in that image (the same burr / neck /
    shank silhouette as ``CameraCompletionSensor``, per camera). All visible crops go to the
    classifier in one batch; a point's class probabilities are the mean over the cameras that see
    it (one camera hidden: the other's reading; both: NaN), and its thickness t_i is their
    expected value over ``CLASS_CENTRES_M``. ``last_thickness_m`` (n,) and ``last_probs`` (n, K)
    keep the last reading for logging.

    Mapping to the planner's completion (``completion_from_thickness``):
    c_i = 1 exactly when t_i <= ``stop_thickness_m``; otherwise c_i = clip(1 - t_i / ref_i, 0, 0.98).
    The damper's through level (0.99) is thus reached exactly when t_i <= ``stop_thickness_m``,
    never by a thickness above it. The reference ref_i is the point's own starting thickness: the
    largest fused thickness read at the point so far (at most the top class centre, 400 um), so
    c_i keeps the regression CNN's meaning (the fraction of the point's bone cut): about 0 over
    untouched bone, so the damper's approach mode (c < contact_level) still covers the air
    above the skull at the fast approach speed, and rising to 0.98 as the bone thins, so the
    burr slows down towards the membrane. (A fixed reference would not: the settings' 0.65 mm
    plausible maximum reads c >= 0.15 over untouched 0.55 mm bone, i.e. cutting mode, and a slow
    descent, in the air; and a reference under a point's thickness saturates c at 0 there.)
    The milling loop's median-of-3 filter then applies to c_i as for the regression CNN.
    """

    uses_images = True

    def __init__(self, classifier, model: OrthoStereoModel, T_mi_to_r: np.ndarray, drill,
                 stop_thickness_m: float, occlusion_margin_px: float = 4.0):
        self.classifier = classifier  # ThicknessClassifier (controllers.perception.thickness_classifier)
        self.model = model
        self.T_r_to_mi = invert(T_mi_to_r)
        self.drill = drill
        self.stop_thickness_m = float(stop_thickness_m)
        self.margin_px = occlusion_margin_px
        self.px_per_m = 1.0 / abs(float(model.prx_m_per_px))
        self.reference_m: np.ndarray | None = None     # per point: largest fused thickness read so far
        self._right_offsets: deque[np.ndarray] = deque(maxlen=RIGHT_OFFSET_READINGS)
        self.right_offset_px = np.zeros(2)               # stereo-matched correction of the right projection
        self.last_thickness_m: np.ndarray | None = None
        self.last_probs: np.ndarray | None = None

    def project(self, p_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Left and right image pixels ((N, 2) each) of {R} points, through the calibration and the model."""
        uv_l, uv_r = self.model.project(np.atleast_2d(apply(self.T_r_to_mi, np.asarray(p_r, float))))
        return np.atleast_2d(uv_l), np.atleast_2d(uv_r)

    def hidden(self, points_px: tuple[np.ndarray, np.ndarray], T_tool_to_r: np.ndarray) -> np.ndarray:
        """(2, n) bool: points inside the drill's silhouette in the left (row 0) and right (row 1)
        image; ``points_px`` the points' (left, right) pixels."""
        ends = self.project(drill_axis_points_r(self.drill, T_tool_to_r))
        return np.stack([inside_drill_silhouette(np.asarray(pts, float), e, self.drill, self.px_per_m, self.margin_px)
                         for pts, e in zip(points_px, ends)])

    def point_crops(self, frame: StereoFrame, centres_r: np.ndarray, T_tool_to_r: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The crops the classifier reads at the points ``centres_r`` (n, 3) (m, {R}): (M, 32, 32, 3)
        uint8 BGR crops of the left image's visible points, then the right image's; the point index
        (M,) and the camera (M,) (0 left, 1 right) of each. An image no point is visible in is not
        even read (its right image is then not rendered in the twin)."""
        uv = self.project(centres_r)
        seen = ~self.hidden(uv, T_tool_to_r) & np.stack([np.isfinite(u).all(axis=1) for u in uv])
        uv = (uv[0], uv[1] + self._match_right(frame, uv, seen[0] & seen[1]))
        crops = [crop_points(image(), u[s]) for image, u, s in
                 ((lambda: frame.left, uv[0], seen[0]), (lambda: frame.right, uv[1], seen[1])) if s.any()]
        rows = np.concatenate([np.flatnonzero(s) for s in seen])
        camera = np.concatenate([np.full(int(s.sum()), k, np.int8) for k, s in enumerate(seen)])
        return (np.concatenate(crops) if crops else np.zeros((0, CROP_PX, CROP_PX, 3), np.uint8)), rows, camera

    def read_thickness(self, frame: StereoFrame, centres_r: np.ndarray, T_tool_to_r: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Fused (probabilities (n, K), thickness (n,) m) at the points ``centres_r`` (n, 3) (NaN rows: hidden)."""
        n = len(centres_r)
        crops, rows, _ = self.point_crops(frame, centres_r, T_tool_to_r)
        probs_sum = np.zeros((n, len(CLASS_CENTRES_M)))
        if len(crops):     # one batch for both cameras
            probs = np.asarray(self.classifier.classify(crops).probs, dtype=float)
            np.add.at(probs_sum, rows, probs)
        count = np.bincount(rows, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            fused = probs_sum / count[:, None]
        fused[count == 0] = np.nan
        return fused, fused @ CLASS_CENTRES_M

    def _match_right(self, frame: StereoFrame, uv: tuple[np.ndarray, np.ndarray], both: np.ndarray) -> np.ndarray:
        """The correction (2,) (px) added to the model's right-image projections: the running median
        over the last ``RIGHT_OFFSET_READINGS`` readings of each reading's median stereo match.

        The stereo model is fitted for the whole reconstruction space; near the window its right-image
        projection is off by a few pixels (measured in the twin: 3.9 px, against 0.35 px in the left
        image), a tenth of a 32 px crop, and the same along the groove, so the right crops would show
        the groove off-centre. Each reading matches, for every point both cameras see, the left crop
        (``MATCH_TEMPLATE_PX`` square) in the right image within +-``MATCH_SEARCH_PX`` of the model's
        projection (OpenCV normalised cross-correlation on grey levels); matches scoring below
        ``MATCH_MIN_SCORE`` are dropped, and a reading with fewer than 3 good ones adds nothing."""
        idx = np.flatnonzero(both)
        if idx.size >= 3:
            grey = [cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) for im in (frame.left, frame.right)]
            tpl = crop_points(grey[0], uv[0][idx], MATCH_TEMPLATE_PX)
            side = MATCH_TEMPLATE_PX + 2 * MATCH_SEARCH_PX
            region = crop_points(grey[1], uv[1][idx] + self.right_offset_px, side)
            found = []
            for t, r in zip(tpl, region):
                if float(t.std()) < 1.0:          # a flat patch matches anywhere
                    continue
                score = cv2.matchTemplate(r, t, cv2.TM_CCOEFF_NORMED)
                _, best, _, (x, y) = cv2.minMaxLoc(score)
                if best >= MATCH_MIN_SCORE and 0 < x < 2 * MATCH_SEARCH_PX and 0 < y < 2 * MATCH_SEARCH_PX:
                    found.append((x - MATCH_SEARCH_PX, y - MATCH_SEARCH_PX))
            if len(found) >= 3:
                self._right_offsets.append(self.right_offset_px + np.median(np.asarray(found, float), axis=0))
        if self._right_offsets:
            self.right_offset_px = np.median(np.asarray(self._right_offsets), axis=0)
        return self.right_offset_px

    def estimate(self, frame: StereoFrame, probes_r: np.ndarray, T_tool_to_r: np.ndarray) -> np.ndarray:
        n, k = probes_r.shape[:2]
        probs, t = self.read_thickness(frame, np.asarray(probes_r, float)[:, k // 2], T_tool_to_r)
        if self.reference_m is None or self.reference_m.shape != (n,):
            self.reference_m = np.full(n, np.nan)
        self.reference_m = np.fmin(np.fmax(self.reference_m, t), CLASS_CENTRES_M[-1])
        self.last_probs, self.last_thickness_m = probs, t
        return completion_from_thickness(t, self.stop_thickness_m, self.reference_m)


def drill_axis_points_r(drill, T_tool_to_r: np.ndarray) -> np.ndarray:
    """The drill's tip, neck end and shank end (3, 3) (m, {R}) at the tool pose ``T_tool_to_r``
    (the shaft runs along -z of the tool)."""
    axis_up = -T_tool_to_r[:3, 2]
    tip = T_tool_to_r[:3, 3]
    neck_end = tip + drill.neck_length_m * axis_up
    shank_end = neck_end + drill.shank_length_m * axis_up
    return np.stack([tip, neck_end, shank_end])


def inside_drill_silhouette(points_px: np.ndarray, ends_px: np.ndarray, drill, px_per_m: float,
                            margin_px: float) -> np.ndarray:
    """Points (bool (n,)) of one image inside the drill's silhouette there: the burr disc around the
    tip and the neck and shank bands, given ``ends_px`` (3, 2), the projections of
    ``drill_axis_points_r`` in that image, each widened by ``margin_px``."""
    a, b, c = ends_px
    hide = np.linalg.norm(points_px - a, axis=1) <= drill.burr_radius_m * px_per_m + margin_px
    for (s, e, radius_m) in ((a, b, drill.neck_radius_m), (b, c, drill.shank_radius_m)):
        hide |= _distance_to_segment(points_px, s, e) <= radius_m * px_per_m + margin_px
    return hide


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


class CompletionFilter:
    """Per-point median of the last ``window`` valid (finite) readings; NaN until one arrives."""

    def __init__(self, n: int, window: int = 3):
        if window < 1:
            raise ValueError(f"CompletionFilter window={window!r}: must be >= 1")
        self._hist = np.full((window, n), np.nan)     # per point, its last valid readings (ring)
        self._next = np.zeros(n, dtype=int)

    def update(self, c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, dtype=float)
        ok = np.isfinite(c)
        idx = np.flatnonzero(ok)
        self._hist[self._next[idx], idx] = c[idx]
        self._next[idx] = (self._next[idx] + 1) % self._hist.shape[0]
        out = np.full(c.shape, np.nan)
        seen = np.isfinite(self._hist).any(axis=0)
        out[seen] = np.nanmedian(self._hist[:, seen], axis=0)
        return out
