"""Run a scenario suite, write every result as it arrives, and never lose one.

Output folder (``--out``):
- ``run.json``: the plan, written before any case starts: the suite file (path, SHA-256 and
  text), seed, number of cases, backend, engine, arming, recording, start time, code commit.
  ``--resume`` continues from it; ``micromill report`` rebuilds the outputs from it.
- ``cases.jsonl``: one line per finished case, appended and flushed immediately;
- ``results.json``: ``summary`` (per metric: value by its aggregate, plus stats; per threshold:
  limit, value, passed; ``planned_cases``; ``interrupted`` (null, or why the run stopped early);
  ``passed`` overall, never true for an interrupted or incomplete run), ``suite`` (source, seed,
  backend, engine, job, scene, ``started_utc``, ``git_commit``), then every case;
- ``report.md`` with ``plots/*.png`` (one histogram per metric) and case artifacts.

What can go wrong, and what is kept:
- a case raises: its hardware is stopped with the cause (drill off, holding) and closed
  (``scenarios.cases``), a ``case N STOPPED: <cause>`` line is printed, the case is an errored
  case with its traceback (in ``report.md`` too); the run goes on and exits 1;
- a worker process dies (killed, out of memory, segfault) or a Ray worker is lost: an errored
  case naming the cause; a fresh worker takes the remaining cases;
- Ctrl-C or SIGTERM: the cases finished so far are written, ``results.json`` and the report say
  "interrupted: N of M cases" (never "passed"); the CLI exits 130 / 143;
- the runner itself is killed (SIGKILL, power): ``run.json`` and ``cases.jsonl`` remain;
  ``micromill run SUITE --resume DIR`` redoes only the missing cases and ends with the same
  results as an uninterrupted run; ``micromill report DIR`` rebuilds the outputs as they stand.
A non-empty ``--out`` is refused unless it is resumed or ``--force`` replaces an earlier run.

Counts are bounded: ``--cases`` like the suite file's field (``scenarios.limits``), ``--workers``
by the cases to run and the CPUs this process may use (a larger request warns and uses the cap).
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.cases import CaseContext, CaseResult, make_cases
from scenarios.engines import ENGINES, connect_ray, ray_available, run_local, run_ray, run_serial, usable_cpus
from scenarios.jobs import check_job_backend
from scenarios.limits import MAX_CASES, MAX_WORKERS
from scenarios.progress import Progress
from scenarios.suite import Suite, load_suite, suite_from_dict, with_scene
from scenes.schema import ConfigError

#: backends whose cases may run in parallel processes (each case builds its own world)
SHARED_NOTHING_BACKENDS = ("twin",)

RUN_PLAN, CASE_LOG, RESULTS = "run.json", "cases.jsonl", "results.json"
#: what a run writes into its folder (``--force`` removes these, and only these)
RUN_OUTPUTS = (RUN_PLAN, CASE_LOG, RESULTS, "report.md", "plots", "artifacts", "recordings")


class RunFolderError(ValueError):
    """The output folder cannot be used as asked (not empty, not a run, a different suite, ...)."""


@dataclass(frozen=True)
class RunPlan:
    """What a run was asked to do (``run.json``); a resumed run does exactly this."""

    suite_file: str
    suite_sha256: str
    suite_text: str
    seed: int
    cases: int
    backend: str
    engine: str
    armed: bool
    record: bool
    record_image_scale: float
    started_utc: str
    git_commit: str | None
    #: the scene file that replaced the suite's (``micromill run --scene``); None: the suite's own
    scene: str | None = None

    @staticmethod
    def read(out_dir: Path) -> "RunPlan":
        path = out_dir / RUN_PLAN
        if not path.is_file():
            raise RunFolderError(f"{out_dir}: no {RUN_PLAN} (not a micromill run folder, or one written before "
                                 f"runs recorded their plan)")
        try:
            return RunPlan(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise RunFolderError(f"{path}: not a readable run plan ({type(exc).__name__}: {exc})") from None

    def write(self, out_dir: Path) -> None:
        _write_atomic(out_dir / RUN_PLAN, json.dumps(asdict(self), indent=1))

    def suite(self) -> Suite:
        """The suite as it was run: the file if it is unchanged, else the text kept in the plan."""
        path = Path(self.suite_file)
        if path.is_file() and _sha256(path.read_text()) == self.suite_sha256:
            return load_suite(path, self.scene)
        import tomllib

        source = f"{self.suite_file} (as run, kept in {RUN_PLAN})"
        return suite_from_dict(with_scene(tomllib.loads(self.suite_text), self.scene, source), source)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _suite_text(suite: Suite) -> str:
    """The suite file's text ("" for a suite not read from a file)."""
    path = Path(suite.source)
    return path.read_text() if path.is_file() else ""


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _case_line(res: CaseResult) -> str:
    """One line of ``cases.jsonl``."""
    return json.dumps(_clean(asdict(res)), default=_json_default) + "\n"


def check_out_dir(out_dir: Path, resume: bool, force: bool) -> list[Path]:
    """Refuse a non-empty folder unless resuming; with ``force``, the earlier run's outputs to
    remove once the new run has passed its checks (only a folder holding nothing but a run's
    outputs is cleared: never a user's other files)."""
    if resume and force:
        raise RunFolderError("--resume and --force contradict each other: --resume continues the run in the "
                             "folder, --force replaces it")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"--out {out_dir}: exists and is not a folder")
    if resume:
        if not entries:
            raise RunFolderError(f"--resume {out_dir}: nothing to resume (the folder is empty or missing)")
        return []
    if not entries:
        return []
    others = [e for e in entries if e not in RUN_OUTPUTS and not e.endswith(".tmp")]
    if not force:
        raise RunFolderError(f"--out {out_dir} is not empty ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}): "
                             f"continue that run with --resume {out_dir}, replace it with --force, or choose "
                             f"another --out")
    if others:
        raise RunFolderError(f"--force {out_dir}: the folder holds files a run does not write "
                             f"({', '.join(others[:5])}); it is not cleared. Choose another --out")
    return [out_dir / e for e in entries]


def _remove(paths: list[Path]) -> None:
    for p in paths:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def read_case_log(path: Path) -> tuple[list[CaseResult], list[str]]:
    """The finished cases in ``cases.jsonl`` and problems found: a line cut short by a crash is
    skipped (the case is redone on resume), a repeated case index keeps its first result."""
    results: dict[int, CaseResult] = {}
    problems: list[str] = []
    if not path.is_file():
        return [], problems
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            res = CaseResult(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as exc:
            problems.append(f"{path.name} line {n}: skipped, not a complete case record ({type(exc).__name__})")
            continue
        res.metrics = {k: (math.nan if v is None else float(v)) for k, v in res.metrics.items()}
        if res.index in results:
            problems.append(f"{path.name} line {n}: case {res.index} again; the first result is kept")
            continue
        results[res.index] = res
    return [results[i] for i in sorted(results)], problems


def plan_workers(requested: int | None, n_to_run: int, engine: str, backend: str, source: str) -> tuple[int, str | None]:
    """How many local workers to start, and a warning when fewer than requested: never more than
    the cases to run, the CPUs this process may use, or ``MAX_WORKERS``."""
    requested = 1 if requested is None else requested
    if requested < 1:
        raise ConfigError(source, [f"--workers={requested}: must be >= 1"])
    if backend not in SHARED_NOTHING_BACKENDS and requested > 1:
        raise ConfigError(source, [f"--workers={requested}: backend {backend!r} drives one robot or simulator; "
                                   f"use --workers 1"])
    if engine != "local":
        return requested, None
    cpus = usable_cpus()
    cap = max(min(n_to_run, cpus, MAX_WORKERS), 1)
    if requested <= cap:
        return requested, None
    return cap, (f"--workers {requested}: using {cap} (at most one per case to run ({n_to_run}), per usable CPU "
                 f"({cpus}) and {MAX_WORKERS} in all)")


def _check_arming(cases: list[CaseContext], backend: str, armed: bool) -> None:
    """A half-armed run (--arm, but a case's scene has safety.armed = false) is refused before any
    case starts (ArmingError). A backend that moves no real robot is never half-armed: its cases'
    scenes are not loaded for this (~3 ms each, minutes for a 100,000-case suite)."""
    from hw_bridge.registry import backend_armed, get_backend
    from scenes.spec import load_scene

    if not get_backend(backend).moves_real_robot:
        return
    for ctx in cases:
        scene = load_scene(ctx.scene_path, ctx.scene_overrides)
        backend_armed(backend, armed, scene, f"{scene.source} (case {ctx.index})")


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


def summarize(suite: Suite, results: list[CaseResult], planned: int | None = None,
              interrupted: str | None = None) -> dict[str, Any]:
    """Metrics, thresholds and the verdict over ``results``. ``planned``: the cases the run was to
    have (default: as many as there are results); a run with fewer results, or ``interrupted``
    (why it stopped early), has ``passed`` false whatever its thresholds say."""
    planned = len(results) if planned is None else planned
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
    complete = interrupted is None and len(results) >= planned
    return {"suite": suite.name, "cases": len(results), "planned_cases": planned, "interrupted": interrupted,
            "failed_cases": failed_cases, "metrics": metrics, "thresholds": thresholds,
            "passed": complete and not failed_cases and all(t["passed"] for t in thresholds.values())}


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


def run_suite(suite: Suite, out_dir: Path, workers: int | None = 1, n_cases: int | None = None,
              seed: int | None = None, progress: bool = True, backend: str | None = None, armed: bool = False,
              record: bool = False, record_image_scale: float = 1.0, engine: str = "local",
              address: str | None = None, resume: bool = False, force: bool = False,
              scene: str | None = None) -> dict[str, Any]:
    """Run the suite (or, with ``resume``, the cases the run in ``out_dir`` has not finished) and
    write its outputs; returns the summary.

    ``backend`` overrides the suite's (checked against the job's backends first, ConfigError);
    a backend that drives one real robot runs with one worker. ``armed``: the ``--arm`` flag.
    ``record``: one MCAP file per hardware session under ``<out_dir>/recordings``. ``engine``:
    "local" (this machine's processes) or "ray" (a Ray cluster at ``address``; ``workers`` then
    bounds the tasks in flight, default twice the cluster's CPUs). SIGINT / SIGTERM during the
    run end it early with everything finished written (``summary["interrupted"]``). ``scene``: the
    ``--scene`` the suite was loaded with (``load_suite(path, scene)``), kept in the plan so that
    a resumed run uses it again."""
    out_dir = Path(out_dir)
    if engine not in ENGINES:
        raise ConfigError(suite.source, [f"--engine={engine!r}: allowed: {', '.join(ENGINES)}"])
    if address is not None and engine != "ray":
        raise ConfigError(suite.source, [f"--address={address!r} is for --engine ray (the engine is {engine!r})"])
    earlier_run = check_out_dir(out_dir, resume, force)
    if resume:
        plan = _resumed_plan(suite, out_dir, n_cases, seed, backend, armed, record, record_image_scale, engine,
                             scene)
    else:
        backend = backend or suite.backend
        text = _suite_text(suite)
        plan = RunPlan(suite.source, _sha256(text), text, suite.seed if seed is None else seed, suite.cases if n_cases is None else n_cases, backend,
                       engine, armed, record, record_image_scale,
                       datetime.now(timezone.utc).isoformat(timespec="seconds"), git_commit(), scene)
    if not 1 <= plan.cases <= MAX_CASES:
        raise ConfigError(suite.source, [f"cases={plan.cases}: allowed 1..{MAX_CASES}"])
    check_job_backend(suite.job, plan.backend, suite.source)
    if engine == "ray":
        _check_ray_run(suite, plan)
    cases = make_cases(suite, plan.cases, plan.seed, out_dir, backend=plan.backend, armed=plan.armed,
                       record=plan.record, record_image_scale=plan.record_image_scale)
    done, problems = read_case_log(out_dir / CASE_LOG) if resume else ([], [])
    finished = {r.index for r in done}
    todo = [c for c in cases if c.index not in finished]
    n_workers, warning = plan_workers(workers, len(todo), engine, plan.backend, suite.source)
    _check_arming(todo, plan.backend, plan.armed)
    if engine == "ray":
        connect_ray(address)             # before anything is written: a cluster that cannot be joined leaves no run

    _remove(earlier_run)                 # --force, and only now that the new run passed its checks
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "artifacts").mkdir(exist_ok=True)
    plan.write(out_dir)
    _rewrite_case_log(out_dir / CASE_LOG, done)        # drops a line cut short by a crash before appending
    bar = Progress(suite.name, plan.cases, done=len(done), enabled=progress)
    for message in problems + ([warning] if warning else []):
        print(f"micromill: {message}", file=sys.stderr)
    results = list(done)
    log = (out_dir / CASE_LOG).open("a")

    def on_result(res: CaseResult) -> None:
        results.append(res)
        log.write(_case_line(res))
        log.flush()
        bar.update(res.error is not None)
        if res.error is not None:         # the cause, even without a progress bar; the traceback is in the report
            message = f"case {res.index} STOPPED: {res.error.strip().splitlines()[-1]}"
            if bar.enabled:
                bar.write(message)
            else:
                print(message, file=sys.stderr, flush=True)

    interrupted: str | None = None
    with _interrupts_raise() as signals:
        try:
            if engine == "ray":
                run_ray(suite.job, todo, on_result, out_dir, max_in_flight=workers)
            elif plan.backend in SHARED_NOTHING_BACKENDS:     # worker processes, even one: a crash costs one case
                run_local(suite.job, todo, on_result, n_workers)
            else:                                           # one robot: in this process
                run_serial(suite.job, todo, on_result)
        except KeyboardInterrupt:
            interrupted = signal.Signals(signals.received or signal.SIGINT).name
        finally:
            bar.close()
            log.close()
            with _interrupts_ignored():
                summary = write_outputs(out_dir, suite, plan, results, interrupted)
    return summary


def _resumed_plan(suite: Suite, out_dir: Path, n_cases, seed, backend, armed, record, record_image_scale,
                  engine, scene) -> RunPlan:
    """The plan in ``out_dir``, checked against the suite and options given now: a resumed run
    must be the same run (options left out take the plan's values)."""
    plan = RunPlan.read(out_dir)
    problems = []
    if _sha256(_suite_text(suite)) != plan.suite_sha256:
        problems.append(f"the suite {suite.source} is not the one the run in {out_dir} started with "
                        f"({plan.suite_file}, SHA-256 {plan.suite_sha256[:12]}...): a resumed run must be the same run")
    for name, given, planned in (("--cases", n_cases, plan.cases), ("--seed", seed, plan.seed),
                                 ("--backend", backend, plan.backend), ("--scene", scene, plan.scene)):
        if given is not None and given != planned:
            problems.append(f"{name} {given}: the run in {out_dir} was started with {planned}")
    if scene is None and plan.scene is not None:
        problems.append(f"the run in {out_dir} was started with --scene {plan.scene}: give it again")
    for name, given, planned in (("--arm", armed, plan.armed), ("--record", record, plan.record)):
        if given and not planned:
            problems.append(f"{name}: the run in {out_dir} was started without it")
    if problems:
        raise RunFolderError("cannot resume: " + "; ".join(problems))
    return RunPlan(**{**asdict(plan), "engine": engine})


def _check_ray_run(suite: Suite, plan: RunPlan) -> None:
    ok, why = ray_available()
    problems = [] if ok else [f"--engine ray: {why}"]
    if plan.backend not in SHARED_NOTHING_BACKENDS:
        problems.append(f"--engine ray: backend {plan.backend!r} drives one robot or simulator; use the local engine")
    if plan.record:
        problems.append("--engine ray with --record: recordings are written on the machine that runs the case; "
                        "record on the local engine")
    if problems:
        raise ConfigError(suite.source, problems)


def _rewrite_case_log(path: Path, results: list[CaseResult]) -> None:
    _write_atomic(path, "".join(_case_line(r) for r in results))


class _interrupts_raise:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` in this thread while the run is on, and
    ``received`` says which (only the main thread can handle signals; elsewhere nothing changes).
    KeyboardInterrupt, because it is what native waits (Ray's) let through cleanly, and a job's
    ``except Exception`` cannot swallow it."""

    received: int | None = None

    def __enter__(self):
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                self.received = signum
                raise KeyboardInterrupt(signal.Signals(signum).name)
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


class _interrupts_ignored(_interrupts_raise):
    """A second Ctrl-C while the outputs are written would leave them half written: held off."""

    def __enter__(self):
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, signal.SIG_IGN)
        return self


def write_outputs(out_dir: Path, suite: Suite, plan: RunPlan, results: list[CaseResult],
                  interrupted: str | None) -> dict[str, Any]:
    """``results.json`` and the report from the finished cases; returns the summary."""
    from scenarios.report import write_report

    results = sorted(results, key=lambda r: r.index)
    summary = summarize(suite, results, plan.cases, interrupted)
    doc = {"summary": summary, "suite": {"source": suite.source, "seed": plan.seed, "backend": plan.backend,
                                         "engine": plan.engine, "armed": plan.armed, "job": suite.job,
                                         "scene": str(suite.scene_path), "started_utc": plan.started_utc,
                                         "git_commit": plan.git_commit},
           "cases": [asdict(r) for r in results]}
    _write_atomic(out_dir / RESULTS, json.dumps(_clean(doc), indent=1, default=_json_default))
    write_report(suite, summary, results, out_dir)
    return summary


def rebuild_outputs(out_dir: Path) -> dict[str, Any]:
    """``micromill report DIR``: ``results.json`` and the report again from ``run.json`` and
    ``cases.jsonl`` (after a crash, or to redraw them); a run with missing cases is reported as
    incomplete."""
    out_dir = Path(out_dir)
    plan = RunPlan.read(out_dir)
    results, problems = read_case_log(out_dir / CASE_LOG)
    for message in problems:
        print(f"micromill: {message}", file=sys.stderr)
    previous = None
    if (out_dir / RESULTS).is_file():
        try:
            previous = json.loads((out_dir / RESULTS).read_text())["summary"].get("interrupted")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            previous = None
    why = previous or ("the runner stopped before the end, without a record of why (killed?)"
                       if len(results) < plan.cases else None)
    return write_outputs(out_dir, plan.suite(), plan, results, why)
