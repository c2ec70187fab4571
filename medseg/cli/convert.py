"""``medseg convert``: write a dataset in another tool's layout (nnU-Net v2 raw)."""

from __future__ import annotations

import argparse

FORMATS = ("nnunet",)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``medseg convert DATASET_DIR --to nnunet OUT --dataset-id ID``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a dataset to nnU-Net v2's raw format",
        description="Write DATASET_DIR (BraTS 2021/2023, Synapse raw or nnU-Net raw) as OUT/DatasetXXX_Name with "
        "imagesTr, labelsTr, imagesTs and dataset.json for nnU-Net v2. BraTS labels follow nnU-Net's Dataset137 "
        "conversion (oedema 1, necrosis 2, enhancing 3, as regions). Geometry is kept exactly. See docs/nnunet.md.",
    )
    parser.add_argument("dataset", metavar="DATASET_DIR", help="the dataset's root folder")
    parser.add_argument("--to", required=True, choices=FORMATS, metavar="FORMAT",
                        help="output format: nnunet (nnU-Net v2 raw dataset)")
    parser.add_argument("out", metavar="OUT", help="folder to create DatasetXXX_Name in (nnU-Net's nnUNet_raw)")
    parser.add_argument("--dataset-id", type=int, required=True, metavar="ID", help="nnU-Net dataset id, 1..999")
    parser.add_argument("--name", default=None,
                        help="dataset name after the id (default: BraTS2021, BraTS2023, Synapse or Converted)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert and print the folder written."""
    from medseg.pipelines.nnunet_convert import convert_to_nnunet

    folder = convert_to_nnunet(args.dataset, args.out, args.dataset_id, args.name)
    print(f"wrote nnU-Net dataset {folder}")
    return 0
