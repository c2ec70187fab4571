"""``medseg export``: a trained model as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``medseg export RUN_DIR --format onnx|torchscript``."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript",
        description="Export the model folder of a run (RUN_DIR/model, or a model folder itself) to ONNX "
        "(onnxruntime-checked, dynamic batch and spatial axes when they work) or TorchScript (traced). The "
        "export's output on one window is compared with PyTorch's; the file is written only if they match "
        "(exit 1 otherwise).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run folder or a model folder")
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="export format")
    parser.add_argument("--output", "-o", default=None, metavar="PATH",
                        help="file to write (default RUN_DIR/model.onnx or RUN_DIR/model.torchscript.pt)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="relative tolerance: max |export - PyTorch| must be <= tolerance * max(1, max |PyTorch|) "
                        "(default 1e-4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and check; 0 when the export matches PyTorch, 1 when it does not (nothing written)."""
    from medseg.cli import EXIT_OK, EXIT_SOME_FAILED
    from medseg.pipelines.export import export_model

    result = export_model(args.run_dir, args.format, output=args.output, tolerance=args.tolerance)
    shape = " x ".join(str(s) for s in result.input_shape)
    check = f"max |{args.format} - PyTorch| = {result.max_abs_diff:.3g} on a {shape} window (allowed {result.allowed_diff:.3g})"
    if not result.matches:
        print(f"medseg export: FAILED, the export does not match PyTorch: {check}; nothing written")
        return EXIT_SOME_FAILED
    shapes = "dynamic batch and spatial sizes" if result.dynamic_shapes else f"fixed input shape {shape}"
    print(f"wrote {result.path} ({args.format}, {shapes}); {check}")
    return EXIT_OK
