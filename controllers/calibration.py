"""Landmark calibration {Mi} -> {R}: the rigid transform that best maps reconstructed points onto
the positions the drill tip was commanded to.

The paper uses VTK's ``vtkLandmarkTransform`` in rigid mode: least squares over a rotation and a
translation, no scale. ``fit_rigid`` does the same with SciPy's ``Rotation.align_vectors``
(Kabsch / Wahba on the centred points, always a proper rotation). ``calibrate`` adds rejection
of gross outliers (a misdetected keypoint), per-point residuals, a noise estimate and the
expected transfer error of the fitted transform.

Units: m. ``T_mi_to_r`` maps {Mi} coordinates to {R} (``apply(T_mi_to_r, p_mi)``, re-exported
from ``scenes.frames``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from scenes.frames import apply, make_transform

__all__ = ["CalibrationError", "LandmarkCalibration", "apply", "calibrate", "fit_rigid"]

MIN_SEPARATION_M = 1e-6
"""Two landmarks closer than this (in either frame) count as a repeated point."""

COLLINEAR_REL_TOL = 1e-3
"""Landmarks whose second centred singular value is below this fraction of the first are collinear."""

MIN_OUTLIER_THRESHOLD_M = 1e-5
"""Floor of the automatic outlier threshold, so that noise-free data rejects nothing."""

_MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD of a Gaussian sample -> its standard deviation


class CalibrationError(ValueError):
    """The landmarks cannot determine a rigid transform (too few, non-finite, repeated, collinear)."""


@dataclass(frozen=True)
class LandmarkCalibration:
    """Result of ``calibrate``.

    ``T_mi_to_r``: 4x4 rigid transform {Mi} -> {R}; ``residuals_m`` (k,): per landmark, in the
    input order, |T p_mi - p_r| (m) against the final transform, rejected ones included;
    ``inliers`` (k,) bool: landmarks used in the final fit; ``rms_m``: RMS residual of the
    inliers; ``sigma_m``: per-axis noise estimate sqrt(SSR / (3 k - 6)) over the k inliers
    (k >= 3, so there are at least 3 degrees of freedom). ``covariance`` (6x6): covariance of a
    left perturbation (rotation vector, rad; translation, m) of the transform taken about
    ``centre_r_m``, the inliers' centroid in {R}.
    """

    T_mi_to_r: np.ndarray = field(repr=False)
    residuals_m: np.ndarray = field(repr=False)
    inliers: np.ndarray = field(repr=False)
    rms_m: float
    sigma_m: float
    covariance: np.ndarray = field(repr=False)
    centre_r_m: np.ndarray = field(repr=False)

    def expected_error_m(self, p_r: np.ndarray) -> np.ndarray:
        """Expected RMS error (m) of mapping a point that sits at ``p_r`` in {R} ((3,) or (N, 3)).

        sqrt(trace(J cov J^T)) with J the Jacobian of the mapped point w.r.t. the transform's
        six parameters: the error due to keypoint / reconstruction noise in the landmarks only,
        linearised, with isotropic noise of ``sigma_m`` per axis. Model bias (a wrong camera
        model) and the noise of the mapped point's own reconstruction are not included.
        """
        p = np.asarray(p_r, dtype=float)
        J = _point_jacobians(np.atleast_2d(p) - self.centre_r_m)
        err = np.sqrt(np.einsum("nij,jk,nik->n", J, self.covariance, J))
        return err[0] if p.ndim == 1 else err


def fit_rigid(p_mi: np.ndarray, p_r: np.ndarray) -> np.ndarray:
    """Least-squares rigid transform T_mi_to_r (4x4) with p_r ~ T p_mi, for (k, 3) point sets (m).

    Equivalent to ``vtkLandmarkTransform`` in rigid mode. Raises ``CalibrationError`` for
    k < 3, mismatched shapes, non-finite values, repeated or collinear points.
    """
    p_mi, p_r = _validated(p_mi, p_r)
    return _fit(p_mi, p_r)


def calibrate(p_mi: np.ndarray, p_r: np.ndarray, *, outlier_threshold_m: float | None = None,
              min_points: int = 4, max_outlier_fraction: float = 0.3) -> LandmarkCalibration:
    """Rigid landmark calibration with iterative rejection of gross outliers.

    Repeatedly: take the inlier with the largest leave-one-out residual (against a fit of the
    other inliers) and reject it if that residual exceeds the threshold, at least ``min_points``
    inliers remain (not degenerate) and the rejected fraction stays <= ``max_outlier_fraction``;
    then fit the inliers. Leave-one-out residuals are used because a gross outlier pulls an
    ordinary fit towards itself and can hide among the inflated residuals of the others (the
    plain fit-and-reject loop missed a 5 mm outlier among 8 landmarks with 20 um noise in about
    1 case in 7). The default threshold is max(3 * 1.4826 * median |r|, 1e-5 m) over the other
    inliers' residual norms |r| under that fit: 1.4826 times the MAD of the norms about their
    ideal value 0, about 2.3 sigma per axis for Gaussian noise, so the threshold is about 7 sigma;
    with few landmarks the median is itself noisy, and about 1 clean calibration in 100 with
    k = 8..20 loses one good landmark. With k = 3 or 4 landmarks (and the default
    ``min_points``) no rejection is possible: every landmark is used.
    """
    p_mi, p_r = _validated(p_mi, p_r)
    if min_points < 3:
        raise CalibrationError(f"min_points={min_points} must be >= 3")
    if outlier_threshold_m is not None and not outlier_threshold_m > 0:
        raise CalibrationError(f"outlier_threshold_m={outlier_threshold_m!r} must be > 0 (m) or None")
    inliers = np.ones(len(p_mi), dtype=bool)
    while (worst := _rejectable(inliers, outlier_threshold_m, min_points, max_outlier_fraction,
                                p_mi, p_r)) is not None:
        inliers[worst] = False
    T = _fit(p_mi[inliers], p_r[inliers])
    return _result(T, _residuals(T, p_mi, p_r), inliers, p_r)


def _validated(p_mi: np.ndarray, p_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p_mi, p_r = np.asarray(p_mi, dtype=float), np.asarray(p_r, dtype=float)
    if p_mi.ndim != 2 or p_mi.shape[1] != 3 or p_mi.shape != p_r.shape:
        raise CalibrationError(f"p_mi has shape {p_mi.shape} and p_r {p_r.shape}: both must be (k, 3) "
                               "with the same k")
    if len(p_mi) < 3:
        raise CalibrationError(f"need at least 3 non-collinear landmarks, got {len(p_mi)}")
    for name, p in (("p_mi", p_mi), ("p_r", p_r)):
        problem = _degeneracy(p, name)
        if problem:
            raise CalibrationError(problem)
    return p_mi, p_r


def _degeneracy(p: np.ndarray, name: str) -> str | None:
    """Why the landmarks ``p`` (k, 3) cannot fix a rigid transform, or None."""
    bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
    if bad.size:
        return f"{name}[{bad[0]}]={p[bad[0]].tolist()} is not finite"
    pairs = sorted(cKDTree(p).query_pairs(MIN_SEPARATION_M))
    if pairs:
        i, j = pairs[0]
        return (f"{name}[{i}] and {name}[{j}] are {np.linalg.norm(p[i] - p[j]):.3g} m apart "
                f"(< {MIN_SEPARATION_M:g} m): repeated landmark")
    s = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
    if s[1] < COLLINEAR_REL_TOL * s[0]:
        return (f"the landmarks in {name} are collinear (centred singular values {s.tolist()}; the "
                f"second must exceed {COLLINEAR_REL_TOL:g} x the first)")
    return None


def _fit(p_mi: np.ndarray, p_r: np.ndarray) -> np.ndarray:
    c_mi, c_r = p_mi.mean(axis=0), p_r.mean(axis=0)
    rot, _ = Rotation.align_vectors(p_r - c_r, p_mi - c_mi)
    R = rot.as_matrix()
    return make_transform(R, c_r - R @ c_mi)


def _residuals(T: np.ndarray, p_mi: np.ndarray, p_r: np.ndarray) -> np.ndarray:
    return np.linalg.norm(apply(T, p_mi) - p_r, axis=1)


def _rejectable(inliers: np.ndarray, threshold_m: float | None, min_points: int,
                max_outlier_fraction: float, p_mi: np.ndarray, p_r: np.ndarray) -> int | None:
    """Index of the inlier to reject next, or None when the rules allow no rejection.

    The candidate is the inlier with the largest leave-one-out residual (its residual against a
    fit of the other inliers), so that a gross outlier cannot hide by pulling the fit towards
    itself; the automatic threshold comes from the other inliers' residuals under that fit.
    """
    n_in = int(inliers.sum())
    if n_in - 1 < min_points or (len(inliers) - n_in + 1) > max_outlier_fraction * len(inliers):
        return None
    candidates = [_leave_one_out(i, inliers, p_mi, p_r) for i in np.flatnonzero(inliers)]
    candidates = [c for c in candidates if c is not None]
    if not candidates:
        return None
    residual, worst, others_residuals = max(candidates, key=lambda c: c[0])
    threshold = threshold_m if threshold_m is not None else \
        max(3.0 * _MAD_TO_SIGMA * float(np.median(others_residuals)), MIN_OUTLIER_THRESHOLD_M)
    return worst if residual > threshold else None


def _leave_one_out(i: int, inliers: np.ndarray, p_mi: np.ndarray,
                   p_r: np.ndarray) -> tuple[float, int, np.ndarray] | None:
    """Residual of landmark i against a fit of the other inliers, i, and the others' residuals;
    None when the others are degenerate."""
    others = inliers.copy()
    others[i] = False
    if _degeneracy(p_mi[others], "p_mi") or _degeneracy(p_r[others], "p_r"):
        return None
    T = _fit(p_mi[others], p_r[others])
    return float(_residuals(T, p_mi[i:i + 1], p_r[i:i + 1])[0]), int(i), _residuals(T, p_mi[others], p_r[others])


def _point_jacobians(q: np.ndarray) -> np.ndarray:
    """(N, 3, 6) Jacobians of points q (relative to the perturbation centre) under a left
    perturbation (rotation vector w, translation v): dq = w x q + v = [-[q]x | I] (w, v)."""
    J = np.zeros((len(q), 3, 6))
    J[:, 0, 1], J[:, 0, 2] = q[:, 2], -q[:, 1]
    J[:, 1, 0], J[:, 1, 2] = -q[:, 2], q[:, 0]
    J[:, 2, 0], J[:, 2, 1] = q[:, 1], -q[:, 0]
    J[:, :, 3:] = np.eye(3)
    return J


def _result(T: np.ndarray, residuals: np.ndarray, inliers: np.ndarray, p_r: np.ndarray) -> LandmarkCalibration:
    r_in = residuals[inliers]
    k = len(r_in)
    sigma = float(np.sqrt(np.sum(r_in ** 2) / (3 * k - 6)))
    centre = p_r[inliers].mean(axis=0)  # perturbing about the centroid keeps J^T J well conditioned
    J = _point_jacobians(p_r[inliers] - centre).reshape(-1, 6)
    covariance = sigma ** 2 * np.linalg.inv(J.T @ J)
    return LandmarkCalibration(T, residuals, inliers, float(np.sqrt(np.mean(r_in ** 2))), sigma,
                               covariance, centre)
