"""``medseg plan``: plan a U-Net training configuration from a dataset fingerprint (nnU-Net heuristics)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``medseg plan DATASET_DIR [--output CFG.yaml]``."""
    parser = subparsers.add_parser(
        "plan",
        help="plan spacing, patch, batch size and U-Net topology for a dataset",
        description="Fingerprint DATASET_DIR (spacings, shapes after cropping, foreground intensities) and plan a "
        "training configuration for the unet network the way nnU-Net does: target spacing, patch size, batch size, "
        "strides and kernel sizes. Writes YAML for `medseg train --config` (to stdout without --output). "
        "See docs/nnunet.md.",
    )
    parser.add_argument("dataset", metavar="DATASET_DIR", help="a BraTS 2021/2023 or Synapse raw dataset folder")
    parser.add_argument("--output", "-o", default=None, metavar="CFG.yaml",
                        help="write the configuration here (default: print it)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan, then write or print the configuration."""
    from medseg.pipelines.plan import plan_dataset, plan_to_yaml, write_plan

    if args.output is None:
        print(plan_to_yaml(plan_dataset(args.dataset)), end="")
        return 0
    planned = write_plan(args.dataset, args.output)
    plan = planned["plan"]
    print(f"wrote {args.output}: patch {plan['patch_size']}, batch {plan['batch_size']}, {plan['stages']} stages, "
          f"target spacing {plan['target_spacing']} mm")
    return 0
