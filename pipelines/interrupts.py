"""Ctrl-C during training: finish the current step, then stop at a point where the state is consistent.

While :class:`DeferredInterrupt` is active (in the main thread), the first SIGINT only sets
:attr:`DeferredInterrupt.requested`; the training loop checks it between optimiser steps, saves a
checkpoint and raises :class:`TrainingInterrupted`. A second SIGINT raises ``KeyboardInterrupt`` at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request (Ctrl-C); a checkpoint to resume from was saved (or kept).

    Args:
        message: what happened and how to resume.
        checkpoint: the checkpoint folder to resume from, if any.
    """

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.message = message
        self.checkpoint = checkpoint


class DeferredInterrupt:
    """Context manager that turns the first SIGINT into a flag instead of an exception.

    Outside the main thread (where signal handlers cannot be installed) it does nothing, and a
    ``KeyboardInterrupt`` arrives as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> DeferredInterrupt:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
