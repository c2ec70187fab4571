"""Segmenting one BraTS-size case with an nnU-Net v2 results folder: ``medseg segment`` against nnU-Net's predictor.

Setup (in this process): a synthetic BraTS 2021 case of ``--shape`` (default 240 x 240 x 155, 4 channels),
converted with ``medseg convert``, and an nnU-Net results folder ``nnUNetTrainer__nnUNetPlans__3d_fullres``
whose plans describe nnU-Net's BraTS configuration (no resampling: the target spacing is the case's; z-score
normalisation on the brain; region-based TC/WT/ET outputs; PlainConvUNet with six stages of 32..320 features
and a ``--patch`` window, 128^3 by default) and whose fold-0 checkpoint holds randomly initialised weights,
saved the way nnU-Net saves them.

Each pipeline then runs in a fresh subprocess, on CPU, with the same number of torch threads, without
mirroring and with step 0.5 / overlap 0.5:

- ``medseg``: ``medseg.pipelines.segment.segment`` on the case folder (medseg.io reading, nnU-Net's
  preprocessing, medseg's nnU-Net window tiling, writing with the input's geometry);
- ``nnunet``: ``nnUNetPredictor.predict_from_files_sequential`` (SimpleITK reading, nnU-Net's preprocessing,
  its sliding window with float16 accumulation, export).

Both runs get ``OMP_WAIT_POLICY=PASSIVE`` by default: on a machine with more runnable threads than cores,
OpenMP's spin-waiting made the same forward pass 2-5x slower or faster depending on unrelated thread
activity (nnU-Net's window-producer thread happened to help it), which measures the machine, not the code.

Reported per pipeline: wall time of the segmentation call (after imports and model loading), wall time of
the whole subprocess, and its peak resident set size (``wait4`` rusage of the child). The label maps of the
two are compared (voxel agreement and Dice per BraTS label).

Usage::

    nice python benchmarks/nnunet_vs_medseg.py                                  # BraTS size, several minutes
    nice python benchmarks/nnunet_vs_medseg.py --shape 120 120 78 --patch 64 64 64   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
CONFIGURATION = "3d_fullres"
MODALITIES = ("t1", "t1ce", "t2", "flair")


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155], metavar=("I", "J", "K"),
                        help="case shape (default 240 240 155, BraTS)")
    parser.add_argument("--patch", type=int, nargs=3, default=[128, 128, 128], metavar=("Z", "Y", "X"),
                        help="nnU-Net patch size (default 128 128 128)")
    parser.add_argument("--features", type=int, nargs="+", default=[32, 64, 128, 256, 320, 320],
                        help="features per stage (default nnU-Net's 32 64 128 256 320 320)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads in both runs (default 2)")
    parser.add_argument("--omp-wait-policy", default="PASSIVE", choices=("PASSIVE", "ACTIVE", "inherit"),
                        help="OMP_WAIT_POLICY of both runs (default PASSIVE: on a machine with more runnable threads "
                        "than cores, OpenMP's spin-waiting makes timings depend on unrelated thread activity)")
    parser.add_argument("--workdir", default=None, help="keep the data and outputs here (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    # Internal: one pipeline in this process.
    parser.add_argument("--child", choices=("medseg", "nnunet"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _plans(patch: list[int], spacing: list[float], features: list[int]) -> dict:
    stages = len(features)
    strides = [[1, 1, 1]] + [[2 if p // 2**s >= 8 else 1 for p in patch] for s in range(1, stages)]
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset137_BraTS2021", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": patch, "spacing": spacing,
            "normalization_schemes": ["ZScoreNormalization"] * 4, "use_mask_for_norm": [True] * 4,
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": stages, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * stages, "strides": strides, "n_conv_per_stage": [2] * stages,
                    "n_conv_per_stage_decoder": [2] * (stages - 1), "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"mean": 0.0, "std": 1.0, "percentile_00_5": 0.0, "percentile_99_5": 1.0} for c in range(4)
        },
    }


def _setup(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Write the case, its nnU-Net conversion and a results folder; return (results folder, case folder)."""
    import numpy as np
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He
    from torch import nn

    from medseg.io import read_geometry
    from medseg.pipelines.nnunet_convert import convert_to_nnunet
    from medseg.synth import write_brats

    (case,) = write_brats(work / "brats", 1, shape=args.shape, seed=0)
    raw = convert_to_nnunet(work / "brats", work / "raw", 137)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    spacing = list(read_geometry(next(case.glob("*_t1.nii.gz"))).spacing)[::-1]  # nnU-Net's (z, y, x)
    plans = _plans(list(args.patch), spacing, list(args.features))
    folder = work / "results" / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    kwargs = dict(plans["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"])
    kwargs.update(conv_op=nn.Conv3d, norm_op=nn.InstanceNorm3d, nonlin=nn.LeakyReLU, dropout_op=None)
    torch.manual_seed(0)
    network = PlainConvUNet(input_channels=4, num_classes=3, deep_supervision=False, **kwargs)
    network.apply(InitWeights_He(1e-2))
    torch.save({
        "network_weights": network.state_dict(), "optimizer_state": {}, "grad_scaler_state": None,
        "logging": {"ema_fg_dice": [np.float32(0.0)]}, "_best_ema": np.float64(0.0), "current_epoch": 1,
        "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": 0, "dataset_json": dataset_json,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2),
    }, folder / "fold_0" / "checkpoint_final.pth")
    return folder, case


def _child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    folder, case, out = Path(args.folder), Path(args.case), Path(args.out)
    if args.child == "medseg":
        from medseg.pipelines.nnunet_model import NnunetSegmenter
        from medseg.pipelines.segment import SegmentOptions
        from medseg.pipelines.segment_inputs import find_cases

        segmenter = NnunetSegmenter(folder, SegmentOptions(device="cpu"))
        (item,), _ = find_cases(case, segmenter.modalities)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        segmenter.segment_case(item, out)
        seconds = time.perf_counter() - start
    else:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        manager = PlansManager(json.loads((folder / "plans.json").read_text()))
        dataset_json = json.loads((folder / "dataset.json").read_text())
        configuration = manager.get_configuration(CONFIGURATION)
        network = get_network_from_plans(
            configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
            configuration.network_arch_init_kwargs_req_import, 4, 3, allow_init=False, deep_supervision=False)
        weights = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                             weights_only=False)["network_weights"]
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=False, device=torch.device("cpu"),
                                    allow_tqdm=False)
        predictor.manual_initialization(network, manager, configuration, [weights], dataset_json, "nnUNetTrainer",
                                        (0, 1, 2))
        out.mkdir(parents=True, exist_ok=True)
        files = [str(case / f"{case.name}_{m}.nii.gz") for m in MODALITIES]
        start = time.perf_counter()
        predictor.predict_from_files_sequential([files], [str(out / case.name)], save_probabilities=False,
                                                overwrite=True)
        seconds = time.perf_counter() - start
    return {"pipeline": args.child, "segment_seconds": seconds}


def _run_child(name: str, folder: Path, case: Path, out: Path, threads: int, wait_policy: str) -> dict:
    command = [sys.executable, __file__, "--child", name, "--folder", str(folder), "--case", str(case),
               "--out", str(out), "--threads", str(threads)]
    env = dict(os.environ)
    if wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = wait_policy
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    stdout = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    total = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} run failed:\n{stdout}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(total_seconds=total, peak_rss_mib=usage.ru_maxrss * 1024 / MIB)
    return result


def _compare(ours: Path, theirs: Path, to_source: dict) -> dict:
    import numpy as np

    from medseg.io import load_volume

    a = load_volume(ours).array
    b = load_volume(theirs).array
    table = np.zeros(max(int(k) for k in to_source) + 1, dtype=np.uint8)
    for value, source in to_source.items():
        table[int(value)] = source
    b = table[b]
    dice = {}
    for value in (1, 2, 4):
        x, y = a == value, b == value
        total = int(x.sum() + y.sum())
        dice[value] = 2.0 * float((x & y).sum()) / total if total else 1.0
    return {"voxel_agreement": float(np.mean(a == b)), "dice": dice}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, internally, one pipeline) and print the table."""
    args = _parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        folder, case = _setup(work, args)
        results = [_run_child(name, folder, case, work / f"out_{name}", args.threads, args.omp_wait_policy)
                   for name in ("nnunet", "medseg")]
        to_source = json.loads((folder / "dataset.json").read_text())["medseg_source"]["nnunet_to_source"]
        agreement = _compare(work / "out_medseg" / f"{case.name}.nii.gz", work / "out_nnunet" / f"{case.name}.nii.gz",
                             to_source)
    print(f"case {' x '.join(map(str, args.shape))} x 4 channels, patch {args.patch}, features {args.features}, "
          f"CPU, {args.threads} torch thread(s), OMP_WAIT_POLICY {args.omp_wait_policy}")
    print(f"{'pipeline':<10}{'segment s':>12}{'process s':>12}{'peak RSS MiB':>15}")
    for r in results:
        print(f"{r['pipeline']:<10}{r['segment_seconds']:>12.1f}{r['total_seconds']:>12.1f}{r['peak_rss_mib']:>15.0f}")
    speedup = results[0]["segment_seconds"] / results[1]["segment_seconds"]
    print(f"medseg / nnU-Net speed: {speedup:.2f}x; label agreement {agreement['voxel_agreement']:.5f}, "
          f"Dice NCR {agreement['dice'][1]:.4f} ED {agreement['dice'][2]:.4f} ET {agreement['dice'][4]:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "agreement": agreement},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
