"""``medseg evaluate PRED GT``: Dice, HD95, NSD, precision, recall and volumes per case and region."""

from __future__ import annotations

import argparse

# Copies of library constants, so that `medseg --help` imports no scipy; tests/cli/test_cli_evaluate.py checks
# that they equal medseg.metrics.EMPTY_CONVENTIONS, DEFAULT_NSD_TOLERANCE_MM and the pipeline's choices.
EMPTY_CONVENTIONS = ("brats", "nnunet")
DEFAULT_NSD_TOLERANCE_MM = 1.0
DATASET_CHOICES = ("brats", "brats2021", "brats2023", "synapse", "transunet")
MISSING_POLICIES = ("error", "empty")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand.

    Args:
        subparsers: the top-level parser's subparsers.

    Returns:
        The new parser.
    """
    parser = subparsers.add_parser(
        "evaluate",
        help="compare predicted label maps with reference label maps (Dice, HD95, NSD, ...)",
        description="Evaluate predicted label maps against references, per case and region: Dice, HD95 (mm), "
        "normalised surface Dice, precision, recall and volumes (ml). PRED and GT are two NIfTI files or two "
        "folders; folder contents pair by case id (BraTS '<case>_seg.nii.gz'/'<case>-seg.nii.gz' references "
        "pair with '<case>.nii.gz' predictions). Every pair must share shape and affine: nothing is resampled. "
        "Prints mean/median/std per region; --output also writes CSV and JSON tables. See docs/evaluation.md.",
    )
    parser.add_argument("prediction", metavar="PRED", help="a predicted label file (.nii/.nii.gz) or a folder of them")
    parser.add_argument("reference", metavar="GT", help="the reference label file or folder (ground truth)")
    regions = parser.add_mutually_exclusive_group(required=True)
    regions.add_argument(
        "--labels",
        metavar="NAME=V[,V...]",
        nargs="+",
        action="extend",
        help="regions to evaluate, each the union of its label values, e.g. --labels liver=1 tumour=2 "
        "TC=1,4 (give PRED and GT first, or repeat --labels)",
    )
    regions.add_argument(
        "--dataset",
        choices=DATASET_CHOICES,
        help="evaluate a dataset's regions: BraTS TC/WT/ET (brats tells 2021 from 2023 by the enhancing-tumour "
        "value), or one region per organ (synapse: 13 BTCV organs, transunet: its 8); label values the "
        "dataset does not have are an error",
    )
    parser.add_argument(
        "--output",
        metavar="FILE.csv",
        help="write per-case rows to FILE.csv, the summary to FILE_summary.csv and both with the settings to "
        "FILE.json (atomically, after every case succeeded)",
    )
    parser.add_argument(
        "--empty-convention",
        choices=EMPTY_CONVENTIONS,
        default="brats",
        help="scores when a region is empty: brats (both empty: Dice 1, HD95 0; one empty: Dice 0, HD95 = "
        "image diagonal) or nnunet (both empty: NaN, left out of the means; one empty: as brats); default brats",
    )
    parser.add_argument(
        "--nsd-tolerance",
        metavar="MM",
        type=float,
        default=DEFAULT_NSD_TOLERANCE_MM,
        help=f"tolerance of the normalised surface Dice in millimetres (default {DEFAULT_NSD_TOLERANCE_MM:g})",
    )
    parser.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default="error",
        help="a reference case without prediction: error (default, the cases are listed) or empty (scored as "
        "an empty prediction, flagged in the prediction_missing column)",
    )
    parser.set_defaults(func=run)
    return parser


def parse_region(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse one ``NAME=V[,V...]`` region.

    Args:
        text: for example ``"TC=1,4"``.

    Returns:
        ``(name, values)``.

    Raises:
        ConfigError: if the text is not of that form or a value is not an integer.
    """
    from medseg.errors import ConfigError

    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise ConfigError(f"--labels {text!r}: expected NAME=V[,V...], e.g. ET=4 or TC=1,4")
    try:
        parsed = tuple(int(value) for value in values.split(","))
    except ValueError as exc:
        raise ConfigError(f"--labels {text!r}: label values must be integers separated by commas") from exc
    return name.strip(), parsed


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the summary table and write the outputs.

    Args:
        args: parsed arguments (``prediction``, ``reference``, ``labels``, ``dataset``, ``output``,
            ``empty_convention``, ``nsd_tolerance``, ``missing``).

    Returns:
        0 on success (input errors raise :class:`medseg.errors.MedsegError`, exit code 2).
    """
    import sys

    from tqdm import tqdm

    from medseg.errors import ConfigError
    from medseg.pipelines.evaluate import EvaluationSettings, evaluate, format_summary, output_paths

    labels = None
    if args.labels:
        labels = {}
        for text in args.labels:
            name, values = parse_region(text)
            if name in labels:
                raise ConfigError(f"--labels: region {name!r} given twice")
            labels[name] = values
    settings = EvaluationSettings(
        labels=labels,
        dataset=args.dataset,
        convention=args.empty_convention,
        nsd_tolerance_mm=args.nsd_tolerance,
        missing=args.missing,
    )
    with tqdm(desc="evaluate", unit="case", file=sys.stderr, disable=None, leave=False) as bar:
        result = evaluate(
            args.prediction, args.reference, settings, output=args.output, on_case=lambda _pair: bar.update()
        )
    cases = len({row["case"] for row in result.rows})
    dataset = f", dataset {result.dataset}" if result.dataset else ""
    print(f"{cases} case(s), convention {settings.convention}, NSD tolerance {settings.nsd_tolerance_mm:g} mm{dataset}")
    print(format_summary(result.summary))
    if args.output:
        print("wrote " + ", ".join(str(path) for path in output_paths(args.output).values()))
    return 0
