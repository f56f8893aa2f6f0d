"""Markdown result tables generated from suite outputs, so documented figures are never copied by hand.

    python -m scenarios.results_tables RUNS_DIR... [--out docs/results_tables.md]

Each RUNS_DIR is the output folder of ``micromill run`` (or its ``results.json`` itself). For each
one this renders a header (suite, seed, number of cases, backend, result, and the date and git
commit when ``results.json`` records them) and one table: metric, aggregate, value, 95 % CI or
count, threshold, pass, and the paper's figure. It reads only what ``scenarios.runner.run_suite``
writes: ``summary`` (per metric ``value``, ``aggregate``, ``count``, optional ``ci95``, ``paper``;
per threshold ``limit``, ``passed``) and ``suite`` (``source``, ``seed``, ``backend``); NaN is
stored as null and shown as n/a.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from scenarios.report import verdict

#: where ``scenarios.runner.run_suite`` records the date and the code's commit (``results.json``'s ``suite`` table)
DATE_KEYS = ("started_utc",)
COMMIT_KEYS = ("git_commit",)

COLUMNS = ("metric", "aggregate", "value", "95 % CI / count", "threshold", "pass", "paper")


class ResultsError(ValueError):
    """A results.json that cannot be read or lacks what the table needs."""


def fmt(v: Any) -> str:
    """A number with 4 significant digits; None/NaN/inf as n/a."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return f"{v:.4g}"
    return str(v)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def load_results(path: Path) -> dict[str, Any]:
    """``results.json`` of a suite output folder (or the file itself)."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{file}: no such file (run `micromill run SUITE.toml --out {path}` first)") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), dict) \
            or not isinstance(doc["summary"].get("metrics"), dict):
        raise ResultsError(f"{file}: no summary.metrics table (not a results.json written by micromill run?)")
    doc.setdefault("_file", str(file))
    return doc


def _recorded(doc: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    suite = doc.get("suite") or {}
    for k in keys:
        if suite.get(k):
            return str(suite[k])
    return None


def threshold_text(th: dict[str, Any] | None) -> str:
    if not th:
        return "–"
    return " and ".join(f"{'≤' if k == 'max' else '≥'} {fmt(v)}" for k, v in th.get("limit", {}).items()) or "–"


def ci_text(m: dict[str, Any]) -> str:
    """``[lo, hi] (n = count)`` for a metric with a Wilson interval, ``n = count`` otherwise."""
    n = m.get("count")
    count = f"n = {n}" if n is not None else ""
    ci = m.get("ci95")
    if ci:
        return f"{fmt(ci[0])}–{fmt(ci[1])} ({count})" if count else f"{fmt(ci[0])}–{fmt(ci[1])}"
    return count or "–"


def table_rows(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per metric, in the suite's order: the cells of ``COLUMNS``."""
    summary = doc["summary"]
    thresholds = summary.get("thresholds") or {}
    rows = []
    for name, m in summary["metrics"].items():
        th = thresholds.get(name)
        verdict = ("pass" if th.get("passed") else "**FAIL**") if th else "–"
        rows.append((name, m.get("aggregate", ""), fmt(m.get("value")), ci_text(m), threshold_text(th), verdict,
                     m.get("paper") or "–"))
    return rows


def header_lines(doc: dict[str, Any]) -> list[str]:
    summary, suite = doc["summary"], doc.get("suite") or {}
    name = summary.get("suite") or suite.get("job") or Path(doc.get("_file", "?")).parent.name
    failed = summary.get("failed_cases") or []
    facts = [f"seed {suite['seed']}" if suite.get("seed") is not None else "seed not recorded",
             f"{summary.get('cases', '?')} case{'' if summary.get('cases') == 1 else 's'} ({len(failed)} errored)",
             f"backend `{suite.get('backend', '?')}`"]
    date, commit = _recorded(doc, DATE_KEYS), _recorded(doc, COMMIT_KEYS)
    facts.append(f"date {date}" if date else "date not recorded")
    facts.append(f"git commit `{commit}`" if commit else "git commit not recorded")
    source = f" (`{suite['source']}`)" if suite.get("source") else ""
    return [f"### {name}{source}", "", "; ".join(facts) + f". Result: **{verdict(summary)}**."]


def render_table(doc: dict[str, Any]) -> str:
    """The markdown section of one suite run: header and table."""
    lines = header_lines(doc) + ["", "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table_rows(doc)]
    return "\n".join(lines) + "\n"


def render(paths: list[Path], command: str | None = None) -> str:
    parts = ["<!-- Generated by `" + (command or "python -m scenarios.results_tables") + "`; do not edit by hand. -->",
             ""]
    for p in paths:
        parts.append(render_table(load_results(p)))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.results_tables",
                                     description="Markdown tables from suite outputs (results.json).")
    parser.add_argument("runs", nargs="+", type=Path, help="suite output folders (or their results.json)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here (default: stdout)")
    args = parser.parse_args(argv)
    command = "python -m scenarios.results_tables " + " ".join(str(p) for p in args.runs) \
        + (f" --out {args.out}" if args.out else "")
    try:
        text = render(args.runs, command)
    except ResultsError as exc:
        print(f"results_tables: {exc}", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"{len(args.runs)} table(s) in {args.out}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
