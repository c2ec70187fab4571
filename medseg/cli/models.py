"""``medseg models``: every registered network with its variants, dimensions and parameter counts."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``models`` subcommand.

    Args:
        subparsers: the top-level parser's subparsers.

    Returns:
        The new parser.
    """
    parser = subparsers.add_parser(
        "models",
        help="list the networks, their variants, dimensions and parameter counts",
        description="List every registered network with its paper, supported dimensions and variants; for each "
        "variant and dimension the parameter count (built at --in-channels/--out-channels, default 4 -> 3 as "
        "BraTS) and the divisor every input size must be a multiple of.",
    )
    parser.add_argument("network", nargs="?", help="show only this network (default: all)")
    parser.add_argument("--in-channels", type=int, default=4, help="input channels to count with (default 4)")
    parser.add_argument("--out-channels", type=int, default=3, help="output channels to count with (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the network listing; exit code 0.

    Args:
        args: parsed arguments (``network``, ``in_channels``, ``out_channels``, ``json``).

    Returns:
        0 on success (an unknown network raises :class:`medseg.errors.ConfigError`).
    """
    from medseg.errors import ConfigError
    from medseg.networks import get_info, list_networks
    from medseg.networks.summary import summarize

    if args.in_channels < 1 or args.out_channels < 1:
        raise ConfigError("--in-channels and --out-channels must be >= 1")
    names = [get_info(args.network).name] if args.network else list_networks()
    listing = []
    for name in names:
        info = get_info(name)
        variants = []
        for variant in info.variants:
            sizes = {
                f"{dims}d": summarize(name, dims, args.in_channels, args.out_channels, variant=variant)
                for dims in info.spatial_dims
            }
            variants.append(
                {
                    "variant": variant,
                    "parameters": {k: s.parameters for k, s in sizes.items()},
                    "divisor": {k: list(s.divisor) for k, s in sizes.items()},
                    "options": {k: _jsonable(v) for k, v in info.variants[variant].items()},
                }
            )
        listing.append(
            {
                "name": name,
                "spatial_dims": list(info.spatial_dims),
                "paper": info.paper,
                "description": info.description,
                "variants": variants,
            }
        )
    if args.json:
        print(json.dumps({"in_channels": args.in_channels, "out_channels": args.out_channels, "networks": listing}))
    else:
        print(_table(listing, args.in_channels, args.out_channels))
    return 0


def _jsonable(value: object) -> object:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _table(listing: list[dict], in_channels: int, out_channels: int) -> str:
    lines = [f"parameter counts at {in_channels} -> {out_channels} channels"]
    for entry in listing:
        dims = ", ".join(f"{d}D" for d in entry["spatial_dims"])
        lines += ["", f"{entry['name']} ({dims}): {entry['description']}", f"  paper: {entry['paper']}"]
        keys = [f"{d}d" for d in entry["spatial_dims"]]
        columns = (f"{'params ' + k.upper():>16}{'divisor ' + k.upper():>14}" for k in keys)
        header = f"  {'variant':<20}" + "".join(columns)
        lines.append(header)
        for v in entry["variants"]:
            row = f"  {v['variant']:<20}"
            for k in keys:
                divisor = v["divisor"][k]
                shown = str(divisor[0]) if len(set(divisor)) == 1 else "x".join(map(str, divisor))
                row += f"{v['parameters'][k]:>16,}{shown:>14}"
            lines.append(row)
    return "\n".join(lines)
