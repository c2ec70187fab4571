"""The learning benchmark: does the 3D U-Net learn synthetic BraTS within 20 minutes on a 2-core CPU?

Every step is a ``medseg`` command, run in this process exactly as a user would type it:

1. ``medseg synth brats WORK/train --cases 16 --shape 128 128 96 --seed 1``
2. ``medseg synth brats WORK/test --cases 4 --shape 128 128 96 --seed 2`` (held-out cases, another seed)
3. ``medseg train WORK/train --output WORK/run --config WORK/train.yaml --epochs E --max-minutes M``
4. ``medseg segment WORK/test --model WORK/run/model --output WORK/pred --device cpu``
5. ``medseg evaluate WORK/pred WORK/test --dataset brats2021 --output WORK/metrics.csv``

It prints the mean Dice per region (TC, WT, ET) and their mean (target: at least 0.85) and writes them, with
the timings and the configuration, to a JSON file.

**Fitting the budget.** The learning rate follows a poly schedule over ``epochs x steps_per_epoch`` steps, so
the number of steps must be known before training starts. Before step 3 the script times a few training
steps of the network (and one validation window) on this machine with random data, and chooses the number of
epochs whose estimated duration fills the budget; ``--max-minutes`` then guarantees the end: an epoch starts
only if it is expected to finish within the budget. The time of this calibration is reported separately.

**Why these settings** (see docs/benchmarks.md, "Learning (CPU)"). The phantom's sub-regions are told apart by
their intensities in the four z-scored modalities (enhancing tumour bright on T1ce, oedema bright on FLAIR,
necrosis dark on T1ce and bright on T2), so what limits a 20-minute CPU run is the number of optimiser updates,
not context: a 48^3 patch (90 mm at 1.875 mm voxels, a third of the voxels of 64^3) and batch 4 give cheap
steps, half of the patches centred on tumour; AdamW at 3e-3 with a poly decay to zero learns fast with
instance normalisation; deep supervision (on by default for ``unet``) adds gradient at low resolution; the
preprocessed cases are cached in memory; one validation case every few epochs keeps a learning curve at
little cost; the last weights are kept (``model_selection: last``), the end of the decayed schedule.

**Threads.** ``--threads`` should not exceed the cores that are free: on a 2-core machine shared with other
jobs, two threads were four times slower per step than one (each parallel region waits for the descheduled
thread), so a quick check on a busy machine is best run with ``--threads 1``.

Usage::

    python benchmarks/learning.py                  # the benchmark: at most 20 minutes of training
    python benchmarks/learning.py --minutes 3      # a quick check that every step runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.cli import main as medseg

TARGET_DICE = 0.85
REGIONS = ("TC", "WT", "ET")
SHAPE = (128, 128, 96)


@dataclass(frozen=True)
class LearningConfig:
    """What the benchmark trains (the defaults are the benchmark; the options exist for tuning).

    Attributes:
        variant: ``unet`` variant (``default``: 16-256 features, five stages).
        patch: training patch and sliding window ``(D, H, W)``.
        batch_size: patches per optimiser step.
        lr: initial AdamW learning rate (poly decay to zero over the run).
        steps_per_epoch: steps between checkpoints (and the granularity of the time budget).
        val_interval: validate on one held-in case every this many epochs.
        pos: odds of tumour-centred patches against tissue-centred ones (``pos : 1``).
        train_cases: synthetic training cases (one is the validation fold).
        test_cases: held-out cases synthesized with ``test_seed``.
        train_seed: seed of the training cases.
        test_seed: seed of the held-out cases.
    """

    variant: str = "default"
    patch: tuple[int, int, int] = (48, 48, 48)
    batch_size: int = 4
    lr: float = 3e-3
    steps_per_epoch: int = 25
    val_interval: int = 4
    pos: float = 1.0
    train_cases: int = 16
    test_cases: int = 4
    train_seed: int = 1
    test_seed: int = 2


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = LearningConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget in minutes (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2: a 2-core CPU)")
    parser.add_argument("--workdir", default=None, help="folder for data, run and predictions (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--json", default="learning_results.json", help="results file (default learning_results.json)")
    parser.add_argument("--variant", default=defaults.variant, help=f"unet variant (default {defaults.variant})")
    parser.add_argument("--patch", type=int, nargs=3, default=list(defaults.patch), metavar=("D", "H", "W"),
                        help=f"training patch and window (default {' '.join(map(str, defaults.patch))})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"patches per step (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"initial learning rate (default {defaults.lr:g})")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many epochs instead of calibrating them to the budget")
    return parser.parse_args(argv)


def _run(step: str, argv: list[str], log: list[dict]) -> float:
    """Run one medseg command; raise if it fails; record and return its wall time."""
    print(f"$ medseg {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = medseg(argv)
    seconds = time.perf_counter() - start
    log.append({"step": step, "argv": ["medseg", *argv], "seconds": round(seconds, 1), "exit_code": code})
    if code != 0:
        raise SystemExit(f"benchmark step {step!r} failed with exit code {code}")
    return seconds


def _brain_box(case_dir: Path) -> tuple[int, ...]:
    """The shape of the nonzero box of a case's first modality (what the preset crops to)."""
    from medseg.io import load_volume

    image = load_volume(next(iter(sorted(case_dir.glob("*_t1.nii.gz"))))).array
    nonzero = np.argwhere(image > 0)
    return tuple(int(n) for n in nonzero.max(0) - nonzero.min(0) + 1)


def _windows(box: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> int:
    """Sliding windows MONAI tiles a box with (per axis: ceil((size - patch) / step) + 1)."""
    count = 1
    for size, window in zip(box, patch):
        step = max(int(window * (1 - overlap)), 1)
        count *= 1 if size <= window else math.ceil((size - window) / step) + 1
    return count


def calibrate(config: LearningConfig, box: tuple[int, ...], minutes: float) -> dict:
    """Time training steps and a validation window here; choose the epochs that fill the budget.

    Args:
        config: the benchmark's settings.
        box: the brain box of a case (the validation volume after cropping).
        minutes: the training budget.

    Returns:
        ``step_s``, ``window_s``, ``validation_s``, ``epoch_s`` (estimates) and ``epochs``.
    """
    from medseg.networks import create
    from medseg.pipelines.losses import SegmentationLoss

    model = create("unet", spatial_dims=3, in_channels=4, out_channels=3, variant=config.variant,
                   deep_supervision=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    loss_fn = SegmentationLoss("sigmoid", 1.0, 1.0, True)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(config.batch_size, 4, *config.patch, generator=generator)
    target = (torch.rand(config.batch_size, 3, *config.patch, generator=generator) > 0.9).to(torch.uint8)
    times = []
    for _ in range(4):  # the first is a warm-up
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(image), target).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    # Data loading and augmentation run in the training process between steps: about a tenth more.
    step_s = 1.1 * statistics.median(times[1:])
    model.eval()
    with torch.inference_mode():
        window = torch.randn(2, 4, *config.patch, generator=generator)
        model(window)
        start = time.perf_counter()
        model(window)
        window_s = (time.perf_counter() - start) / 2
    validation_s = _windows(box, config.patch, 0.5) * window_s
    # Each epoch also writes checkpoint_last and the model folder (about a second for the default U-Net).
    epoch_s = config.steps_per_epoch * step_s + validation_s / config.val_interval + 1.5
    # The first epoch also loads and caches the training cases (about half a second each on a quiet machine).
    usable_s = 0.97 * 60.0 * minutes - 0.5 * config.train_cases
    epochs = max(1, int(usable_s // epoch_s))
    return {
        "step_s": round(step_s, 3),
        "window_s": round(window_s, 3),
        "validation_s": round(validation_s, 1),
        "epoch_s": round(epoch_s, 1),
        "epochs": epochs,
    }


def _train_yaml(config: LearningConfig) -> str:
    """The training options the command line has no flag for."""
    return "\n".join([
        "model_selection: last",
        "max_val_cases: 1",
        f"val_interval: {config.val_interval}",
        "cache: true",
        "num_workers: 0",
        "preprocessing:",
        f"  pos: {config.pos}",
        "",
    ])


def _dice_table(metrics_json: Path) -> tuple[dict[str, float], list[dict]]:
    document = json.loads(metrics_json.read_text())
    means = {row["region"]: float(row["mean"]) for row in document["summary"] if row["metric"] == "dice"}
    per_case = [{"case": row["case"], "region": row["region"], "dice": row["dice"]} for row in document["cases"]]
    return {region: means[region] for region in REGIONS}, per_case


def run_benchmark(args: argparse.Namespace) -> dict:
    """Synthesize, calibrate, train, segment and evaluate; return the results document."""
    from medseg.io import atomic_write_text

    config = dataclasses.replace(
        LearningConfig(), variant=args.variant, patch=tuple(args.patch), batch_size=args.batch_size, lr=args.lr
    )
    torch.set_num_threads(args.threads)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="medseg-learning-"))
    work.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    shape = [str(n) for n in SHAPE]
    try:
        _run("synth_train", ["synth", "brats", str(work / "train"), "--cases", str(config.train_cases),
                             "--shape", *shape, "--seed", str(config.train_seed)], log)
        _run("synth_test", ["synth", "brats", str(work / "test"), "--cases", str(config.test_cases),
                            "--shape", *shape, "--seed", str(config.test_seed)], log)
        start = time.perf_counter()
        box = _brain_box(next(p for p in sorted((work / "train").iterdir()) if p.is_dir()))
        calibration = calibrate(config, box, args.minutes)
        if args.epochs is not None:
            calibration["epochs"] = args.epochs
        calibration["seconds"] = round(time.perf_counter() - start, 1)
        print(f"calibration: {calibration}", flush=True)
        (work / "train.yaml").write_text(_train_yaml(config))
        train_s = _run("train", [
            "train", str(work / "train"), "--output", str(work / "run"), "--config", str(work / "train.yaml"),
            "--model", "unet", "--variant", config.variant, "--patch", *map(str, config.patch),
            "--batch-size", str(config.batch_size), "--lr", repr(config.lr), "--epochs", str(calibration["epochs"]),
            "--steps-per-epoch", str(config.steps_per_epoch), "--n-folds", str(config.train_cases),
            "--seed", "0", "--device", "cpu", "--max-minutes", repr(args.minutes), "--no-progress",
        ], log)
        segment_s = _run("segment", ["segment", str(work / "test"), "--model", str(work / "run" / "model"),
                                     "--output", str(work / "pred"), "--device", "cpu"], log)
        _run("evaluate", ["evaluate", str(work / "pred"), str(work / "test"), "--dataset", "brats2021",
                          "--output", str(work / "metrics.csv")], log)
        dice, per_case = _dice_table(work / "metrics.json")
        epochs = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    mean = statistics.fmean(dice.values())
    results = {
        "benchmark": "learning (synthetic BraTS 2021, 3D U-Net, CPU)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": args.threads},
        "budget_minutes": args.minutes,
        "config": {**dataclasses.asdict(config), "shape": list(SHAPE)},
        "calibration": calibration,
        "train_seconds": round(train_s, 1),
        "epochs_trained": len(epochs),
        "steps_trained": epochs[-1]["step"] if epochs else 0,
        "learning_curve": [{"epoch": e["epoch"], "step": e["step"], "loss": e["loss"], "val_mean_dice": e["val_mean_dice"]}
                           for e in epochs],
        "segment_seconds": round(segment_s, 1),
        "dice": dice,
        "mean_dice": mean,
        "target": TARGET_DICE,
        "passed": mean >= TARGET_DICE,
        "cases": per_case,
        "steps": log,
        "workdir": str(work) if (args.workdir or args.keep) else None,
    }
    atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    return results


def format_results(results: dict) -> str:
    """The table the benchmark prints."""
    lines = [
        f"training: {results['train_seconds'] / 60:.1f} min of a {results['budget_minutes']:g} min budget, "
        f"{results['epochs_trained']} epochs, {results['steps_trained']} steps "
        f"({results['machine']['threads']} threads); segmenting {len(results['cases']) // len(REGIONS)} cases: "
        f"{results['segment_seconds']:.0f} s",
        "",
        f"{'region':<8}{'mean Dice':>10}",
    ]
    lines += [f"{region:<8}{results['dice'][region]:>10.4f}" for region in REGIONS]
    verdict = "PASS" if results["passed"] else "FAIL"
    lines.append(f"{'mean':<8}{results['mean_dice']:>10.4f}   target >= {results['target']:.2f}: {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table; 0 when it ran (whether or not the target was met)."""
    args = _parse_args(argv)
    results = run_benchmark(args)
    print()
    print(format_results(results))
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
