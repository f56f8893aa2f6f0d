"""The ``micromill`` command.

    micromill demo [--out DIR] [--scene FILE] [--seed N]
    micromill run SUITE.toml [--workers N] [--out DIR] [--cases N] [--seed S] [--no-progress]
    micromill backends
    micromill train keypoints --target drill_tip|cranial [--out DIR] [--seed N] [--workers N] [--budget-min M]
    micromill train completion [--out DIR] [--seed N] [--workers N] [--budget-min M]

Exit codes: 0 success; 1 a suite threshold failed or a case errored; 2 invalid input
(bad scene or suite file, unknown backend), reported with every offending field.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_demo(args) -> int:
    from scenarios.demo import format_summary, run_demo

    summary = run_demo(Path(args.out), args.scene, args.seed)
    print(format_summary(summary))
    print(f"plots, camera_model.toml and summary.json in {args.out}")
    return 0 if summary["ok"] else 1     # 1: the pipeline did not reach its own stop (see the summary)


def _cmd_run(args) -> int:
    from scenarios.report import summary_table
    from scenarios.runner import run_suite
    from scenarios.suite import load_suite

    suite = load_suite(args.suite)
    out = Path(args.out) if args.out else Path("runs") / suite.name
    summary = run_suite(suite, out, workers=args.workers, n_cases=args.cases, seed=args.seed,
                        progress=not args.no_progress)
    print(summary_table(summary))
    print(f"results.json and report.md in {out}")
    return 0 if summary["passed"] else 1


def _cmd_train(args) -> int:
    if args.what == "completion":
        from scenarios.train_completion import summary_lines, train_completion_model

        card = train_completion_model(Path(args.out) if args.out else None, seed=args.seed, workers=args.workers,
                                      budget_min=args.budget_min, n_scenes=args.scenes, epochs=args.epochs,
                                      progress=not args.no_progress)
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


def _cmd_backends(args) -> int:
    from hw_bridge.registry import backends

    for b in backends():
        print(f"{b.name:<12} {b.summary}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="micromill", description="Digital twin and testbench for robotic "
                                     "bone micro-milling.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="a whole autonomous window on the twin: calibrate, fit, mill, judge")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--scene", default=None, help="scene TOML (default scenes/default.toml)")
    p.add_argument("--seed", type=_seed, default=0)
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("run", help="run a scenario suite")
    p.add_argument("suite", help="suite TOML file, e.g. scenarios/twin_smoke.toml")
    p.add_argument("--workers", type=_positive, default=1, help="processes (default 1)")
    p.add_argument("--out", default=None, help="output folder (default runs/<suite name>)")
    p.add_argument("--cases", type=_positive, default=None, help="override the number of cases")
    p.add_argument("--seed", type=_seed, default=None, help="override the suite seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("train", help="train a network from twin renders")
    train_sub = p.add_subparsers(dest="what", required=True, metavar="{keypoints,completion}")
    for what, text in (("keypoints", "drill-tip or cranial keypoint detector"),
                       ("completion", "completion-level estimator")):
        p = train_sub.add_parser(what, help=text)
        if what == "keypoints":
            p.add_argument("--target", required=True, choices=["drill_tip", "cranial"])
        p.add_argument("--out", default=None, help="folder for <name>.pt/.md (default: the shipped weights folder)")
        p.add_argument("--seed", type=_seed, default=0)
        p.add_argument("--workers", type=_positive, default=2, help="data-generation processes (default 2)")
        p.add_argument("--budget-min", type=float, default=19.0, help="wall-clock budget in minutes (default 19)")
        p.add_argument("--scenes", type=_positive, default=None, help="override the number of rendered scenes")
        p.add_argument("--epochs", type=_positive, default=None, help="override the (planned) epochs per network")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(func=_cmd_train)
    p = sub.add_parser("backends", help="list hardware backends")
    p.set_defaults(func=_cmd_backends)
    args = parser.parse_args(argv)

    from hw_bridge.registry import UnknownBackendError
    from scenes.schema import ConfigError

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"micromill: {exc}", file=sys.stderr)
        return 2
    except UnknownBackendError as exc:
        print(f"micromill: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
