"""``medseg bench``: inference (``bench inference``, CPU or CUDA) and CPU training-step (``bench train``) benchmarks."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from medseg.cli import EXIT_OK


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand and its ``inference`` and ``train`` benchmarks."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark inference and training steps on this machine",
        description="Measure wall time and peak memory (RSS; GPU memory with `inference --device cuda`). See "
        "docs/benchmarks.md.",
    )
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    kinds.required = True
    _add_inference(kinds)
    _add_train(kinds)
    return parser


def _add_inference(kinds: argparse._SubParsersAction) -> None:
    parser = kinds.add_parser(
        "inference",
        help="one BraTS-size case: MONAI vs nnU-Net vs medseg segment",
        description="Segment one synthetic BraTS case (240x240x155, 4 channels) with (a) MONAI's "
        "sliding_window_inference on the whole volume, (b) nnU-Net v2's sliding-window predictor and (c) medseg "
        "segment's defaults, one after the other in this process, then each alone in a fresh process for its peak "
        "memory; print time, peak RSS, speed-ups and Dice agreement with (a). About 4 minutes on 2 quiet cores "
        "(add about 5 for --levers).",
    )
    parser.add_argument(
        "--model",
        metavar="MODEL_DIR",
        help="trained BraTS 2021 region model folder; its patch_size is the window (default: medseg's default "
        "3D U-Net with seeded random weights, window 128^3)",
    )
    parser.add_argument("--quick", action="store_true", help="a 64x64x48 case and a 32^3 window: a smoke test of "
                        "a few seconds")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="case shape (default 240 240 155)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic case and random weights (default 0)")
    parser.add_argument("--levers", action="store_true", help="also measure each lever (tile layout, precision, "
                        "buffers, threads, compile, ONNX Runtime) in its own process")
    parser.add_argument("--no-own-process", dest="own_process", action="store_false",
                        help="skip the per-method runs in fresh processes (no peak RSS)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in every process (default: "
                        "torch's, one per core; 1 gives steadier figures on a machine shared with other jobs)")
    parser.add_argument(
        "--workdir", metavar="DIR", help="keep the case, model and outputs here (default: a temporary folder)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where all three methods run "
                        "(default cpu; cuda: the GPU pipelines, (c) with float16 autocast, peak GPU memory too)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.set_defaults(func=run_inference)


def _add_train(kinds: argparse._SubParsersAction) -> None:
    from medseg.pipelines.bench_train import FULL_SIZE, NETWORKS, QUICK_SIZE  # no torch at import

    parser = kinds.add_parser(
        "train",
        help="voxels per second and peak memory of one training step per network",
        description=f"One training step (forward, loss, backward, AdamW) at {FULL_SIZE}^3 on the CPU for each network, "
        "each in its own process.",
    )
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), metavar="NAME",
                        help=f"networks to measure (default: {' '.join(NETWORKS)})")
    parser.add_argument(
        "--size", type=int, default=None, help=f"patch edge (default {FULL_SIZE}; {QUICK_SIZE} with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help=f"patch {QUICK_SIZE}^3 and one timed step: a smoke test")
    parser.add_argument("--batch-size", type=int, default=1, help="patches per step (default 1)")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps after a warm-up step (default 2; 1 with --quick)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.set_defaults(func=run_train)


def run_inference(args: argparse.Namespace) -> int:
    """Run ``medseg bench inference`` (or, with the hidden ``--child``, one method for the parent's process)."""
    from medseg.pipelines.bench_inference import (
        FULL_SHAPE,
        FULL_WINDOW,
        QUICK_SHAPE,
        QUICK_WINDOW,
        InferenceBenchConfig,
        format_report,
        report_to_json,
        run_child_method,
        run_inference_bench,
    )

    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(run_child_method(args.child, args.workdir))
        return EXIT_OK
    shape, window = (QUICK_SHAPE, QUICK_WINDOW) if args.quick else (FULL_SHAPE, FULL_WINDOW)
    config = InferenceBenchConfig(
        shape=tuple(args.shape) if args.shape else shape,
        window=window,
        model_dir=args.model,
        seed=args.seed,
        own_process=args.own_process,
        levers=args.levers,
        threads=args.threads,
        device=args.device,
    )

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.workdir:
        report = run_inference_bench(config, Path(args.workdir), log)
    else:
        with tempfile.TemporaryDirectory(prefix="medseg-bench-") as scratch:
            report = run_inference_bench(config, Path(scratch), log)
    print(format_report(report))
    if args.json:
        from medseg.io import atomic_write_text

        atomic_write_text(Path(args.json), report_to_json(report))
    return EXIT_OK


def run_train(args: argparse.Namespace) -> int:
    """Run ``medseg bench train`` (or, with the hidden ``--child``, one network for the parent's process)."""
    from medseg.pipelines.bench_train import (
        FULL_SIZE,
        QUICK_SIZE,
        TrainBenchConfig,
        child_train_step,
        format_train_report,
        run_train_bench,
        train_report_to_json,
    )

    size = args.size or (QUICK_SIZE if args.quick else FULL_SIZE)
    steps = args.steps or (1 if args.quick else 2)
    config = TrainBenchConfig(tuple(args.networks), size, args.batch_size, steps, args.threads)
    if args.child:
        print(child_train_step(args.child, config.size, config.batch_size, config.steps, config.threads))
        return EXIT_OK

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = run_train_bench(config, log)
    print(format_train_report(report))
    if args.json:
        from medseg.io import atomic_write_text

        atomic_write_text(Path(args.json), train_report_to_json(report))
    return EXIT_OK
