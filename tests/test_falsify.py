"""micromill falsify: finds a planted violation within a few cases, shrinks it to the one parameter
that causes it, writes a scenario that micromill run replays, and refuses bad input before any case."""
import json
import tomllib

import pytest

from scenarios.cli import main
from scenarios.falsify import falsify, parse_duration
from scenarios.jobs import JOBS, JobEntry
from scenarios.cases import CaseOutput
from scenarios.suite import load_suite
from scenarios.limits import MAX_FALSIFY_CASES

CALLS = []


def planted_job(ctx):
    """value = x: the property "value <= 0.7" fails on the top 30 % of x, whatever y and mode are."""
    CALLS.append(ctx.index)
    p = ctx.job_parameters
    return CaseOutput({"value": p["x"], "other": p["y"] * 0.0})


SUITE = """
[suite]
name = "planted"
job = "planted"
seed = 5
cases = 10

[parameters.job]
x = { uniform = [0.0, 1.0] }
y = { uniform = [-5.0, 5.0] }
mode = { choices = ["a", "b", "c"] }
fixed = { choices = [3] }

[metrics.value]
aggregate = "max"
"""


@pytest.fixture
def planted(tmp_path, monkeypatch):
    monkeypatch.setitem(JOBS, "planted", JobEntry(f"{__name__}:planted_job",
                                                  {"x": 0.0, "y": 0.0, "mode": "a", "fixed": 0}, ("value", "other")))
    path = tmp_path / "planted.toml"
    path.write_text(SUITE)
    CALLS.clear()
    return path


def test_finds_the_planted_violation_and_shrinks_it_to_the_cause(planted, tmp_path, capsys):
    out = tmp_path / "f"
    code = main(["falsify", str(planted), "--property", "value <= 0.7", "--budget", "12", "--seed", "0",
                 "--out", str(out), "--no-progress", "--workers", "1"])
    assert code == 1
    doc = json.loads((out / "falsify.json").read_text())
    assert doc["stopped_by"] == "violation" and doc["searched_cases"] <= 12
    ce = doc["counterexample"]
    assert list(ce["values"]) == ["job.x"] and ce["values"]["job.x"] > 0.7      # y and mode back at their defaults
    assert doc["first"]["values"] != ce["values"]                 # the first one found had more to shrink
    assert ce["margin"] == pytest.approx(0.7 - ce["values"]["job.x"])
    # every shrink step was run: each accepted step is an evaluation that violates
    evs = {e["n"]: e for e in map(json.loads, (out / "evaluations.jsonl").read_text().splitlines())}
    assert all(not evs[n]["holds"] for n in doc["shrink_path"])
    # the scenario file: one case, its seed, the non-default and the suite's fixed parameters as choices
    raw = tomllib.loads((out / "counterexample.toml").read_text())
    assert raw["suite"]["cases"] == 1 and raw["suite"]["seed"] == ce["seed"]
    assert raw["parameters"]["job"] == {"x": {"choices": [ce["values"]["job.x"]]}, "fixed": {"choices": [3]}}
    reg = raw["regression"]
    assert reg["property"] == "value <= 0.7" and reg["margin"] == pytest.approx(ce["margin"]) and reg["quick"] is True
    assert reg["found_by"].startswith("micromill falsify ") and "--seed 0" in reg["found_by"]
    assert reg["controller_version"].startswith("micromill ")
    assert load_suite(out / "counterexample.toml").regression.property.text == "value <= 0.7"
    assert doc["replay"]["violates"] and doc["replay"]["same_metrics"]
    assert (out / "search.png").is_file() and (out / "replay" / "report.md").is_file()
    # micromill run replays it: the same value, the same violation
    assert main(["run", str(out / "counterexample.toml"), "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    case = json.loads((tmp_path / "again" / "results.json").read_text())["cases"][0]
    assert case["metrics"]["value"] == ce["values"]["job.x"]
    assert "COUNTEREXAMPLE" in capsys.readouterr().out


def test_same_seed_same_search_whatever_the_workers(planted, tmp_path):
    suite = load_suite(planted)
    a = falsify(suite, "value <= 0.7", tmp_path / "a", budget=12, seed=3, workers=1, progress=False,
                log=lambda s: None)
    b = falsify(suite, "value <= 0.7", tmp_path / "b", budget=12, seed=3, workers=2, progress=False,
                log=lambda s: None)
    assert a["counterexample"]["values"] == b["counterexample"]["values"]
    assert a["counterexample"]["seed"] == b["counterexample"]["seed"]
    assert a["shrink_path"] == b["shrink_path"]


def test_nothing_found_within_the_budget_exits_0(planted, tmp_path):
    out = tmp_path / "f"
    assert main(["falsify", str(planted), "--property", "value <= 2", "--budget", "6", "--out", str(out),
                 "--no-progress"]) == 0
    doc = json.loads((out / "falsify.json").read_text())
    assert doc["counterexample"] is None and doc["searched_cases"] == 6 and doc["stopped_by"] == "budget"
    assert not (out / "counterexample.toml").exists()


@pytest.mark.parametrize("prop, said", [("valeu <= 0.7", "did you mean value"), ("value <=", "bad syntax"),
                                        ("__import__('os') == 0", "not allowed")])
def test_a_bad_property_is_refused_before_any_case_runs(planted, tmp_path, capsys, prop, said):
    out = tmp_path / "f"
    assert main(["falsify", str(planted), "--property", prop, "--out", str(out), "--no-progress"]) == 2
    assert said in capsys.readouterr().err
    assert CALLS == [] and not out.exists()


@pytest.mark.parametrize("args", [["--budget", "0"], ["--budget", str(MAX_FALSIFY_CASES + 1)], ["--budget", "x"],
                                  ["--shrink-budget", "0"], ["--workers", "0"], ["--time-budget", "soon"],
                                  ["--time-budget=-1m"], ["--time-budget", "8d"], ["--seed", "-1"]])
def test_counts_are_bounded(planted, tmp_path, args):
    argv = ["falsify", str(planted), "--property", "value <= 1", "--out", str(tmp_path / "f"), *args]
    if args[0].startswith("--time-budget"):        # parsed by falsify (a duration), the others by argparse
        assert main(argv) == 2
    else:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert CALLS == [] and not (tmp_path / "f").exists()


def test_a_used_output_folder_is_refused(planted, tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "mine.txt").write_text("keep")
    assert main(["falsify", str(planted), "--property", "value <= 1", "--out", str(tmp_path / "f")]) == 2
    assert CALLS == []


def test_durations():
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    for bad in ("0", "1w", "", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def interrupting_job(ctx):
    """Case 5 sends the falsify process Ctrl-C, as a user would."""
    import os
    import signal

    if ctx.index == 5:
        os.kill(os.getppid(), signal.SIGINT)
    return CaseOutput({"value": ctx.job_parameters["x"], "other": 0.0})


def test_ctrl_c_stops_and_keeps_what_was_found(planted, tmp_path, monkeypatch):
    monkeypatch.setitem(JOBS, "planted", JobEntry(f"{__name__}:interrupting_job",
                                                  {"x": 0.0, "y": 0.0, "mode": "a", "fixed": 0}, ("value", "other")))
    out = tmp_path / "f"
    code = main(["falsify", str(planted), "--property", "value <= 2", "--budget", "40", "--out", str(out),
                 "--no-progress", "--workers", "2"])
    assert code == 130
    doc = json.loads((out / "falsify.json").read_text())
    assert doc["stopped_by"] == "SIGINT" and 4 <= doc["searched_cases"] < 40
    assert len((out / "evaluations.jsonl").read_text().splitlines()) == doc["searched_cases"]
    assert (out / "search.png").is_file()


def test_the_time_budget_stops_the_search(planted, tmp_path):
    out = tmp_path / "f"
    assert main(["falsify", str(planted), "--property", "value <= 2", "--budget", "400", "--time-budget", "0.001s",
                 "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "falsify.json").read_text())
    assert doc["stopped_by"] == "time budget" and doc["searched_cases"] < 400


def test_ties_at_a_boundary_are_broken_by_how_close_the_other_terms_come():
    """``breaches == 0`` has margin 0 whenever it holds, so the ``and`` margin cannot tell a 19 um
    bridge from a 0 um one; the sum of the terms' margins (the slack) can, and guides the search."""
    from scenarios.falsify import conjuncts
    from scenarios.properties import parse_property

    metrics = JOBS["milling"].metrics
    prop = parse_property("breaches == 0 and max_bridge_um <= 20", metrics)
    terms = conjuncts(prop, metrics)
    assert [t.text for t in terms] == ["breaches == 0", "max_bridge_um <= 20"]
    near, far = {"breaches": 0, "max_bridge_um": 19.0}, {"breaches": 0, "max_bridge_um": 0.0}
    assert prop.evaluate(near).margin == prop.evaluate(far).margin
    assert sum(t.evaluate(near).margin for t in terms) < sum(t.evaluate(far).margin for t in terms)
    assert conjuncts(parse_property("breaches == 0 or max_bridge_um <= 20", metrics), metrics)[0].text == \
        "breaches == 0 or max_bridge_um <= 20"
