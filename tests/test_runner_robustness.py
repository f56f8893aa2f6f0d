"""The runner never loses a result: bounded counts, dead workers, interrupts, resume, rebuild."""
from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pytest

from scenarios.cases import CaseOutput
from scenarios.cli import main
from scenarios.jobs import JOBS, JobEntry
from scenarios.progress import Progress
from scenarios.runner import plan_workers

SUITE = """[suite]
name = "fake"
job = "fake"
seed = 3
cases = 6

[parameters.job]
x = { uniform = [0.0, 1.0] }

[metrics.value]
aggregate = "max"

[thresholds]
value = { max = 2.0 }
"""

#: marker files: while one exists, the case with that index does what the name says
TRIGGERS = ("sigint_parent", "sigterm_parent", "sigkill")


def fake_job(ctx):
    marks = Path(ctx.job_parameters["marks"])
    for what in TRIGGERS:
        if (marks / f"{what}_{ctx.index}").exists():
            time.sleep(0.5)                     # the runner has collected the cases before this one
            if what == "sigint_parent":         # Ctrl-C (which the workers ignore)
                os.kill(os.getppid(), signal.SIGINT)
                time.sleep(5.0)
            elif what == "sigterm_parent":
                os.kill(os.getppid(), signal.SIGTERM)
                time.sleep(5.0)
            else:
                os.kill(os.getpid(), signal.SIGKILL)
    return CaseOutput({"value": ctx.job_parameters["x"]})


@pytest.fixture
def suite_file(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setitem(JOBS, "fake", JobEntry(f"{__name__}:fake_job", {"x": 0.0, "marks": str(marks)}, ("value",)))
    path = tmp_path / "fake.toml"
    path.write_text(SUITE)
    return path


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _case_values(out: Path) -> dict[int, float]:
    return {c["index"]: c["metrics"]["value"] for c in _results(out)["cases"]}


def test_workers_are_capped_with_a_warning(suite_file, tmp_path, capsys):
    n, warning = plan_workers(1_000_000, 6, "local", "twin", "x")
    assert 1 <= n <= min(6, len(os.sched_getaffinity(0))) and "--workers 1000000: using" in warning
    assert plan_workers(1, 6, "local", "twin", "x") == (1, None)
    assert main(["run", str(suite_file), "--workers", "1000000", "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    assert "--workers 1000000: using" in capsys.readouterr().err
    assert len(_results(tmp_path / "out")["cases"]) == 6


def test_cases_are_bounded_before_anything_runs(suite_file, tmp_path, capsys):
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(["run", str(suite_file), "--cases", "1000000000", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and time.perf_counter() - t0 < 5.0
    assert "must be an integer in [1, 100000]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_killed_worker_errors_only_its_case(suite_file, tmp_path, workers):
    (tmp_path / "marks" / "sigkill_2").touch()
    out = tmp_path / "out"
    assert main(["run", str(suite_file), "--workers", workers, "--out", str(out), "--no-progress"]) == 1
    doc = _results(out)
    assert doc["summary"]["failed_cases"] == [2] and not doc["summary"]["passed"]
    errors = {c["index"]: c["error"] for c in doc["cases"]}
    assert "killed by SIGKILL" in errors[2] and "case 2" in errors[2]
    assert sorted(errors) == list(range(6)) and all(errors[i] is None for i in (0, 1, 3, 4, 5))


def test_ctrl_c_writes_an_interrupted_run_that_resume_completes(suite_file, tmp_path, capsys):
    full = tmp_path / "full"
    assert main(["run", str(suite_file), "--out", str(full), "--no-progress"]) == 0
    capsys.readouterr()
    (tmp_path / "marks" / "sigint_parent_3").touch()
    out = tmp_path / "out"
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress"]) == 130
    doc = _results(out)
    s = doc["summary"]
    assert s["interrupted"] == "SIGINT" and s["cases"] == 3 and s["planned_cases"] == 6 and not s["passed"]
    assert "interrupted: 3 of 6 cases" in (out / "report.md").read_text()
    printed = capsys.readouterr().out
    assert "interrupted: 3 of 6 cases" in printed and "PASSED" not in printed and "--resume" in printed
    assert len((out / "cases.jsonl").read_text().splitlines()) == 3

    (tmp_path / "marks" / "sigint_parent_3").unlink()
    assert main(["run", str(suite_file), "--resume", str(out), "--no-progress"]) == 0
    a, b = _results(out), _results(full)
    assert a["summary"] == b["summary"] and _case_values(out) == _case_values(full)
    assert a["suite"]["started_utc"] == json.loads((out / "run.json").read_text())["started_utc"]


def test_sigterm_to_the_runner_stops_the_pool_and_keeps_finished_cases(suite_file, tmp_path):
    (tmp_path / "marks" / "sigterm_parent_3").touch()
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert main(["run", str(suite_file), "--workers", "2", "--out", str(out), "--no-progress"]) == 143
    assert time.perf_counter() - t0 < 4.5              # the sleeping worker was stopped, not awaited
    s = _results(out)["summary"]
    assert s["interrupted"] == "SIGTERM" and s["cases"] < 6 and not s["passed"]
    assert 3 not in _case_values(out)


def test_a_crashed_runner_is_rebuilt_and_resumed(suite_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress"]) == 0
    reference = _results(out)
    # What a runner killed mid-write leaves: four whole lines and a cut one, no results or report.
    lines = (out / "cases.jsonl").read_text().splitlines()
    (out / "cases.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:30])
    for name in ("results.json", "report.md"):
        (out / name).unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 1
    captured = capsys.readouterr()
    assert "line 5: skipped" in captured.err and "interrupted: 4 of 6 cases" in captured.out
    assert _results(out)["summary"]["cases"] == 4 and (out / "report.md").is_file()
    assert main(["run", str(suite_file), "--resume", str(out), "--no-progress"]) == 0
    assert _results(out)["summary"] == reference["summary"]
    assert len((out / "cases.jsonl").read_text().splitlines()) == 6


def test_an_used_out_folder_is_refused_unless_resumed_or_forced(suite_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress", "--cases", "2"]) == 0
    capsys.readouterr()
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err and "--force" in err
    assert main(["run", str(suite_file), "--out", str(out), "--no-progress", "--force"]) == 0
    assert _results(out)["summary"]["cases"] == 6
    # --force never clears a folder holding anything a run does not write
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    assert main(["run", str(suite_file), "--out", str(mine), "--force", "--no-progress"]) == 2
    assert "not cleared" in capsys.readouterr().err and (mine / "thesis.tex").read_text() == "precious"
    # a resumed run must be the same run
    suite_file.write_text(SUITE.replace("seed = 3", "seed = 4"))
    assert main(["run", str(suite_file), "--resume", str(out), "--no-progress"]) == 2
    assert "not the one the run" in capsys.readouterr().err
    assert main(["run", str(suite_file), "--resume", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_progress_in_a_log_writes_a_few_lines():
    log = io.StringIO()
    p = Progress("suite", 100, stream=log, log_interval_s=0.0)
    for i in range(100):
        p.update(errored=i == 7)
    p.close()
    lines = log.getvalue().splitlines()
    assert 10 <= len(lines) <= 12 and "\r" not in log.getvalue()
    assert lines[-1].startswith("suite: 100/100 cases (100 %), 1 errored")
    quiet = io.StringIO()
    p = Progress("suite", 100, stream=quiet, log_interval_s=3600.0)
    for _ in range(100):
        p.update(errored=False)
    assert len(quiet.getvalue().splitlines()) == 2          # the first and the last
