"""``micromill falsify``: search a suite's parameter space for a case that violates a property of
its job's metrics, shrink the first counterexample to a minimal one, and keep it as a scenario.

    micromill falsify SUITE.toml --property "breaches == 0 and max_bridge_um <= 20" --budget 200
                      [--time-budget 30m] [--shrink-budget 40] [--out DIR] [--seed N] [--workers N]
                      [--engine local|ray] [--address A] [--no-progress]

The space: every ``[parameters]`` distribution of the suite with more than one value (``uniform``,
``integers``, ``choices``); a parameter the suite fixes (one choice) stays fixed. The property
(``scenarios.properties``) is parsed against the job's metrics before any case runs: bad syntax
or an unknown metric is refused (``PropertyError``, exit 2). Each evaluated case is a one-case
scenario: its parameters and a suite seed (which fixes the case's noise), run like ``micromill
run`` runs a case (``scenarios.cases.run_case``) on a local process pool kept for the whole
search (the milling job's per-rig calibration is then computed once per worker), in this process
for a backend that drives one robot, or as Ray tasks. A case that raises is a violation with
margin -inf (a property holds only on measured values).

Search (a kept optimiser rather than hypothesis: hypothesis runs one example at a time, and a
milling case costs seconds, so the cases of a round run in parallel): rounds of ``ROUND`` cases,
independent of ``--workers`` so that ``--seed`` alone fixes every case. Round 0 is the default
scene (every searched parameter at its default: the scene file's value, the job's default) and
random draws from the suite's distributions; each later round mixes draws with mutations of the
closest cases so far (lowest margin, ties broken by the sum of the top-level ``and`` terms'
margins, ``conjuncts``; Gaussian steps of ``STEP`` of a range, a new draw for
choices and seeds), so the search climbs towards a violation where the margin slopes and still
explores where it is flat. It stops at the first round holding a violation (the earliest case in
order is the counterexample), at ``--budget`` cases or at ``--time-budget``.

Shrinking, every step re-run, never assumed (``--shrink-budget`` cases): (1) fewest parameters
away from the default: each non-default parameter set back to its default alone (one round, in
parallel), then all those that still violated together; repeated until none can go back;
(2) smallest magnitudes: each remaining numeric parameter moved half way towards its default
(``HALVINGS`` rounds), the moves that still violate kept. Then the counterexample is written as
a suite with ``cases = 1``, its seed, every non-default parameter as ``{ choices = [value] }`` and
a ``[regression]`` table (``counterexample.toml``), and replayed with ``micromill run`` into
``replay/`` (its ``report.md``, artifacts, and a check that the replay gives the same metrics).

Outputs in ``--out`` (default ``runs/falsify_<suite name>``; must be empty or new):
``evaluations.jsonl`` (every case as it finishes), ``falsify.json`` (the outcome),
``search.png`` (margin per evaluated case and the shrink path), ``counterexample.toml`` and
``replay/``. Ctrl-C / SIGTERM stop the search; what was found so far is written (a
counterexample not yet fully shrunk too). Exit codes (``scenarios.cli``): 0 none found within the
budget, 1 a counterexample found, 2 bad input, 130 / 143 interrupted.
"""
from __future__ import annotations

import json
import math
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.cases import CaseContext, CaseResult, errored_case, run_case
from scenarios.jobs import JOBS
from scenarios.limits import MAX_FALSIFY_CASES, MAX_FALSIFY_SECONDS, MAX_WORKERS
from scenarios.progress import Progress
from scenarios.properties import Property, parse_property
from scenarios.suite import Distribution, Suite
from scenes.schema import ConfigError, load_toml
from scenes.spec import SCENES_DIR

#: cases per search round (fixed: the cases do not depend on --workers)
ROUND = 4
#: a mutation's Gaussian step, as a fraction of the parameter's range
STEP = 0.15
#: probability that a search case mutates a close case rather than drawing a new one (after round 0)
MUTATE = 0.5
#: magnitude-shrinking rounds (each moves every remaining parameter half way to its default)
HALVINGS = 4
#: a replay slower than this (s) is not "quick" (CI replays the quick regressions)
QUICK_S = 60.0


class FalsifyInputError(ValueError):
    """Falsify cannot start as asked (bad budget, output folder in use, suite without a space)."""


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``group`` "scene" (a dotted scene field) or "job"."""

    group: str
    key: str
    dist: Distribution
    default: Any

    @property
    def name(self) -> str:
        return self.key if self.group == "scene" else f"job.{self.key}"


@dataclass
class Evaluation:
    """One evaluated case."""

    n: int                          # order of evaluation (the case index)
    phase: str                      # "search" | "shrink"
    seed: int                       # the one-case scenario's suite seed
    values: dict[str, Any]          # Param.name -> value, the non-default searched parameters only
    holds: bool
    margin: float
    metrics: dict[str, float]
    error: str | None
    wall_s: float
    #: the secondary guide: the sum of the top-level conjuncts' margins (``conjuncts``)
    slack: float = 0.0

    @property
    def rank(self) -> tuple[float, float]:
        """Lower is closer to (or further into) a violation: the margin, then the slack."""
        return (self.margin, self.slack)


@dataclass
class Outcome:
    """What falsify found: ``counterexample`` (the shrunk one) or None; every evaluation."""

    evaluations: list[Evaluation] = field(default_factory=list)
    first: Evaluation | None = None
    counterexample: Evaluation | None = None
    shrink_path: list[int] = field(default_factory=list)    # evaluation numbers of the accepted steps
    stopped_by: str = ""                                    # "violation" | "budget" | "time budget" | signal name


# ---- the space -------------------------------------------------------------------------------

def _lookup(raw: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return None
        raw = raw[part]
    return raw


def space(suite: Suite) -> tuple[list[Param], dict[str, Any], dict[str, Any]]:
    """(searched parameters, fixed scene overrides, fixed job parameters) of ``suite``: a
    distribution with one value is fixed; every other is searched, its default the scene file's
    value (else the schema's default) or the job's default."""
    from scenarios.testing.strategies import scene_default

    raw_scene = load_toml(suite.scene_path)
    params, fixed_scene, fixed_job = [], {}, {}
    for group, dists in (("scene", suite.scene_parameters), ("job", suite.job_parameters)):
        for key, d in dists.items():
            if d.kind == "choices" and len(d.args) == 1 or d.kind != "choices" and d.args[0] == d.args[1]:
                (fixed_scene if group == "scene" else fixed_job)[key] = d.args[0]
                continue
            if group == "scene":
                default = _lookup(raw_scene, key)
                default = scene_default(key) if default is None else default
            else:
                default = JOBS[suite.job].parameters[key]
            params.append(Param(group, key, d, default))
    return params, fixed_scene, fixed_job


def _mutate(p: Param, value: Any, rng: np.random.Generator) -> Any:
    """A step from ``value``: Gaussian within a range (integers rounded; a seed-like integer range
    wider than 1000 values is drawn anew), a new draw for choices."""
    d = p.dist
    if d.kind == "choices":
        return d.sample(rng)
    lo, hi = d.args
    if d.kind == "integers":
        if hi - lo > 1000:
            return d.sample(rng)
        return int(np.clip(round(value + rng.normal(0.0, STEP * (hi - lo))), lo, hi))
    return float(np.clip(value + rng.normal(0.0, STEP * (hi - lo)), lo, hi))


def conjuncts(prop: Property, metric_names: Any) -> list[Property]:
    """The top-level ``and`` terms of ``prop`` as properties of their own (``[prop]`` when it is no
    ``and``). An ``and`` margin is the minimum of its terms', so a term at its boundary (``breaches
    == 0`` has margin 0 whenever it holds) hides how close the others come; the sum of the terms'
    margins breaks such ties and keeps the search guided."""
    import ast

    body = ast.parse(prop.text.strip(), mode="eval").body
    if not (isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And)):
        return [prop]
    return [parse_property(ast.unparse(v), metric_names) for v in body.values]


# ---- running cases ---------------------------------------------------------------------------

def case_seed(suite_seed: int) -> int:
    """The seed ``make_cases`` gives case 0 of a suite with seed ``suite_seed`` (the written
    one-case scenario then replays the very case evaluated here)."""
    return int(np.random.default_rng(np.random.SeedSequence([suite_seed, 0])).integers(2**31))


class Evaluator:
    """Runs rounds of cases on one engine for the whole falsify run."""

    def __init__(self, suite: Suite, engine: str, workers: int, out_dir: Path, address: str | None):
        from scenarios.runner import SHARED_NOTHING_BACKENDS

        self.suite, self.engine, self.workers, self.out_dir = suite, engine, workers, out_dir
        self._pool = None
        self._serial = suite.backend not in SHARED_NOTHING_BACKENDS
        if engine == "ray":
            from scenarios.engines import connect_ray

            connect_ray(address)

    @contextmanager
    def running(self) -> Iterator["Evaluator"]:
        """The local pool, started once (workers forked with one core per case) and stopped on exit."""
        if self.engine != "local" or self._serial:
            yield self
            return
        from pebble import ProcessPool

        from scenarios.engines import _worker_init, one_core_per_case

        with one_core_per_case():
            self._pool = ProcessPool(max_workers=self.workers, initializer=_worker_init)
        try:
            yield self
        finally:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def run(self, cases: list[CaseContext]) -> list[CaseResult]:
        """The results of ``cases``, in their order (a dead worker: an errored case)."""
        if not cases:
            return []
        job = self.suite.job
        if self.engine == "ray":
            from scenarios.engines import run_ray

            got: dict[int, CaseResult] = {}
            run_ray(job, cases, lambda r: got.__setitem__(r.index, r), self.out_dir, max_in_flight=self.workers)
            return [got[c.index] for c in cases]
        if self._pool is None:
            return [run_case(job, c) for c in cases]
        from pebble import ProcessExpired

        from scenarios.engines import worker_death_cause

        futures = [self._pool.schedule(run_case, args=(job, c)) for c in cases]
        results = []
        try:
            for fut, ctx in zip(futures, cases):
                try:
                    results.append(fut.result())
                except ProcessExpired as exc:
                    results.append(errored_case(ctx, f"{worker_death_cause(exc.exitcode)} while running case "
                                                     f"{ctx.index}"))
                except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back
                    results.append(errored_case(ctx, f"the worker could not return the case: "
                                                     f"{type(exc).__name__}: {exc}"))
        except KeyboardInterrupt:
            for fut in futures:
                fut.cancel()
            raise
        return results


# ---- the search --------------------------------------------------------------------------------

class Falsifier:
    """Search, shrink and record; ``run`` returns the ``Outcome``."""

    def __init__(self, suite: Suite, prop: Property, out_dir: Path, budget: int, shrink_budget: int,
                 time_budget_s: float | None, seed: int, evaluator: Evaluator, progress: bool = True):
        self.suite, self.prop, self.out_dir = suite, prop, out_dir
        self.budget, self.shrink_budget, self.time_budget_s, self.seed = budget, shrink_budget, time_budget_s, seed
        self.evaluator = evaluator
        self.params, self.fixed_scene, self.fixed_job = space(suite)
        self.terms = conjuncts(prop, JOBS[suite.job].metrics)
        self.by_name = {p.name: p for p in self.params}
        self.outcome = Outcome()
        self.progress = Progress(f"falsify {suite.name}", budget, enabled=progress)
        self._t0 = time.monotonic()
        self._log = None
        self._best: Evaluation | None = None

    # -- one case
    def _context(self, n: int, values: dict[str, Any], suite_seed: int) -> CaseContext | None:
        """The case for the non-default ``values``, or None when the scene or job refuses them."""
        from scenes.spec import load_scene

        scene = dict(self.fixed_scene)
        job = {**JOBS[self.suite.job].parameters, **self.fixed_job}
        for name, v in values.items():
            p = self.by_name[name]
            (scene if p.group == "scene" else job)[p.key] = v
        try:
            load_scene(self.suite.scene_path, scene)
            JOBS[self.suite.job].params_model.model_validate(job)
        except (ConfigError, ValueError):
            return None
        return CaseContext(self.suite.name, n, case_seed(suite_seed), str(self.suite.scene_path), self.suite.backend,
                           scene, job, str(self.out_dir / "artifacts"), False)

    def _non_default(self, full: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in full.items() if v != self.by_name[k].default}

    def _evaluate(self, batch: list[tuple[dict[str, Any], int]], phase: str) -> list[Evaluation | None]:
        """Run ``batch`` (non-default values, suite seed); None for a candidate the schema refuses."""
        ctxs, slots = [], []
        for values, s in batch:
            ctx = self._context(len(self.outcome.evaluations) + len(ctxs), values, s)
            slots.append(ctx)
            if ctx is not None:
                ctxs.append(ctx)
        results = {r.index: r for r in self.evaluator.run(ctxs)}
        out: list[Evaluation | None] = []
        for (values, s), ctx in zip(batch, slots):
            if ctx is None:
                out.append(None)
                continue
            r = results[ctx.index]
            if r.error is not None:
                holds, margin, slack = False, -math.inf, -math.inf
            else:
                v = self.prop.evaluate(r.metrics)
                holds, margin = v.holds, v.margin
                slack = float(sum(t.evaluate(r.metrics).margin for t in self.terms))
            ev = Evaluation(ctx.index, phase, s, dict(values), holds, margin, r.metrics,
                            r.error.strip().splitlines()[-1] if r.error else None, r.wall_s, slack)
            self.outcome.evaluations.append(ev)
            self._record(ev)
            out.append(ev)
        return out

    def _record(self, ev: Evaluation) -> None:
        from scenarios.runner import _clean, _json_default

        self._log.write(json.dumps(_clean(asdict(ev)), default=_json_default) + "\n")
        self._log.flush()
        if ev.phase == "search":
            self.progress.update(ev.error is not None)
        if self._best is None or ev.rank < self._best.rank:
            self._best = ev
            text = f"closest so far: margin {ev.margin:.4g}, slack {ev.slack:.4g} (case {ev.n}{', errored' if ev.error else ''}: " \
                   f"{_describe(ev.values)})"
            self.progress.status(f"margin {ev.margin:.3g}")
            self.progress.write(text)

    def _out_of_time(self) -> bool:
        return self.time_budget_s is not None and time.monotonic() - self._t0 >= self.time_budget_s

    # -- search
    def _round(self, rng: np.random.Generator, k: int, first: bool) -> list[tuple[dict[str, Any], int]]:
        batch = []
        if first:
            batch.append(({}, self.suite.seed))               # the default scene, the suite's seed
        closest = sorted(self.outcome.evaluations, key=lambda e: e.rank)[:3]
        while len(batch) < k:
            if closest and rng.random() < MUTATE:
                parent = closest[int(rng.integers(len(closest)))]
                full = {p.name: parent.values.get(p.name, p.default) for p in self.params}
                which = [p for p in self.params if rng.random() < max(1.0 / len(self.params), 0.3)] or \
                        [self.params[int(rng.integers(len(self.params)))]]
                for p in which:
                    full[p.name] = _mutate(p, full[p.name], rng)
                batch.append((self._non_default(full), parent.seed))
            else:
                full = {p.name: p.dist.sample(rng) for p in self.params}
                batch.append((self._non_default(full), int(rng.integers(2**31))))
        return batch

    def search(self) -> Evaluation | None:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 14]))
        first = True
        while True:
            spent = sum(e.phase == "search" for e in self.outcome.evaluations)
            if spent >= self.budget:
                self.outcome.stopped_by = "budget"
                return None
            if self._out_of_time():
                self.outcome.stopped_by = "time budget"
                return None
            evs = [e for e in self._evaluate(self._round(rng, min(ROUND, self.budget - spent), first), "search")
                   if e is not None]
            first = False
            violated = [e for e in evs if not e.holds]
            if violated:
                self.outcome.stopped_by = "violation"
                return violated[0]

    # -- shrinking
    def _try(self, candidates: list[dict[str, Any]], seed: int) -> list[Evaluation | None]:
        room = self.shrink_budget - sum(e.phase == "shrink" for e in self.outcome.evaluations)
        if room <= 0 or self._out_of_time():
            return []
        return self._evaluate([(c, seed) for c in candidates[:room]], "shrink")

    def _accept(self, ev: Evaluation) -> None:
        self.outcome.counterexample = ev
        self.outcome.shrink_path.append(ev.n)

    def shrink(self, found: Evaluation) -> Evaluation:
        """Fewest non-default parameters, then smallest magnitudes; every accepted step was run."""
        self.outcome.first = found
        self.outcome.shrink_path = [found.n]
        self.outcome.counterexample = found
        best = found
        while best.values:                                   # (1) fewest parameters away from the default
            names = list(best.values)
            evs = self._try([{k: v for k, v in best.values.items() if k != name} for name in names], best.seed)
            still = [name for name, ev in zip(names, evs) if ev is not None and not ev.holds]
            if not still:
                break
            first = next(ev for name, ev in zip(names, evs) if name == still[0])
            if len(still) > 1:
                together = self._try([{k: v for k, v in best.values.items() if k not in still}], best.seed)
                if together and together[0] is not None and not together[0].holds:
                    first = together[0]
            best = first
            self._accept(best)
        for _ in range(HALVINGS):                             # (2) smallest magnitudes towards the default
            moves = {}
            for name, v in best.values.items():
                p = self.by_name[name]
                if p.dist.kind == "choices" or isinstance(v, bool):
                    continue
                mid = (v + p.default) / 2
                mid = int(round(mid)) if p.dist.kind == "integers" else float(mid)
                if mid != v and mid != p.default:
                    moves[name] = mid
            if not moves:
                break
            names = list(moves)
            evs = self._try([{**best.values, name: moves[name]} for name in names], best.seed)
            ok = [(name, ev) for name, ev in zip(names, evs) if ev is not None and not ev.holds]
            if not ok:                               # nothing moves closer (or out of shrink budget or time)
                break
            step = ok[0][1]
            if len(ok) > 1:
                together = self._try([{**best.values, **{name: moves[name] for name, _ in ok}}], best.seed)
                if together and together[0] is not None and not together[0].holds:
                    step = together[0]
            best = step
            self._accept(best)
        return best

    def run(self) -> Outcome:
        """Search, then shrink a counterexample; Ctrl-C / SIGTERM stop it with what was found kept."""
        from scenarios.runner import _interrupts_raise

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.out_dir / "evaluations.jsonl", "a")
        with _interrupts_raise() as signals, self.evaluator.running():
            try:
                found = self.search()
                self.progress.close()
                if found is not None:
                    self.progress.write(f"counterexample: case {found.n}, margin {found.margin:.4g}: "
                                        f"{_describe(found.values)}; shrinking")
                    self.shrink(found)
            except KeyboardInterrupt:
                self.outcome.stopped_by = signal.Signals(signals.received or signal.SIGINT).name
            finally:
                self.progress.close()
                self._log.close()
        return self.outcome


def _describe(values: dict[str, Any]) -> str:
    if not values:
        return "the default scene"
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in values.items())


# ---- writing the counterexample ----------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(f"cannot write {v!r} ({type(v).__name__}) to TOML")


def controller_version() -> str:
    """``micromill <version> (git <commit>)``: the package version and, in a checkout, its commit."""
    from importlib.metadata import PackageNotFoundError, version

    from scenarios.runner import git_commit

    try:
        v = version("micromill")
    except PackageNotFoundError:
        v = "unknown"
    commit = git_commit()
    return f"micromill {v}" + (f" (git {commit[:7]}{'+dirty' if commit.endswith('+dirty') else ''})"
                               if commit else "")


def scenario_text(suite: Suite, prop: Property, ev: Evaluation, fixed_scene: dict[str, Any],
                  fixed_job: dict[str, Any], by_name: dict[str, Param], found_by: str, quick: bool) -> str:
    """The counterexample as a one-case suite with a ``[regression]`` table."""
    scene_path = Path(suite.scene_path).resolve()
    scene = scene_path.stem if scene_path.parent == SCENES_DIR.resolve() else str(scene_path)
    scene_vals = dict(fixed_scene)
    job_vals = dict(fixed_job)
    for name, v in ev.values.items():
        p = by_name[name]
        (scene_vals if p.group == "scene" else job_vals)[p.key] = v
    lines = [f"# Counterexample to {prop.text!r}, found by micromill falsify in {suite.source}.",
             "# Replay: micromill run <this file>", "[suite]",
             f"name = {_toml_value(suite.name + '_counterexample')}",
             f"description = {_toml_value(f'Counterexample to {prop.text} (from {suite.name}): ' + _describe(ev.values))}",
             f"job = {_toml_value(suite.job)}", f"scene = {_toml_value(scene)}",
             f"backend = {_toml_value(suite.backend)}", f"seed = {ev.seed}", "cases = 1", ""]
    for group, vals in (("scene", scene_vals), ("job", job_vals)):
        if vals:
            lines.append(f"[parameters.{group}]")
            lines += [f"{json.dumps(k)} = {{ choices = [{_toml_value(v)}] }}" for k, v in vals.items()]
            lines.append("")
    metrics = {name: {"aggregate": m.aggregate, "description": m.description, **({"paper": m.paper} if m.paper else {})}
               for name, m in suite.metrics.items()}
    for m in prop.metrics:
        metrics.setdefault(m, {"aggregate": "max", "description": "read by the property"})
    for name, table in metrics.items():
        lines.append(f"[metrics.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    lines += ["[regression]", f"property = {_toml_value(prop.text)}", f"found = {_toml_value(date.today().isoformat())}",
              f"controller_version = {_toml_value(controller_version())}", f"found_by = {_toml_value(found_by)}",
              f"margin = {_toml_value(float(ev.margin))}", f"quick = {_toml_value(quick)}", ""]
    return "\n".join(lines)


def search_figure(outcome: Outcome, path: Path, prop: Property) -> None:
    """Margin (and slack) per evaluated case, and the shrink path (margin and non-default parameters)."""
    from scenarios.report import plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    evs = outcome.evaluations
    finite = [e.margin for e in evs if math.isfinite(e.margin)]
    floor = (min(finite) if finite else 0.0) - 0.1 * (abs(min(finite)) if finite else 1.0) - 0.1

    def shown(e: Evaluation) -> float:
        return e.margin if math.isfinite(e.margin) else floor

    for phase, colour in (("search", "tab:blue"), ("shrink", "tab:grey")):
        xs = [e.n for e in evs if e.phase == phase]
        ax.scatter(xs, [shown(e) for e in evs if e.phase == phase], s=14, color=colour, label=phase)
    bad = [e for e in evs if not e.holds]
    ax.scatter([e.n for e in bad], [shown(e) for e in bad], s=40, facecolors="none", edgecolors="red",
               label="violates")
    ax.axhline(0.0, color="red", linewidth=0.8, linestyle="--")
    if any(e.slack != e.margin for e in evs):      # the tie-breaker, where the margin alone is flat
        axs = ax.twinx()
        ok = [e for e in evs if math.isfinite(e.slack)]
        axs.scatter([e.n for e in ok], [e.slack for e in ok], s=12, marker="x", color="tab:orange")
        axs.set_ylabel("slack: sum of the and-terms' margins (x)", color="tab:orange")
    ax.set(xlabel="evaluated case", ylabel="margin (< 0: violated; errored: bottom)",
           title=f"search: {prop.text}"[:90])
    ax.legend(fontsize=7)
    by_n = {e.n: e for e in evs}
    path_evs = [by_n[n] for n in outcome.shrink_path if n in by_n]
    if path_evs:
        ax2.plot(range(len(path_evs)), [shown(e) for e in path_evs], "o-", color="tab:red", label="margin")
        ax2.set(xlabel="shrink step (each re-run)", ylabel="margin")
        ax3 = ax2.twinx()
        ax3.plot(range(len(path_evs)), [len(e.values) for e in path_evs], "s--", color="tab:green",
                 label="non-default parameters")
        ax3.set_ylabel("parameters away from the default")
        ax2.set_title("shrink path")
    else:
        ax2.text(0.5, 0.5, "no counterexample", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the command ---------------------------------------------------------------------------------

def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` -> seconds, in (0, MAX_FALSIFY_SECONDS] (ValueError otherwise)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    t = text.strip().lower()
    scale = units.get(t[-1:], None)
    number = t[:-1] if scale is not None else t
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        raise ValueError(f"must be a duration such as 90s, 30m or 2h, got {text[:40]!r}") from None
    if not (0 < value <= MAX_FALSIFY_SECONDS):
        raise ValueError(f"must be in (0 s, {MAX_FALSIFY_SECONDS // 86400} days], got {text[:40]}")
    return value


def check_counts(budget: int, shrink_budget: int, workers: int) -> None:
    for name, v, hi in (("--budget", budget, MAX_FALSIFY_CASES), ("--shrink-budget", shrink_budget, MAX_FALSIFY_CASES),
                        ("--workers", workers, MAX_WORKERS)):
        if not 1 <= v <= hi:
            raise FalsifyInputError(f"{name}={v}: must be an integer in [1, {hi}]")


def falsify(suite: Suite, property_text: str, out_dir: Path, budget: int = 200, time_budget_s: float | None = None,
            shrink_budget: int = 40, seed: int = 0, workers: int = 1, engine: str = "local",
            address: str | None = None, progress: bool = True, found_by: str | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Search ``suite`` for a violation of ``property_text``, shrink and write it (module docstring);
    returns ``falsify.json``'s content. ``found_by`` (the command, for the ``[regression]`` table)
    defaults to the equivalent ``micromill falsify`` command line. Bad input (``PropertyError``,
    ``FalsifyInputError``, ``ConfigError``) is raised before any case runs."""
    if not found_by:
        found_by = found_by_command(str(suite.source), property_text, budget, seed,
                                    None if time_budget_s is None else f"{time_budget_s:g}s")
    from scenarios.runner import plan_workers

    prop = parse_property(property_text, JOBS[suite.job].metrics)
    check_counts(budget, shrink_budget, workers)
    params, _, _ = space(suite)
    if not params:
        raise FalsifyInputError(f"{suite.source}: the suite fixes every parameter (each [parameters] entry has one "
                                f"value): there is no space to search")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FalsifyInputError(f"--out {out_dir}: exists and is not an empty folder; choose another --out")
    if engine == "local":
        workers, warning = plan_workers(workers, max(budget, ROUND), engine, suite.backend, suite.source)
        if warning:
            log(f"micromill: {warning}")
    evaluator = Evaluator(suite, engine, workers, out_dir, address)
    f = Falsifier(suite, prop, out_dir, budget, shrink_budget, time_budget_s, seed, evaluator, progress)
    outcome = f.run()
    search_figure(outcome, out_dir / "search.png", prop)
    doc: dict[str, Any] = {
        "suite": suite.source, "property": prop.text, "seed": seed, "budget": budget, "shrink_budget": shrink_budget,
        "time_budget_s": time_budget_s, "stopped_by": outcome.stopped_by,
        "searched_cases": sum(e.phase == "search" for e in outcome.evaluations),
        "shrink_cases": sum(e.phase == "shrink" for e in outcome.evaluations),
        "closest": asdict(min(outcome.evaluations, key=lambda e: e.rank)) if outcome.evaluations else None,
        "first": asdict(outcome.first) if outcome.first else None,
        "counterexample": asdict(outcome.counterexample) if outcome.counterexample else None,
        "shrink_path": outcome.shrink_path, "scenario": None, "replay": None,
    }
    ce = outcome.counterexample
    if ce is not None:
        doc["scenario"] = str(out_dir / "counterexample.toml")
        text = scenario_text(suite, prop, ce, f.fixed_scene, f.fixed_job, f.by_name, found_by, quick=False)
        (out_dir / "counterexample.toml").write_text(text)
        if outcome.stopped_by == "violation":           # not after an interrupt: stop means stop
            doc["replay"] = _replay(out_dir, prop, ce)
            quick = doc["replay"]["wall_s"] is not None and doc["replay"]["wall_s"] < QUICK_S
            text = scenario_text(suite, prop, ce, f.fixed_scene, f.fixed_job, f.by_name, found_by, quick=quick)
            (out_dir / "counterexample.toml").write_text(text)
    from scenarios.runner import _clean, _json_default

    (out_dir / "falsify.json").write_text(json.dumps(_clean(doc), indent=1, default=_json_default))
    return doc


def _replay(out_dir: Path, prop: Property, ce: Evaluation) -> dict[str, Any]:
    """``micromill run counterexample.toml`` into ``replay/``: the failing run's report, and whether
    it gives the shrink's metrics again."""
    from scenarios.runner import run_suite
    from scenarios.suite import load_suite

    suite = load_suite(out_dir / "counterexample.toml")
    run_suite(suite, out_dir / "replay", workers=1, progress=False)
    res = json.loads((out_dir / "replay" / "results.json").read_text())["cases"][0]
    metrics = {k: (math.nan if v is None else v) for k, v in res["metrics"].items()}
    same = res["error"] is None and ce.error is None and all(
        (math.isnan(metrics.get(k, math.nan)) and math.isnan(v)) or metrics.get(k) == v
        for k, v in ce.metrics.items() if k not in NONDETERMINISTIC_METRICS)
    violated = res["error"] is not None or not prop.evaluate(metrics).holds
    return {"folder": str(out_dir / "replay"), "violates": violated,
            "same_metrics": same or (res["error"] is not None and ce.error is not None),
            "wall_s": res["wall_s"]}


#: metrics that measure wall time, not the scenario (not compared between the search and the replay)
NONDETERMINISTIC_METRICS = ("render_pair_ms", "realtime_factor")


def found_by_command(suite_arg: str, property_text: str, budget: int, seed: int, time_budget: str | None) -> str:
    return " ".join(["micromill falsify", shlex.quote(suite_arg), "--property", shlex.quote(property_text),
                     "--budget", str(budget), "--seed", str(seed)]
                    + (["--time-budget", time_budget] if time_budget else []))


def exit_code(doc: dict[str, Any]) -> int:
    """1 a counterexample found; 130 / 143 interrupted; else 0 (none within the budget)."""
    if doc["stopped_by"] in ("SIGINT", "SIGTERM"):
        return 128 + int(signal.Signals[doc["stopped_by"]])
    return 1 if doc["counterexample"] is not None else 0


def summary_text(doc: dict[str, Any]) -> str:
    lines = [f"property: {doc['property']}",
             f"searched {doc['searched_cases']} case(s), shrink {doc['shrink_cases']} case(s); stopped by "
             f"{doc['stopped_by']}"]
    if doc["closest"]:
        c = doc["closest"]
        lines.append(f"closest case: margin {c['margin'] if c['margin'] is not None else '-inf'}, slack "
                     f"{c['slack'] if c['slack'] is not None else '-inf'} (case {c['n']}: {_describe(c['values'])})")
    ce = doc["counterexample"]
    if ce is None and doc["stopped_by"] in ("SIGINT", "SIGTERM"):
        lines.append(f"stopped by {doc['stopped_by']} before a counterexample was found")
    elif ce is None:
        lines.append("no counterexample found within the budget")
    else:
        lines.append(f"COUNTEREXAMPLE (margin {ce['margin'] if ce['margin'] is not None else '-inf'}"
                     f"{', errored: ' + ce['error'] if ce['error'] else ''}): {_describe(ce['values'])}")
        lines.append(f"scenario: {doc['scenario']}")
        if doc["replay"]:
            r = doc["replay"]
            lines.append(f"replayed with micromill run in {r['folder']}: "
                         f"{'violates again' if r['violates'] else 'DOES NOT violate'}; "
                         f"{'same metrics' if r['same_metrics'] else 'METRICS DIFFER'}")
    return "\n".join(lines)


__all__ = ["Evaluator", "Falsifier", "FalsifyInputError", "Outcome", "Param", "case_seed", "exit_code", "falsify",
           "parse_duration", "scenario_text", "space"]
