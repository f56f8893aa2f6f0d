"""One scenario case: what a job receives (``CaseContext``), returns (``CaseOutput``) and what the
runner records (``CaseResult``), how a suite's cases are planned (``make_cases``) and run
(``run_case``, which turns any exception into an errored case).

A job opens its hardware with ``case_session`` (or ``case_hardware``). Whatever a job raises,
the hardware ends stopped safely with the cause (``Hardware.stop``: drill off, holding the last
command, deactivated; the cause in ``hw.fault`` and the recording) and closed: ``case_session``
does it as the exception leaves its block, and ``run_case`` does it for any interface the job
left open. The case is then an errored case whose ``error`` is the traceback (its last line
names the cause), the other cases go on, and ``micromill run`` exits 1.

Each case gets its own seed from ``SeedSequence([suite seed, case index])``: the same suite
seed gives the same parameters and the same results, whatever the number of workers or the engine.
"""
from __future__ import annotations

import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from hw_bridge.errors import stop_cause
from scenarios.jobs import JOBS
from scenarios.suite import Suite

if TYPE_CHECKING:
    from hw_bridge.interface import Hardware

#: the interfaces opened by the case running in this process (``run_case`` stops and closes
#: any the job left open)
_opened: list[Hardware] = []


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


def case_hardware(ctx: CaseContext, scene, seed: int | None = None, tag: str = "") -> Hardware:
    """The case's hardware interface (``ctx.backend``, armed as the run asked), recording to
    ``<record_dir>/case<index><tag>.mcap`` when the run records. The job closes it; prefer
    ``case_session``, which also stops it with the cause when the job raises."""
    from hw_bridge.registry import make_hardware

    seed = ctx.seed if seed is None else seed
    recorder = None
    if ctx.record_dir:
        from hw_bridge.recording import McapRecorder, RunMetadata

        meta = RunMetadata.for_run(f"job:{ctx.suite_name}", {"case": ctx.index, "job_parameters": ctx.job_parameters},
                                   ctx.backend, seed, scene, ctx.scene_overrides)
        recorder = McapRecorder(Path(ctx.record_dir) / f"case{ctx.index:03d}{tag}.mcap", meta, ctx.record_image_scale)
    hw = make_hardware(ctx.backend, scene, seed, armed=ctx.armed, recorder=recorder)
    _opened.append(hw)
    return hw


@contextmanager
def case_session(ctx: CaseContext, scene, seed: int | None = None, tag: str = "") -> Iterator[Hardware]:
    """``case_hardware`` for a ``with`` block: if the block raises (a controller error, a failed
    check, Ctrl-C), the interface is stopped safely with the cause before the exception goes on
    (``Hardware.stop``: drill off, holding, deactivated; the cause in ``hw.fault`` and the
    recording); it is closed in every case."""
    with case_hardware(ctx, scene, seed, tag) as hw:        # Hardware.__exit__: stop with the cause, close
        yield hw


def _release_opened(cause: str | None) -> None:
    """Close every interface the case opened and left open, stopping it with ``cause`` first
    when the job raised (None: the job returned; closing deactivates, drill off)."""
    from hw_bridge.interface import Lifecycle

    while _opened:
        hw = _opened.pop()
        if hw.state is not Lifecycle.FINALIZED:
            try:
                if cause is not None:
                    hw.stop(cause)
            finally:
                hw.close()


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


def run_case(job_name: str, ctx: CaseContext) -> CaseResult:
    """Run one case; exceptions become a failed case with the traceback, never a crash (Ctrl-C
    and SIGTERM go on to the runner, which records the interruption). Any interface the job left
    open is stopped (with the cause, when the job raised) and closed first."""
    t0 = time.perf_counter()
    _opened.clear()
    try:
        try:
            out: CaseOutput = JOBS[job_name].load()(ctx)
        except BaseException as exc:
            _release_opened(stop_cause(exc))
            raise
        _release_opened(None)
        metrics = {k: float(v) for k, v in out.metrics.items()}
        return CaseResult(ctx.index, ctx.seed, ctx.scene_overrides, ctx.job_parameters, metrics, out.artifacts,
                          out.notes, None, time.perf_counter() - t0)
    except Exception:  # noqa: BLE001 - a case failure is a result, reported with its traceback
        return errored_case(ctx, traceback.format_exc(), time.perf_counter() - t0)


def errored_case(ctx: CaseContext, error: str, wall_s: float = 0.0) -> CaseResult:
    """The result of a case that did not finish: ``error`` says why (a traceback, a dead worker's cause)."""
    return CaseResult(ctx.index, ctx.seed, ctx.scene_overrides, ctx.job_parameters, {}, [], {}, error, wall_s)
