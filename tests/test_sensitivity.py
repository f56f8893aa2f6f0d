"""micromill sensitivity: spec validation, the level suites (common random numbers), aggregation, outputs."""
import json
import math
import tomllib
from pathlib import Path

import pytest

from scenarios.cases import CaseOutput, CaseResult, make_cases
from scenarios.cli import main
from scenarios.jobs import JOBS, JobEntry
from scenarios.sensitivity import (level_metrics, load_sensitivity, markdown, plot, sensitivity_from_dict,
                                   to_toml)
from scenarios.suite import suite_from_dict
from scenes.schema import ConfigError, load_toml

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def fake_job(ctx):
    p = ctx.job_parameters
    return CaseOutput({"success": float(p["x"] < p["p"]), "value": p["q"], "x": p["x"]})


@pytest.fixture
def fake_suite_file(monkeypatch, tmp_path):
    """A suite of the fake job: x, then the swept p, then q, drawn in that order (fixing p must not
    change q's draw), and k drawn from three choices."""
    monkeypatch.setitem(JOBS, "fake_sens", JobEntry(f"{__name__}:fake_job", {"x": 0.0, "p": 0.5, "q": 0.0, "k": 1.0},
                                                    {"success": "binary", "value": "continuous",
                                                     "x": "continuous"}))
    path = tmp_path / "fake.toml"
    path.write_text("""
[suite]
name = "fake"
job = "fake_sens"
seed = 7
cases = 4
[parameters.job]
x = { uniform = [0.0, 1.0] }
p = { uniform = [0.2, 0.8] }
k = { choices = [1.0, 2.0, 3.0] }
q = { uniform = [0.0, 1.0] }
[metrics.success]
aggregate = "proportion"
[metrics.value]
aggregate = "max"
[metrics.x]
aggregate = "mean"
""")
    return path


def _spec(suite: str, body: str, cases: int = 3, metrics: str = '["success", "value"]') -> dict:
    return tomllib.loads(f'[sensitivity]\nname = "s"\nsuite = "{suite}"\ncases = {cases}\nmetrics = {metrics}\n'
                         + body)


def _errors(raw: dict, folder: Path = SCENARIOS) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        sensitivity_from_dict(raw, "spec.toml", folder)
    return exc.value.errors


# ----- validation ------------------------------------------------------------------------------

def test_unknown_scene_key_is_named_with_the_sections_fields():
    errors = _errors(_spec("twin_smoke.toml", '[scene."milling.burr_wear_um"]\nlevels = [0.0, 10.0]\n',
                           metrics='["reach_error_m"]'))
    assert any(e.startswith('scene."milling.burr_wear_um": the scene has no field') and "cut_rate_um_s" in e
               for e in errors), errors


def test_unknown_job_parameter_and_metric():
    errors = _errors(_spec("twin_smoke.toml", "[job.oracle_mae]\nlevels = [0.0, 0.1]\n", metrics='["success"]'))
    assert any(e.startswith('job."oracle_mae": job \'twin_smoke\' has no parameter') for e in errors), errors
    assert any(e.startswith("sensitivity.metrics: 'success' is not a metric") for e in errors), errors


def test_too_many_levels_and_non_finite_and_duplicate_levels():
    levels = ", ".join(str(float(i)) for i in range(13))
    errors = _errors(_spec("twin_smoke.toml", f'[scene."skull.unevenness_amplitude_mm"]\nlevels = [{levels}]\n'
                           '[job.offset_z_mm]\nlevels = [nan, 1.0]\n[job.offset_x_mm]\nlevels = [1.0, 1.0]\n',
                           metrics='["reach_error_m"]'))
    text = "\n".join(errors)
    assert 'scene."skull.unevenness_amplitude_mm".levels' in text and "12" in text, text
    assert "job.offset_z_mm.levels[0]=nan: must be a bool, an integer, a finite number" in text, text
    assert "distinct" in text, text


def test_level_outside_the_field_bounds_names_the_level_and_the_bounds():
    errors = _errors(_spec("twin_smoke.toml", '[scene."skull.unevenness_amplitude_mm"]\nlevels = [0.1, 50.0]\n',
                           metrics='["reach_error_m"]'))
    bad = [e for e in errors if e.startswith('scene."skull.unevenness_amplitude_mm".levels[1]=50')]
    assert bad and "skull.unevenness_amplitude_mm" in bad[0], errors
    assert not any("levels[0]" in e for e in errors)


def test_total_cases_bounded():
    errors = _errors(_spec("twin_smoke.toml", "[job.offset_z_mm]\nlevels = [0.5, 1.0, 1.5]\n", cases=40000,
                           metrics='["reach_error_m"]'))
    assert any(e.startswith("sensitivity.cases=40000: 120000 cases in all") for e in errors), errors


def test_fixing_a_field_must_keep_the_other_draws(monkeypatch):
    """The check behind common random numbers: a fixed field that draws less than the base's
    distribution (here choices = [L] for a uniform) shifts every later draw, and is refused."""
    import scenarios.sensitivity as sensitivity

    monkeypatch.setattr(sensitivity, "fixed_distribution", lambda base, value: {"choices": [value]})
    errors = _errors(_spec("twin_smoke.toml", '[scene."skull.unevenness_amplitude_mm"]\nlevels = [0.0, 0.1]\n',
                           metrics='["reach_error_m"]'))
    assert any(e.startswith('scene."skull.unevenness_amplitude_mm": fixing it changes the other fields') for e in errors), \
        errors
    monkeypatch.undo()
    sens = sensitivity_from_dict(_spec("twin_smoke.toml", '[scene."skull.seed"]\nlevels = [1, 2]\n',
                                       metrics='["reach_error_m"]'), "spec.toml", SCENARIOS)
    assert sens.parameters[0].levels[1].raw["parameters"]["scene"]["skull.seed"] == {"integers": [2, 2]}


def test_missing_base_suite():
    errors = _errors(_spec("no_such_suite.toml", "[job.offset_z_mm]\nlevels = [0.5, 1.0]\n"))
    assert errors[0].startswith("sensitivity.suite='no_such_suite.toml': no such file")


# ----- expansion -------------------------------------------------------------------------------

def test_levels_fix_one_field_and_keep_every_other_draw(fake_suite_file):
    sens = sensitivity_from_dict(_spec("fake.toml", "[job.p]\nlevels = [0.3, 0.6]\n[job.k]\nlevels = [1.0, 3.0]\n"),
                                 "spec.toml", fake_suite_file.parent)
    p, k = sens.parameters
    assert [lv.raw["parameters"]["job"]["p"] for lv in p.levels] == [{"uniform": [0.3, 0.3]}, {"uniform": [0.6, 0.6]}]
    assert [lv.raw["parameters"]["job"]["k"] for lv in k.levels] == [{"choices": [1.0] * 3}, {"choices": [3.0] * 3}]
    assert [lv.folder for lv in p.levels] == ["job.p/level0", "job.p/level1"]
    assert p.default is None and k.default is None          # the base suite varies both
    base = make_cases(sens.base, 5, 7, Path("."))
    for param in sens.parameters:
        for lv in param.levels:
            cases = make_cases(suite_from_dict(lv.raw), 5, 7, Path("."))
            for b, c in zip(base, cases):
                assert c.seed == b.seed
                assert c.job_parameters[param.key] == lv.value
                assert {n: v for n, v in c.job_parameters.items() if n != param.key} == \
                       {n: v for n, v in b.job_parameters.items() if n != param.key}


def test_fixed_fields_hold_in_every_run_and_are_the_swept_default(fake_suite_file):
    sens = sensitivity_from_dict(_spec("fake.toml", "[job.p]\nlevels = [0.3, 0.6]\n[job.q]\nlevels = [0.1, 0.9]\n"
                                       "[fixed.job]\nq = 0.25\np = 0.4\n"), "spec.toml", fake_suite_file.parent)
    p, q = sens.parameters
    assert (p.default, q.default) == (0.4, 0.25)
    base = make_cases(suite_from_dict(load_toml(fake_suite_file)), 4, 7, Path("."))
    for lv in p.levels:
        for b, c in zip(base, make_cases(suite_from_dict(lv.raw), 4, 7, Path("."))):
            assert (c.job_parameters["p"], c.job_parameters["q"]) == (lv.value, 0.25)
            assert (c.seed, c.job_parameters["x"], c.job_parameters["k"]) == \
                   (b.seed, b.job_parameters["x"], b.job_parameters["k"])
    assert {c.job_parameters["q"] for c in make_cases(suite_from_dict(q.levels[1].raw), 4, 7, Path("."))} == {0.9}
    errors = _errors(_spec("fake.toml", "[job.p]\nlevels = [0.3, 0.6]\n[fixed.job]\nq = 2\nnope = 1\n"),
                     fake_suite_file.parent)
    assert any(e.startswith("fixed: ") and "nope" in e for e in errors), errors


def test_a_scene_field_the_base_does_not_vary_is_appended_and_its_default_marked():
    sens = sensitivity_from_dict(_spec("twin_smoke.toml", '[scene."milling.cut_rate_um_s"]\nlevels = [100.0, 600.0]\n',
                                       metrics='["reach_error_m"]'), "spec.toml", SCENARIOS)
    (p,) = sens.parameters
    dists = p.levels[0].raw["parameters"]["scene"]
    assert list(dists)[-1] == "milling.cut_rate_um_s" and dists["milling.cut_rate_um_s"] == {"choices": [100.0]}
    assert p.default == 600.0        # scenes/default.toml leaves it at MillingParams' 600 um/s


def test_to_toml_round_trips_the_suites():
    for name in ("milling_oracle.toml", "twin_smoke.toml"):
        raw = load_toml(SCENARIOS / name)
        assert tomllib.loads(to_toml(raw)) == raw


def test_the_shipped_spec_loads():
    sens = load_sensitivity(SCENARIOS / "sensitivity.toml")
    assert sens.base.name == "milling_oracle"
    assert {p.key for p in sens.parameters} >= {"milling.cut_rate_um_s", "milling.skull_stiffness_n_per_mm",
                                                "oracle_mae"}


# ----- aggregation and outputs ----------------------------------------------------------------

def _result(i: int, success: float, value: float, error: str | None = None) -> CaseResult:
    return CaseResult(i, i, {}, {}, {} if error else {"success": success, "value": value, "x": 0.0}, [], {}, error, 0.0)


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def test_level_metrics_by_hand(fake_suite_file):
    suite = suite_from_dict(load_toml(fake_suite_file))
    results = [_result(0, 1, 0.2), _result(1, 1, 0.9), _result(2, 0, 0.4), _result(3, 1, 0.1),
               _result(4, 0, 0.0, error="boom")]       # an errored case counts in neither
    m = level_metrics(suite, results, ("success", "value"))
    assert (m["success"]["k"], m["success"]["n"]) == (3, 4)
    assert m["success"]["value"] == pytest.approx(0.75)
    assert m["success"]["ci95"] == pytest.approx(list(_wilson(3, 4)), abs=1e-9)
    assert m["value"] == {"aggregate": "max", "value": pytest.approx(0.9), "n": 4}


def _doc() -> dict:
    lo, hi = _wilson(3, 4)
    lvl = [{"value": 0.3, "run": "job.p/level0", "cases": 4, "errored": 0,
            "metrics": {"success": {"aggregate": "proportion", "value": 0.75, "n": 4, "k": 3, "ci95": [lo, hi]},
                        "value": {"aggregate": "max", "value": 0.9, "n": 4}}},
           {"value": 0.6, "run": "job.p/level1", "cases": 0, "errored": 0, "metrics": {}}]
    return {"name": "s", "description": "", "spec": "spec.toml", "base_suite": "fake.toml", "seed": 7,
            "cases_per_level": 4, "metrics": {"success": {"aggregate": "proportion", "description": ""},
                                              "value": {"aggregate": "max", "description": ""}},
            "parameters": [{"group": "job", "key": "p", "default": 0.3, "note": "why", "levels": lvl}]}


def test_markdown_and_plot_from_fake_results(tmp_path):
    md = markdown(_doc())
    assert "| 0.3 (default) | 4 | 3/4 (30–95 %) | 0.9 |" in md        # Wilson 3/4: 30.1-95.4 %
    assert "| 0.6 | 0 | – | – |" in md
    plot(_doc(), tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_end_to_end_same_seeds_resume_and_report_only(fake_suite_file, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('[sensitivity]\nname = "s"\nsuite = "fake.toml"\ncases = 3\nmetrics = ["success", "value"]\n'
                    "[job.p]\nlevels = [0.0, 0.5, 1.0]\n")
    out = tmp_path / "out"
    assert main(["sensitivity", str(spec), "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "sensitivity.json").read_text())
    runs = [[json.loads(line) for line in (out / "job.p" / f"level{i}" / "cases.jsonl").read_text().splitlines()]
            for i in range(3)]
    xs = [c["job_parameters"]["x"] for c in runs[0]]
    for i, level in enumerate(runs):          # the same seeds and draws at every level, p fixed
        assert [c["seed"] for c in level] == [c["seed"] for c in runs[0]]
        assert [c["job_parameters"]["x"] for c in level] == xs
        assert [c["job_parameters"]["q"] for c in level] == [c["job_parameters"]["q"] for c in runs[0]]
        assert {c["job_parameters"]["p"] for c in level} == {[0.0, 0.5, 1.0][i]}
    ks = [lv["metrics"]["success"]["k"] for lv in doc["parameters"][0]["levels"]]
    assert ks == [0, sum(x < 0.5 for x in xs), 3]
    assert (out / "sensitivity.png").is_file() and (out / "sensitivity.md").is_file()
    # a non-empty --out is refused without --resume; --resume with everything finished runs nothing
    assert main(["sensitivity", str(spec), "--out", str(out), "--no-progress"]) == 2
    stamp = (out / "job.p" / "level1" / "cases.jsonl").stat().st_mtime_ns
    assert main(["sensitivity", str(spec), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert (out / "job.p" / "level1" / "cases.jsonl").stat().st_mtime_ns == stamp
    (out / "sensitivity.json").unlink()
    assert main(["sensitivity", str(spec), "--out", str(out), "--report-only"]) == 0
    assert json.loads((out / "sensitivity.json").read_text())["parameters"] == doc["parameters"]
