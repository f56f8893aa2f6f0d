"""The hw_check job reports what went wrong (issue 16): whatever a contract check raises is that
check's failure with its type and message, the other checks still run, and a move stopped by the
safety layer is a result with its cause, not an errored case. Faults are injected on the mock
backend by wrapping the job's ``case_hardware`` (one session per check, tagged ``_<check>``, and
``_move``)."""
import math

import pytest

from hw_bridge.checker import CHECKS
from scenarios import cases as cases_module
from scenarios.cases import CaseContext, run_case
from scenarios.jobs import JOBS
from scenarios.jobs import hw_check


def _context(tmp_path) -> CaseContext:
    return CaseContext("hw_check", 0, 1, "scenes/default.toml", "mock", {}, {**JOBS["hw_check"].parameters,
                       "offset_z_mm": 1.0}, str(tmp_path), False)


@pytest.fixture
def inject(monkeypatch):
    """``inject({tag: fault})``: sessions whose tag is given start with that twin.faults fault."""
    def apply(faults: dict[str, str]):
        def make(ctx, scene, seed=None, tag=""):
            hw = cases_module.case_hardware(ctx, scene, seed, tag)
            if tag in faults:
                hw.faults.inject(faults[tag])
            return hw
        monkeypatch.setattr(hw_check, "case_hardware", make)
    return apply


def test_clean_mock_passes_every_check(tmp_path):
    res = run_case("hw_check", _context(tmp_path))
    assert res.error is None and res.notes["failed_checks"] == {}, res.notes
    assert res.metrics["contract_checks_passed"] == 1.0 and res.notes["move"] == "done"
    assert res.notes["checks_run"] == list(CHECKS)


def test_joints_that_ignore_commands_are_reported_as_not_following(tmp_path, inject):
    inject({f"_{name}": "ignore_commands" for name in CHECKS} | {"_move": "ignore_commands"})
    res = run_case("hw_check", _context(tmp_path))
    assert res.error is None, res.error
    failed = res.notes["failed_checks"]
    assert failed["follows_commands"].startswith("the robot did not follow the commands: joint 0 commanded")
    assert "workspace" not in str(res.notes)
    assert res.notes["move"].startswith("not run: the robot did not follow the commands")
    assert res.metrics["contract_checks_passed"] == pytest.approx(1 - len(failed) / len(CHECKS))
    assert all(math.isnan(res.metrics[m]) for m in hw_check.MOVE_METRICS)


def test_any_exception_is_the_checks_failure_and_the_others_still_run(tmp_path, inject):
    """A lost connection (ConnectionLost before activation, SafetyStop after) fails its own check with
    its type and message; a stop during the move is the move's note, and the checks are kept."""
    inject({"_lifecycle": "disconnect", "_stereo": "nan_joint_states", "_move": "ignore_commands"})
    res = run_case("hw_check", _context(tmp_path))
    assert res.error is None, res.error
    failed = res.notes["failed_checks"]
    assert set(failed) == {"lifecycle", "stereo"}, failed
    assert failed["lifecycle"].startswith("ConnectionLost: ")
    assert failed["stereo"].startswith("SafetyStop: ") and "non-finite" in failed["stereo"]
    assert res.metrics["contract_checks_passed"] == pytest.approx(1 - 2 / len(CHECKS))
    # the robot stood still during the move: the safety layer's tracking rule stops it (before the
    # pose controller winds up to the workspace box)
    assert res.notes["move"].startswith("stopped: SafetyStop: ") and "does not follow its commands" in res.notes["move"]
    assert "workspace" not in res.notes["move"]
    assert all(math.isnan(res.metrics[m]) for m in hw_check.MOVE_METRICS)
