"""``medseg train``: train a registered network on a detected dataset layout, resumable to the bit.

:func:`train` detects the layout of ``dataset_dir``, splits its cases into a training and a validation fold,
builds the layout's transform preset, and runs the optimisation loop of :mod:`medseg.pipelines.train_loop`
(Dice + cross-entropy, AdamW or SGD with a poly schedule, sliding-window validation, atomic checkpoints and a
model folder). What it writes into ``RUN_DIR`` is described in ``docs/training.md``; data-parallel training
on several processes (``distributed``) in ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from medseg import __version__
from medseg.config import ModelConfig, TrainConfig, train_config_to_yaml
from medseg.errors import ConfigError, InputError
from medseg.io.atomic import atomic_write_text
from medseg.pipelines.checkpoint import checkpoint_exists, load_checkpoint
from medseg.pipelines.distributed import DistributedContext
from medseg.pipelines.losses import SegmentationLoss
from medseg.pipelines.model_folder import build_network
from medseg.pipelines.optim import DEFAULT_LR, PolySchedule, build_optimizer
from medseg.pipelines.sampler import STREAM_INIT, PatchSampler, derive_seed, seed_everything
from medseg.pipelines.train_data import TrainingData, prepare_training_data
from medseg.pipelines.train_loop import TrainingLoop

CONFIG_NAME = "config.yaml"
RUN_INFO_NAME = "run.json"
LAST_NAME = "checkpoint_last"
BEST_NAME = "checkpoint_best"
MODEL_DIR_NAME = "model"

#: Fields that may differ between the run being resumed and the resuming call: they change where the run
#: stops, how it is executed or how often it reports, not what one step computes.
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {"epochs", "max_steps", "max_minutes", "device", "num_workers", "progress", "val_interval", "max_val_cases",
     "val_sw_batch_size", "cache", "nonfinite_patience"}
)


@dataclass
class TrainResult:
    """What a call of :func:`train` achieved.

    Attributes:
        run_dir: the run folder.
        model_dir: the model folder (``RUN_DIR/model``).
        epochs_completed: epochs finished in total (including before a resume).
        global_step: optimiser steps done in total.
        best_metric: best mean validation Dice so far, or ``None`` without validation.
        best_epoch: the (0-based) epoch that reached it, or ``None``.
        last_val_dice: Dice per class or region of the last validation, or ``None``.
        stopped_at_max_steps: training stopped because ``max_steps`` was reached (resume to continue).
        skipped_steps: steps skipped because of a non-finite loss or gradient, in total.
        stopped_at_time_limit: training stopped before an epoch that would have overrun ``max_minutes``
            (resume to continue).
    """

    run_dir: Path
    model_dir: Path
    epochs_completed: int
    global_step: int
    best_metric: float | None
    best_epoch: int | None
    last_val_dice: dict[str, float] | None
    stopped_at_max_steps: bool
    skipped_steps: int
    stopped_at_time_limit: bool = False


def train(
    dataset_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: TrainConfig,
    resume: bool = False,
    distributed: DistributedContext | None = None,
) -> TrainResult:
    """Train a network on a dataset folder; write checkpoints, metrics and a model folder into ``run_dir``.

    Args:
        dataset_dir: a dataset in one of the supported layouts (``medseg.data.detect``).
        run_dir: the output folder. A new run refuses a folder that already holds a checkpoint.
        config: the training configuration; ``None`` fields are resolved from the dataset and preset, and
            the resolved configuration is written to ``run_dir/config.yaml``.
        resume: continue from ``run_dir/checkpoint_last``: model, optimiser, schedule, AMP scaler, random
            states and sampler position are restored, and the rest of the run is computed exactly as if it had
            never stopped. Only :data:`RESUMABLE_CHANGES` fields may differ from the saved configuration.
        distributed: data-parallel training: every process of the job calls :func:`train` with the same
            arguments and its own context (``medseg.pipelines.distributed.distributed_session``). Each step's
            ``batch_size`` samples are split evenly over the processes (``batch_size`` must be a multiple of
            their number), validation cases are divided among them, and only rank 0 writes into ``run_dir``
            (a shared folder: every process reads it to resume). ``None``: one process.

    Returns:
        A :class:`TrainResult` (the same on every process; ``run_dir`` is complete when it returns).

    Raises:
        InputError: unreadable dataset or checkpoint.
        ConfigError: invalid configuration, or a resume whose configuration or dataset differs.
        medseg.errors.TrainingError: the loss stayed non-finite for ``nonfinite_patience`` steps (the last
            good checkpoint is kept).
        medseg.pipelines.interrupts.TrainingInterrupted: Ctrl-C; a checkpoint to resume from was saved.
    """
    config = config.validate()
    run_dir = Path(run_dir)
    data = prepare_training_data(dataset_dir, config)
    config = resolve_train_config(config, data)
    model_config = data.model_config(config)

    saved_tensors: dict[str, torch.Tensor] | None = None
    saved_state: dict[str, Any] | None = None
    if resume:
        if not checkpoint_exists(run_dir / LAST_NAME):
            raise InputError(f"cannot resume: {run_dir / LAST_NAME} holds no checkpoint")
        saved_tensors, saved_state = load_checkpoint(run_dir / LAST_NAME)
        config = check_resume(saved_state, config, data)
    elif checkpoint_exists(run_dir / LAST_NAME):
        raise ConfigError(
            f"{run_dir} already holds a training run; pass --resume to continue it, or choose another --output"
        )

    device = resolve_device(config.device, distributed)
    is_main = distributed is None or distributed.is_main
    with deterministic_mode(config.deterministic, device):
        seed_everything(derive_seed(config.seed, STREAM_INIT))
        check_network_fits(config, model_config)
        model = build_network(model_config).to(device)
        check_patch_divisible(model, model_config.patch_size)
        optimizer = build_optimizer(model.parameters(), config)
        steps_per_epoch = int(config.steps_per_epoch or 1)
        schedule = PolySchedule(float(config.lr or 0.0), config.epochs * steps_per_epoch, config.poly_exponent)
        sampler = PatchSampler(len(data.train_cases), config.batch_size, steps_per_epoch, config.seed)
        if distributed is not None:
            sampler.local_batch_size(distributed.world_size)  # refuse a batch that cannot be split evenly
        loss_fn = SegmentationLoss(
            model_config.output_activation,
            config.loss_dice_weight,
            config.loss_ce_weight,
            config.dice_batch,
            # Batch Dice over the global batch, so that N processes compute what one would.
            batch_sum=distributed.global_batch_sum if distributed is not None else None,
        )
        loop = TrainingLoop(
            run_dir=run_dir,
            data=data,
            config=config,
            model_config=model_config,
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            sampler=sampler,
            loss_fn=loss_fn,
            device=device,
            distributed=distributed,
        )
        # Everything is checked: only now does the run folder get its configuration.
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / CONFIG_NAME, train_config_to_yaml(config))
            write_run_info(run_dir, dataset_dir, data, config, device, distributed)
        if saved_state is not None and saved_tensors is not None:
            loop.restore(saved_tensors, saved_state)
        outcome = loop.run()
        if distributed is not None:
            distributed.barrier()  # rank 0's last writes are done when train() returns on any process
    return TrainResult(
        run_dir=run_dir,
        model_dir=run_dir / MODEL_DIR_NAME,
        epochs_completed=outcome.epochs_completed,
        global_step=outcome.global_step,
        best_metric=outcome.best_metric,
        best_epoch=outcome.best_epoch,
        last_val_dice=outcome.last_val_dice,
        stopped_at_max_steps=outcome.stopped_at_max_steps,
        skipped_steps=outcome.skipped_steps,
        stopped_at_time_limit=outcome.stopped_at_time_limit,
    )


def resolve_train_config(config: TrainConfig, data: TrainingData) -> TrainConfig:
    """Replace the ``None`` defaults of ``config`` by the values the run will use.

    Args:
        config: the validated configuration.
        data: the prepared dataset (training cases, preset defaults, network support).

    Returns:
        A new configuration with ``lr``, ``steps_per_epoch``, ``patch_size`` and ``deep_supervision`` set.
    """
    lr = config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]
    steps = config.steps_per_epoch or max(1, -(-len(data.train_cases) // config.batch_size))
    patch = list(config.patch_size) if config.patch_size is not None else list(data.patch_size)
    deep_supervision = config.deep_supervision
    if deep_supervision is None:
        deep_supervision = network_accepts(config.model, config.variant, "deep_supervision")
    elif deep_supervision and not network_accepts(config.model, config.variant, "deep_supervision"):
        raise ConfigError(f"network {config.model!r} has no deep supervision; set deep_supervision to false or null")
    return replace(config, lr=lr, steps_per_epoch=steps, patch_size=patch, deep_supervision=deep_supervision).validate()


def network_accepts(name: str, variant: str, option: str) -> bool:
    """Whether a registered network's builder accepts a keyword option.

    Args:
        name: registry name.
        variant: variant name.
        option: the keyword, e.g. ``"deep_supervision"``.

    Raises:
        ConfigError: unknown network or variant.
    """
    from medseg.networks.registry import resolve_kwargs

    resolve_kwargs(name, variant)  # unknown names raise here, with the valid ones
    try:
        resolve_kwargs(name, variant, **{option: None})
    except ConfigError:
        return False
    return True


def check_network_fits(config: TrainConfig, model_config: ModelConfig) -> None:
    """Raise a readable error when the network does not support the patch's dimensionality.

    Args:
        config: the resolved training configuration.
        model_config: the model configuration derived from it.

    Raises:
        ConfigError: e.g. a 2D-only network with a 3D patch (the message says how to pass a 2D patch).
    """
    from medseg.networks import get_info

    supported = get_info(model_config.network).spatial_dims
    if model_config.spatial_dims not in supported:
        dims = " or ".join(f"{d}D" for d in supported)
        raise ConfigError(
            f"network {config.model!r} is {dims}, but the patch {model_config.patch_size} is "
            f"{model_config.spatial_dims}D; pass a patch with --patch (H W for 2D, D H W for 3D)"
        )


def check_patch_divisible(model: torch.nn.Module, patch_size: list[int]) -> None:
    """Raise unless every patch size is a multiple of the network's divisor.

    Args:
        model: the network (a ``SegmentationNetwork`` with ``divisor``).
        patch_size: the training patch, which is also the validation window.

    Raises:
        ConfigError: naming the axis and the nearest valid sizes.
    """
    divisor = getattr(model, "divisor", None)
    if not divisor:
        return
    for axis, (size, div) in enumerate(zip(patch_size, divisor)):
        if size % div:
            lower, upper = (size // div) * div, (size // div + 1) * div
            options = f"{lower} or {upper}" if lower else str(upper)
            raise ConfigError(
                f"patch {patch_size} does not fit the network: axis {axis} must be a multiple of {div} "
                f"(e.g. {options})"
            )


def check_resume(saved_state: dict[str, Any], config: TrainConfig, data: TrainingData) -> TrainConfig:
    """Check that a resumed run continues the saved one; return the configuration to continue with.

    Args:
        saved_state: the checkpoint's JSON state.
        config: the resolved configuration of the resuming call.
        data: the prepared dataset.

    Returns:
        The saved configuration with the :data:`RESUMABLE_CHANGES` fields taken from ``config``.

    Raises:
        ConfigError: other fields differ (the message lists them), or the training cases differ.
    """
    saved = TrainConfig.from_dict(saved_state["train_config"], source="checkpoint configuration")
    ours, theirs = config.to_dict(), saved.to_dict()
    differing = sorted(key for key in ours if ours[key] != theirs[key] and key not in RESUMABLE_CHANGES)
    if differing:
        detail = "; ".join(f"{key}: saved {theirs[key]!r}, now {ours[key]!r}" for key in differing)
        raise ConfigError(f"cannot resume with a different configuration ({detail}); only "
                          f"{', '.join(sorted(RESUMABLE_CHANGES))} may change")
    saved_cases = saved_state.get("train_case_ids")
    case_ids = [case["case_id"] for case in data.train_cases]
    if saved_cases is not None and list(saved_cases) != case_ids:
        raise ConfigError(
            "cannot resume: the training cases differ from those of the saved run "
            f"({len(saved_cases)} saved, {len(case_ids)} now); is this the same dataset folder and fold?"
        )
    return TrainConfig.from_dict({**theirs, **{key: ours[key] for key in RESUMABLE_CHANGES}}, source="resumed configuration")


def resolve_device(name: str, distributed: DistributedContext | None = None) -> torch.device:
    """The torch device a configuration names.

    Args:
        name: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        distributed: in data-parallel training, each process uses GPU ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: CUDA requested but not available; in data-parallel training ``cuda:N``, or NCCL with
            the CPU.
    """
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if distributed is None:
        return torch.device(name)
    if name.startswith("cuda:"):
        raise ConfigError(
            f"device {name!r}: with several processes each one uses the GPU of its local rank; pass --device cuda"
        )
    device = torch.device("cuda", distributed.local_rank) if name == "cuda" else torch.device(name)
    if distributed.backend == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"the nccl process-group backend needs CUDA, not device {name!r}: use gloo for the CPU "
            "(medseg.pipelines.distributed.backend_for_device)"
        )
    return device


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Switch torch's deterministic algorithms on (or cuDNN autotuning, when off) for the block.

    The previous global settings are restored afterwards.

    Args:
        enabled: use deterministic algorithms (slower on GPU; bitwise-reproducible on CPU).
        device: the training device.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        if enabled:
            if device.type == "cuda":
                # cuBLAS needs a fixed workspace for reproducible results; it must be set before its first use.
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = device.type == "cuda"
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic = previous[2]
        torch.backends.cudnn.benchmark = previous[3]


def write_run_info(
    run_dir: Path,
    dataset_dir: str | os.PathLike,
    data: TrainingData,
    config: TrainConfig,
    device: torch.device,
    distributed: DistributedContext | None = None,
) -> None:
    """Write ``run.json``: dataset, layout, the fold's case ids, versions, device and number of processes.

    Args:
        run_dir: the run folder.
        dataset_dir: the dataset folder.
        data: the prepared dataset.
        config: the resolved configuration.
        device: the training device (of rank 0).
        distributed: the data-parallel context, or ``None``.
    """
    info = {
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "dataset_layout": data.spec.name,
        "fold": config.fold,
        "n_folds": config.n_folds,
        "train_cases": [case["case_id"] for case in data.train_cases],
        "val_cases": [case["case_id"] for case in data.val_cases],
        "device": str(device),
        "processes": distributed.world_size if distributed is not None else 1,
        "versions": {"medseg": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write_text(run_dir / RUN_INFO_NAME, json.dumps(info, indent=2) + "\n")
