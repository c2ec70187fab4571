"""``medseg train``: train a network on a dataset folder; resumable with ``--resume``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

# Command-line option -> TrainConfig field, for the options that override the configuration.
_OVERRIDES = {
    "model": "model",
    "variant": "variant",
    "epochs": "epochs",
    "steps_per_epoch": "steps_per_epoch",
    "patch": "patch_size",
    "batch_size": "batch_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "fold": "fold",
    "n_folds": "n_folds",
    "val_interval": "val_interval",
    "seed": "seed",
    "deterministic": "deterministic",
    "amp": "amp",
    "device": "device",
    "num_workers": "num_workers",
    "max_steps": "max_steps",
    "progress": "progress",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``medseg train DATASET_DIR --output RUN_DIR``."""
    parser = subparsers.add_parser(
        "train",
        help="train a network on a dataset folder",
        description="Train a registered network on a dataset folder (layout detected: BraTS 2021/2023, Synapse, "
        "TransUNet slices). Writes the resolved config.yaml, metrics.jsonl, checkpoint_last/, checkpoint_best/ "
        "and the model folder model/ into RUN_DIR. Options given here override --config; see docs/training.md.",
    )
    parser.add_argument("dataset", metavar="DATASET_DIR", help="the dataset's root folder")
    parser.add_argument("--output", "-o", required=True, metavar="RUN_DIR", help="the run folder to write")
    parser.add_argument("--config", metavar="CFG.yaml", default=None,
                        help="YAML file of training options (keys: see docs/training.md); not with --resume")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN_DIR from its checkpoint_last (its saved configuration is used; "
                        "only --epochs, --max-steps, --device, --num-workers, --val-interval may change)")
    parser.add_argument("--model", metavar="NAME", default=None, help="network name (default unet; `medseg models`)")
    parser.add_argument("--variant", metavar="NAME", default=None, help="network variant (default: default)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="number of epochs (default 100)")
    parser.add_argument("--steps-per-epoch", type=int, default=None, metavar="N",
                        help="optimiser steps per epoch (default: one pass over the training cases)")
    parser.add_argument("--patch", type=int, nargs="+", default=None, metavar="N",
                        help="training patch and validation window: D H W (3D) or H W (2D); default: the preset's")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B", help="patches per step (default 2)")
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate (default 1e-3 AdamW, 1e-2 SGD)")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default=None, help="optimiser (default adamw)")
    parser.add_argument("--fold", type=int, default=None, metavar="K", help="validation fold, 0-based (default 0)")
    parser.add_argument("--n-folds", type=int, default=None, metavar="N", help="number of folds (default 5)")
    parser.add_argument("--val-interval", type=int, default=None, metavar="N",
                        help="validate every N epochs (and after the last; 0 = never; default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random draw (default 0)")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                        help="deterministic algorithms: bitwise-reproducible runs and resumes on the CPU")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (float16 + loss scaling on CUDA, bfloat16 on CPU)")
    parser.add_argument("--device", default=None, metavar="DEV", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--num-workers", type=int, default=None, metavar="N",
                        help="data-loading worker processes (default 2)")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="stop with a checkpoint after N optimiser steps in total (resume to continue)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (default on)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; 0 on success, 130 after Ctrl-C (with a checkpoint to resume from)."""
    from medseg.cli import EXIT_INTERRUPTED, EXIT_OK
    from medseg.config import TrainConfig, apply_overrides, load_train_config
    from medseg.errors import ConfigError
    from medseg.pipelines.interrupts import TrainingInterrupted
    from medseg.pipelines.train import CONFIG_NAME, train

    run_dir = Path(args.output)
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be combined with --resume: the run's saved config.yaml is used")
        saved = run_dir / CONFIG_NAME
        if not saved.is_file():
            raise ConfigError(f"cannot resume: {saved} does not exist (no run in {run_dir})")
        # max_steps limits one session: a resumed run goes on to the end unless --max-steps is given again.
        base = dataclasses.replace(load_train_config(saved), max_steps=None)
    else:
        base = load_train_config(args.config) if args.config else TrainConfig()
    overrides = {field: getattr(args, option) for option, field in _OVERRIDES.items()}
    config = apply_overrides(base, overrides)
    resume_hint = f"medseg train {shlex.quote(args.dataset)} --output {shlex.quote(str(run_dir))} --resume"
    try:
        result = train(args.dataset, run_dir, config, resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"medseg train: {exc.message}", file=sys.stderr)
        if exc.checkpoint is not None:
            print(f"medseg train: resume with: {resume_hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.stopped_at_max_steps:
        print(f"stopped after {result.global_step} steps (max_steps); continue with: {resume_hint}")
        return EXIT_OK
    best = (
        f"best mean validation Dice {result.best_metric:.4f} at epoch {result.best_epoch + 1}"
        if result.best_metric is not None and result.best_epoch is not None
        else "no validation"
    )
    print(f"trained {result.epochs_completed} epoch(s), {result.global_step} steps; {best}; "
          f"model folder: {result.model_dir}")
    if result.skipped_steps:
        print(f"note: {result.skipped_steps} step(s) were skipped for non-finite losses")
    return EXIT_OK
