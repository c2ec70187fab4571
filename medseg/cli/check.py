"""``medseg check``: strict preflight of a dataset folder, listing every problem."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``medseg check DATASET_DIR``."""
    parser = subparsers.add_parser(
        "check",
        help="check a dataset folder and list every problem",
        description="Check a dataset folder: expected files present, modalities on one grid, labels on the "
        "image grid with allowed values, no NaN/Inf, no stray files. Prints each problem as "
        "'case_id: message'. Exit status 0 when clean, 2 when any problem is found.",
    )
    parser.add_argument("dataset", metavar="DATASET_DIR", help="the dataset's root folder")
    parser.add_argument("--layout", default=None, metavar="NAME",
                        help="check against this layout instead of detecting it: brats2021, brats2023, synapse, "
                        "transunet or nnunet")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print every problem and a summary; 0 when clean, 2 otherwise."""
    from medseg.cli import EXIT_OK, EXIT_USAGE
    from medseg.data import DATASET_CASE_ID, check_dataset

    report = check_dataset(args.dataset, args.layout)
    for problem in report.problems:
        print(problem)
    if report.ok:
        print(f"OK: {report.cases} case(s) in the {report.spec.name} layout at {report.root}, no problems")
        return EXIT_OK
    cases = {p.case_id for p in report.problems if p.case_id != DATASET_CASE_ID}
    print(f"FAILED: {len(report.problems)} problem(s) in {len(cases)} case(s) "
          f"({report.cases} case(s) in the {report.spec.name} layout at {report.root})")
    return EXIT_USAGE
