"""Optimisers and the polynomial learning-rate schedule of training.

The schedule is a pure function of the global step, ``lr(step) = lr0 * (1 - step / total) ** exponent``
(nnU-Net's "poly" decay with exponent 0.9, applied per step), so resuming needs only the step count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from medseg.config import TrainConfig
from medseg.errors import ConfigError, unknown_choice

DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}


def build_optimizer(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``config.optimizer`` names.

    Args:
        params: the parameters to optimise.
        config: a resolved training configuration (``lr`` set).

    Returns:
        ``AdamW(lr, weight_decay)`` or ``SGD(lr, momentum, nesterov=True, weight_decay)``.

    Raises:
        ConfigError: unknown optimiser or unresolved learning rate.
    """
    if config.lr is None:
        raise ConfigError("the learning rate is not resolved (lr is null)")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0, weight_decay=config.weight_decay
        )
    raise unknown_choice("optimizer", config.optimizer, DEFAULT_LR)


@dataclass
class PolySchedule:
    """Polynomial decay of the learning rate over the run.

    Args:
        base_lr: the initial learning rate.
        total_steps: steps of the whole run; the rate reaches 0 there.
        exponent: the decay exponent (0.9 as in nnU-Net).
    """

    base_lr: float
    total_steps: int
    exponent: float = 0.9

    def lr_at(self, step: int) -> float:
        """The learning rate for optimiser step ``step`` (0-based).

        Args:
            step: global step.
        """
        progress = min(max(step, 0), self.total_steps) / max(self.total_steps, 1)
        return self.base_lr * (1.0 - progress) ** self.exponent

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's learning rate for ``step``; return it.

        Args:
            optimizer: the optimiser.
            step: global step.
        """
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        """The schedule's parameters as JSON-able data."""
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PolySchedule:
        """Rebuild a schedule from :meth:`state_dict`.

        Args:
            state: the saved parameters.
        """
        return cls(base_lr=float(state["base_lr"]), total_steps=int(state["total_steps"]), exponent=float(state["exponent"]))
