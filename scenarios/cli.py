"""The ``micromill`` command.

    micromill demo [--out DIR] [--scene FILE] [--seed N] [--backend B] [--arm] [--until STAGE]
                   [--record FILE.mcap] [--record-image-scale S]
    micromill run SUITE.toml [--scene FILE] [--backend B] [--arm] [--workers N] [--out DIR] [--cases N] [--seed S]
                  [--engine local|ray] [--address auto|HOST:PORT] [--resume DIR | --force]
                  [--record] [--record-image-scale S] [--no-progress]
    micromill run REGRESSIONS_DIR [--quick] [--workers N] [--out DIR] [--force] [--no-progress]
    micromill report DIR
    micromill falsify SUITE.toml --property TEXT [--budget N] [--time-budget 30m] [--shrink-budget N] [--out DIR]
                      [--seed N] [--workers N] [--engine local|ray] [--address A] [--no-progress]
    micromill sensitivity SPEC.toml [--cases N] [--workers N] [--out DIR] [--resume | --report-only] [--no-progress]
    micromill replay FILE.mcap [--out DIR]
    micromill backends
    micromill sas-twin --prefix /arm1 [--scene FILE] [--overrides JSON] [--seed N] [--domain N] [--image-rate-hz R]
    micromill train keypoints --target drill_tip|cranial [--out DIR] [--seed N] [--workers N] [--budget-min M]
    micromill train completion [--out DIR] [--seed N] [--workers N] [--budget-min M] [--grooves rate_limited|carve]
    micromill train keypoints|completion [--target drill_tip|cranial] --data DIR [--base WEIGHTS] [--held-out F]
                              [--out DIR] [--seed N] [--epochs N] [--learning-rate LR] [--batch-size N] [--budget-min M]
    micromill train thickness [--out DIR] [--seed N] [--workers N] [--budget-min M]
                              [--variant full|no_fgaf|no_cnsn|no_weighted_loss|regression] [--data NPZ_DIR] [--epochs N]
    micromill train thickness --loop-data RUN_DIR... [--out DIR] [--initial W] [--name STEM] [--epochs N] [--seed N]
    micromill export-frames RUN.mcap --out DIR [--every N] [--max N]

Exit codes: 0 success; 1 a suite threshold failed or a case errored (replay: the controllers
decided differently from the recording; report: the run failed or has cases missing; demo: the
twin's verdict is FAILURE, printed with its cause); 2 invalid input, refused before anything
connects (bad scene or suite file, unknown backend, --arm without safety.armed, a bad recording,
an output folder that cannot be used, network weights missing, unreadable or holding NaN/inf),
reported with every offending field; 3 (demo) a hardware or safety stop ended the run, or a dry
run's link check failed; 4 (demo) the controller stopped without finishing (no trajectory,
milling timeout or perception lost); 5 (demo, replay) a controller raised an error (e.g.
``CalibrationError``: a ``STOPPED:`` line names it, the traceback is in OUT/error.txt); 130 / 143
a run stopped by Ctrl-C / SIGTERM (a suite writes what finished, and ``--resume`` continues it;
the demo stops the robot and saves what it computed). ``falsify``: 0 no counterexample within the
budget, 1 a counterexample found (written as OUT/counterexample.toml and replayed in OUT/replay),
2 bad input (a property with bad syntax or an unknown metric, a bad suite, budget or output
folder: refused before any case runs), 130 / 143 stopped by Ctrl-C / SIGTERM (what was found so
far is written). Every stop of the demo or of a suite case,
whatever raised it, ends with the drill off and the arm holding (``Hardware.stop``) and the cause
in ``summary.json`` (demo) or the case's ``error`` and ``report.md`` (suite). The demo's codes:
``scenarios.demo.demo_exit_code``; without a twin there is no verdict and the code follows the
controller's stop only.

``run`` of a regression (a suite file with a ``[regression]`` table) or of a folder of them
(``scenarios/regressions/``, ``scenarios.corpus``) prints a table (file, property, found, by which
controller version, the verdict now, the margin then and now) and exits 0 when every entry is as
its file expects (a counterexample still fails; one marked ``expect = "passes"`` still passes; a
recording ``.mcap`` decides the same), 1 when one is not or a replay errored, 2 when a file of the
folder is refused or a run folder under OUT already holds a run without ``--force`` (nothing is
run), 130 / 143 when interrupted. Each replay's run folder is
``OUT/<file name>`` (default OUT: runs/regressions).

``--arm`` is one half of arming a robot that really moves (CoppeliaSim, SmartArmStack); the
other is ``safety.armed = true`` in the scene. Without both, such a run is a dry run: commands
are checked and logged, never sent (the demo then runs link checks instead of the window:
``scenarios.dry_run``). The embedded twin needs no arming.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scenarios.limits import (MAX_BATCH_SIZE, MAX_CASES, MAX_EPOCHS, MAX_EXPORT_EVERY, MAX_EXPORT_FRAMES,
                              MAX_FALSIFY_CASES, MAX_IMAGE_RATE_HZ, MAX_TRAIN_BUDGET_MIN, MAX_TRAIN_SCENES,
                              MAX_WORKERS)


def _recorder(path: str | None, image_scale: float, program: str, arguments: dict, backend: str, seed: int,
              scene, overrides: dict):
    if path is None:
        return None
    from hw_bridge.recording import McapRecorder, RunMetadata

    return McapRecorder(Path(path), RunMetadata.for_run(program, arguments, backend, seed, scene, overrides),
                        image_scale)


def _input_error(exc: Exception) -> int:
    """Report input refused before anything started (one line on stderr) and give exit status 2."""
    print(f"micromill: {exc}", file=sys.stderr)
    return 2


def _cmd_demo(args) -> int:
    from controllers.perception.weights_io import DetectorLoadError
    from hw_bridge.registry import backend_armed
    from scenarios.demo import DemoInputError, demo_scene, format_summary, prepare_demo, run_demo

    scene, overrides = demo_scene(args.scene)
    # Bad input (an unknown backend, a half-armed run, weights that do not load, an output folder
    # that cannot be written) fails here, before anything is built, connected or recorded.
    backend_armed(args.backend, args.arm, scene)
    try:
        networks = prepare_demo(Path(args.out), scene.controllers.perception)
    except (DemoInputError, DetectorLoadError) as exc:
        return _input_error(exc)
    recorder = _recorder(args.record, args.record_image_scale, "demo", {"until": args.until}, args.backend,
                         args.seed, scene, overrides)
    summary = run_demo(Path(args.out), scene, args.seed, args.backend, armed=args.arm, recorder=recorder,
                       until=args.until, networks=networks)
    print(format_summary(summary))
    if args.record:
        print(f"recording in {args.record}")
    return summary["exit_code"]          # scenarios.demo.demo_exit_code


def _cmd_replay(args) -> int:
    from controllers.perception.weights_io import DetectorLoadError
    from hw_bridge.recording_reader import load_recording
    from scenarios.corpus import replay_recording
    from scenarios.demo import DemoInputError, format_summary
    from scenarios.replay_view import describe_recording, describe_replay

    rec = load_recording(args.file)
    print(describe_recording(rec))
    if rec.metadata.program != "demo":
        print(f"program {rec.metadata.program!r} is not re-run offline (only `micromill demo` recordings are: suite "
              f"jobs build several sessions and most are scored with the twin's ground truth); the recording is "
              f"shown above")
        return 0
    out = Path(args.out) if args.out else Path("runs") / f"replay_{Path(args.file).stem}"
    try:
        summary, report, replayed = replay_recording(rec, out)
    except (DemoInputError, DetectorLoadError) as exc:      # raised before the replay started
        return _input_error(exc)
    print(format_summary(summary))
    print(describe_replay(report, rec, replayed))
    if summary["error"] is not None:      # the replayed controllers raised (or Ctrl-C): the demo's code
        return summary["exit_code"]
    return 1 if report.diverged else 0


def _run_exit_code(summary: dict) -> int:
    """0 passed; 128 + signal for a run stopped by one (130 Ctrl-C, 143 SIGTERM); else 1."""
    import signal

    if summary["interrupted"] in ("SIGINT", "SIGTERM"):
        return 128 + int(signal.Signals[summary["interrupted"]])
    return 0 if summary["passed"] else 1


#: ``micromill run`` options a corpus replay refuses: a regression replays as it was kept
_CORPUS_REFUSED = (("scene", "--scene"), ("resume", "--resume"), ("cases", "--cases"), ("seed", "--seed"),
                   ("backend", "--backend"), ("arm", "--arm"), ("address", "--address"), ("record", "--record"))


def _cmd_run_corpus(args) -> int:
    """``micromill run DIR``: replay every regression in DIR (``scenarios.corpus``)."""
    from scenarios.corpus import corpus_exit_code, corpus_table, load_corpus, replay_corpus
    from scenes.schema import ConfigError

    given = [flag for name, flag in _CORPUS_REFUSED if getattr(args, name)] + (
        ["--engine ray"] if args.engine != "local" else [])
    if given:
        raise ConfigError(args.suite, [f"{', '.join(given)}: not with a folder of regressions (each replays as it "
                                       f"was kept; run one file to vary it)"])
    entries = load_corpus(args.suite)
    if args.quick:
        entries = [e for e in entries if e.quick]
        if not entries:
            print(f"no quick regressions in {args.suite}")
            return 0
    out = Path(args.out or Path("runs") / "regressions")
    replays, interrupted = replay_corpus(entries, out, workers=args.workers, progress=not args.no_progress,
                                         force=args.force)
    print(corpus_table(replays))
    print(f"each replay's run folder is in {out}/<file name>"
          + (f"; interrupted after {len(replays)} of {len(entries)}" if interrupted else ""))
    return corpus_exit_code(replays, interrupted)


def _cmd_run(args) -> int:
    from scenarios.report import summary_table
    from scenarios.runner import RunFolderError, RunPlan, check_out_dir, run_suite
    from scenarios.suite import load_suite

    if Path(args.suite).is_dir():
        return _cmd_run_corpus(args)
    if args.quick:
        raise RunFolderError(f"--quick {args.suite}: --quick chooses among the regressions of a folder")
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise RunFolderError(f"--out {args.out} and --resume {args.resume}: a resumed run writes into the folder "
                             f"it resumes; give one of them")
    scene = args.scene
    if args.resume and scene is None:
        check_out_dir(Path(args.resume), resume=True, force=False)     # "nothing to resume" before the plan
        scene = RunPlan.read(Path(args.resume)).scene       # a resumed run keeps the --scene it started with
    suite = load_suite(args.suite, scene)
    out = Path(args.resume or args.out or Path("runs") / suite.name)
    summary = run_suite(suite, out, workers=args.workers, n_cases=args.cases, seed=args.seed,
                        progress=not args.no_progress, backend=args.backend, armed=args.arm, record=args.record,
                        record_image_scale=args.record_image_scale, engine=args.engine, address=args.address,
                        resume=args.resume is not None, force=args.force, scene=scene)
    print(summary_table(summary))
    print(f"results.json and report.md in {out}"
          + (f"; continue with: micromill run {args.suite} --resume {out}" if summary["interrupted"] else ""))
    if suite.regression is None or summary["interrupted"]:
        return _run_exit_code(summary)
    from scenarios.corpus import Replay, corpus_exit_code, corpus_table, property_verdict

    reg = suite.regression
    now, margin, detail = property_verdict(suite, out)
    replay = Replay(Path(args.suite).name, reg.property.text, reg.found, reg.controller_version, reg.expect, now,
                    reg.margin, margin, out, detail)
    print(corpus_table([replay]))
    return corpus_exit_code([replay])


def _cmd_report(args) -> int:
    from scenarios.report import summary_table
    from scenarios.runner import rebuild_outputs

    summary = rebuild_outputs(Path(args.dir))
    print(summary_table(summary))
    print(f"results.json and report.md rebuilt in {args.dir}")
    return 0 if summary["passed"] else 1


def _cmd_falsify(args) -> int:
    from scenarios.falsify import (FalsifyInputError, exit_code, falsify, found_by_command, parse_duration,
                                   summary_text)
    from scenarios.properties import PropertyError
    from scenarios.suite import load_suite

    try:
        time_budget_s = parse_duration(args.time_budget) if args.time_budget is not None else None
    except ValueError as exc:
        return _input_error(ValueError(f"--time-budget: {exc}"))
    suite = load_suite(args.suite)
    out = Path(args.out or Path("runs") / f"falsify_{suite.name}")
    try:
        doc = falsify(suite, args.property, out, budget=args.budget, time_budget_s=time_budget_s,
                      shrink_budget=args.shrink_budget, seed=args.seed, workers=args.workers or 1,
                      engine=args.engine, address=args.address, progress=not args.no_progress,
                      found_by=found_by_command(args.suite, args.property, args.budget, args.seed, args.time_budget))
    except (PropertyError, FalsifyInputError) as exc:
        return _input_error(exc)
    print(summary_text(doc))
    print(f"falsify.json, evaluations.jsonl and search.png in {out}")
    return exit_code(doc)


def _cmd_sensitivity(args) -> int:
    from scenarios.sensitivity import SUMMARY_MD, load_sensitivity, rebuild, run_sensitivity

    sens = load_sensitivity(args.spec)
    out = Path(args.out or Path("runs") / sens.name)
    if args.report_only:
        doc = rebuild(sens, out)
    else:
        doc = run_sensitivity(sens, out, workers=args.workers, n_cases=args.cases, resume=args.resume,
                              progress=not args.no_progress)
    print((out / SUMMARY_MD).read_text())
    print(f"sensitivity.json, sensitivity.png and {SUMMARY_MD} in {out}")
    if doc.get("interrupted"):
        import signal

        print(f"interrupted; continue with: micromill sensitivity {args.spec} --out {out} --resume")
        return 128 + int(signal.Signals[doc["interrupted"]])
    levels = [lv for p in doc["parameters"] for lv in p["levels"]]
    return 1 if any(lv["errored"] or not lv["cases"] for lv in levels) else 0


def _weights_stem(text: str) -> str:
    """A weights file stem: letters, digits, '_' and '-', 1-64 characters."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: a file stem of 1-64 letters, digits, '_' or '-'")
    return text


#: ``scenarios.train_thickness.VARIANTS``' names (not imported: building the parser must not import torch)
THICKNESS_VARIANTS = ("full", "no_fgaf", "no_cnsn", "no_weighted_loss", "regression")


def _cmd_train(args) -> int:
    if args.what == "thickness" and args.loop_data:
        from controllers.perception.weights_io import DetectorLoadError
        from scenarios.train_thickness_loop import EPOCHS, fine_tune_on_loop
        from scenarios.train_thickness_loop import summary_lines as loop_summary

        try:
            card = fine_tune_on_loop([Path(d) for d in args.loop_data], Path(args.out) if args.out else None,
                                     initial=args.initial, name=args.name, seed=args.seed,
                                     epochs=args.epochs or EPOCHS, progress=not args.no_progress)
        except (FileNotFoundError, ValueError, DetectorLoadError) as exc:
            print(f"error: {exc}")
            return 2
        print("\n".join(loop_summary(card)))
        return 0
    if args.what == "thickness":
        from scenarios.train_thickness import summary_lines as thickness_summary
        from scenarios.train_thickness import train_thickness_model

        try:
            card = train_thickness_model(Path(args.out) if args.out else None, seed=args.seed, workers=args.workers,
                                         budget_min=args.budget_min, variant=args.variant,
                                         data_dir=Path(args.data) if args.data else None, epochs=args.epochs,
                                         progress=not args.no_progress)
        except FileNotFoundError as exc:
            print(f"error: {exc}")
            return 2
        print("\n".join(thickness_summary(card)))
        return 0
    if args.data is not None:
        return _finetune(args)
    if args.what == "completion":
        from scenarios.train_completion import summary_lines, train_completion_model

        card = train_completion_model(Path(args.out) if args.out else None, seed=args.seed, workers=args.workers,
                                      budget_min=args.budget_min, n_scenes=args.scenes, epochs=args.epochs,
                                      grooves=args.grooves, progress=not args.no_progress)
        print("\n".join(summary_lines(card)))
        return 0
    from scenarios.train_keypoints import train_keypoints

    card = train_keypoints(args.target, Path(args.out) if args.out else None, seed=args.seed, workers=args.workers,
                           budget_min=args.budget_min, n_scenes=args.scenes, epochs=args.epochs,
                           progress=not args.no_progress)
    for m in card["validation"]:
        print(f"{m['name']}: RMSE {m['rmse_px']:.3f} px, found {m['n_found']}/{m['n_visible']} visible, "
              f"false positives {m['n_false_positive']}/{m['n_invisible']}")
    print(f"wall {card['wall_s']:.0f} s; weights {card['weights_bytes'] / 1e6:.2f} MB; "
          f"stopped by time budget: {card['train_log']['stopped_by_budget']}")
    return 0


def _finetune(args) -> int:
    """``micromill train keypoints|completion --data DIR``: fine-tune on labelled images (exit 2: bad
    labels or weights)."""
    from controllers.perception.weights_io import DetectorLoadError
    from scenarios.coco_labels import LabelError

    if args.scenes is not None:
        print("micromill: --scenes renders twin data; with --data the images are the labelled ones", file=sys.stderr)
        return 2
    name = args.target if args.what == "keypoints" else "completion"
    out = Path(args.out) if args.out else Path("runs") / f"finetune_{name}"
    given = {k: v for k, v in (("epochs", args.epochs), ("learning_rate", args.learning_rate),
                               ("batch_size", args.batch_size)) if v is not None}
    common = dict(base=args.base, held_out_fraction=args.held_out, seed=args.seed, budget_min=args.budget_min,
                  progress=not args.no_progress, **given)
    try:
        if args.what == "keypoints":
            from scenarios.finetune_keypoints import finetune_keypoints

            card = finetune_keypoints(args.target, Path(args.data), out, **common)
        else:
            from scenarios.finetune_completion import finetune_completion

            card = finetune_completion(Path(args.data), out, **common)
    except (LabelError, DetectorLoadError) as exc:
        print(f"micromill: {exc}", file=sys.stderr)
        return 2
    print(f"held-out: {card['n_val']} of {card['n_val'] + card['n_train']} images")
    for label, metrics in (("fine-tuned", card["validation"]), ("base", card["base_validation"])):
        if args.what == "keypoints":
            for m in metrics:
                print(f"{label:>10} {m['name']}: RMSE {m['rmse_px']:.3f} px, found {m['n_found']}/{m['n_visible']} "
                      f"visible, false positives {m['n_false_positive']}/{m['n_invisible']}")
        else:
            print(f"{label:>10}: MAE {metrics['mae_pct']:.2f} pct. points at {metrics['n_points']} labelled points "
                  f"(untouched {metrics['mae_untouched_pct']:.2f}, through {metrics['mae_through_pct']:.2f}); "
                  f"through decision precision {metrics['through_precision']:.3f}, recall "
                  f"{metrics['through_recall']:.3f}")
    if args.what == "keypoints":
        from scenarios.finetune_keypoints import REQUIRED_RMSE_PX

        print(f"requirement RMSE <= {REQUIRED_RMSE_PX:g} px: {'met' if card['meets_requirement'] else 'NOT met'}")
    print(f"wall {card['wall_s']:.0f} s; stopped by time budget: {card['train_log']['stopped_by_budget']}")
    print(f"{name}.pt and {name}.md in {out}")
    return 0


def _cmd_export_frames(args) -> int:
    from scenarios.export_frames import export_frames

    doc = export_frames(Path(args.file), Path(args.out), every=args.every, max_frames=args.max,
                        progress=not args.no_progress)
    print(f"{len(doc['images'])} images ({doc['info']['frames']} of {doc['info']['frames_in_recording']} frames) "
          f"and annotations.json in {args.out}; label drill_tip, bregma and lambda (docs/training_on_your_images.md)"
          + ("; WARNING: the recording stored downscaled images, exported upsampled" if doc['info']['upsampled']
             else ""))
    return 0


def _fraction(text: str) -> float:
    """An argparse type: a held-out fraction in [0.05, 0.9]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0.05, 0.9], got {text[:40]!r}") from None
    if not 0.05 <= value <= 0.9:
        raise argparse.ArgumentTypeError(f"must be in [0.05, 0.9], got {value}")
    return value


def _learning_rate(text: str) -> float:
    """An argparse type: a learning rate in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text[:40]!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _cmd_sas_twin(args) -> int:
    import json

    from hw_bridge.test_peers.sas_driver import run_sas_twin
    from scenes.schema import ConfigError

    try:
        overrides = json.loads(args.overrides)
    except json.JSONDecodeError as exc:
        raise ConfigError("micromill sas-twin", [f"--overrides is not valid JSON: {exc}"]) from None
    if not isinstance(overrides, dict):
        raise ConfigError("micromill sas-twin", [(f"--overrides={args.overrides!r} must be a JSON object of "
                                                  f"dotted scene keys, e.g. '{{\"control.period_s\": 0.01}}'")])
    return run_sas_twin(args.scene, overrides, args.seed, args.prefix, args.domain, args.image_rate_hz)


def _cmd_backends(args) -> int:
    from hw_bridge.registry import backend_available, backends

    for b in backends():
        ok, why = backend_available(b.name)
        print(f"{b.name:<12} {'available' if ok else 'NOT AVAILABLE: ' + why}\n             {b.summary}")
    return 0


def _backend_arguments(p: argparse.ArgumentParser, default: str | None, text: str) -> None:
    p.add_argument("--backend", default=default, help=f"{text}; see `micromill backends`")
    p.add_argument("--arm", action="store_true",
                   help="move a robot that really moves (also needs safety.armed = true in the scene); "
                        "without it such a run is a dry run")


def _image_scale_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record-image-scale", type=_scale, default=1.0, metavar="S",
                   help="downscale recorded images by S in (0, 1] (default 1: lossless, exact replay)")


def _scale(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value




def _number_in(lo: float, hi: float, lo_open: bool = False):
    """An argparse type: a finite number in [lo, hi] ((lo, hi] with ``lo_open``)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text[:40]!r}") from None
        if not ((lo < value if lo_open else lo <= value) and value <= hi):
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text[:40]}")
        return value
    parse.__name__ = f"number in {interval}"
    return parse


def _int_in(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi] (argparse reports the error and exits 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {text[:40]!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {text[:40]}")
        return value
    parse.__name__ = f"integer in [{lo}, {hi}]"
    return parse


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``micromill`` command line (tests/test_doc_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(prog="micromill", description="Digital twin and testbench for robotic "
                                     "bone micro-milling.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="a whole autonomous window on the twin: calibrate, fit, mill, judge")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--scene", default=None, help="scene TOML (default scenes/default.toml)")
    p.add_argument("--seed", type=_seed, default=0)
    _backend_arguments(p, "twin", "the pipeline's backend (default twin)")
    p.add_argument("--until", choices=["calibration", "fit", "mill"], default="mill",
                   help="stop after this stage (default mill: the whole window)")
    p.add_argument("--record", default=None, metavar="FILE.mcap", help="record the run into one MCAP file")
    _image_scale_argument(p)
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("replay", help="feed a recorded run back through the controllers and compare")
    p.add_argument("file", help="an MCAP file written with --record")
    p.add_argument("--out", default=None, help="output folder of the replayed run (default runs/replay_<name>)")
    p.set_defaults(func=_cmd_replay)
    p = sub.add_parser("run", help="run a scenario suite")
    p.add_argument("suite", help="suite TOML file, e.g. scenarios/twin_smoke.toml, or a folder of regressions "
                   "(scenarios/regressions/) to replay them all")
    p.add_argument("--quick", action="store_true",
                   help="with a folder of regressions: replay only those marked quick = true")
    p.add_argument("--scene", default=None, metavar="FILE",
                   help="scene TOML (or a name in scenes/) replacing the suite's scene")
    p.add_argument("--workers", type=_int_in(1, 10**9), default=None,
                   help=f"local engine: processes (default 1; more than the cases, the usable CPUs or {MAX_WORKERS} "
                        f"warns and uses that cap); ray: tasks in flight (default twice the cluster's CPUs)")
    p.add_argument("--out", default=None, help="output folder (default runs/<suite name>); must be empty or new")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the interrupted or crashed run in DIR (its finished cases are kept)")
    p.add_argument("--force", action="store_true", help="replace an earlier run's outputs in --out")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: processes on this machine (default); ray: tasks on a Ray cluster (extra 'ray')")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="--engine ray: the cluster (auto: the one this machine joined; default: a running local "
                        "instance, else a new one)")
    p.add_argument("--cases", type=_int_in(1, MAX_CASES), default=None,
                   help=f"override the number of cases, 1..{MAX_CASES}")
    p.add_argument("--seed", type=_seed, default=None, help="override the suite seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _backend_arguments(p, None, "override the suite's backend")
    p.add_argument("--record", action="store_true", help="record every hardware session (OUT/recordings/*.mcap)")
    _image_scale_argument(p)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("report", help="rebuild results.json and report.md of a run from its cases.jsonl")
    p.add_argument("dir", help="a run's output folder")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("falsify", help="search a suite's parameter space for a case violating a property of its "
                       "metrics, shrink it, keep it as a scenario")
    p.add_argument("suite", help="suite TOML file whose [parameters] distributions span the space")
    p.add_argument("--property", required=True,
                   help='a condition on the job\'s metrics, e.g. "breaches == 0 and max_bridge_um <= 20"')
    p.add_argument("--budget", type=_int_in(1, MAX_FALSIFY_CASES), default=200,
                   help=f"cases to search, 1..{MAX_FALSIFY_CASES} (default 200)")
    p.add_argument("--time-budget", default=None, metavar="DURATION",
                   help="stop searching after this long, e.g. 90s, 30m, 2h (at most 7 days)")
    p.add_argument("--shrink-budget", type=_int_in(1, MAX_FALSIFY_CASES), default=40,
                   help=f"cases to shrink a counterexample with, 1..{MAX_FALSIFY_CASES} (default 40)")
    p.add_argument("--out", default=None, help="output folder (default runs/falsify_<suite name>); must be empty or new")
    p.add_argument("--seed", type=_seed, default=0, help="seeds the search (default 0)")
    p.add_argument("--workers", type=_int_in(1, MAX_WORKERS), default=None,
                   help=f"local engine: processes, 1..{MAX_WORKERS} (default 1); ray: tasks in flight")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: processes on this machine (default); ray: tasks on a Ray cluster")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT", help="--engine ray: the cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_falsify)
    p = sub.add_parser("sensitivity", help="sweep each uncertain parameter over its range (one-at-a-time, same "
                       "case seeds) -> sensitivity.json, .png, .md")
    p.add_argument("spec", help="sensitivity spec TOML, e.g. scenarios/sensitivity.toml")
    p.add_argument("--cases", type=_int_in(1, MAX_CASES), default=None, help="override the cases per level")
    p.add_argument("--workers", type=_int_in(1, 10**9), default=None, help="processes per level run (as for run)")
    p.add_argument("--out", default=None, help="output folder (default runs/<name>); must be empty or new")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="keep finished levels, resume unfinished ones")
    mode.add_argument("--report-only", action="store_true",
                      help="rebuild sensitivity.json/.png/.md from the run folders in the output folder; run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_sensitivity)
    p = sub.add_parser("export-frames", help="write a recording's stereo frames as PNGs + a COCO keypoints skeleton "
                       "for labelling (CVAT, Label Studio)")
    p.add_argument("file", help="an MCAP file written with --record")
    p.add_argument("--out", required=True, help="output folder (new or empty): images/ and annotations.json")
    p.add_argument("--every", type=_int_in(1, MAX_EXPORT_EVERY), default=1,
                   help=f"keep every N-th recorded frame, 1..{MAX_EXPORT_EVERY} (default 1)")
    p.add_argument("--max", type=_int_in(1, MAX_EXPORT_FRAMES), default=500,
                   help=f"at most N frames (2 images each), 1..{MAX_EXPORT_FRAMES} (default 500)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_export_frames)
    p = sub.add_parser("train", help="train a network from twin renders, or fine-tune one on labelled images")
    train_sub = p.add_subparsers(dest="what", required=True, metavar="{keypoints,completion,thickness}")
    for what, text in (("keypoints", "drill-tip or cranial keypoint detector"),
                       ("completion", "completion-level estimator")):
        p = train_sub.add_parser(what, help=text)
        if what == "keypoints":
            p.add_argument("--target", required=True, choices=["drill_tip", "cranial"])
        else:
            p.add_argument("--grooves", choices=["rate_limited", "carve"], default="rate_limited",
                           help="how the training grooves are cut: rate_limited (the bone model the milling loop "
                                "meets, default) or carve (instant sphere imprints, the data before issue 13)")
        p.add_argument("--data", default=None, metavar="DIR",
                       help="fine-tune on labelled images instead of training on twin renders: a folder with "
                            + ("annotations.json (COCO keypoints)" if what == "keypoints" else "completion.json")
                            + " and its images, see docs/training_on_your_images.md")
        p.add_argument("--base", default=None, metavar="WEIGHTS",
                       help="--data: the weights to start from, a name or a .pt path (default: the shipped ones)")
        p.add_argument("--held-out", type=_fraction, default=0.2, metavar="F",
                       help="--data: fraction of the frames held out for evaluation, 0.05..0.9 (default 0.2)")
        p.add_argument("--learning-rate", type=_learning_rate, default=None, metavar="LR",
                       help="--data: Adam learning rate, (0, 1] (default "
                            + ("1e-3)" if what == "keypoints" else "2e-3)"))
        p.add_argument("--batch-size", type=_int_in(1, MAX_BATCH_SIZE), default=None,
                       help=f"--data: images per batch, 1..{MAX_BATCH_SIZE} (default "
                            + ("8)" if what == "keypoints" else "16)"))
        p.add_argument("--out", default=None, help="folder for <name>.pt/.md (default: the shipped weights folder; "
                       "with --data: runs/finetune_<name>)")
        p.add_argument("--seed", type=_seed, default=0)
        p.add_argument("--workers", type=_int_in(1, MAX_WORKERS), default=2,
                       help=f"data-generation processes, 1..{MAX_WORKERS} (default 2)")
        p.add_argument("--budget-min", type=_number_in(0.0, MAX_TRAIN_BUDGET_MIN, lo_open=True), default=19.0,
                       help=f"wall-clock budget in minutes, (0, {MAX_TRAIN_BUDGET_MIN}] (default 19)")
        p.add_argument("--scenes", type=_int_in(1, MAX_TRAIN_SCENES), default=None,
                       help=f"override the number of rendered scenes, 1..{MAX_TRAIN_SCENES}")
        p.add_argument("--epochs", type=_int_in(1, MAX_EPOCHS), default=None,
                       help=f"override the (planned) epochs per network, 1..{MAX_EPOCHS} (--data: default "
                            + ("25)" if what == "keypoints" else "30)"))
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(func=_cmd_train)
    p = train_sub.add_parser("thickness", help="remaining-bone thickness classifier (point crops)")
    p.add_argument("--out", default=None, help="folder for thickness[_VARIANT].pt/.md, metrics.json and data/ "
                   "(default: the shipped weights folder; its data go to runs/thickness/data)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--workers", type=_int_in(1, MAX_WORKERS), default=2,
                   help=f"data-generation processes, 1..{MAX_WORKERS} (default 2)")
    p.add_argument("--budget-min", type=_number_in(0.0, MAX_TRAIN_BUDGET_MIN, lo_open=True), default=20.0,
                   help=f"wall-clock budget in minutes, data included, (0, {MAX_TRAIN_BUDGET_MIN}] (default 20)")
    p.add_argument("--variant", choices=THICKNESS_VARIANTS, default="full",
                   help="full (default) or an ablation: no_fgaf, no_cnsn, no_weighted_loss, regression")
    p.add_argument("--data", default=None, metavar="NPZ_DIR",
                   help="load the samples from NPZ_DIR/thickness_samples.npz (an earlier run's OUT/data) instead of "
                        "rendering them")
    p.add_argument("--epochs", type=_int_in(1, MAX_EPOCHS), default=None,
                   help=f"override the (planned) epochs, 1..{MAX_EPOCHS} (default 40; 2 with --loop-data)")
    p.add_argument("--loop-data", nargs="+", default=None, metavar="RUN_DIR",
                   help="fine-tune on the loop crops of these milling-suite runs (run with record_loop_crops = true, "
                        "e.g. scenarios/thickness_loop_data.toml) instead of training on rendered grooves")
    p.add_argument("--initial", default="thickness",
                   help="with --loop-data: the weights to start from, a shipped name or a .pt path (default thickness)")
    p.add_argument("--name", type=_weights_stem, default="thickness_loop",
                   help="with --loop-data: the output's file stem (default thickness_loop)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("sas-twin", help="a SmartArmStack robot driver over ROS 2, backed by the twin (runs until "
                       "Ctrl-C; for the sas backend)")
    p.add_argument("--prefix", required=True, help="the driver's topic prefix, e.g. /arm1")
    p.add_argument("--scene", default=None, help="scene TOML (default scenes/default.toml)")
    p.add_argument("--overrides", default="{}", help="scene overrides, a JSON object of dotted keys")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--domain", type=_seed, default=0, help="ROS domain id, 0..232 (default 0)")
    p.add_argument("--image-rate-hz", type=_number_in(0.0, MAX_IMAGE_RATE_HZ), default=5.0,
                   help=f"MSCS images per second, 0..{MAX_IMAGE_RATE_HZ:g} (default 5; 0: none)")
    p.set_defaults(func=_cmd_sas_twin)
    p = sub.add_parser("backends", help="list hardware backends")
    p.set_defaults(func=_cmd_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from hw_bridge.recording import RecordingError
    from hw_bridge.registry import UnknownBackendError
    from hw_bridge.safety import ArmingError
    from scenarios.runner import RunFolderError
    from scenes.schema import ConfigError

    try:
        return args.func(args)
    except (ConfigError, UnknownBackendError, ArmingError, RecordingError, RunFolderError) as exc:
        print(f"micromill: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
