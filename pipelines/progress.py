"""Training progress: the terminal progress bar and the JSON-lines metrics log of a run.

``RUN_DIR/metrics.jsonl`` holds one JSON object per line and epoch, e.g.::

    {"epoch": 3, "step": 1000, "loss": 0.41, "lr": 0.0093, "skipped_steps": 0,
     "val_dice": {"TC": 0.81, "WT": 0.9, "ET": 0.77}, "val_mean_dice": 0.827, "time": 812.4, "epoch_time": 203.1}

``step`` is the global optimiser step at the end of the epoch, ``loss`` the mean training loss of the epoch's
finite steps, ``lr`` the learning rate of its last step, ``val_dice`` is ``null`` on epochs without
validation, ``time`` the seconds of training so far (summed over resumed sessions). The file is rewritten
atomically after each epoch; on resume, lines of epochs the checkpoint has not completed are dropped.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.io.atomic import atomic_write_text

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """The per-epoch records of a run, kept in memory and mirrored to a JSON-lines file.

    Args:
        path: the ``metrics.jsonl`` file.
        records: records already logged (e.g. from before a resume).
    """

    def __init__(self, path: str | os.PathLike, records: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = list(records or [])

    @classmethod
    def resume(cls, path: str | os.PathLike, completed_epochs: int) -> MetricsLog:
        """Read an existing log, keeping the records of the epochs the checkpoint has completed.

        Args:
            path: the ``metrics.jsonl`` file (may be missing).
            completed_epochs: epochs completed at the checkpoint (records of later epochs are dropped).
        """
        path = Path(path)
        records = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line from a crashed writer of an older version; the rest stays usable
                if isinstance(record, dict) and int(record.get("epoch", completed_epochs)) < completed_epochs:
                    records.append(record)
        return cls(path, records)

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one record and rewrite the file atomically.

        Args:
            record: JSON-able values (NaN is written as ``NaN``).
        """
        self.records.append(dict(record))
        self.write()

    def write(self) -> None:
        """Rewrite the file from the records in memory."""
        text = "".join(json.dumps(record) + "\n" for record in self.records)
        atomic_write_text(self.path, text)


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar over the optimiser steps of the whole run (its rate gives the time left).

    Args:
        total: steps of the whole run.
        initial: steps already done (after a resume).
        enabled: show the bar; when false, a bar that prints nothing.

    Returns:
        A ``tqdm`` instance; call ``update(1)``, ``set_postfix``, ``set_description`` and ``close``.
    """
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        dynamic_ncols=True,
        unit="step",
        file=sys.stderr,
        leave=True,
    )
