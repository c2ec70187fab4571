"""The ``medseg`` command line: a thin shell over the library.

Each subcommand lives in its own module of this package with two functions:
``add_parser(subparsers)`` builds its argparse parser and ``run(args) -> int`` calls the library.
Heavy imports (torch, MONAI) happen inside ``run`` so that ``medseg --help`` stays fast.

Exit codes: 0 success; 1 some cases of a folder run failed; 2 usage or input error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from medseg import __version__
from medseg.errors import MedsegError

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Subcommand modules, in the order `--help` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "synth",
    "check",
    "convert",
    "info",
    "plan",
    "train",
    "segment",
    "evaluate",
    "models",
    "export",
    "demo",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="Medical image segmentation: synthesize, check, train, segment and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"medseg.cli.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The process exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or EXIT_OK)
    except MedsegError as exc:
        print(f"medseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"medseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
