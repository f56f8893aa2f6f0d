"""The regression corpus (issue 14 part 3): scenarios/regressions/ loads and its quick entries
replay as their files say; the [regression] table is checked at load; `micromill run DIR` prints
its table and exits by what it found; a recorded demo run joins the corpus and is judged by
whether the controllers decide the same."""
from __future__ import annotations

import functools
import math
import tomllib
from pathlib import Path

import pytest

from scenarios.cli import main
from scenarios.corpus import (RecordingEntry, Replay, SuiteEntry, corpus_exit_code, corpus_table, load_corpus,
                              replay_suite_entry)
from scenarios.suite import suite_from_dict
from scenes.schema import ConfigError

CORPUS = Path(__file__).resolve().parent.parent / "scenarios" / "regressions"

#: a cheap regression: hw_check on the mock backend (no worker process, ~2 s)
HW_CHECK = """
[suite]
name = "{name}"
job = "hw_check"
backend = "mock"
seed = 3
cases = 1

[parameters.job]
offset_z_mm = {{ choices = [1.5] }}

[metrics.reach_error_m]
aggregate = "max"

[regression]
property = "{prop}"
found = "2026-11-30"
controller_version = "micromill 0.1.0 (git a9c2f39)"
found_by = "tests/test_regressions.py"
margin = -1.0
quick = true
expect = "{expect}"
"""


def _entry(folder: Path, name: str, prop: str, expect: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(HW_CHECK.format(name=name, prop=prop, expect=expect))
    return path


# ---- the shipped corpus ----------------------------------------------------------------------

def test_every_file_of_the_corpus_loads_with_its_property_and_date():
    entries = load_corpus(CORPUS)
    suites = [e for e in entries if isinstance(e, SuiteEntry)]
    assert len(suites) >= 2 and any(e.quick for e in entries)
    for e in suites:
        reg = e.suite.regression
        assert e.suite.cases == 1 and reg.property.metrics and reg.found[:4] == "2026"
        assert reg.expect in ("fails", "passes")
        # the margin is the one when found, a counterexample's: an open entry and a fixed one
        # (expect = "passes", issue 13) alike keep the violating margin they were found with
        assert reg.margin <= 0, e.path
        assert e.suite.name == e.path.stem


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.toml")
                                        if tomllib.loads(p.read_text()).get("regression", {}).get("quick")))
def test_quick_regressions_replay_as_their_files_expect(name, tmp_path):
    """What CI replays: each quick counterexample still does what its file says (fails, or passes
    once fixed)."""
    entry = next(e for e in load_corpus(CORPUS) if e.path.name == name)
    replay, summary = replay_suite_entry(entry, tmp_path / "run")
    assert replay.now == entry.suite.regression.expect, (replay, replay.detail)
    assert replay.as_expected and summary["failed_cases"] == []
    assert (replay.margin_now <= 0) == (replay.now == "fails")


# ---- the [regression] table at load ----------------------------------------------------------

def _raw(**regression) -> dict:
    raw = tomllib.loads(HW_CHECK.format(name="x", prop="reach_error_m <= 1e-3", expect="fails"))
    raw["regression"].update(regression)
    return raw


@pytest.mark.parametrize("change, message", [
    ({"found": "2026-02-30"}, "regression.found='2026-02-30': is not a calendar date"),
    ({"found": "30.11.2026"}, "regression.found='30.11.2026': must be an ISO date YYYY-MM-DD"),
    ({"found": "2999-01-01"}, "regression.found='2999-01-01': is in the future"),
    ({"property": "reach_eror_m <= 1"}, "unknown metric 'reach_eror_m'; did you mean reach_error_m?"),
    ({"property": "breaches == 0"}, "unknown metric 'breaches'"),         # a milling metric, not hw_check's
    ({"property": "reach_error_m <="}, "regression.property: property 'reach_error_m <=': bad syntax"),
    ({"quick": 1}, "regression.quick=1"),
    ({"expect": "maybe"}, "regression.expect='maybe' must be one of 'fails', 'passes'"),
    ({"margin": math.nan}, "regression.margin=nan: must be a finite number, or -inf"),
    ({"controller_version": "x" * 201}, "regression.controller_version="),
    ({"colour": "red"}, "regression.colour is not a known field"),
])
def test_a_bad_regression_table_is_refused_at_load_naming_the_field(change, message):
    with pytest.raises(ConfigError) as exc:
        suite_from_dict(_raw(**change), "r.toml")
    assert any(message in e for e in exc.value.errors), exc.value.errors


def test_a_regression_is_one_case_and_needs_every_provenance_field():
    raw = _raw()
    raw["suite"]["cases"] = 3
    del raw["regression"]["found"]
    with pytest.raises(ConfigError) as exc:
        suite_from_dict(raw, "r.toml")
    assert "suite.cases=3: a regression is one case; allowed: 1" in exc.value.errors
    assert any(e.startswith("regression.found is required") for e in exc.value.errors), exc.value.errors
    suite = suite_from_dict(_raw(margin=-math.inf), "r.toml")           # -inf: a metric could not be measured
    assert suite.regression.margin == -math.inf and suite.regression.property.metrics == ("reach_error_m",)


def test_a_folder_with_a_bad_file_is_refused_before_anything_runs(tmp_path, capsys):
    _entry(tmp_path, "good", "reach_error_m <= 0", "fails")
    (tmp_path / "plain.toml").write_text((Path("scenarios") / "hw_check.toml").read_text())
    (tmp_path / "bad.toml").write_text(HW_CHECK.format(name="bad", prop="reach_error_m <= 0", expect="fails")
                                       .replace('found = "2026-11-30"', 'found = "yesterday"'))
    (tmp_path / "orphan.mcap.toml").write_text("")
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.toml'}: regression.found='yesterday'" in err
    assert f"{tmp_path / 'plain.toml'}: no [regression] table" in err
    assert "orphan.mcap.toml: a recording's sidecar, but orphan.mcap is missing" in err
    assert not (tmp_path / "out").exists()


def test_options_that_would_change_a_kept_case_are_refused_with_a_folder(tmp_path, capsys):
    _entry(tmp_path, "a", "reach_error_m <= 0", "fails")
    assert main(["run", str(tmp_path), "--seed", "4", "--cases", "2", "--out", str(tmp_path / "out")]) == 2
    assert "--cases, --seed: not with a folder of regressions" in capsys.readouterr().err
    assert main(["run", "scenarios/hw_check.toml", "--quick"]) == 2


# ---- replaying a folder: the table and the exit status ---------------------------------------

def test_a_folder_replays_each_entry_into_its_run_folder_and_says_which_still_fail(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _entry(corpus, "open_bug", "reach_error_m <= 0", "fails")                 # reach error is > 0: still fails
    _entry(corpus, "fixed_bug", "reach_error_m <= 1e-3", "passes")            # holds: passes (fixed)
    out = tmp_path / "out"
    assert main(["run", str(corpus), "--out", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    head, rule, fixed, still = table.splitlines()[:4]
    assert head.split() == ["file", "property", "found", "controller", "version", "verdict", "now", "margin",
                            "then", "margin", "now"]
    assert fixed.startswith("fixed_bug.toml") and "reach_error_m <= 1e-3" in fixed and "passes (fixed)" in fixed
    assert still.startswith("open_bug.toml") and "still fails" in still and "2026-11-30" in still
    assert "micromill 0.1.0 (git a9c2f39)" in still and "-1 " in still
    assert "2 replayed: 2 as expected, 0 not (1 fail, 1 pass" in table
    assert (out / "open_bug" / "cases.jsonl").is_file() and (out / "fixed_bug" / "report.md").is_file()
    assert main(["run", str(corpus), "--out", str(out), "--no-progress"]) == 2      # used folders: --force
    assert f"--out {out / 'fixed_bug'} is not empty" in capsys.readouterr().err

    # The same entry alone replays to the same margin (deterministic); an open bug that now passes
    # is not as expected: exit 1.
    assert main(["run", str(corpus / "open_bug.toml"), "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    again = capsys.readouterr().out.splitlines()
    line = next(x for x in again if x.startswith("open_bug.toml"))
    assert line.split()[-1] == still.split()[-1] and float(line.split()[-1]) < 0
    _entry(corpus, "now_passes", "reach_error_m <= 1e-3", "fails")
    assert main(["run", str(corpus), "--quick", "--out", str(tmp_path / "out2"), "--no-progress"]) == 1
    table = capsys.readouterr().out
    assert "NOW PASSES" in table and "3 replayed: 2 as expected, 1 not" in table


def test_verdicts_and_exit_codes():
    def replay(expected: str, now: str) -> Replay:
        return Replay("f.toml", "p", "2026-11-30", "v", expected, now, -1.0, None, Path("."))

    words = {("fails", "fails"): "still fails", ("fails", "passes"): "NOW PASSES", ("passes", "fails"):
             "FAILS AGAIN", ("passes", "passes"): "passes (fixed)", ("same", "same"): "decide the same",
             ("same", "differs"): "DECIDE DIFFERENTLY", ("fails", "error"): "ERROR", ("same", "error"): "ERROR"}
    for (expected, now), word in words.items():
        assert replay(expected, now).verdict == word
        assert corpus_exit_code([replay("fails", "fails"), replay(expected, now)]) == (0 if expected == now else 1)
    assert corpus_exit_code([replay("fails", "fails")], "SIGINT") == 130
    assert corpus_exit_code([], "SIGTERM") == 143
    assert "ERROR" in corpus_table([replay("fails", "error")])


# ---- a recording in the corpus -----------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded_corpus(tmp_path_factory) -> Path:
    """A corpus holding one recorded demo run (calibration only, full-scale images) and its sidecar."""
    folder = tmp_path_factory.mktemp("corpus")
    assert main(["demo", "--until", "calibration", "--out", str(folder.parent / "demo_run"),
                 "--record", str(folder / "cal.mcap")]) == 0
    (folder / "cal.mcap.toml").write_text('[regression]\nfound = "2026-11-30"\nfound_by = "micromill demo --until '
                                          'calibration --record cal.mcap"\nquick = true\nnote = "test"\n')
    return folder


def test_a_recording_joins_the_corpus_and_the_controllers_decide_the_same(recorded_corpus, tmp_path, capsys):
    (entry,) = load_corpus(recorded_corpus)
    assert isinstance(entry, RecordingEntry) and entry.quick and entry.controller_version.startswith("micromill ")
    assert main(["run", str(recorded_corpus), "--out", str(tmp_path), "--no-progress"]) == 0
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cal.mcap"))
    assert "controllers decide the same" in row and "decide the same" in row.split("2026-11-30")[1]
    assert (tmp_path / "cal" / "summary.json").is_file()


@pytest.mark.slow
def test_a_changed_controller_decides_differently_from_the_recording(recorded_corpus, tmp_path, capsys,
                                                                     monkeypatch):
    """A developer's change (here: the pose controller's gain, 8 -> 6) shows as DECIDE DIFFERENTLY.
    Slow (a second full replay, ~30-50 s); the replay backend's own divergence detection is tested
    by default in tests/test_recording.py."""
    import controllers.pipeline as pipeline

    monkeypatch.setattr(pipeline, "PoseController", functools.partial(pipeline.PoseController, gain=6.0))
    assert main(["run", str(recorded_corpus), "--out", str(tmp_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "DECIDE DIFFERENTLY" in out and "cal.mcap: " in out


def test_a_recording_that_is_not_a_micromill_recording_is_refused(tmp_path, capsys):
    (tmp_path / "x.mcap").write_text("hello")
    assert main(["run", str(tmp_path)]) == 2
    assert str(tmp_path / "x.mcap") in capsys.readouterr().err


def test_a_sidecar_is_checked_like_a_regression(recorded_corpus, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "cal.mcap").symlink_to(recorded_corpus / "cal.mcap")
    (folder / "cal.mcap.toml").write_text('[regression]\nfound = "2026-11-31"\nfound_by = ""\n')
    with pytest.raises(ConfigError) as exc:
        load_corpus(folder)
    text = "\n".join(exc.value.errors)
    assert "regression.found='2026-11-31': is not a calendar date" in text and "regression.found_by=''" in text



def test_a_recording_cut_short_is_an_error_of_its_replay_not_of_the_folder(recorded_corpus, tmp_path, capsys):
    """Its metadata (at the start) loads, so the folder is accepted; the replay cannot read the
    messages: ERROR, exit 1, and the other entries still replay."""
    folder = tmp_path / "c"
    folder.mkdir()
    data = (recorded_corpus / "cal.mcap").read_bytes()
    (folder / "cut.mcap").write_bytes(data[:len(data) // 2])
    _entry(folder, "open_bug", "reach_error_m <= 0", "fails")
    assert main(["run", str(folder), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    row = next(x for x in out.splitlines() if x.startswith("cut.mcap "))
    assert "ERROR" in row and "cut.mcap: " in out and "truncated or corrupt MCAP file" in out
    assert "still fails" in next(x for x in out.splitlines() if x.startswith("open_bug.toml"))
