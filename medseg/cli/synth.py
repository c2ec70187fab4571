"""``medseg synth``: write synthetic datasets in the official BraTS and Synapse layouts."""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``medseg synth brats`` and ``medseg synth synapse``."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic dataset (BraTS 2021/2023, Synapse raw or TransUNet form)",
        description="Write synthetic phantom datasets in the official folder layouts (see docs/datasets.md). "
        "The output folder must be new or empty; the same --seed gives the same data.",
    )
    kinds = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    brats = kinds.add_parser("brats", help="brain MR with glioma, BraTS layout",
                             description="Four MR modalities and a tumour segmentation per case.")
    brats.add_argument("out", metavar="OUT", help="dataset folder to create (new or empty)")
    brats.add_argument("--cases", type=int, required=True, help="number of cases")
    brats.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), default=[240, 240, 155],
                       help="array shape; the field of view stays 240 x 240 x 155 mm (default: 240 240 155, 1 mm)")
    brats.add_argument("--year", type=int, choices=[2021, 2023], default=2021,
                       help="layout and labels: 2021 (t1/t1ce/t2/flair, ET = 4) or 2023 (t1n/t1c/t2w/t2f, ET = 3)")
    brats.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    brats.set_defaults(func=run)

    synapse = kinds.add_parser("synapse", help="abdominal CT with 13 organs, Synapse/BTCV layout",
                               description="Contrast CT in Hounsfield units with the 13 BTCV organ labels.")
    synapse.add_argument("out", metavar="OUT", help="dataset folder to create (new or empty)")
    synapse.add_argument("--cases", type=int, required=True,
                         help="number of cases (transunet: at least 2; 30 gives TransUNet's official 18/12 split)")
    synapse.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), default=[256, 256, 64],
                         help="CT array shape; the field of view stays 360 x 360 x 192 mm "
                         "(default: 256 256 64, 1.41 x 1.41 x 3 mm)")
    synapse.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synapse.add_argument("--format", choices=["raw", "transunet"], default="raw",
                         help="raw: RawData/Training NIfTI files; transunet: train_npz slices, test_vol_h5 "
                         "volumes and lists (default: raw)")
    synapse.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the dataset and print a one-line summary."""
    from medseg.synth import write_brats, write_synapse

    start = time.perf_counter()
    if args.dataset == "brats":
        folders = write_brats(args.out, args.cases, shape=args.shape, year=args.year, seed=args.seed)
        what = f"{len(folders)} BraTS {args.year} case(s)"
    else:
        write_synapse(args.out, args.cases, shape=args.shape, seed=args.seed, output_format=args.format)
        what = f"{args.cases} Synapse case(s) ({args.format})"
    print(f"wrote {what} of shape {' x '.join(map(str, args.shape))} to {args.out} "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stdout)
    return 0
