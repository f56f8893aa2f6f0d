"""Where a suite's cases run: in this process, in a local pool of worker processes, or as Ray tasks.

Every engine takes the cases still to run and calls ``on_result`` in the calling thread with each
``CaseResult`` as it finishes (in completion order). A case whose worker dies (killed, out of
memory, segfault; a lost Ray worker) becomes an errored case naming the cause, and the run goes
on. An interrupt (``KeyboardInterrupt``, which the runner raises for SIGINT and SIGTERM) raised
while waiting stops the workers and propagates; cases still running are not recorded (a resumed run redoes them).

- ``serial``: one case after the other in this process (backends that drive one robot).
- ``local``: a pool of at most ``workers`` processes (one too: a dying case cannot take the run with it) (``pebble.ProcessPool``: unlike the standard
  library's pool, a dead worker fails only its own case and is replaced). Workers ignore SIGINT:
  the runner, not each worker, handles Ctrl-C.
- ``ray``: Ray tasks on an existing cluster (``ray.init(address=...)``). The five micromill
  packages travel with the job (``runtime_env.py_modules``: code, shipped scenes, network weights,
  camera models), so a worker needs only the dependencies installed; a scene file outside them
  travels as bytes with the tasks, and case artifacts come back as bytes.
"""
from __future__ import annotations

import os
import signal
import tempfile
from collections import deque
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import replace
from pathlib import Path
from typing import Callable

from scenarios.cases import CaseContext, CaseResult, errored_case, run_case

OnResult = Callable[[CaseResult], None]

ENGINES = ("local", "ray")

#: the packages a Ray worker receives (code plus package data: scenes, weights, camera models)
PACKAGES = ("twin", "scenes", "controllers", "hw_bridge", "scenarios")


def worker_death_cause(exitcode: int | None) -> str:
    """Why a worker process ended, from its exit code (negative: killed by that signal)."""
    if exitcode is None:
        return "the worker process ended without an exit code"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {"SIGKILL": " (killed: e.g. by the out-of-memory killer or `kill -9`)",
                "SIGSEGV": " (segmentation fault in native code)", "SIGTERM": " (terminated)"}.get(name, "")
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {exitcode}"


def run_serial(job: str, cases: list[CaseContext], on_result: OnResult) -> None:
    """Each case in this process, in order."""
    for ctx in cases:
        on_result(run_case(job, ctx))


@contextmanager
def one_core_per_case():
    """While inside: OpenCV, torch, and the BLAS and OpenMP pools under NumPy and torch run
    single-threaded (``threadpoolctl``); the earlier settings come back on exit.

    Each library otherwise starts a thread per CPU in every worker, and N workers on N cores then
    fight over them: a 2-worker milling suite ran its milling phase ~2x slower than one case
    alone. The local pool sets this in the runner *before* it forks its workers, which inherit
    it: changing OpenCV's or OpenMP's thread pool inside a forked child whose parent had already
    used it hangs (the pool's threads do not exist in the child)."""
    import cv2
    import torch
    from threadpoolctl import threadpool_limits

    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(torch_threads)


def _worker_init() -> None:
    """In each pool worker: Ctrl-C goes to the runner (which stops the pool), SIGTERM kills."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_local(job: str, cases: list[CaseContext], on_result: OnResult, workers: int) -> None:
    """The cases on a pool of ``workers`` processes (``workers`` already capped by the runner),
    each case on one core."""
    with one_core_per_case():           # inherited by the workers forked below
        _run_pool(job, cases, on_result, workers)


def _run_pool(job: str, cases: list[CaseContext], on_result: OnResult, workers: int) -> None:
    from pebble import ProcessExpired, ProcessPool

    pool = ProcessPool(max_workers=workers, initializer=_worker_init)
    try:
        futures: dict[Future, CaseContext] = {pool.schedule(run_case, args=(job, ctx)): ctx for ctx in cases}
        pending = set(futures)

        def deliver(done) -> None:
            for fut in sorted(done, key=lambda f: futures[f].index):
                ctx = futures[fut]
                try:
                    res = fut.result()
                except ProcessExpired as exc:
                    res = errored_case(ctx, f"{worker_death_cause(exc.exitcode)} while running case {ctx.index}; "
                                            f"a fresh worker took the remaining cases")
                except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back
                    res = errored_case(ctx, f"the worker could not return the case: {type(exc).__name__}: {exc}")
                on_result(res)

        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                deliver(done)
        except KeyboardInterrupt:        # keep what finished before the interrupt, then stop
            pool.stop()
            deliver({f for f in pending if f.done() and not f.cancelled()
                     and not isinstance(f.exception(), (ProcessExpired, CancelledError))})
            raise
        pool.close()
    finally:
        pool.stop()          # on an interrupt: terminate the workers still running cases
        pool.join()


# ---- Ray --------------------------------------------------------------------------------------

def _package_roots() -> dict[str, Path]:
    """Each shipped package's folder on this machine, by package name."""
    import importlib

    return {name: Path(importlib.import_module(name).__file__).resolve().parent for name in PACKAGES}


def _portable_scene(scene_path: str, roots: dict[str, Path]) -> tuple[str, dict[str, bytes]]:
    """Where a remote worker finds a scene: a path inside a shipped package
    (``pkg:scenes/default.toml``, no files to send) or the file's bytes (``bundle:<name>``)."""
    scene = Path(scene_path).resolve()
    for name, root in roots.items():
        if scene.is_relative_to(root):
            return f"pkg:{name}/{scene.relative_to(root).as_posix()}", {}
    return f"bundle:{scene.name}", {scene.name: scene.read_bytes()}


def ray_case(job: str, ctx: CaseContext, files: dict[str, bytes]) -> tuple[CaseResult, dict[str, bytes]]:
    """Run one case on a Ray worker: unpack its scene, run it in a temporary folder, return the
    result and the artifacts' bytes (by their paths relative to the run folder)."""
    import importlib

    with one_core_per_case(), tempfile.TemporaryDirectory(prefix="micromill_case_") as tmp:
        kind, _, rel = ctx.scene_path.partition(":")
        if kind == "pkg":
            pkg, _, inner = rel.partition("/")
            scene_path = Path(importlib.import_module(pkg).__file__).parent / inner
        else:
            scene_path = Path(tmp) / rel
            scene_path.write_bytes(files[rel])
        (Path(tmp) / "artifacts").mkdir()
        res = run_case(job, replace(ctx, scene_path=str(scene_path), artifacts_dir=str(Path(tmp) / "artifacts")))
        arts = {a: (Path(tmp) / a).read_bytes() for a in res.artifacts if (Path(tmp) / a).is_file()}
    return res, arts


def ray_available() -> tuple[bool, str]:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False, "Ray is not installed: pip install -e '.[ray]' (on the driver and every worker)"
    return True, ""


def connect_ray(address: str | None) -> None:
    """Connect to the Ray cluster at ``address`` ("auto": the one this machine belongs to; None: a
    running local instance, else a new one), shipping the five micromill packages with the job.

    Ray uploads local packages only when it connects (``ray.init``'s job-level runtime_env), so a
    Ray already initialised in this process is used as it is: it must have been given the code
    (as this function does the first time). Called before the runner installs its signal
    handlers, which ``ray.init`` would otherwise replace."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, runtime_env={"py_modules": [str(p) for p in _package_roots().values()],
                                               "excludes": ["__pycache__", "*.pyc"]},
                 include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        from scenes.schema import ConfigError

        raise ConfigError("micromill run", [f"--address={address!r}: cannot join a Ray cluster ({exc}); start one "
                                            f"with `ray start --head` (see docs/scaling.md)"]) from None


def run_ray(job: str, cases: list[CaseContext], on_result: OnResult, out_dir: Path,
            max_in_flight: int | None = None) -> None:
    """The cases as Ray tasks (one CPU each) on the cluster ``connect_ray`` joined. At most
    ``max_in_flight`` tasks are submitted at a time (default: twice the cluster's CPUs)."""
    import ray
    from ray.exceptions import RayError

    roots = _package_roots()
    remote = ray.remote(num_cpus=1, max_retries=0)(ray_case)
    limit = max_in_flight or max(2 * int(ray.cluster_resources().get("CPU", 1)), 1)

    def deliver(ref, ctx: CaseContext) -> None:
        try:
            res, arts = ray.get(ref)
        except RayError as exc:
            on_result(errored_case(ctx, f"the Ray task of case {ctx.index} failed "
                                        f"({type(exc).__name__}): {str(exc).strip()[:2000]}"))
            return
        for rel, data in arts.items():
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        on_result(res)

    # Per scene file: where workers find it, and its bytes in the object store (read and put once).
    placed: dict[str, tuple[str, object]] = {}
    queue = deque(cases)
    running: dict[object, CaseContext] = {}
    try:
        while queue or running:
            while queue and len(running) < limit:
                ctx = queue.popleft()
                if ctx.scene_path not in placed:
                    where, files = _portable_scene(ctx.scene_path, roots)
                    placed[ctx.scene_path] = (where, ray.put(files))
                where, files_ref = placed[ctx.scene_path]
                # artifacts go to the worker's own folder and come back as bytes; no recordings
                task_ctx = replace(ctx, scene_path=where, artifacts_dir="", record_dir="")
                running[remote.remote(job, task_ctx, files_ref)] = ctx
            try:
                done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)   # signals are handled between waits
            except KeyboardInterrupt:     # keep what finished before the interrupt, then stop
                done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                for ref in done:
                    deliver(ref, running.pop(ref))
                raise
            for ref in done:
                deliver(ref, running.pop(ref))
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:        # not on Linux
        return os.cpu_count() or 1
