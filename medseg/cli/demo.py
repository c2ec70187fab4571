"""``medseg demo``: synthesize, train briefly, segment, evaluate and print the Dice table."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole job end to end on synthetic BraTS data (a few minutes on a CPU)",
        description="Synthesize a small BraTS set, train the 3D U-Net briefly, segment held-out cases, evaluate "
        "Dice/HD95/NSD and print the table. Outputs: OUTPUT/data, OUTPUT/run, OUTPUT/predictions, OUTPUT/metrics.csv.",
    )
    parser.add_argument("--output", default="demo", metavar="DIR", help="output folder (default: ./demo); an earlier demo there is replaced")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: 8, of 12 steps each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the run (default: 0)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``medseg demo``."""
    import dataclasses
    import shutil
    from pathlib import Path

    from medseg.pipelines.demo import DemoConfig, run_demo

    config = DemoConfig(seed=args.seed)
    if args.epochs is not None:
        config = dataclasses.replace(config, epochs=args.epochs)
    out = Path(args.output)
    for part in ("data", "run", "predictions"):
        if (out / part).exists():
            shutil.rmtree(out / part)
    result = run_demo(out, config)
    print()
    print(result.table)
    print()
    print(f"model: {result.model_dir}  predictions: {result.predictions}  metrics: {result.metrics_csv}")
    return 0
