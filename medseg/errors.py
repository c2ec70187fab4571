"""Exceptions that medseg raises for problems a user can fix.

The command line maps them to exit codes: :class:`MedsegError` and its subclasses are usage or input
errors (exit 2) and are printed as one line, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MedsegError(Exception):
    """Base class: a problem with what the user asked for or supplied (exit code 2)."""


class InputError(MedsegError, ValueError):
    """An input file, folder or array is missing, unreadable or inconsistent."""


class GeometryError(InputError):
    """Two volumes that must share a geometry do not, or an output would not match its input."""


class ConfigError(MedsegError, ValueError):
    """An option or configuration value is not valid."""


class UnsafeFileError(InputError):
    """A file would need unpickling or other code execution to load, and is refused."""


class MissingDependencyError(MedsegError, ImportError):
    """An optional dependency needed for the requested feature is not installed."""


def unknown_choice(kind: str, value: object, valid: Iterable[str]) -> ConfigError:
    """Build the error for an unknown name, listing the valid ones and the closest match.

    Args:
        kind: what was being chosen, for the message (for example ``"network"``).
        value: the value the user gave.
        valid: the accepted values.

    Returns:
        A :class:`ConfigError` ready to raise.
    """
    names = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {value!r}; valid: {', '.join(names)}.{hint}")


class TrainingError(MedsegError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""
