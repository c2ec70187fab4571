"""``medseg info PATH``: shape, spacing, orientation, type and intensity range of a volume."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``info`` subcommand.

    Args:
        subparsers: the top-level parser's subparsers.

    Returns:
        The new parser.
    """
    parser = subparsers.add_parser(
        "info",
        help="describe a volume: shape, spacing, orientation, dtype, intensity range",
        description="Describe a NIfTI file (.nii/.nii.gz) or a DICOM series folder: shape, spacing (mm), "
        "orientation code, on-disk dtype, intensity range of finite voxels and count of non-finite ones, "
        "channels, format and qform/sform codes.",
    )
    parser.add_argument("path", help="a .nii or .nii.gz file, or a folder holding one DICOM series")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text lines")
    parser.add_argument("--output", metavar="FILE", help="also write the JSON description to FILE (atomically)")
    parser.add_argument("--series-uid", metavar="UID", help="DICOM: the series to read when a folder holds several")
    parser.add_argument(
        "--allow-irregular",
        action="store_true",
        help="DICOM: read a series with uneven slice spacing or a gantry tilt (approximated by the mean step)",
    )
    parser.add_argument(
        "--max-voxels",
        type=int,
        default=None,
        help="refuse files whose header declares more voxels than this (default: medseg.io.DEFAULT_MAX_VOXELS)",
    )
    parser.set_defaults(func=run)
    return parser


def _text(summary: dict) -> str:
    def fmt(values: list) -> str:
        return " x ".join(f"{v:g}" for v in values)

    lines = [
        f"path:        {summary['path']}",
        f"format:      {summary['format']}" + (f" (series {summary['series_uid']})" if "series_uid" in summary else ""),
        f"shape:       {fmt(summary['shape'])}",
        f"channels:    {summary['channels']}",
        f"spacing:     {fmt(summary['spacing'])} mm",
        f"orientation: {summary['orientation']}",
        f"dtype:       {summary['dtype']}",
        f"range:       {summary['min']} .. {summary['max']} (finite voxels)",
        f"non-finite:  {summary['nonfinite']}",
        f"qform_code:  {summary['qform_code']}",
        f"sform_code:  {summary['sform_code']}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.path``; exit code 0.

    Args:
        args: parsed arguments (``path``, ``json``, ``output``, ``series_uid``, ``allow_irregular``,
            ``max_voxels``).

    Returns:
        0 on success (errors raise :class:`medseg.errors.MedsegError`).
    """
    from medseg.errors import ConfigError
    from medseg.io import DEFAULT_MAX_VOXELS, atomic_write_text
    from medseg.io.summary import describe_volume

    max_voxels = DEFAULT_MAX_VOXELS if args.max_voxels is None else args.max_voxels
    if max_voxels < 1:
        raise ConfigError(f"--max-voxels must be positive, got {max_voxels}")
    summary = describe_volume(
        args.path, max_voxels=max_voxels, series_uid=args.series_uid, allow_irregular=args.allow_irregular
    )
    as_json = json.dumps(summary, indent=2)
    if args.output:
        atomic_write_text(args.output, as_json + "\n")
    print(as_json if args.json else _text(summary))
    return 0
