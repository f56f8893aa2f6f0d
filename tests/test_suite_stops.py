"""A suite case whose job raises mid-run ends with its hardware stopped with the cause (drill off,
holding) and closed; the cause is in the case's result, the report and a ``STOPPED:`` line; the
other cases are kept; ``micromill run`` exits 1 (issue 16)."""
import json

import pytest

from hw_bridge.interface import Lifecycle
from scenarios.cases import CaseOutput, case_hardware, case_session
from scenarios.cli import main
from scenarios.jobs import JOBS, JobEntry
from scenes.spec import load_scene

#: every interface the jobs below opened, to inspect after the run (the mock runs in this process)
OPENED = []


def _drill_on(hw):
    hw.configure()
    hw.activate()
    hw.set_drill(True, 1000.0)
    hw.write(hw.read().position)
    hw.advance()


def session_job(ctx):
    """Opens its hardware with case_session; case 1 raises with the drill on."""
    with case_session(ctx, load_scene(ctx.scene_path, ctx.scene_overrides)) as hw:
        OPENED.append(hw)
        _drill_on(hw)
        if ctx.index == 1:
            raise ValueError("the controller broke in case 1")
        return CaseOutput({"value": 1.0})


def leaky_job(ctx):
    """Forgets to close its hardware; case 1 raises with the drill on."""
    hw = case_hardware(ctx, load_scene(ctx.scene_path, ctx.scene_overrides))
    OPENED.append(hw)
    _drill_on(hw)
    if ctx.index == 1:
        raise ValueError("the controller broke in case 1")
    return CaseOutput({"value": 1.0})


@pytest.mark.parametrize("job", ["session_job", "leaky_job"])
def test_a_case_that_raises_stops_its_hardware_and_keeps_the_others(tmp_path, monkeypatch, capsys, job):
    """Fails before the fix: the hardware was closed without the cause (session_job: no
    ``hw.fault``, no safety_stop in the recording) or left active with the drill on (leaky_job)."""
    OPENED.clear()
    monkeypatch.setitem(JOBS, "stopping", JobEntry(f"{__name__}:{job}", {}, ("value",), backends=("mock",)))
    suite = tmp_path / "suite.toml"
    suite.write_text('[suite]\nname = "stopping"\njob = "stopping"\nbackend = "mock"\nseed = 1\ncases = 3\n'
                     '[metrics.value]\naggregate = "mean"\n')
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "case 1 STOPPED: ValueError: the controller broke in case 1" in err
    assert len(OPENED) == 3 and all(hw.state is Lifecycle.FINALIZED and not hw.drill_state().on for hw in OPENED)
    assert OPENED[1].fault == "ValueError: the controller broke in case 1"
    assert OPENED[0].fault is None and OPENED[2].fault is None
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert [c["error"] is None for c in sorted(cases, key=lambda c: c["index"])] == [True, False, True]
    assert "STOPPED: ValueError: the controller broke in case 1" in (out / "report.md").read_text()
