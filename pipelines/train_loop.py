"""The optimisation loop of ``medseg train``: steps, validation, checkpoints, model folder, resume.

Every random draw is a pure function of the run's seed and the position in the run (see
:mod:`medseg.pipelines.sampler`): the data of sample ``p`` of epoch ``e``, and torch's generator before the
forward pass of each step. Together with the saved model, optimiser and scaler states and the step count
(the learning rate is a function of it), this makes a resumed run compute exactly what an uninterrupted
one computes; on the CPU with deterministic algorithms the weights agree bit for bit.

Position bookkeeping: ``epoch`` is the epoch in progress (= epochs completed), ``step_in_epoch`` the steps
of it already done. A checkpoint saved mid-epoch resumes at the next step; one saved after the last step of
an epoch but before its validation resumes with that validation.

Data-parallel training (a :class:`~medseg.pipelines.distributed.DistributedContext`): every process runs this
loop on its share of each global batch through ``DistributedDataParallel`` (gradients averaged), the loss and
Ctrl-C requests are agreed on by all processes before the backward pass (so they skip or stop together), the
validation cases are divided among them and their Dice gathered, and only rank 0 shows progress and writes
metrics, checkpoints and the model folder. Positions and checkpoints count global steps, so a run can be
resumed with another number of processes.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg import __version__
from medseg.config import ModelConfig, TrainConfig
from medseg.errors import MedsegError, TrainingError
from medseg.pipelines.checkpoint import save_checkpoint
from medseg.pipelines.distributed import DistributedContext, interleave
from medseg.pipelines.interrupts import DeferredInterrupt, TrainingInterrupted
from medseg.pipelines.losses import SegmentationLoss
from medseg.pipelines.model_folder import load_weights, save_model_folder
from medseg.pipelines.optim import PolySchedule
from medseg.pipelines.progress import METRICS_NAME, MetricsLog, progress_bar
from medseg.pipelines.sampler import EpochSamples, PatchSampler
from medseg.pipelines.state_io import capture_rng_state, join_tensors, restore_rng_state, split_tensors
from medseg.pipelines.train_data import TrainingData
from medseg.pipelines.validation import dice_per_case, mean_dice, plain_tensor, summarize_dice

STATE_KIND = "medseg-train-state"
_MODEL_PREFIX = "model."


@dataclass
class LoopOutcome:
    """Where the loop stopped (see :class:`medseg.pipelines.train.TrainResult`)."""

    epochs_completed: int
    global_step: int
    best_metric: float | None
    best_epoch: int | None
    last_val_dice: dict[str, float] | None
    stopped_at_max_steps: bool
    skipped_steps: int
    stopped_at_time_limit: bool = False


def unwrap_worker_error(exc: MedsegError) -> MedsegError:
    """The user error a DataLoader worker raised, without the worker's traceback.

    A worker re-raises ``type(error)("Caught ... in DataLoader worker ...\nOriginal Traceback ...")``; the
    original one-line message is the traceback's last line after ``"module.Class: "``.

    Args:
        exc: the error raised by iterating the DataLoader.

    Returns:
        ``exc`` itself when it did not come from a worker, else an error of the same class with the message.
    """
    text = str(exc)
    if "DataLoader worker" not in text or "Original Traceback" not in text:
        return exc
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)


class NonFiniteLossWarning(RuntimeWarning):
    """A training step was skipped because its loss or gradient was NaN or infinite."""


class TrainingLoop:
    """Runs (or resumes) the optimisation of one training run.

    Args:
        run_dir: the run folder (checkpoints, metrics, model folder go here).
        data: training and validation cases and their preprocessing.
        config: the resolved training configuration.
        model_config: the configuration of the network being trained.
        model: the network, on ``device``.
        optimizer: its optimiser.
        schedule: the learning-rate schedule.
        sampler: the sampling plan.
        loss_fn: the loss.
        device: the training device.
        distributed: this process's place in data-parallel training, or ``None`` for one process.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        data: TrainingData,
        config: TrainConfig,
        model_config: ModelConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: PolySchedule,
        sampler: PatchSampler,
        loss_fn: SegmentationLoss,
        device: torch.device,
        distributed: DistributedContext | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.data = data
        self.config = config
        self.model_config = model_config
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.sampler = sampler
        self.loss_fn = loss_fn
        self.device = device
        self.distributed = distributed
        self.rank = distributed.rank if distributed is not None else 0
        self.world_size = distributed.world_size if distributed is not None else 1
        self.is_main = self.rank == 0
        # The module that runs the training forward pass: the model itself, or its DDP wrapper (see run()).
        self.train_model: nn.Module = model
        self._interrupt: DeferredInterrupt | None = None
        self._agreed_stop = False
        self.steps_per_epoch = sampler.steps_per_epoch
        self.use_amp = bool(config.amp)
        self.amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.use_amp and device.type == "cuda")
        self.metrics = MetricsLog(run_dir / METRICS_NAME)
        self._val_cache: list[dict[str, Any]] | None = None
        # Position and running statistics (all saved in checkpoints).
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_loss_sum = 0.0
        self.epoch_loss_count = 0
        self.epoch_skipped = 0
        self.total_skipped = 0
        self.nonfinite_streak = 0
        self.last_lr = schedule.lr_at(0)
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.last_val_dice: dict[str, float] | None = None
        self.elapsed_before = 0.0
        self.epoch_started_at = 0.0
        self._session_start = time.monotonic()
        self._updating = False
        self._last_saved_step: int | None = None
        self._longest_epoch_s = 0.0  # of this session, for the max_minutes budget

    # ----------------------------------------------------------------------------------------- running

    def run(self) -> LoopOutcome:
        """Train until the configured epochs (or ``max_steps``) are done.

        Returns:
            The outcome.

        Raises:
            TrainingError: too many consecutive non-finite losses (no checkpoint is written).
            TrainingInterrupted: on Ctrl-C, after saving ``checkpoint_last`` at the last completed step.
        """
        self._session_start = time.monotonic()
        self.train_model = self._data_parallel()
        total = self.config.epochs * self.steps_per_epoch
        bar = progress_bar(total, min(self.global_step, total), self.config.progress and self.is_main)
        try:
            with DeferredInterrupt() as interrupt:
                self._interrupt = interrupt
                try:
                    return self._run(bar, interrupt)
                except KeyboardInterrupt:
                    raise self._interrupted() from None
        finally:
            bar.close()

    def _run(self, bar: Any, interrupt: DeferredInterrupt) -> LoopOutcome:
        while self.epoch < self.config.epochs:
            if self._max_steps_reached():
                return self._stop_at_max_steps()
            if self.step_in_epoch == 0 and self._time_budget_spent():
                return self._stop_at_time_limit()
            if self.step_in_epoch < self.steps_per_epoch:
                bar.set_description(f"epoch {self.epoch + 1}/{self.config.epochs}")
                for batch in self._batches():
                    self._step(batch)
                    bar.update(1)
                    bar.set_postfix(loss=f"{self._mean_loss():.4f}", lr=f"{self.last_lr:.2e}", refresh=False)
                    if self._stop_requested(interrupt, after_step=True):
                        raise KeyboardInterrupt
                    if self.step_in_epoch < self.steps_per_epoch and self._max_steps_reached():
                        return self._stop_at_max_steps()
            self._end_epoch()
            if self._stop_requested(interrupt, after_step=False):
                raise KeyboardInterrupt
        if not (self.run_dir / "model" / "config.json").is_file() or self.best_epoch is None:
            self._save_model_folder("last")
        return self._outcome(stopped=False)

    def _data_parallel(self) -> nn.Module:
        """The module for the training forward pass: DDP around the model when data-parallel.

        On CUDA, batch normalisation becomes ``SyncBatchNorm`` (statistics of the global batch); on the CPU
        (gloo) it keeps per-process statistics. Parameters stay the same objects, so the optimiser and the
        checkpoints (which save the unwrapped model: no ``module.`` prefix) are unaffected.
        """
        if self.distributed is None:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids)

    def _stop_requested(self, interrupt: DeferredInterrupt, after_step: bool) -> bool:
        """Whether Ctrl-C asks to stop here; data-parallel processes decide together (see ``_agree``)."""
        if self.distributed is None:
            return interrupt.requested
        if after_step:
            return self._agreed_stop
        return self.distributed.all_reduce_sum([float(interrupt.requested)])[0] > 0

    def _agree(self, loss: torch.Tensor) -> float:
        """The loss of the global batch (NaN when any process's loss is not finite); agree on stopping.

        One collective carries both, before the backward pass, so that every process skips a non-finite step
        or stops after this step together.
        """
        if self.distributed is None:
            return float(loss.detach())
        requested = self._interrupt is not None and self._interrupt.requested
        total, stops = self.distributed.all_reduce_sum([float(loss.detach()), float(requested)])
        self._agreed_stop = stops > 0
        return total / self.world_size

    def _batches(self) -> Iterator[dict[str, Any]]:
        from monai.data import list_data_collate
        from torch.utils.data import DataLoader

        samples = EpochSamples(
            self.sampler,
            self.epoch,
            self.step_in_epoch,
            self.data.load_training_case,
            self.data.augment,
            shard=self.rank,
            num_shards=self.world_size,
        )
        loader = DataLoader(
            samples,
            batch_size=samples.local_batch,
            shuffle=False,
            num_workers=self.config.num_workers,
            collate_fn=list_data_collate,
            pin_memory=self.device.type == "cuda",
        )
        try:
            yield from loader
        except MedsegError as exc:
            raise unwrap_worker_error(exc) from None

    def _step(self, batch: dict[str, Any]) -> None:
        image = plain_tensor(batch["image"]).to(self.device, dtype=torch.float32, non_blocking=True)
        target = plain_tensor(batch["label"]).to(self.device, non_blocking=True)
        torch.manual_seed(self.sampler.step_seed(self.epoch, self.step_in_epoch, self.rank))
        self.last_lr = self.schedule.apply(self.optimizer, self.global_step)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            outputs = self.train_model(image)
        loss = self.loss_fn(outputs, target)
        loss_value = self._agree(loss)
        finite = math.isfinite(loss_value)
        if finite:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            norm = self._clip_gradients()
            # With loss scaling, inf gradients are routine (the scaler skips and lowers the scale). The
            # gradients are averaged over the processes already, so all of them decide alike.
            finite = self.scaler.is_enabled() or bool(torch.isfinite(norm))
        if finite:
            self._updating = True
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._updating = False
            self.nonfinite_streak = 0
            self.epoch_loss_sum += loss_value
            self.epoch_loss_count += 1
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self._skip_nonfinite(loss_value)
        self.step_in_epoch += 1
        self.global_step += 1

    def _clip_gradients(self) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.grad_clip is not None:
            return torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        return torch.nn.utils.get_total_norm([p.grad for p in params])

    def _skip_nonfinite(self, loss_value: float) -> None:
        self.nonfinite_streak += 1
        self.epoch_skipped += 1
        self.total_skipped += 1
        where = f"epoch {self.epoch + 1}, step {self.step_in_epoch + 1} (global step {self.global_step + 1})"
        patience = self.config.nonfinite_patience
        if self.nonfinite_streak >= patience:
            raise TrainingError(
                f"training stopped: the loss or gradient was not finite for {patience} consecutive steps "
                f"(last at {where}, loss {loss_value}); the last good checkpoint "
                f"{self.run_dir / 'checkpoint_last'} was kept. Lower the learning rate (--lr), keep gradient "
                "clipping on, or check the data for NaN/inf values"
            )
        if not self.is_main:
            return  # every process skips the step; one of them says so
        warnings.warn(
            f"non-finite loss or gradient at {where} (loss {loss_value}); step skipped "
            f"({self.nonfinite_streak}/{patience} in a row)",
            NonFiniteLossWarning,
            stacklevel=2,
        )

    def _end_epoch(self) -> None:
        val_dice = None
        if self._should_validate():
            val_dice = self._validate()
        elapsed = self._elapsed()
        record = {
            "epoch": self.epoch,
            "step": self.global_step,
            "loss": self._mean_loss() if self.epoch_loss_count else None,
            "lr": self.last_lr,
            "skipped_steps": self.epoch_skipped,
            "val_dice": _json_floats(val_dice) if val_dice is not None else None,
            "val_mean_dice": _json_float(mean_dice(val_dice)) if val_dice is not None else None,
            "time": round(elapsed, 3),
            "epoch_time": round(elapsed - self.epoch_started_at, 3),
        }
        self._longest_epoch_s = max(self._longest_epoch_s, elapsed - self.epoch_started_at)
        if self.is_main:
            self.metrics.append(record)
        completed = self.epoch
        improved = False
        if val_dice is not None:
            self.last_val_dice = val_dice
            score = mean_dice(val_dice)
            if math.isfinite(score) and (self.best_metric is None or score > self.best_metric):
                self.best_metric, self.best_epoch, improved = score, completed, True
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_count, self.epoch_skipped = 0.0, 0, 0
        self.epoch_started_at = elapsed
        # Best weights first, the resume point last: a crash in between redoes this epoch identically.
        if improved:
            self._save_checkpoint_if_main(self.run_dir / "checkpoint_best")
            if self.config.model_selection == "best":
                self._save_model_folder("best")
        if self.config.model_selection == "last":
            self._save_model_folder("last")
        self._save_checkpoint_if_main(self.run_dir / "checkpoint_last")
        self._last_saved_step = self.global_step

    def _should_validate(self) -> bool:
        if not self.data.val_cases or self.config.val_interval == 0:
            return False
        last_epoch = self.epoch + 1 == self.config.epochs
        return last_epoch or (self.epoch + 1) % self.config.val_interval == 0

    def _validate(self) -> dict[str, float]:
        if self._val_cache is not None:
            items = self._val_cache
        else:
            cases = self.data.val_cases[: self.config.max_val_cases]
            if self.distributed is not None:
                cases = self.distributed.shard(cases)  # rank r scores cases r, r + N, ...
            items = [self.data.load_validation_case(case) for case in cases]
            if self.config.cache:
                self._val_cache = items
        per_case = dice_per_case(
            self.model,
            items,
            self.model_config,
            self.config.patch_size or self.model_config.patch_size,
            self.device,
            overlap=self.config.val_overlap,
            sw_batch_size=self.config.val_sw_batch_size,
            autocast=self._autocast(),
        )
        if self.distributed is not None:
            per_case = interleave(self.distributed.all_gather_json(per_case))
        return summarize_dice(per_case)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _max_steps_reached(self) -> bool:
        return self.config.max_steps is not None and self.global_step >= self.config.max_steps

    def _time_budget_spent(self) -> bool:
        """Whether another epoch would end after ``max_minutes`` (judged by the longest epoch so far).

        The first epoch of a session always runs. Data-parallel processes stop when any of them would overrun.
        """
        if self.config.max_minutes is None or self._longest_epoch_s == 0.0:
            return False
        used = time.monotonic() - self._session_start
        spent = used + self._longest_epoch_s > 60.0 * self.config.max_minutes
        if self.distributed is not None:
            spent = self.distributed.all_reduce_sum([float(spent)])[0] > 0
        return spent

    def _stop_at_time_limit(self) -> LoopOutcome:
        # checkpoint_last was saved at the end of the last epoch; the model folder may still be missing.
        if not (self.run_dir / "model" / "config.json").is_file() or self.best_epoch is None:
            self._save_model_folder("last")
        return self._outcome(stopped=False, time_limit=True)

    def _stop_at_max_steps(self) -> LoopOutcome:
        if self._last_saved_step != self.global_step:  # not already saved at the end of the epoch
            self._save_checkpoint_if_main(self.run_dir / "checkpoint_last")
        return self._outcome(stopped=True)

    def _interrupted(self) -> TrainingInterrupted:
        where = f"epoch {self.epoch + 1}, step {self.step_in_epoch} of {self.steps_per_epoch}"
        last = self.run_dir / "checkpoint_last"
        if self._updating:
            # Stopped inside an optimiser update: the weights are half-updated, keep the previous checkpoint.
            return TrainingInterrupted(
                f"interrupted during an optimiser update at {where}; the previous checkpoint {last} was kept",
                last if last.is_dir() else None,
            )
        self._save_checkpoint_if_main(last)
        return TrainingInterrupted(f"interrupted at {where}; checkpoint saved to {last}", last)

    def _save_checkpoint_if_main(self, folder: Path) -> None:
        if self.is_main:
            self.save_checkpoint(folder)

    def _save_model_folder(self, selection: str) -> None:
        if not self.is_main:
            return
        info = {
            "selection": selection,
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "val_dice": _json_floats(self.last_val_dice) if self.last_val_dice else None,
            "best_mean_dice": self.best_metric,
            "best_epoch": self.best_epoch,
            "medseg_version": __version__,
        }
        save_model_folder(self.run_dir / "model", self.model, self.model_config, info=info)

    def _outcome(self, stopped: bool, time_limit: bool = False) -> LoopOutcome:
        return LoopOutcome(
            epochs_completed=self.epoch,
            global_step=self.global_step,
            best_metric=self.best_metric,
            best_epoch=self.best_epoch,
            last_val_dice=self.last_val_dice,
            stopped_at_max_steps=stopped,
            skipped_steps=self.total_skipped,
            stopped_at_time_limit=time_limit,
        )

    def _mean_loss(self) -> float:
        return self.epoch_loss_sum / self.epoch_loss_count if self.epoch_loss_count else math.nan

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self._session_start)

    # ------------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, folder: Path) -> None:
        """Write the complete training state to a checkpoint folder (atomically, see ``checkpoint.py``).

        Args:
            folder: e.g. ``RUN_DIR/checkpoint_last``.
        """
        tensors = {_MODEL_PREFIX + name: t for name, t in self.model.state_dict().items()}
        optimizer_structure, optimizer_tensors = split_tensors(self.optimizer.state_dict(), "optimizer")
        rng_structure, rng_tensors = capture_rng_state()
        tensors.update(optimizer_tensors)
        tensors.update(rng_tensors)
        state = {
            "kind": STATE_KIND,
            "medseg_version": __version__,
            "position": {
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
                "steps_per_epoch": self.steps_per_epoch,
            },
            "statistics": {
                "epoch_loss_sum": self.epoch_loss_sum,
                "epoch_loss_count": self.epoch_loss_count,
                "epoch_skipped": self.epoch_skipped,
                "total_skipped": self.total_skipped,
                "nonfinite_streak": self.nonfinite_streak,
                "last_lr": self.last_lr,
                "best_metric": self.best_metric,
                "best_epoch": self.best_epoch,
                "last_val_dice": _json_floats(self.last_val_dice) if self.last_val_dice is not None else None,
                "elapsed": self._elapsed(),
                "epoch_started_at": self.epoch_started_at,
            },
            "optimizer": optimizer_structure,
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_structure,
            "train_config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "train_case_ids": [case["case_id"] for case in self.data.train_cases],
        }
        save_checkpoint(folder, tensors, state)

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], source: str = "checkpoint") -> None:
        """Load a checkpoint's state into this loop (model, optimiser, scaler, RNG, position).

        Args:
            tensors: the checkpoint's tensors.
            state: the checkpoint's JSON state.
            source: name for error messages.
        """
        model_tensors = {k[len(_MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_MODEL_PREFIX)}
        load_weights(self.model, model_tensors, source)
        self.optimizer.load_state_dict(join_tensors(state["optimizer"], tensors, source))
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], tensors)
        position = state["position"]
        self.epoch = int(position["epoch"])
        self.step_in_epoch = int(position["step_in_epoch"])
        self.global_step = int(position["global_step"])
        stats = state["statistics"]
        self.epoch_loss_sum = float(stats["epoch_loss_sum"])
        self.epoch_loss_count = int(stats["epoch_loss_count"])
        self.epoch_skipped = int(stats["epoch_skipped"])
        self.total_skipped = int(stats["total_skipped"])
        self.nonfinite_streak = int(stats["nonfinite_streak"])
        self.last_lr = float(stats["last_lr"])
        self.best_metric = stats["best_metric"]
        self.best_epoch = stats["best_epoch"]
        self.last_val_dice = _floats_from_json(stats["last_val_dice"])
        self.elapsed_before = float(stats["elapsed"])
        self.epoch_started_at = float(stats["epoch_started_at"])
        self.metrics = MetricsLog.resume(self.run_dir / METRICS_NAME, completed_epochs=self.epoch)
        if self.is_main:
            self.metrics.write()


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json_floats(values: dict[str, float]) -> dict[str, float | None]:
    return {name: _json_float(v) for name, v in values.items()}


def _floats_from_json(values: dict[str, float | None] | None) -> dict[str, float] | None:
    if values is None:
        return None
    return {name: (math.nan if v is None else float(v)) for name, v in values.items()}
