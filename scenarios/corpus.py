"""Replay a regression corpus: ``micromill run scenarios/regressions/`` (issue 14 part 3).

A corpus is a folder of kept counterexamples (``scenarios/regressions/README.md``):

- ``NAME.toml``: a one-case suite with a ``[regression]`` table (``scenarios.regression``). Its
  replay is a normal run (``scenarios.runner.run_suite``) into ``OUT/NAME/``; the property is then
  evaluated on the case's metrics (``cases.jsonl``) and the verdict is ``fails``, ``passes`` or
  ``error`` (the case raised; its traceback is in the run's report).
- ``NAME.mcap``: a recorded ``micromill demo`` run (``--record``), from the twin or a real robot.
  Its replay feeds the recording back through today's controllers (as ``micromill replay``, into
  ``OUT/NAME/``); the verdict is ``same`` (they decide as recorded: calibration, surface fit,
  milling decisions and commands), ``differs`` or ``error`` (a controller raised). An optional
  sidecar ``NAME.mcap.toml`` holds a ``[regression]`` table with ``found``, ``found_by``,
  ``controller_version``, ``quick`` and ``note`` (``RecordingSidecar``); without one they come
  from the recording's own metadata.

Every file is loaded and checked before anything runs (a bad one: ``ConfigError`` naming each
problem; the CLI exits 2). An entry is *as expected* when a suite's verdict is its ``expect``
(``fails`` by default: the counterexample still fails; ``passes``: fixed since and still fixed) and
when a recording's is ``same``. ``corpus_exit_code``: 0 every replayed entry as expected; 1 some
entry not as expected (an open counterexample now passes: update its ``expect``; a fixed one fails
again; a recording decided differently) or errored; 128 + signal when Ctrl-C / SIGTERM stopped the
replay (the entries finished so far are reported).
"""
from __future__ import annotations

import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, Strict

from scenes.fields import FROZEN
from scenes.schema import ConfigError, load_toml, validate
from scenarios.regression import MAX_FOUND_BY_CHARS, MAX_NOTE_CHARS, MAX_VERSION_CHARS, IsoDate
from scenarios.suite import Suite, load_suite

if TYPE_CHECKING:
    from hw_bridge.backends.replay import ReplayReport
    from hw_bridge.recording_reader import Decision, Recording

#: a recording's sidecar: NAME.mcap -> NAME.mcap.toml
SIDECAR_SUFFIX = ".mcap.toml"
#: what the replay of a recording is expected to show
SAME = "same"


class RecordingSidecarTable(BaseModel):
    """``[regression]`` of a recording's sidecar ``NAME.mcap.toml``: where the recording came from
    (no property: a recording is judged by whether the controllers decide the same)."""

    model_config = FROZEN

    found: IsoDate = Field(description="when it was recorded or added, an ISO date YYYY-MM-DD")
    controller_version: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_VERSION_CHARS)] | None = Field(
        None, description="the controller that made the recorded decisions (default: the recording's version)")
    found_by: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_FOUND_BY_CHARS)] = Field(
        description="the command that recorded it, or the rig and who ran it")
    quick: Annotated[bool, Strict()] = Field(False, description="true: replays in under ~60 s; CI replays it")
    note: Annotated[str, Strict(), Field(max_length=MAX_NOTE_CHARS)] = Field("", description="what it shows")


class RecordingSidecar(BaseModel):
    """A recording's sidecar file."""

    model_config = FROZEN

    regression: RecordingSidecarTable


@dataclass(frozen=True)
class SuiteEntry:
    """A kept counterexample: a suite file with a ``[regression]`` table."""

    path: Path
    suite: Suite

    @property
    def quick(self) -> bool:
        return self.suite.regression.quick


@dataclass(frozen=True)
class RecordingEntry:
    """A recorded demo run, judged by whether today's controllers decide the same."""

    path: Path
    found: str
    controller_version: str
    found_by: str
    quick: bool
    note: str


Entry = SuiteEntry | RecordingEntry


@dataclass(frozen=True)
class Replay:
    """One entry replayed: what it checks, its provenance, and what happened now."""

    file: str
    checks: str               # the property, or "controllers decide the same"
    found: str
    controller_version: str
    expected: str             # fails | passes | same
    now: str                  # fails | passes | same | differs | error
    margin_then: float | None     # the property's margin when found (None for a recording)
    margin_now: float | None      # its margin now (None: a recording, or no metrics)
    run_dir: Path
    detail: str = ""          # the error's last line, or how a recording differed

    @property
    def as_expected(self) -> bool:
        return self.now == self.expected

    @property
    def verdict(self) -> str:
        """In words: ``still fails``, ``NOW PASSES``, ``passes (fixed)``, ``FAILS AGAIN``,
        ``decide the same``, ``DECIDE DIFFERENTLY``, ``ERROR``."""
        return {("fails", "fails"): "still fails", ("fails", "passes"): "NOW PASSES",
                ("passes", "passes"): "passes (fixed)", ("passes", "fails"): "FAILS AGAIN",
                (SAME, SAME): "decide the same", (SAME, "differs"): "DECIDE DIFFERENTLY"}.get(
            (self.expected, self.now), "ERROR")


def _load_recording_entry(path: Path) -> RecordingEntry:
    """A recording's metadata and its optional sidecar, checked (RecordingError, ConfigError); the
    messages are read when it is replayed."""
    from hw_bridge.recording_reader import load_metadata

    meta = load_metadata(path)
    if meta.program != "demo":
        raise ConfigError(str(path), [f"recorded by {meta.program!r}: only `micromill demo` recordings are re-run "
                                      f"offline (`micromill replay`), so only they can join a corpus"])
    sidecar = path.with_name(path.name[:-len(".mcap")] + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return RecordingEntry(path, meta.created_utc[:10], f"micromill {meta.micromill_version}",
                              f"micromill demo {meta.arguments} on {meta.backend!r}, seed {meta.seed}", False, "")
    table = validate(RecordingSidecar, load_toml(sidecar), str(sidecar)).regression
    return RecordingEntry(path, table.found, table.controller_version or f"micromill {meta.micromill_version}",
                          table.found_by, table.quick, table.note)


def load_corpus(folder: Path | str) -> list[Entry]:
    """Every entry of the corpus in ``folder`` (sorted by file name), each checked; ConfigError
    listing every problem of every file (a suite without ``[regression]``, a bad field, a bad
    recording, a sidecar without its recording) before anything runs."""
    from hw_bridge.recording import RecordingError

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(str(folder), ["not a folder"])
    entries: list[Entry] = []
    problems: list[str] = []
    for path in sorted(folder.iterdir()):
        try:
            if path.name.endswith(SIDECAR_SUFFIX):
                if not path.with_name(path.name[:-len(".toml")]).is_file():
                    problems.append(f"{path}: a recording's sidecar, but {path.name[:-len('.toml')]} is missing")
            elif path.suffix == ".toml":
                suite = load_suite(path)
                if suite.regression is None:
                    problems.append(f"{path}: no [regression] table: not a kept counterexample (see "
                                    f"scenarios/regressions/README.md)")
                else:
                    entries.append(SuiteEntry(path, suite))
            elif path.suffix == ".mcap":
                entries.append(_load_recording_entry(path))
        except ConfigError as exc:
            problems.extend(f"{exc.source}: {e}" for e in exc.errors)
        except RecordingError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(str(folder), problems)
    if not entries:
        raise ConfigError(str(folder), ["no regressions here (NAME.toml with a [regression] table, or NAME.mcap)"])
    return entries


def property_verdict(suite: Suite, run_dir: Path) -> tuple[str, float | None, str]:
    """``(fails | passes | error, margin, detail)`` of the regression's property over the cases
    of the run in ``run_dir``: it passes when it holds on every case, the margin is the smallest."""
    from scenarios.runner import CASE_LOG, read_case_log

    results, _ = read_case_log(run_dir / CASE_LOG)
    if not results:
        return "error", None, "no case finished"
    errored = [r for r in results if r.error is not None]
    if errored:
        return "error", None, f"case {errored[0].index}: {errored[0].error.strip().splitlines()[-1]}"
    verdicts = [suite.regression.property.evaluate(r.metrics) for r in results]
    return ("passes" if all(v.holds for v in verdicts) else "fails"), min(v.margin for v in verdicts), ""


def replay_suite_entry(entry: SuiteEntry, run_dir: Path, workers: int | None = 1, progress: bool = False,
                       force: bool = False, **run_options: Any) -> tuple[Replay, dict[str, Any]]:
    """Run the counterexample's suite into ``run_dir`` (``run_suite``; ``run_options`` are its other
    keyword arguments) and judge its property; returns the replay and the run's summary."""
    from scenarios.runner import run_suite

    summary = run_suite(entry.suite, run_dir, workers=workers, progress=progress, force=force, **run_options)
    now, margin, detail = property_verdict(entry.suite, run_dir)
    reg = entry.suite.regression
    return Replay(entry.path.name, reg.property.text, reg.found, reg.controller_version, reg.expect, now, reg.margin,
                  margin, run_dir, detail), summary


def replay_recording(rec: Recording, out_dir: Path) -> tuple[dict[str, Any], ReplayReport, list[Decision]]:
    """Feed the demo recording ``rec`` back through today's controllers (``micromill replay``), the
    replay's demo outputs into ``out_dir``; returns ``(demo summary, replay report, replayed
    decisions)``. DemoInputError or DetectorLoadError when the networks cannot load or ``out_dir``
    cannot be written (before anything is replayed)."""
    from hw_bridge.recording_reader import scene_from_recording
    from hw_bridge.registry import make_hardware
    from scenarios.demo import run_demo

    scene = scene_from_recording(rec, replay=True)
    hw = make_hardware("replay", scene, rec.metadata.seed)
    summary = run_demo(out_dir, scene, rec.metadata.seed, until=rec.metadata.arguments.get("until", "mill"), hw=hw)
    return summary, hw.report(), hw.replayed_decisions


def replay_recording_entry(entry: RecordingEntry, run_dir: Path) -> tuple[Replay, str | None]:
    """Replay a recorded run into ``run_dir``: ``same`` when the controllers decide as recorded,
    ``error`` when it cannot be replayed (its messages are unreadable, its scene no longer loads)
    or a controller raised; with ``"SIGINT"`` when Ctrl-C stopped the replay (else None)."""
    from controllers.perception.weights_io import DetectorLoadError
    from hw_bridge.recording import RecordingError
    from hw_bridge.recording_reader import load_recording
    from scenarios.demo import EXIT_INTERRUPTED, DemoInputError

    try:
        summary, report, _ = replay_recording(load_recording(entry.path), run_dir)
    except (DemoInputError, DetectorLoadError, RecordingError, ConfigError) as exc:
        now, detail, summary = "error", str(exc), None   # cut short, a scene that no longer loads, no networks
    else:
        if summary["error"] is not None:
            now, detail = "error", str(summary["stopped_by"])
        elif report.diverged:
            different = sorted(t for t, c in report.decisions.items() if not c.equal)
            now, detail = "differs", ("decisions differ: " + ", ".join(different)) if different else "commands differ"
        else:
            now, detail = SAME, ""
    interrupted = "SIGINT" if summary is not None and summary["exit_code"] == EXIT_INTERRUPTED else None
    return Replay(entry.path.name, "controllers decide the same", entry.found, entry.controller_version, SAME, now,
                  None, None, run_dir, detail), interrupted


def _margin_text(m: float | None) -> str:
    if m is None:
        return "-"
    return f"{m:+.3g}" if math.isfinite(m) else ("-inf" if m < 0 else "+inf")


def corpus_table(replays: list[Replay]) -> str:
    """The replays as a text table: file, what it checks, found, by which controller version,
    the verdict now, the margin then and now."""
    head = ("file", "property", "found", "controller version", "verdict now", "margin then", "margin now")
    rows = [(r.file, r.checks, r.found, r.controller_version, r.verdict, _margin_text(r.margin_then),
             _margin_text(r.margin_now)) for r in replays]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, tuple(
        "-" * w for w in widths), *rows]]
    lines += [f"{r.file}: {r.detail}" for r in replays if r.detail]
    n_ok = sum(r.as_expected for r in replays)
    lines.append(f"{len(replays)} replayed: {n_ok} as expected, {len(replays) - n_ok} not "
                 f"({sum(r.now == 'fails' for r in replays)} fail, {sum(r.now == 'passes' for r in replays)} pass, "
                 f"{sum(r.now == SAME for r in replays)} decide the same, "
                 f"{sum(r.now == 'differs' for r in replays)} differently, {sum(r.now == 'error' for r in replays)} "
                 f"errored)")
    return "\n".join(lines)


def corpus_exit_code(replays: list[Replay], interrupted: str | None = None) -> int:
    """0 every entry as expected; 1 one is not (or errored); 128 + signal when interrupted."""
    if interrupted in ("SIGINT", "SIGTERM"):
        return 128 + int(signal.Signals[interrupted])
    return 0 if all(r.as_expected for r in replays) else 1


def replay_corpus(entries: list[Entry], out_dir: Path, workers: int | None = 1, progress: bool = False,
                  force: bool = False) -> tuple[list[Replay], str | None]:
    """Replay ``entries`` one after another, each into ``out_dir/<file stem>``; returns the replays
    and why the replay stopped early (``"SIGINT"``/``"SIGTERM"``, or None). A line per entry on
    stderr as it finishes. Every suite entry's run folder is checked first (``check_out_dir``: new or
    empty, or an earlier run's with ``force``), so a folder that cannot be used is refused
    (RunFolderError) before anything is replayed."""
    from scenarios.runner import check_out_dir

    for entry in entries:
        if isinstance(entry, SuiteEntry):
            check_out_dir(Path(out_dir) / entry.path.stem, resume=False, force=force)
    replays: list[Replay] = []
    for entry in entries:
        run_dir = Path(out_dir) / entry.path.stem
        if isinstance(entry, SuiteEntry):
            replay, summary = replay_suite_entry(entry, run_dir, workers=workers, progress=progress, force=force)
            if summary["interrupted"]:
                return replays, summary["interrupted"]
        else:
            replay, interrupted = replay_recording_entry(entry, run_dir)
            if interrupted:
                return replays, interrupted
        print(f"{replay.file}: {replay.verdict}", file=sys.stderr, flush=True)
        replays.append(replay)
    return replays, None


__all__ = ["Entry", "RecordingEntry", "RecordingSidecar", "Replay", "SuiteEntry", "corpus_exit_code",
           "corpus_table", "load_corpus", "property_verdict", "replay_corpus", "replay_recording",
           "replay_recording_entry", "replay_suite_entry"]
