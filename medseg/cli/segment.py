"""``medseg segment``: segment NIfTI files, case folders or DICOM series with a trained model folder."""

from __future__ import annotations

import argparse
import sys

from medseg.cli import EXIT_OK, EXIT_SOME_FAILED


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``segment`` subcommand."""
    parser = subparsers.add_parser(
        "segment",
        help="segment CT/MRI volumes with a trained model",
        description="Write one label map per case, with exactly the input's geometry. INPUT is a NIfTI file, a "
        "case folder (e.g. a BraTS case with its four modality files), a DICOM series folder, or a folder of these.",
    )
    parser.add_argument("input", metavar="INPUT", help="NIfTI file, case folder, DICOM series folder, or a folder of these")
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder (RUN_DIR/model) with config.json and weights.safetensors, or an nnU-Net v2 results folder (plans.json, dataset.json, fold_N/)")
    parser.add_argument("--output", required=True, metavar="OUT", help="folder to write <case>.nii.gz label maps to")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run the network (default: auto)")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default: 0.5)")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward pass (default: 1)")
    parser.add_argument("--tta", action="store_true", help="average over mirrored inputs along every axis (8x slower in 3D)")
    parser.add_argument("--keep-largest-component", action="store_true", help="keep only the largest connected component of each label")
    parser.add_argument("--probabilities", action="store_true", help="also write class probabilities as float16 <case>_probabilities.npz")
    parser.add_argument("--folds", nargs="+", metavar="FOLD", default=None,
                        help="nnU-Net results folders only: folds to ensemble, e.g. 0 1 2 or all (default: every fold "
                        "with checkpoint_final.pth)")
    parser.add_argument("--nonfinite", choices=["reject", "replace"], default="reject",
                        help="NaN/inf input voxels: reject the case (default) or replace them (NaN -> 0, inf -> the "
                        "largest/smallest finite value) with a warning")
    parser.add_argument("--allow-irregular", action="store_true",
                        help="accept DICOM series with missing slices, duplicated positions or gantry tilt")
    parser.add_argument("--dist-timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="under torchrun (cases sharded over the processes): how long a process that finished "
                        "waits for the others (default: 3600)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``medseg segment``."""
    from tqdm import tqdm

    from medseg.pipelines.distributed import distributed_session
    from medseg.pipelines.nnunet_model import parse_folds
    from medseg.pipelines.predictor import InferenceOptions
    from medseg.pipelines.segment import SegmentOptions, segment

    options = SegmentOptions(
        inference=InferenceOptions(overlap=args.overlap, batch_size=args.batch_size, tta=args.tta),
        device=args.device,
        keep_largest_component=args.keep_largest_component,
        probabilities=args.probabilities,
        folds=parse_folds(args.folds),
        nonfinite=args.nonfinite,
        allow_irregular=args.allow_irregular,
    )
    # Under torchrun each process segments its share of the cases; results are gathered (gloo, CPU tensors).
    with distributed_session("gloo", args.dist_timeout) as distributed:
        is_main = distributed is None or distributed.is_main
        bar = tqdm(desc="segment", unit="case", file=sys.stderr, disable=None if is_main else True)

        def progress(result) -> None:
            bar.update(1)
            if result.error:
                tqdm.write(f"{result.case_id}: FAILED: {result.error}", file=sys.stderr)

        summary = segment(args.input, args.model, args.output, options, progress=progress, distributed=distributed)
        bar.close()
    if not is_main:  # rank 0 prints the gathered summary; every rank's exit code counts every failure
        return EXIT_SOME_FAILED if summary.failed else EXIT_OK
    done = [r for r in summary.results if r.error is None]
    for r in done:
        print(f"{r.case_id}: {r.output} ({r.seconds:.1f} s)")
    print(f"segmented {len(done)} of {len(summary.results)} cases into {args.output}")
    if summary.failed:
        print(f"{len(summary.failed)} case(s) failed: {', '.join(r.case_id for r in summary.failed)}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK
