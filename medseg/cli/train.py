"""``medseg train``: train a network on a dataset folder; resumable with ``--resume``; data-parallel under torchrun.

Started by ``torchrun`` (or with ``--nproc N``, which starts ``N`` processes on this machine), every process
trains its share of each batch with DistributedDataParallel and rank 0 prints and writes; see
``docs/distributed.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

# Options that are the same in every worker started by --nproc (besides the _OVERRIDES).
_WORKER_OPTIONS = ("config", "dist_timeout")
_BOOLEAN_OPTIONS = frozenset({"deterministic", "amp", "progress"})

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
    "max_minutes": "max_minutes",
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
    parser.add_argument("--max-minutes", type=float, default=None, metavar="M",
                        help="wall-clock budget of this call: start an epoch only if, judged by the longest epoch "
                        "so far, it ends within M minutes; then stop with a checkpoint and model folder (resume "
                        "to continue)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (default on)")
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="data-parallel training in N processes on this machine (one per GPU; on the CPU, "
                        "gloo), like `torchrun --standalone --nproc-per-node N -m medseg train ...`; --batch-size "
                        "is global and must be a multiple of N. Under torchrun, leave it out")
    parser.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                        help="with several processes: how long one waits for the others in a collective before "
                        "the job fails (default 600)")
    parser.set_defaults(func=run)


def worker_arguments(args: argparse.Namespace) -> list[str]:
    """The ``medseg train`` arguments that reproduce ``args`` in a worker process, without ``--nproc``.

    Args:
        args: the parsed options of ``medseg train``.

    Returns:
        Arguments after ``medseg``, starting with ``train``.
    """
    argv = ["train", args.dataset, "--output", args.output]
    if args.resume:
        argv.append("--resume")
    for option in (*_WORKER_OPTIONS, *_OVERRIDES):
        value = getattr(args, option)
        if value is None:
            continue
        flag = "--" + option.replace("_", "-")
        if option in _BOOLEAN_OPTIONS:
            argv.append(flag if value else "--no-" + option.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            argv.extend([flag, *(str(v) for v in value)])
        else:
            argv.extend([flag, repr(value) if isinstance(value, float) else str(value)])
    return argv


def run(args: argparse.Namespace) -> int:
    """Train; 0 on success, 130 after Ctrl-C (with a checkpoint to resume from)."""
    from medseg.cli import EXIT_INTERRUPTED, EXIT_OK
    from medseg.config import TrainConfig, apply_overrides, load_train_config
    from medseg.errors import ConfigError
    from medseg.pipelines.distributed import (
        DEFAULT_TIMEOUT_S,
        backend_for_device,
        distributed_session,
        launch_environment,
    )
    from medseg.pipelines.interrupts import TrainingInterrupted
    from medseg.pipelines.train import CONFIG_NAME, train

    if args.nproc is not None:
        if args.nproc < 1:
            raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
        if launch_environment() is not None:
            raise ConfigError("--nproc starts its own processes; under torchrun use its --nproc-per-node instead")
        if args.nproc > 1:
            from medseg.pipelines.ddp_launch import launch_local

            return launch_local(args.nproc, worker_arguments(args))
    run_dir = Path(args.output)
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be combined with --resume: the run's saved config.yaml is used")
        saved = run_dir / CONFIG_NAME
        if not saved.is_file():
            raise ConfigError(f"cannot resume: {saved} does not exist (no run in {run_dir})")
        # max_steps and max_minutes limit one session: a resumed run goes on to the end unless given again.
        base = dataclasses.replace(load_train_config(saved), max_steps=None, max_minutes=None)
    else:
        base = load_train_config(args.config) if args.config else TrainConfig()
    overrides = {field: getattr(args, option) for option, field in _OVERRIDES.items()}
    config = apply_overrides(base, overrides)
    resume_hint = f"medseg train {shlex.quote(args.dataset)} --output {shlex.quote(str(run_dir))} --resume"
    timeout = args.dist_timeout if args.dist_timeout is not None else DEFAULT_TIMEOUT_S
    with distributed_session(backend_for_device(config.device), timeout) as distributed:
        is_main = distributed is None or distributed.is_main
        try:
            result = train(args.dataset, run_dir, config, resume=args.resume, distributed=distributed)
        except TrainingInterrupted as exc:
            if is_main:
                print(f"medseg train: {exc.message}", file=sys.stderr)
                if exc.checkpoint is not None:
                    print(f"medseg train: resume with: {resume_hint}", file=sys.stderr)
            return EXIT_INTERRUPTED
    if not is_main:
        return EXIT_OK
    if result.stopped_at_max_steps:
        print(f"stopped after {result.global_step} steps (max_steps); continue with: {resume_hint}")
        return EXIT_OK
    if result.stopped_at_time_limit:
        print(f"stopped after {result.epochs_completed} epoch(s), {result.global_step} steps: another epoch would "
              f"overrun --max-minutes; model folder: {result.model_dir}; continue with: {resume_hint}")
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
