"""The property language (scenarios.properties): what it accepts, what it refuses before any case
runs, and its verdicts and margins."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scenarios.jobs import JOBS
from scenarios.properties import PropertyError, parse_property

MILLING = JOBS["milling"].metrics


def test_the_issue_example_parses_and_judges():
    p = parse_property("breaches == 0 and max_bridge_um <= 20", MILLING)
    assert p.metrics == ("breaches", "max_bridge_um")
    ok = p.evaluate({"breaches": 0, "max_bridge_um": 12.0})
    assert ok.holds and ok.margin == 0.0          # min(-|0 - 0|, (20 - 12) / 20): an equality met is margin 0
    alone = parse_property("max_bridge_um <= 20", MILLING).evaluate({"max_bridge_um": 12.0})
    assert alone.holds and alone.margin == pytest.approx(8.0 / 20.0)
    bad = p.evaluate({"breaches": 3, "max_bridge_um": 12.0})
    assert not bad.holds and bad.margin == pytest.approx(-3.0)
    bridge = p.evaluate({"breaches": 0, "max_bridge_um": 50.0})
    assert not bridge.holds and bridge.margin == pytest.approx(-30.0 / 20.0)


@pytest.mark.parametrize("text, message", [
    ("breeches == 0", r"unknown metric 'breeches'; did you mean breaches"),
    ("breaches == ", r"bad syntax"),
    ("breaches", r"is not a condition"),
    ("__import__('os').system('true') == 0", r"not allowed"),
    ("breaches.real == 0", r"not allowed"),
    ("breaches == 'none'", r"the constant 'none' is not allowed"),
    ("", r"the property is empty"),
    ("x" * 3000, r"at most 2000"),
    ("breaches is 0", r"the comparison Is is not allowed"),
])
def test_bad_properties_are_refused_with_the_reason(text, message):
    with pytest.raises(PropertyError, match=message):
        parse_property(text, MILLING)


def test_nan_never_satisfies_a_property():
    p = parse_property("max_bridge_um <= 20 or not (breaches > 0)", MILLING)
    v = p.evaluate({"max_bridge_um": math.nan, "breaches": 0})
    assert v.holds                      # the second branch is measured and holds
    v = parse_property("max_bridge_um <= 20", MILLING).evaluate({"max_bridge_um": math.nan})
    assert not v.holds and v.margin == -math.inf


def test_a_missing_metric_value_is_an_error():
    with pytest.raises(PropertyError, match="no value for breaches"):
        parse_property("breaches == 0", MILLING).evaluate({"max_bridge_um": 1.0})


finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(a=finite, b=finite, op=st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
def test_margin_sign_agrees_with_the_verdict(a, b, op):
    """Holds => margin >= 0; violated => margin <= 0 (the search's guide never points the wrong way)."""
    v = parse_property(f"max_bridge_um {op} peak_force_n", MILLING).evaluate({"max_bridge_um": a, "peak_force_n": b})
    assert v.holds == eval(f"{a!r} {op} {b!r}")       # the reference: Python's own comparison of the numbers
    assert (v.margin >= 0) if v.holds else (v.margin <= 0)


@given(a=finite, b=finite)
def test_and_or_not_follow_boolean_logic(a, b):
    values = {"max_bridge_um": a, "peak_force_n": b}
    p, q = a <= 20, b > 1
    for text, expected in [("max_bridge_um <= 20 and peak_force_n > 1", p and q),
                           ("max_bridge_um <= 20 or peak_force_n > 1", p or q),
                           ("not max_bridge_um <= 20", not p),
                           ("abs(max_bridge_um) >= 0 and min(max_bridge_um, peak_force_n) <= max_bridge_um", True)]:
        assert parse_property(text, MILLING).holds(values) == expected
