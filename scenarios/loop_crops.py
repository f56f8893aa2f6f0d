"""Thickness crops of the frames the milling loop really sees, labelled by the twin (SIM-ONLY).

The thickness classifier of issue 15 was trained on grooves rendered for the data set
(``scenarios.thickness_dataset``): in the loop its error on bone under 60 um was 7.0 um against
2.8 um held out, with biases that stayed with a point for a whole run. Rather than guess what
differs, this records the crops the classifier is given *in the loop*, cut exactly as the sensor
cuts them (``ThicknessCompletionSensor.point_crops``: the controller's calibration and stereo
model, both cameras, the right crops placed by stereo matching, points behind the drill left
out), and labels each with the twin's truth at that moment: the thinnest bone across the groove
at the point (the ``PerceptionTruth.thickness_m`` the scoring keeps, the same definition as the
data set's label). Fine-tuning on them (``scenarios.train_thickness_loop``) is dataset
aggregation in the sense of Ross, Gordon and Bagnell (DAgger, AISTATS 2011): train on the
states the running controller visits. Only the twin can label them; on the rig the same crops
would need measured thickness (e.g. micro-CT of the removed flap).

``LoopCropRecorder`` wraps the milling job's ``ScoredSensor`` (it needs that reading's truth):
from the first reading at which some point's bone is cut past ``start_completion``, every
``every``-th reading records, for every point either camera sees, the crop and the label.
Through points (no bone left) are kept with probability ``through_fraction`` and points with
more than ``keep_below_m`` of bone with ``thick_fraction`` (the decision is made below ~60 um;
without this, frozen through points, read every 0.2 s for the rest of the run, are a third of
the crops); the draws come from the case's seed. At most ``max_crops`` are kept per case
(later readings are dropped once it is reached), so a case's file stays under ~40 MB.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from controllers.completion_sensing import ThicknessCompletionSensor
from controllers.perception.thickness_classes import CROP_PX
from scenarios.sensor_wrapper import CompletionSensorWrapper

#: the file a case writes into its artifacts folder (``loop_crops_case007.npz``)
FILE_PATTERN = "loop_crops_case{index:03d}.npz"
#: a through point's thinnest bone (m): at most this is no bone (``twin.milling.THROUGH_TOL_M``)
THROUGH_M = 0.2e-6


@dataclass(frozen=True)
class LoopCropSettings:
    """What a case records (module docstring). ``every`` (readings, >= 1); ``start_completion``
    in [0, 1]; ``keep_below_m`` (m, > 0); ``through_fraction``, ``thick_fraction`` in [0, 1];
    ``max_crops`` (1 .. 200,000)."""

    every: int = 2
    start_completion: float = 0.5
    keep_below_m: float = 120e-6
    through_fraction: float = 0.25
    thick_fraction: float = 0.05
    max_crops: int = 12_000

    def __post_init__(self):
        checks = {"every": 1 <= self.every <= 1000, "start_completion": 0.0 <= self.start_completion <= 1.0,
                  "keep_below_m": 0.0 < self.keep_below_m <= 1e-3,
                  "through_fraction": 0.0 <= self.through_fraction <= 1.0,
                  "thick_fraction": 0.0 <= self.thick_fraction <= 1.0, "max_crops": 1 <= self.max_crops <= 200_000}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"LoopCropSettings.{bad[0]}={getattr(self, bad[0])!r} is out of range "
                             f"(every 1-1000, start_completion 0-1, keep_below_m 0-1e-3 m, fractions 0-1, "
                             f"max_crops 1-200000)")


@dataclass
class LoopCrops:
    """Recorded crops of one or more cases: ``crops`` (N, 32, 32, 3) uint8 BGR, ``thickness_m``
    (N,) true thinnest bone across the groove (m), ``camera`` (N,) 0 left / 1 right, ``point``
    (N,) sampling point index, ``t_s`` (N,) the reading's time (s, hardware clock), ``case``
    (N,) the case index."""

    crops: np.ndarray
    thickness_m: np.ndarray
    camera: np.ndarray
    point: np.ndarray
    t_s: np.ndarray
    case: np.ndarray

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, mask: np.ndarray) -> LoopCrops:
        return LoopCrops(**{k: v[mask] for k, v in vars(self).items()})

    def save(self, path: Path | str) -> None:
        np.savez_compressed(path, **vars(self))

    @classmethod
    def load(cls, path: Path | str) -> LoopCrops:
        names = [f.name for f in fields(cls)]
        with np.load(path) as z:
            missing = set(names) - set(z.files)
            if missing:
                raise ValueError(f"{path}: not a loop-crops file (missing {sorted(missing)})")
            out = cls(**{k: z[k] for k in names})
        if out.crops.ndim != 4 or out.crops.shape[1:] != (CROP_PX, CROP_PX, 3) or out.crops.dtype != np.uint8:
            raise ValueError(f"{path}: crops {out.crops.shape} {out.crops.dtype}, expected (N, {CROP_PX}, {CROP_PX}, 3) "
                             f"uint8")
        return out

    @classmethod
    def concatenate(cls, parts: list[LoopCrops]) -> LoopCrops:
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in vars(parts[0])})


def load_run(run_dir: Path | str) -> LoopCrops:
    """Every case's crops in a suite run folder (``RUN/artifacts/loop_crops_case*.npz``), in case order.
    Raises FileNotFoundError naming the folder when there are none."""
    files = sorted(Path(run_dir, "artifacts").glob("loop_crops_case*.npz"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no artifacts/loop_crops_case*.npz (run a milling suite with the job "
                                f"parameter record_loop_crops = true, e.g. scenarios/thickness_loop_data.toml)")
    return LoopCrops.concatenate([LoopCrops.load(f) for f in files])


class LoopCropRecorder(CompletionSensorWrapper):
    """Passes the readings of ``scored`` (a ``scenarios.scoring.ScoredSensor``) through unchanged
    and records labelled crops (module docstring) with its own ``ThicknessCompletionSensor``
    geometry (``model``, ``T_mi_to_r``, ``drill``: the controller's, as the sensor gets them)."""

    def __init__(self, scored, model, T_mi_to_r: np.ndarray, drill, case: int, rng: np.random.Generator,
                 settings: LoopCropSettings = LoopCropSettings()):
        super().__init__(scored)              # self.sensor: the ScoredSensor, with its truth rows
        self.cropper = ThicknessCompletionSensor(None, model, T_mi_to_r, drill, 0.0)
        self.case, self.rng, self.settings = int(case), rng, settings
        self._started = False
        self._readings = 0
        self._n = 0
        self._parts: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(LoopCrops) if f.name != "case"}

    def estimate(self, frame, probes_r, T_tool_to_r):
        c = self.sensor.estimate(frame, probes_r, T_tool_to_r)
        truth = self.sensor.rows[-1]
        s = self.settings
        self._started = self._started or bool(np.nanmax(truth.c_true) >= s.start_completion)
        if self._started and frame is not None and self._n < s.max_crops:
            if self._readings % s.every == 0:
                self._record(frame, probes_r, T_tool_to_r, truth)
            self._readings += 1
        return c

    def _record(self, frame, probes_r, T_tool_to_r, truth) -> None:
        s = self.settings
        k = probes_r.shape[1]
        crops, rows, camera = self.cropper.point_crops(frame, np.asarray(probes_r, float)[:, k // 2], T_tool_to_r)
        t = np.asarray(truth.thickness_m, float)[rows]
        u = self.rng.random(len(rows))
        keep = np.where(t <= THROUGH_M, u < s.through_fraction,
                        np.where(t <= s.keep_below_m, True, u < s.thick_fraction))
        keep &= np.cumsum(keep) <= s.max_crops - self._n
        if not keep.any():
            return
        self._n += int(keep.sum())
        for name, value in (("crops", crops[keep]), ("thickness_m", t[keep].astype(np.float32)),
                            ("camera", camera[keep]), ("point", rows[keep].astype(np.int16)),
                            ("t_s", np.full(int(keep.sum()), truth.t_s, np.float64))):
            self._parts[name].append(value)

    @property
    def recorded(self) -> int:
        """Crops recorded so far."""
        return self._n

    def crops(self) -> LoopCrops:
        """What was recorded so far."""
        p = self._parts
        if not p["crops"]:
            return LoopCrops(np.zeros((0, CROP_PX, CROP_PX, 3), np.uint8), np.zeros(0, np.float32),
                             np.zeros(0, np.int8), np.zeros(0, np.int16), np.zeros(0), np.zeros(0, np.int32))
        out = {k: np.concatenate(v) for k, v in p.items()}
        return LoopCrops(**out, case=np.full(len(out["crops"]), self.case, np.int32))

    def save(self, artifacts_dir: Path | str) -> Path:
        """Write the crops to ``artifacts_dir/FILE_PATTERN`` (an empty file if none) and return its path."""
        path = Path(artifacts_dir) / FILE_PATTERN.format(index=self.case)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.crops().save(path)
        return path
