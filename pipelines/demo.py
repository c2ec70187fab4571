"""``medseg demo``: the whole job end to end on embedded synthetic data, in a few minutes on a laptop CPU.

Synthesize a small BraTS 2021 training set and held-out test cases (another seed), train the 3D U-Net
briefly, segment the test cases, evaluate Dice per region and print the table. Every step is the public
library API the command line also uses; the demo adds nothing but the choice of small settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medseg.config import TrainConfig
from medseg.errors import ConfigError


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run (defaults: about three minutes on a 2-core CPU).

    Attributes:
        train_cases: synthetic training cases (one of them is the validation fold).
        test_cases: held-out cases synthesized with another seed, segmented and evaluated.
        shape: volume shape ``(i, j, k)``; the phantom's field of view is fixed, so smaller shapes mean
            coarser voxels.
        patch: training patch and sliding window.
        epochs: training epochs.
        steps_per_epoch: optimiser steps per epoch.
        variant: variant of the ``unet`` network.
        lr: initial learning rate (AdamW, poly schedule).
        seed: seed of the training data and the run; the test data uses ``seed + 1000``.
    """

    train_cases: int = 5
    test_cases: int = 3
    shape: tuple[int, int, int] = (64, 64, 40)
    patch: tuple[int, int, int] = (48, 48, 32)
    epochs: int = 8
    steps_per_epoch: int = 12
    variant: str = "small"
    lr: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_cases < 2 or self.test_cases < 1:
            raise ConfigError(f"the demo needs >= 2 training and >= 1 test cases, got {self.train_cases}, {self.test_cases}")


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the Dice table it printed."""

    output_dir: Path
    model_dir: Path
    predictions: Path
    metrics_csv: Path
    table: str
    mean_dice: dict[str, float]


def run_demo(
    output_dir: str | os.PathLike, config: DemoConfig | None = None, log: Callable[[str], None] = print
) -> DemoResult:
    """Run the demo into ``output_dir`` (which must not hold an earlier demo run's training run).

    Args:
        output_dir: folder for the data, the run, the predictions and the metrics.
        config: sizes of the run.
        log: where progress lines go.

    Returns:
        The :class:`DemoResult`.
    """
    from medseg.pipelines.evaluate import EvaluationSettings, evaluate, format_summary
    from medseg.pipelines.segment import SegmentOptions, segment
    from medseg.pipelines.train import train
    from medseg.synth import write_brats

    config = config or DemoConfig()
    out = Path(output_dir)
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    log(f"[1/4] synthesizing {config.train_cases} training and {config.test_cases} test BraTS cases {config.shape}")
    write_brats(train_dir, config.train_cases, shape=config.shape, year=2021, seed=config.seed)
    write_brats(test_dir, config.test_cases, shape=config.shape, year=2021, seed=config.seed + 1000)
    log(f"[2/4] training unet/{config.variant} for {config.epochs} epochs x {config.steps_per_epoch} steps")
    result = train(
        train_dir,
        out / "run",
        TrainConfig(
            model="unet",
            variant=config.variant,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            batch_size=2,
            patch_size=list(config.patch),
            lr=config.lr,
            n_folds=config.train_cases,
            val_interval=config.epochs,  # validate once, at the end: the demo's time goes into learning
            seed=config.seed,
            device="cpu",
            num_workers=0,
            cache=True,
        ),
    )
    predictions = out / "predictions"
    log(f"[3/4] segmenting the {config.test_cases} test cases into {predictions}")
    summary = segment(test_dir, result.model_dir, predictions, SegmentOptions(device="cpu"))
    if summary.failed:
        raise ConfigError(f"demo segmentation failed: {[(r.case_id, r.error) for r in summary.failed]}")
    log("[4/4] evaluating Dice, HD95 and NSD per region")
    metrics_csv = out / "metrics.csv"
    evaluation = evaluate(predictions, test_dir, EvaluationSettings(dataset="brats2021"), output=metrics_csv)
    table = format_summary(evaluation.summary)
    mean_dice = {
        str(row["region"]): float(row["mean"]) for row in evaluation.summary if row["metric"] == "dice"
    }
    return DemoResult(out, result.model_dir, predictions, metrics_csv, table, mean_dice)
