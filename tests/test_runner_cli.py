"""The runner writes results as it goes, reports failures, and exits non-zero on them."""
import json
import re
from datetime import datetime

import pytest

from hw_bridge.checker import CHECKS
from scenarios.cli import main
from scenarios.jobs import JOBS, JobEntry
from scenarios.cases import CaseOutput, make_cases
from scenarios.runner import run_suite
from scenarios.suite import suite_from_dict


def fake_job(ctx):
    if ctx.job_parameters["fail_on"] == ctx.index:
        raise RuntimeError("boom in case %d" % ctx.index)
    return CaseOutput({"value": ctx.job_parameters["x"]})


@pytest.fixture
def fake_suite(monkeypatch):
    monkeypatch.setitem(JOBS, "fake", JobEntry(f"{__name__}:fake_job", {"x": 0.0, "fail_on": -1}, ("value",)))
    raw = {"suite": {"name": "fake", "job": "fake", "seed": 3, "cases": 6},
           "parameters": {"job": {"x": {"uniform": [0.0, 1.0]}}},
           "metrics": {"value": {"aggregate": "max"}},
           "thresholds": {"value": {"max": 0.99}}}
    return raw


def test_results_and_summary(tmp_path, fake_suite):
    suite = suite_from_dict(fake_suite)
    summary = run_suite(suite, tmp_path, progress=False)
    doc = json.loads((tmp_path / "results.json").read_text())
    xs = [c["job_parameters"]["x"] for c in doc["cases"]]
    assert doc["summary"]["metrics"]["value"]["value"] == pytest.approx(max(xs))
    assert doc["summary"]["thresholds"]["value"]["passed"] == (max(xs) <= 0.99)
    assert summary["passed"] == doc["summary"]["passed"]
    assert (tmp_path / "report.md").exists() and (tmp_path / "plots" / "value.png").exists()
    assert len((tmp_path / "cases.jsonl").read_text().splitlines()) == 6
    # which code produced it, and when (this test runs in a git checkout, as CI does)
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", doc["suite"]["git_commit"])
    assert datetime.fromisoformat(doc["suite"]["started_utc"]).tzinfo is not None


def test_seeded_cases_are_reproducible(tmp_path, fake_suite):
    suite = suite_from_dict(fake_suite)
    a = [c.job_parameters for c in make_cases(suite, 5, 3, tmp_path)]
    b = [c.job_parameters for c in make_cases(suite, 5, 3, tmp_path)]
    c = [c.job_parameters for c in make_cases(suite, 5, 4, tmp_path)]
    assert a == b and a != c


def test_a_failing_case_keeps_the_others(tmp_path, fake_suite):
    fake_suite["parameters"]["job"]["fail_on"] = {"choices": [2]}
    suite = suite_from_dict(fake_suite)
    summary = run_suite(suite, tmp_path, progress=False)
    assert summary["failed_cases"] == [2] and not summary["passed"]
    lines = [json.loads(l) for l in (tmp_path / "cases.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and "boom in case 2" in lines[2]["error"]


def why_job(ctx):
    failed = ctx.index == 1
    return CaseOutput({"value": 0.0}, ["artifacts/case001_failure.png"] if failed else [],
                      {"why": "bridge 34 um left at 112 deg", "failure": {"kind": "bridge"}} if failed else {})


def test_the_report_says_why_each_failed_case_failed(tmp_path, monkeypatch, fake_suite):
    monkeypatch.setitem(JOBS, "why", JobEntry(f"{__name__}:why_job", {"x": 0.0, "fail_on": -1}, ("value",)))
    fake_suite["suite"]["job"] = "why"
    run_suite(suite_from_dict(fake_suite), tmp_path, progress=False)
    md = (tmp_path / "report.md").read_text()
    assert "## Why cases failed" in md
    assert "- case 1 (seed " in md and "bridge 34 um left at 112 deg ([figure](artifacts/case001_failure.png))" in md
    assert md.count("left at 112 deg") == 1        # only the failed case is listed
    assert "By main cause: bridge 1." in md
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["cases"][1]["notes"]["why"] == "bridge 34 um left at 112 deg"


def test_threshold_failure_gives_nonzero_exit(tmp_path, monkeypatch, fake_suite):
    import tomllib  # noqa: F401

    fake_suite["thresholds"]["value"] = {"max": -1.0}
    monkeypatch.setattr("scenarios.suite.load_toml", lambda p: fake_suite)
    assert main(["run", "x.toml", "--out", str(tmp_path), "--no-progress"]) == 1
    fake_suite["thresholds"]["value"] = {"max": 2.0}
    assert main(["run", "x.toml", "--out", str(tmp_path), "--no-progress", "--force"]) == 0


def test_bad_suite_file_exit_code_2(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text('[suite]\nname = "x"\njob = "nope"\nseed = -1\ncases = 1\n[metrics.a]\naggregate = "max"\n')
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "suite.job='nope'" in err and "suite.seed=-1" in err


def test_twin_smoke_one_case(tmp_path):
    """The real smoke job end to end, one case (the full suite runs in CI via the CLI test below)."""
    assert main(["run", "scenarios/twin_smoke.toml", "--cases", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["summary"]["passed"] and doc["cases"][0]["artifacts"]


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["scenarios/calibration.toml", "scenarios/surface_fit.toml"])
def test_premeasurement_suites_meet_targets(tmp_path, suite):
    """The paper's Experiments 1 and 2 at full size (12 cases each, ~7 min with 2 workers)."""
    assert main(["run", suite, "--workers", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert not summary["failed_cases"] and all(t["passed"] for t in summary["thresholds"].values())


@pytest.mark.slow
def test_twin_smoke_full_suite(tmp_path):
    assert main(["run", "scenarios/twin_smoke.toml", "--workers", "2", "--out", str(tmp_path),
                 "--no-progress"]) == 0


def test_demo(tmp_path):
    """The demo on the default scene runs every stage and judges the window. Its verdict is not
    pinned here (since the bone model of issue 13 the seed-0 window breaches the membrane by
    20 um: docs/results.md); the exit code, the verdict and the figures must agree with the
    twin's judgement whichever it is."""
    from scenarios.demo import demo_exit_code

    code = main(["demo", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == summary["exit_code"] == demo_exit_code(summary) == (0 if summary["window_success"] else 1)
    assert summary["ok"] and len(summary["trajectory"]["points_ini_r_mm"]) == 32
    assert summary["calibration"]["rms_mm"] < 0.15 and summary["characterisation_rms_mm"] < 0.15
    assert summary["ground_truth_twin_only"]["height_error_rms_mm"] < 0.12
    assert summary["milling"]["stop_reason"] == "complete" and summary["milling"]["points_done"] == 32
    judged = summary["ground_truth_twin_only"]["milling"]
    assert summary["window_success"] == bool(judged["detachable"] and judged["breaches"] == 0)
    assert 0.3 < summary["milling"]["milling_time_s"] / 60 < 3.0
    for name in ("camera_model.toml", "calibration.png", "trajectory.png", "milling.png", "milled.png"):
        assert (tmp_path / name).exists()
    if summary["window_success"]:
        assert summary["verdict"] == {"window": "SUCCESS", "why": None, "failure": None}
        assert not (tmp_path / "failure.png").exists()
    else:
        assert summary["verdict"]["window"] == "FAILURE" and summary["verdict"]["why"]
        assert summary["verdict"]["failure"]["kind"] == ("breach" if judged["breaches"] else "bridge")
        assert (tmp_path / "failure.png").exists()


@pytest.mark.slow
def test_demo_of_a_failed_window_says_why_and_exits_1(tmp_path):
    """A milling timeout of 20 s leaves the flap attached: the twin's verdict is FAILURE, with a
    bridge and the timeout as its cause, drawn in failure.png (~2 min on 2 cores)."""
    from scenarios.demo import demo_exit_code, format_summary, run_demo
    from scenes.spec import load_scene

    scene = load_scene(None, {"control.period_s": 0.02, "controllers.milling.timeout_s": 20.0})
    summary = run_demo(tmp_path, scene, 0)
    assert summary["milling"]["stop_reason"] == "timeout" and summary["window_success"] is False
    assert summary["verdict"]["window"] == "FAILURE" and summary["verdict"]["failure"]["kind"] == "bridge"
    assert "timeout after 20 s with 32 points not through" in summary["verdict"]["why"]
    assert summary["exit_code"] == demo_exit_code(summary) == 1 and (tmp_path / "failure.png").exists()
    assert "verdict (twin): FAILURE — bridge" in format_summary(summary)


def _demo_summary(window_success=True, stopped_by=None, safety_fault=None, stop_reason="complete", ok=True):
    milling = None if stop_reason is None else {"stop_reason": stop_reason}
    return {"window_success": window_success, "stopped_by": stopped_by, "safety_fault": safety_fault,
            "milling": milling, "ok": ok}


@pytest.mark.parametrize("summary, code", [
    (_demo_summary(), 0),
    (_demo_summary(window_success=None), 0),                                # no twin, the controller finished
    (_demo_summary(window_success=None, stop_reason=None), 0),              # --until calibration|fit, finished
    (_demo_summary(window_success=False), 1),                               # the twin's verdict: FAILURE
    (_demo_summary(window_success=False, stop_reason="timeout", ok=False), 1),
    (_demo_summary(window_success=False, stop_reason="safety_fault", safety_fault="x", ok=False), 1),
    (_demo_summary(window_success=None, stop_reason="safety_fault", safety_fault="joint limit", ok=False), 3),
    (_demo_summary(window_success=None, stop_reason=None, stopped_by="SafetyStop: x", ok=False), 3),
    (_demo_summary(window_success=True, stop_reason="safety_fault", ok=False), 3),
    (_demo_summary(window_success=None, stop_reason="timeout", ok=False), 4),    # no twin: the controller gave up
    (_demo_summary(window_success=True, stop_reason="perception_lost", ok=False), 4),
    (_demo_summary(window_success=None, stop_reason=None, ok=False), 4),          # no trajectory fitted
])
def test_demo_exit_code(summary, code):
    from scenarios.demo import demo_exit_code

    assert demo_exit_code(summary) == code


def test_demo_stage_is_recorded_and_replays_exactly(tmp_path, capsys):
    """A recorded run (calibration only, to stay fast) replays offline through the same controllers:
    the same commands and decisions; the replay's own outputs are written."""
    rec = tmp_path / "cal.mcap"
    assert main(["demo", "--until", "calibration", "--out", str(tmp_path / "run"), "--record", str(rec)]) == 0
    recorded = json.loads((tmp_path / "run" / "summary.json").read_text())
    capsys.readouterr()
    assert main(["replay", str(rec), "--out", str(tmp_path / "replay")]) == 0
    out = capsys.readouterr().out
    assert "max |dq| = 0 " in out and "decided exactly as recorded" in out
    replayed = json.loads((tmp_path / "replay" / "summary.json").read_text())
    assert replayed["backend"] == "replay" and replayed["calibration"] == recorded["calibration"]


def test_a_job_scored_by_the_twin_is_refused_on_another_backend(tmp_path, capsys):
    assert main(["run", "scenarios/milling.toml", "--backend", "sas", "--out", str(tmp_path)]) == 2
    assert "backend='sas': job 'milling' runs on twin only" in capsys.readouterr().err
    assert main(["run", "scenarios/hw_check.toml", "--backend", "gazebo", "--out", str(tmp_path)]) == 2
    assert "backend='gazebo': job 'hw_check' runs on twin, mock, coppeliasim, sas only" in capsys.readouterr().err
    assert main(["run", "scenarios/hw_check.toml", "--backend", "mokc", "--out", str(tmp_path)]) == 2
    assert "backend='mokc': job 'hw_check' runs on twin, mock, coppeliasim, sas only; did you mean 'mock'?" in \
        capsys.readouterr().err
    assert main(["run", "scenarios/hw_check.toml", "--backend", "sas", "--workers", "2", "--out", str(tmp_path)]) == 2
    assert "use --workers 1" in capsys.readouterr().err


def test_arm_without_the_scene_allowing_it_is_refused(tmp_path, capsys):
    assert main(["demo", "--backend", "coppeliasim", "--arm", "--out", str(tmp_path)]) == 2
    assert "safety.armed = false" in capsys.readouterr().err
    assert main(["run", "scenarios/hw_check.toml", "--backend", "sas", "--arm", "--out", str(tmp_path)]) == 2
    assert "safety.armed = false" in capsys.readouterr().err
    assert not (tmp_path / "cases.jsonl").exists()          # refused before any case started


def test_replay_of_a_file_that_is_not_a_recording(tmp_path, capsys):
    bad = tmp_path / "x.mcap"
    bad.write_text("hello")
    assert main(["replay", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_hw_check_suite_on_the_twin_recorded(tmp_path, capsys):
    assert main(["run", "scenarios/hw_check.toml", "--out", str(tmp_path), "--no-progress", "--record",
                 "--record-image-scale", "0.25"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["summary"]["metrics"]["contract_checks_passed"]["value"] == 1.0
    files = sorted(p.name for p in (tmp_path / "recordings").iterdir())
    assert files == sorted(["case000_move.mcap"] + [f"case000_{c}.mcap" for c in CHECKS])
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "recordings" / "case000_move.mcap")]) == 0
    out = capsys.readouterr().out
    assert "program 'job:hw_check'" in out and "(downscaled)" in out and "not re-run" in out


def _scene_copy(tmp_path, name: str, **replace: str):
    """scenes/default.toml copied to ``tmp_path/name`` with each ``old=new`` text replacement."""
    from scenes.spec import DEFAULT_SCENE

    text = DEFAULT_SCENE.read_text()
    for old, new in replace.values():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def test_run_scene_option_is_checked_before_anything_runs(tmp_path, capsys):
    assert main(["run", "scenarios/hw_check.toml", "--scene", str(tmp_path / "nope.toml"), "--out",
                 str(tmp_path / "a")]) == 2
    assert f"--scene {tmp_path / 'nope.toml'}: no such file" in capsys.readouterr().err
    bad = _scene_copy(tmp_path, "bad.toml", period=("period_s = 0.001", "period_s = -1.0"))
    assert main(["run", "scenarios/hw_check.toml", "--scene", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "control.period_s" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_run_scene_option_arms_the_documented_hw_check(tmp_path, capsys):
    """docs/hardware_and_safety.md's armed check, `micromill run scenarios/hw_check.toml --backend sas
    --scene my_scene.toml --arm`, runs (the default scene alone is refused); with no driver there,
    every check fails with its cause instead of the case erroring."""
    pytest.importorskip("rclpy")
    scene = _scene_copy(tmp_path, "my_scene.toml", armed=("armed = false", "armed = true"),
                        prefix=('prefix = "/arm1"', 'prefix = "/nobody_here"'),
                        timeout=("enable_timeout_s = 5.0", "enable_timeout_s = 0.2"),
                        drill=('drill = "manual"', 'drill = "none"'))
    out = tmp_path / "run"
    assert main(["run", "scenarios/hw_check.toml", "--backend", "sas", "--scene", str(scene), "--arm", "--out",
                 str(out), "--no-progress"]) == 1
    assert json.loads((out / "run.json").read_text())["scene"] == str(scene)
    (case,) = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert case["error"] is None, case["error"]
    failed = case["notes"]["failed_checks"]
    assert set(failed) == set(CHECKS) and all(f.startswith("HardwareError: sas: ") for f in failed.values())
    assert "/nobody_here/get/joint_states" in failed["lifecycle"]
    assert case["notes"]["move"].startswith("not run")
    capsys.readouterr()
    assert main(["run", "scenarios/hw_check.toml", "--scene", "default", "--resume", str(out)]) == 2
    assert f"--scene default: the run in {out} was started with {scene}" in capsys.readouterr().err
