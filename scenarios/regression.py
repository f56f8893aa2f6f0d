"""The ``[regression]`` table of a suite file: a kept counterexample (issue 14).

A regression is a one-case suite (``cases = 1``, a fixed ``seed``, every non-default parameter as
``{ choices = [value] }``) plus what it violated and where it came from::

    [regression]
    property = "breaches == 0 and max_bridge_um <= 20"   # scenarios.properties, over the job's metrics
    found = "2026-11-30"                                  # ISO date (YYYY-MM-DD)
    controller_version = "micromill 0.1.0 (git a9c2f39)"  # package version + git commit
    found_by = "micromill falsify ..."                    # the command (or person) that found it
    margin = -1.25                                        # the property's margin when found
    quick = false                                         # true: replays in under ~60 s; CI replays it
    expect = "fails"                                      # optional: "fails" (default) or "passes"
    note = "..."                                          # optional: what it shows

``expect``: ``"fails"`` (the default) for a counterexample the controller still has: replaying it
must violate the property. ``"passes"`` for one fixed since: it is kept so that the bug cannot come
back unnoticed, and replaying it must satisfy the property. ``micromill run`` on such a file (or
on ``scenarios/regressions/``) says whether each replay is as expected (``scenarios.corpus``).

``suite.py`` validates the table with the rest of the file (``RegressionTable``: field types and
bounds, the date) and then ``regression_problems`` checks the property against the job's metrics,
so a regression that could never be judged is refused at load, before any case runs.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, Strict

from scenes.fields import FROZEN
from scenarios.properties import MAX_PROPERTY_CHARS, Property, PropertyError, parse_property

#: a found date as written: YYYY-MM-DD
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: the longest controller_version (characters)
MAX_VERSION_CHARS = 200
#: the longest found_by (characters): a command line
MAX_FOUND_BY_CHARS = 2000
#: the longest note (characters)
MAX_NOTE_CHARS = 10000
#: what a replay of a regression can be expected to do
EXPECTATIONS = ("fails", "passes")


def _iso_date(value: str) -> str:
    """``value`` when it is a real calendar date written YYYY-MM-DD, not after today."""
    if not _ISO_DATE.match(value):
        raise ValueError("must be an ISO date YYYY-MM-DD, e.g. \"2026-11-30\"")
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"is not a calendar date ({exc})") from None
    if day > date.today():
        raise ValueError(f"is in the future (today is {date.today().isoformat()})")
    return value


def _margin(value: float) -> float:
    """A finite margin, or -inf (a case that could not measure a metric the property reads)."""
    if math.isnan(value) or value == math.inf:
        raise ValueError("must be a finite number, or -inf for a case that could not measure a metric")
    return value


#: a found date: a real calendar date written YYYY-MM-DD, not after today
IsoDate = Annotated[str, Strict(), Field(max_length=10), AfterValidator(_iso_date)]


def _text(max_chars: int, min_chars: int = 1):
    return Annotated[str, Strict(), Field(min_length=min_chars, max_length=max_chars)]


class RegressionTable(BaseModel):
    """``[regression]``: the property a kept counterexample violated, and its provenance."""

    model_config = FROZEN

    property: _text(MAX_PROPERTY_CHARS) = Field(
        description="the property it violated, over the job's metrics (scenarios.properties syntax)")
    found: IsoDate = Field(
        description="when it was found, an ISO date YYYY-MM-DD")
    controller_version: _text(MAX_VERSION_CHARS) = Field(
        description="the controller that failed: micromill version and git commit")
    found_by: _text(MAX_FOUND_BY_CHARS) = Field(description="how it was found: the command line, or who")
    margin: Annotated[float, Strict(), AfterValidator(_margin)] = Field(
        description="the property's margin when found (<= 0: violated)")
    quick: Annotated[bool, Strict()] = Field(False, description="true: replays in under ~60 s; CI replays it")
    expect: Literal["fails", "passes"] = Field(
        "fails", description="fails: the counterexample still violates the property; passes: fixed since")
    note: _text(MAX_NOTE_CHARS, 0) = Field("", description="what it shows, what fixed it")


@dataclass(frozen=True)
class Regression:
    """A validated ``[regression]`` table with its parsed property."""

    property: Property
    found: str
    controller_version: str
    found_by: str
    margin: float
    quick: bool
    expect: str
    note: str


def regression_problems(raw: Any, job_metrics: list[str] | None) -> list[str]:
    """What is wrong with ``raw[regression]`` beyond its fields' own types (which
    ``RegressionTable`` checks): its property must parse against the job's metrics
    (``job_metrics``; None when the job itself is unknown, reported elsewhere)."""
    table = raw.get("regression") if isinstance(raw, dict) else None
    if not isinstance(table, dict) or job_metrics is None or not isinstance(table.get("property"), str):
        return []
    try:
        parse_property(table["property"], job_metrics)
    except PropertyError as exc:
        return [f"regression.property: {exc}"]
    return []


def build_regression(table: RegressionTable, job_metrics: list[str]) -> Regression:
    """The Regression of a table ``regression_problems`` found nothing wrong with."""
    return Regression(parse_property(table.property, job_metrics), table.found, table.controller_version,
                      table.found_by, table.margin, table.quick, table.expect, table.note)


__all__ = ["EXPECTATIONS", "IsoDate", "Regression", "RegressionTable", "build_regression", "regression_problems"]
