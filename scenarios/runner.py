"""Run a scenario suite: cases in a process pool, results written as they arrive, a report.

Output folder:
- ``cases.jsonl``: one line per finished case, appended immediately (a crash later loses
  nothing already computed);
- ``results.json``: ``summary`` (per metric: value by its aggregate, plus stats; per
  threshold: limit, value, passed; ``passed`` overall), ``suite`` (source, seed, backend, job,
  scene, ``started_utc``, ``git_commit``), then every case;
- ``report.md`` with ``plots/*.png`` (one histogram per metric) and case artifacts.

Each case gets its own seed from ``SeedSequence([suite seed, case index])``: the same suite
seed gives the same parameters and the same results, whatever the number of workers.
"""
from __future__ import annotations

import json
import math
import subprocess
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.jobs import JOBS, check_job_backend
from scenarios.suite import Suite
from scenes.schema import ConfigError

#: backends whose cases may run in parallel processes (each case builds its own world)
SHARED_NOTHING_BACKENDS = ("twin",)


@dataclass(frozen=True)
class CaseContext:
    """What a job receives for one case."""

    suite_name: str
    index: int
    seed: int
    scene_path: str
    backend: str
    scene_overrides: dict[str, Any]
    job_parameters: dict[str, Any]
    artifacts_dir: str
    save_artifacts: bool
    armed: bool = False                  # the run's --arm flag (a robot that really moves also needs safety.armed)
    record_dir: str = ""                 # where each hardware session writes its MCAP recording ("" = none)
    record_image_scale: float = 1.0


def case_hardware(ctx: CaseContext, scene, seed: int | None = None, tag: str = ""):
    """The case's hardware interface (``ctx.backend``, armed as the run asked), recording to
    ``<record_dir>/case<index><tag>.mcap`` when the run records."""
    from hw_bridge.registry import make_hardware

    seed = ctx.seed if seed is None else seed
    recorder = None
    if ctx.record_dir:
        from hw_bridge.recording import McapRecorder, RunMetadata

        meta = RunMetadata.for_run(f"job:{ctx.suite_name}", {"case": ctx.index, "job_parameters": ctx.job_parameters},
                                   ctx.backend, seed, scene, ctx.scene_overrides)
        recorder = McapRecorder(Path(ctx.record_dir) / f"case{ctx.index:03d}{tag}.mcap", meta, ctx.record_image_scale)
    return make_hardware(ctx.backend, scene, seed, armed=ctx.armed, recorder=recorder)


@dataclass
class CaseOutput:
    metrics: dict[str, float]
    artifacts: list[str] = field(default_factory=list)   # paths relative to the output folder
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    index: int
    seed: int
    scene_overrides: dict[str, Any]
    job_parameters: dict[str, Any]
    metrics: dict[str, float]
    artifacts: list[str]
    notes: dict[str, Any]
    error: str | None
    wall_s: float


def make_cases(suite: Suite, n_cases: int, seed: int, out_dir: Path, n_artifact_cases: int = 3,
               backend: str | None = None, armed: bool = False, record: bool = False,
               record_image_scale: float = 1.0) -> list[CaseContext]:
    cases = []
    for i in range(n_cases):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        case_seed = int(rng.integers(2**31))
        scene = {k: d.sample(rng) for k, d in suite.scene_parameters.items()}
        job = dict(JOBS[suite.job].parameters)
        job.update({k: d.sample(rng) for k, d in suite.job_parameters.items()})
        cases.append(CaseContext(suite.name, i, case_seed, str(suite.scene_path), backend or suite.backend, scene, job,
                                 str(out_dir / "artifacts"), i < n_artifact_cases, armed,
                                 str(out_dir / "recordings") if record else "", record_image_scale))
    return cases


def _check_arming(cases: list[CaseContext], backend: str, armed: bool) -> None:
    """A half-armed run (--arm, but a case's scene has safety.armed = false) is refused before any
    case starts (ArmingError)."""
    from hw_bridge.registry import backend_armed
    from scenes.spec import load_scene

    for ctx in cases:
        scene = load_scene(ctx.scene_path, ctx.scene_overrides)
        backend_armed(backend, armed, scene, f"{scene.source} (case {ctx.index})")


def run_case(job_name: str, ctx: CaseContext) -> CaseResult:
    """Run one case; exceptions become a failed case with the traceback, never a crash."""
    t0 = time.perf_counter()
    try:
        out: CaseOutput = JOBS[job_name].load()(ctx)
        metrics = {k: float(v) for k, v in out.metrics.items()}
        return CaseResult(ctx.index, ctx.seed, ctx.scene_overrides, ctx.job_parameters, metrics, out.artifacts,
                          out.notes, None, time.perf_counter() - t0)
    except Exception:  # noqa: BLE001 - a case failure is a result, reported with its traceback
        return CaseResult(ctx.index, ctx.seed, ctx.scene_overrides, ctx.job_parameters, {}, [], {},
                          traceback.format_exc(), time.perf_counter() - t0)


def aggregate(values: list[float], how: str) -> float:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan
    if how == "proportion" and not np.all((v == 0) | (v == 1)):
        raise ValueError(f"aggregate 'proportion' needs 0/1 values, got {sorted(set(v.tolist()) - {0.0, 1.0})[:3]}")
    return float({"mean": np.mean, "median": np.median, "max": np.max, "min": np.min, "proportion": np.mean,
                  "p95": lambda a: np.percentile(a, 95)}[how](v))


def proportion_ci95(values: list[float]) -> tuple[float, float]:
    """Wilson score 95 % confidence interval of the proportion of ones in 0/1 ``values``."""
    from scipy.stats import binomtest

    v = [x for x in values if math.isfinite(x)]
    if not v:
        return (math.nan, math.nan)
    ci = binomtest(int(round(sum(v))), len(v)).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def summarize(suite: Suite, results: list[CaseResult]) -> dict[str, Any]:
    metrics = {}
    for name, spec in suite.metrics.items():
        vals = [r.metrics[name] for r in results if r.error is None and name in r.metrics]
        metrics[name] = {
            "value": aggregate(vals, spec.aggregate), "aggregate": spec.aggregate, "count": len(vals),
            "mean": aggregate(vals, "mean"), "median": aggregate(vals, "median"),
            "min": aggregate(vals, "min"), "max": aggregate(vals, "max"),
            "sd": float(np.std([v for v in vals if math.isfinite(v)], ddof=1)) if sum(map(math.isfinite, vals)) > 1
            else math.nan, "description": spec.description, "paper": spec.paper,
        }
        if spec.aggregate == "proportion":
            metrics[name]["ci95"] = list(proportion_ci95(vals))
    thresholds = {}
    for th in suite.thresholds:
        value = metrics[th.metric]["value"]
        thresholds[th.metric] = {"limit": {k: v for k, v in (("max", th.max), ("min", th.min)) if v is not None},
                                 "value": value, "passed": th.passes(value)}
    failed_cases = [r.index for r in results if r.error is not None]
    return {"suite": suite.name, "cases": len(results), "failed_cases": failed_cases,
            "metrics": metrics, "thresholds": thresholds,
            "passed": not failed_cases and all(t["passed"] for t in thresholds.values())}


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(x):
    """NaN/inf are not JSON; write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def git_commit() -> str | None:
    """The micromill checkout's commit (with ``+dirty`` for uncommitted changes), or None outside a
    git checkout: which code produced a result."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def run_suite(suite: Suite, out_dir: Path, workers: int = 1, n_cases: int | None = None,
              seed: int | None = None, progress: bool = True, backend: str | None = None, armed: bool = False,
              record: bool = False, record_image_scale: float = 1.0) -> dict[str, Any]:
    """Run the suite and write its outputs; returns the summary.

    ``backend`` overrides the suite's (checked against the job's backends first, ConfigError);
    a backend that drives one real robot runs with one worker. ``armed``: the ``--arm`` flag.
    ``record``: one MCAP file per hardware session under ``<out_dir>/recordings``."""
    from tqdm import tqdm

    backend = backend or suite.backend
    check_job_backend(suite.job, backend, suite.source)
    if backend not in SHARED_NOTHING_BACKENDS and workers > 1:
        raise ConfigError(suite.source, [f"--workers={workers}: backend {backend!r} drives one robot or simulator; "
                                         f"use --workers 1"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "artifacts").mkdir(exist_ok=True)
    n_cases = suite.cases if n_cases is None else n_cases
    seed = suite.seed if seed is None else seed
    cases = make_cases(suite, n_cases, seed, out_dir, backend=backend, armed=armed, record=record,
                       record_image_scale=record_image_scale)
    _check_arming(cases, backend, armed)
    results: list[CaseResult] = []
    started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    log = (out_dir / "cases.jsonl").open("w")
    bar = tqdm(total=len(cases), desc=suite.name, unit="case", disable=not progress)

    def record(res: CaseResult) -> None:
        results.append(res)
        log.write(json.dumps(_clean(asdict(res)), default=_json_default) + "\n")
        log.flush()
        bar.update(1)
        if res.error is not None:
            bar.write(f"case {res.index} failed: {res.error.strip().splitlines()[-1]}")

    try:
        if workers <= 1:
            for ctx in cases:
                record(run_case(suite.job, ctx))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(run_case, suite.job, ctx) for ctx in cases]
                for fut in as_completed(futures):
                    record(fut.result())
    finally:
        bar.close()
        log.close()
        results.sort(key=lambda r: r.index)
        summary = summarize(suite, results)
        doc = {"summary": summary, "suite": {"source": suite.source, "seed": seed, "backend": backend, "armed": armed,
                                             "job": suite.job, "scene": str(suite.scene_path),
                                             "started_utc": started_utc, "git_commit": git_commit()},
               "cases": [asdict(r) for r in results]}
        (out_dir / "results.json").write_text(json.dumps(_clean(doc), indent=1, default=_json_default))
        from scenarios.report import write_report
        write_report(suite, summary, results, out_dir)
    return summary
