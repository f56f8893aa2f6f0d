"""Speed work must not change what happens: seeded milling cases end as they did before it.

``tests/data/pinned_milling_outcomes.json`` holds the outcomes of the first four cases of
``scenarios/milling.toml`` (completion CNN) and ``scenarios/milling_oracle.toml`` (sim-only
oracle), recorded at the commit it names. First recorded before the issue-12 speed work
(rendering only what the sensor looks at, the compiled bone model, ...); re-recorded in issue 13,
whose bone model (cut along the burr's normal, thin bone cracking) changes the outcomes on
purpose, and again for issue 13's planner changes (the synchronised finish, the floor's fit
margin, the settle, the over-cut; times a few seconds longer, bridges within 3 um), and for the
speed scale (the CNN cases 15-30 s longer, still 4/4, bridges 0-11 um). Each case is re-run here through the
runner's own ``run_case`` and must match: success, breach count and the controller's stop
exactly, the thickest bridge within 1 um, the stop time within one control period (20 ms).
One oracle and one CNN case run by default; the rest are behind the ``slow`` marker.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

PINNED = json.loads((Path(__file__).parent / "data" / "pinned_milling_outcomes.json").read_text())
PERIOD_MIN = 0.02 / 60.0
FAST = {("milling_oracle", 3), ("milling", 1)}     # one oracle and one CNN case (~20 s together)


def _params():
    for c in PINNED["cases"]:
        key = (c["suite"], c["index"])
        marks = () if key in FAST else (pytest.mark.slow,)
        yield pytest.param(c, id=f"{c['suite']}-{c['index']}", marks=marks)


@pytest.mark.parametrize("pinned", list(_params()))
def test_seeded_case_outcome_unchanged(pinned, tmp_path):
    from scenarios.cases import make_cases, run_case
    from scenarios.suite import load_suite

    suite = load_suite(Path("scenarios") / f"{pinned['suite']}.toml")
    ctx = make_cases(suite, pinned["index"] + 1, suite.seed, tmp_path, n_artifact_cases=0)[pinned["index"]]
    assert ctx.seed == pinned["seed"]
    res = run_case(suite.job, ctx)
    assert res.error is None, res.error
    m = res.metrics
    assert m["success"] == pinned["success"]
    assert m["breaches"] == pinned["breaches"]
    assert m["complete"] == pinned["complete"]
    assert res.notes["stop"] == pinned["stop"]
    assert abs(m["max_bridge_um"] - pinned["max_bridge_um"]) <= 1.0
    assert abs(m["milling_time_min"] - pinned["milling_time_min"]) <= PERIOD_MIN + 1e-9
