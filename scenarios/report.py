"""Markdown report with plots, and the terminal summary table."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def verdict(summary: dict[str, Any]) -> str:
    """PASSED / FAILED, or for a run that did not finish "interrupted: N of M cases (why)"."""
    planned = summary.get("planned_cases", summary["cases"])
    if summary.get("interrupted") or summary["cases"] < planned:
        why = summary.get("interrupted") or "cases missing"
        return f"interrupted: {summary['cases']} of {planned} cases ({why})"
    return "PASSED" if summary["passed"] else "FAILED"


def summary_table(summary: dict[str, Any]) -> str:
    """Plain-text table: metric, aggregate, value, threshold, verdict."""
    rows = [("metric", "aggregate", "value", "threshold", "result")]
    for name, m in summary["metrics"].items():
        th = summary["thresholds"].get(name)
        limit = " and ".join(f"{'<=' if k == 'max' else '>='} {v:g}" for k, v in th["limit"].items()) if th else "-"
        mark = ("PASS" if th["passed"] else "FAIL") if th else "-"
        value = _fmt(m["value"]) + (f" [{_fmt(m['ci95'][0])}, {_fmt(m['ci95'][1])}]" if "ci95" in m else "")
        rows.append((name, m["aggregate"], value, limit, mark))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    tail = f"{summary['suite']}: {summary['cases']} cases, {len(summary['failed_cases'])} errored -> {verdict(summary)}"
    return "\n".join(lines + [tail])


def write_report(suite, summary: dict[str, Any], results, out_dir: Path) -> Path:
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    md = [f"# {suite.name}", "", suite.description, "",
          f"Backend `{suite.backend}`, job `{suite.job}`, scene `{suite.scene_path.name}`, "
          f"{summary['cases']} cases, result **{verdict(summary)}**.", "",
          "| metric | aggregate | value | mean ± sd | min | max | threshold | result | paper |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in summary["metrics"].items():
        th = summary["thresholds"].get(name)
        limit = " and ".join(f"{'≤' if k == 'max' else '≥'} {v:g}" for k, v in th["limit"].items()) if th else "–"
        mark = ("pass" if th["passed"] else "**FAIL**") if th else "–"
        value = _fmt(m["value"])
        if "ci95" in m:
            value += f" (95 % CI {_fmt(m['ci95'][0])}–{_fmt(m['ci95'][1])})"
        md.append(f"| {name} | {m['aggregate']} | {value} | {_fmt(m['mean'])} ± {_fmt(m.get('sd'))} | {_fmt(m['min'])} "
                  f"| {_fmt(m['max'])} | {limit} | {mark} | {m.get('paper') or '–'} |")
    md.append("")
    for name, m in summary["metrics"].items():
        vals = [r.metrics[name] for r in results if r.error is None and name in r.metrics
                and math.isfinite(r.metrics[name])]
        if not vals:
            continue
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(vals, bins=min(20, max(5, len(vals))), color="#4477aa")
        th = summary["thresholds"].get(name)
        if th:
            for v in th["limit"].values():
                ax.axvline(v, color="#cc3311", linestyle="--", label="threshold")
            ax.legend()
        ax.set_xlabel(name)
        ax.set_ylabel("cases")
        ax.set_title(m["description"] or name, fontsize=9)
        fig.tight_layout()
        fig.savefig(plots / f"{name}.png", dpi=100)
        plt.close(fig)
        md.append(f"![{name}](plots/{name}.png)")
    arts = [a for r in results for a in r.artifacts]
    if arts:
        md += ["", "## Case artifacts", ""] + [f"![{Path(a).stem}]({a})" for a in arts]
    why = [r for r in results if r.error is None and r.notes.get("why")]
    if why:
        md += ["", "## Why cases failed", "",
               "Each case whose job says why it failed (`notes.why`; the milling job: breach, flap not "
               "detachable, or a stop before every point was through), with its figure where one was saved.", ""]
        kinds = Counter(r.notes["failure"]["kind"] for r in why if isinstance(r.notes.get("failure"), dict)
                        and "kind" in r.notes["failure"])
        if kinds:
            md += ["By main cause: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()) + ".", ""]
        for r in why:
            fig = next((a for a in r.artifacts if a.endswith("_failure.png")), None)
            md.append(f"- case {r.index} (seed {r.seed}): {r.notes['why']}" + (f" ([figure]({fig}))" if fig else ""))
    failed = [r for r in results if r.error is not None]
    if failed:
        md += ["", "## Errored cases", ""]
        for r in failed:
            md += [f"### case {r.index} (seed {r.seed})", "", f"STOPPED: {r.error.strip().splitlines()[-1]}", "",
                   "```", r.error.strip(), "```"]
    path = out_dir / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path
