"""The same suite on Ray gives the same results as the local pool; a lost Ray worker errors its case.

The test starts its own local Ray instance (``run_suite(engine="ray")`` with no address) and
shuts it down at the end. The scene travels as bytes (a copy outside the shipped packages), the
code and weights as the job's ``py_modules``, and case artifacts come back to the run folder.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (CI installs it)")

from scenarios import engines  # noqa: E402
from scenarios.runner import run_suite  # noqa: E402
from scenarios.suite import load_suite  # noqa: E402
from scenes.spec import SCENES_DIR  # noqa: E402

#: wall-clock metrics differ between any two runs; everything else must be equal
WALL_CLOCK = {"render_pair_ms"}


@pytest.fixture(scope="module")
def ray_local():
    yield
    ray.shutdown()


def _suite_outside_the_packages(tmp_path: Path):
    scene = tmp_path / "my_scene.toml"
    shutil.copy(SCENES_DIR / "default.toml", scene)
    text = Path("scenarios/twin_smoke.toml").read_text().replace('scene = "default"', f'scene = "{scene}"')
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return load_suite(path)


def _comparable(summary: dict) -> dict:
    return {**summary, "metrics": {k: v for k, v in summary["metrics"].items() if k not in WALL_CLOCK}}


def test_ray_runs_the_suite_like_the_local_pool(tmp_path, ray_local):
    suite = _suite_outside_the_packages(tmp_path)
    local = run_suite(suite, tmp_path / "local", workers=2, n_cases=3, progress=False)
    on_ray = run_suite(suite, tmp_path / "ray", n_cases=3, progress=False, engine="ray")
    assert on_ray["failed_cases"] == [] and _comparable(on_ray) == _comparable(local)
    doc = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert doc["suite"]["engine"] == "ray"
    arts = [a for c in doc["cases"] for a in c["artifacts"]]
    assert arts and all((tmp_path / "ray" / a).stat().st_size > 0 for a in arts)
    assert len((tmp_path / "ray" / "cases.jsonl").read_text().splitlines()) == 3


def _dies_on_case_1(job, ctx, files):
    if ctx.index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return engines.ray_case(job, ctx, files)


def test_a_lost_ray_worker_errors_its_case_and_the_run_goes_on(tmp_path, monkeypatch, ray_local):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])     # workers cannot import tests/
    monkeypatch.setattr(engines, "ray_case", _dies_on_case_1)
    suite = _suite_outside_the_packages(tmp_path)
    summary = run_suite(suite, tmp_path / "ray", n_cases=3, progress=False, engine="ray")
    assert summary["failed_cases"] == [1] and summary["cases"] == 3 and not summary["passed"]
    err = json.loads((tmp_path / "ray" / "results.json").read_text())["cases"][1]["error"]
    assert "Ray task of case 1 failed" in err


def test_ctrl_c_on_ray_writes_the_finished_cases_and_resume_completes(tmp_path, monkeypatch, ray_local):
    from scenarios.progress import Progress

    update = Progress.update

    def ctrl_c_after_the_first_case(self, errored):
        update(self, errored)
        if self.done == 1:
            os.kill(os.getpid(), signal.SIGINT)

    suite = _suite_outside_the_packages(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(Progress, "update", ctrl_c_after_the_first_case)
        summary = run_suite(suite, tmp_path / "ray", n_cases=3, progress=False, engine="ray")
    assert summary["interrupted"] == "SIGINT" and 1 <= summary["cases"] < 3 and not summary["passed"]
    resumed = run_suite(suite, tmp_path / "ray", n_cases=3, progress=False, engine="ray", resume=True)
    local = run_suite(suite, tmp_path / "local", workers=2, n_cases=3, progress=False)
    assert _comparable(resumed) == _comparable(local)
