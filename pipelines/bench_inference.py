"""``medseg bench inference``: one BraTS-size case through three sliding-window predictors, and the levers.

The case is a synthetic BraTS 2021 case (:func:`medseg.synth.write_brats`, 240 x 240 x 155, 4 channels);
the model is a medseg model folder (``--model``) or, without one, medseg's default 3D U-Net
(``create("unet", 3, 4, 3)``, window 128^3) with random weights drawn from a fixed seed. Methods:

* ``monai`` (a): MONAI's stock ``sliding_window_inference`` (overlap 0.5, Gaussian, one window per batch,
  float32, under ``torch.no_grad``) on the whole z-scored volume in RAS orientation;
* ``nnunet`` (b): nnU-Net v2's ``nnUNetPredictor.predict_sliding_window_return_logits`` (tile step 0.5,
  Gaussian, no mirroring, float16 logit buffer) with the same network and weights, on the volume cropped to
  its nonzero box, which is what nnU-Net's own preprocessing feeds it;
* ``medseg`` (c): :class:`medseg.pipelines.segment.Segmenter` with its default options on the case folder,
  end to end: loading the four NIfTI files, preprocessing, prediction, inversion and writing the label map.

(a) and (b) are timed from the preprocessed tensor to logits, so (c)'s time includes work theirs does not.
All three run one after the other in this process; then each runs again alone in a fresh process
(``--child``) for its peak resident memory. Masks are compared in the input's voxel grid, per BraTS label
(1 necrosis, 2 oedema, 4 enhancing), as Dice with (a)'s mask and with the case's true label map.

Levers (``--levers``): variants of the prediction step on the cropped volume, each in its own process
(time, peak memory, Dice with (a), with the first lever and with the truth), to show what each setting is
worth.

On a CUDA machine (``--device cuda``) the same three methods run on the GPU: (a) in float32 as MONAI's stock
inference does, (b) with nnU-Net's autocast and everything on the device, (c) with ``medseg segment``'s GPU
defaults (float16 autocast). One window goes through each network before it is timed (CUDA context,
cuDNN and allocator warm-up), and the children report peak GPU memory (``torch.cuda.max_memory_allocated``)
beside peak RSS. Levers are CPU-only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, InputError, unknown_choice
from medseg.pipelines.bench_common import (
    Timer,
    child_result,
    load_average,
    machine_description,
    markdown_table,
    run_child,
)

METHODS = ("monai", "nnunet", "medseg")
DEVICES = ("cpu", "cuda")
TITLES = {
    "monai": "(a) MONAI sliding_window_inference, whole volume",
    "nnunet": "(b) nnU-Net v2 predictor, nonzero crop",
    "medseg": "(c) medseg segment, defaults, end to end",
}
FULL_SHAPE = (240, 240, 155)
FULL_WINDOW = (128, 128, 128)
QUICK_SHAPE = (64, 64, 48)
QUICK_WINDOW = (32, 32, 32)
MODALITIES = ["t1", "t1ce", "t2", "flair"]
LABELS = (1, 2, 4)
MANIFEST = "workspace.json"


@dataclass(frozen=True)
class InferenceBenchConfig:
    """What the inference benchmark runs.

    Attributes:
        shape: spatial shape of the synthetic case ``(D, H, W)``.
        window: sliding window of the random-weights model (a ``model_dir`` brings its own ``patch_size``).
        model_dir: a trained medseg model folder (BraTS 2021 regions, 4 modalities), or ``None`` for the
            default U-Net with random weights from ``seed``.
        seed: seed of the synthetic case and of the random weights.
        own_process: also run each method alone in a fresh process for its peak memory.
        levers: also measure the levers (each in its own process).
        threads: ``torch.set_num_threads`` in this process and every child (``None``: torch's default, one
            per core; on a machine shared with other jobs one thread gives steadier figures).
        child_timeout: seconds after which a child process is stopped.
        device: ``"cpu"`` or ``"cuda"`` (every method on the GPU; levers are CPU-only).
    """

    shape: tuple[int, int, int] = FULL_SHAPE
    window: tuple[int, int, int] = FULL_WINDOW
    model_dir: str | None = None
    seed: int = 0
    own_process: bool = True
    levers: bool = False
    threads: int | None = None
    child_timeout: float = 1800.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise unknown_choice("benchmark device", self.device, DEVICES)
        if self.device == "cuda" and self.levers:
            raise ConfigError("--levers measures CPU settings; run it without --device cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise ConfigError(f"case shape must be 3 sizes >= 8, got {self.shape}")
        if len(self.window) != 3 or min(self.window) < 16 or any(w % 16 for w in self.window):
            raise ConfigError(f"window must be 3 multiples of 16 (the default U-Net's divisor), got {self.window}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


@dataclass
class MethodResult:
    """One method's figures: times in seconds, peak RSS in MiB, Dice per label value.

    ``dice`` compares with (a)'s mask, ``dice_truth`` with the case's label map, ``dice_crop`` (levers only)
    with the mask of the first lever (MONAI's float32 inference on the same crop), which isolates the
    effect of a setting from the effect of cropping.
    """

    method: str
    title: str
    seconds: float | None = None
    own_seconds: float | None = None
    peak_rss_mib: float | None = None
    peak_gpu_mib: float | None = None
    dice: dict[int, float] = field(default_factory=dict)
    dice_truth: dict[int, float] = field(default_factory=dict)
    dice_crop: dict[int, float] = field(default_factory=dict)
    load: float | None = None
    error: str | None = None


@dataclass
class InferenceBenchReport:
    """Everything the benchmark measured, with the machine, the load and the weights used."""

    config: InferenceBenchConfig
    machine: dict[str, Any]
    weights: str
    window: tuple[int, ...]
    crop_shape: tuple[int, ...]
    preprocess_seconds: float
    methods: list[MethodResult]
    levers: list[MethodResult]
    seconds_total: float = 0.0
    device: str = "cpu"


@dataclass(frozen=True)
class Workspace:
    """Files of one benchmark run: the case folder, the model folder and the preprocessed inputs."""

    root: Path
    case_dir: Path
    model_dir: Path
    weights: str
    device: str = "cpu"

    @property
    def full_path(self) -> Path:
        """The whole z-scored RAS volume ``(4, *S)`` as float32 ``.npy`` (input of (a))."""
        return self.root / "full.npy"

    @property
    def crop_path(self) -> Path:
        """The z-scored volume cropped to its nonzero box, float32 ``.npy`` (input of (b) and the levers)."""
        return self.root / "crop.npy"

    def save(self) -> None:
        """Write the manifest that child processes read."""
        manifest = {
            "case_dir": str(self.case_dir),
            "model_dir": str(self.model_dir),
            "weights": self.weights,
            "device": self.device,
        }
        (self.root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, root: str | Path) -> Workspace:
        """Read a workspace written by :meth:`save`."""
        path = Path(root) / MANIFEST
        if not path.is_file():
            raise InputError(f"{path} is missing: not a benchmark workspace")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            Path(root),
            Path(manifest["case_dir"]),
            Path(manifest["model_dir"]),
            manifest["weights"],
            manifest.get("device", "cpu"),
        )


def random_model_folder(path: Path, window: tuple[int, ...], seed: int) -> Path:
    """Save medseg's default 3D U-Net with seeded random weights as a BraTS 2021 region model folder.

    Args:
        path: the model folder to write.
        window: the patch size recorded in it (the sliding window).
        seed: ``torch.manual_seed`` before the network is built.

    Returns:
        ``path``.
    """
    from medseg.config import ModelConfig
    from medseg.networks import create
    from medseg.pipelines.model_folder import save_model_folder
    from medseg.transforms import BratsTransformConfig

    torch.manual_seed(seed)
    model = create("unet", 3, 4, 3)
    preset = dataclasses.asdict(BratsTransformConfig(convention="brats2021", patch_size=tuple(window), num_samples=1))
    config = ModelConfig(
        network="unet",
        spatial_dims=3,
        in_channels=4,
        out_channels=3,
        modalities=list(MODALITIES),
        dataset="brats2021",
        output_activation="sigmoid",
        class_names=["TC", "WT", "ET"],
        label_values=[0, 1, 2, 4],
        regions={"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]},
        orientation="RAS",
        patch_size=list(window),
        preprocessing={
            "preset": "brats",
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()},
        },
    )
    return save_model_folder(path, model, config, info={"weights": f"random, torch.manual_seed({seed})"})


def prepare_workspace(config: InferenceBenchConfig, root: str | Path) -> Workspace:
    """Write the synthetic case and (without ``model_dir``) the random-weights model folder into ``root``.

    Args:
        config: the benchmark configuration.
        root: an empty or new folder.

    Returns:
        The workspace (its manifest saved).

    Raises:
        InputError: ``model_dir`` is not a BraTS 2021 region model with 4 inputs and 3 outputs.
    """
    from medseg.pipelines.model_folder import load_model_config
    from medseg.synth import write_brats

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (case_dir,) = write_brats(root / "data", 1, shape=config.shape, year=2021, seed=config.seed)
    if config.model_dir is not None:
        model_dir = Path(config.model_dir)
        model_config = load_model_config(model_dir)
        if (model_config.in_channels, model_config.out_channels, model_config.output_activation) != (4, 3, "sigmoid"):
            raise InputError(
                f"{model_dir}: the inference benchmark needs a BraTS region model (4 inputs, 3 sigmoid outputs), "
                f"got {model_config.in_channels} inputs, {model_config.out_channels} "
                f"{model_config.output_activation} outputs"
            )
        weights = f"trained: {model_dir}"
    else:
        model_dir = random_model_folder(root / "model", config.window, config.seed)
        weights = f"random (train-free), torch.manual_seed({config.seed})"
    workspace = Workspace(root, case_dir, model_dir, weights, config.device)
    workspace.save()
    return workspace


@dataclass
class Inputs:
    """The preprocessed case: the cropped tensor and its dictionary (for inversion), the whole RAS volume."""

    data: dict
    crop: torch.Tensor
    full: torch.Tensor
    ras_grid: Any
    input_grid: Any
    box: tuple[slice, ...]


def preprocess(workspace: Workspace) -> Inputs:
    """Run the model's inference preset on the case and rebuild the whole z-scored RAS volume around the crop.

    The BraTS preset z-scores over nonzero voxels and keeps zeros at zero, so the whole volume is the
    cropped one placed back into a zero volume of the reoriented grid.

    Args:
        workspace: the benchmark files.

    Returns:
        The inputs of the three methods.
    """
    from medseg.io import load_case
    from medseg.pipelines.inference_preset import inference_preset
    from medseg.pipelines.model_folder import load_model_config
    from medseg.pipelines.segment_inputs import find_cases
    from medseg.transforms.grids import recorded_grids

    config = load_model_config(workspace.model_dir)
    (case,), _ = find_cases(workspace.case_dir, config.modalities)
    data = inference_preset(config)({"image": load_case(case.paths, names=config.modalities)})
    crop = torch.as_tensor(data["image"]).as_subclass(torch.Tensor).float().contiguous()
    grids = recorded_grids(data["image"], "image")
    crop_grid = grids[-1]
    earlier = [g for g in grids if g.shape != crop_grid.shape]
    ras_grid = earlier[-1] if earlier else grids[0]
    offset = np.linalg.solve(ras_grid.affine_nd(), crop_grid.affine_nd())[:3, 3]
    start = [int(round(o)) for o in offset]
    box = tuple(slice(s, s + n) for s, n in zip(start, crop.shape[1:]))
    full = torch.zeros((crop.shape[0], *ras_grid.shape), dtype=torch.float32)
    full[(slice(None), *box)] = crop
    return Inputs(dict(data), crop, full, ras_grid, grids[0], box)


def run_monai(model: torch.nn.Module, full: torch.Tensor, window: tuple[int, ...]) -> torch.Tensor:
    """(a): MONAI's stock sliding-window inference on the model's device, logits ``(3, *S)`` float32."""
    from monai.inferers import sliding_window_inference

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = sliding_window_inference(full[None].to(device), window, 1, model, overlap=0.5, mode="gaussian")[0]
    _synchronize(device)
    return logits


def warm_up(model: torch.nn.Module, window: tuple[int, ...]) -> None:
    """On a GPU, run one zero window through ``model`` before timing (CUDA context, cuDNN, allocator); on a CPU,
    nothing."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        return
    with torch.no_grad():
        model(torch.zeros((1, 4, *window), device=device))
    _synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def nnunet_predictor(model: torch.nn.Module, window: tuple[int, ...]) -> Any:
    """An ``nnUNetPredictor`` set up by hand around a medseg network (step 0.5, Gaussian, no mirroring).

    It runs on the model's device; on a GPU with everything on the device (nnU-Net's fastest setting).
    """
    from medseg.optional import require

    require("nnunetv2", "the nnU-Net comparison of `medseg bench inference`")
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = {
        "dataset_name": "medseg_bench",
        "plans_name": "medseg_bench",
        "configurations": {
            "3d_fullres": {
                "patch_size": list(window),
                "architecture": {"network_class_name": "medseg", "arch_kwargs": {}, "_kw_requires_import": []},
            }
        },
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "label_manager": "LabelManager",
    }
    dataset_json = {
        "labels": {"background": 0, "tumor core": [1, 4], "whole tumor": [1, 2, 4], "enhancing tumor": [4]},
        "regions_class_order": [1, 2, 4],
        "channel_names": {str(i): m for i, m in enumerate(MODALITIES)},
        "file_ending": ".nii.gz",
    }
    manager = PlansManager(plans)
    device = next(model.parameters()).device
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a note about CUDA-only options on a CPU
        predictor = nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=False,
            perform_everything_on_device=device.type == "cuda",
            device=device,
            allow_tqdm=False,
        )
    predictor.manual_initialization(
        model, manager, manager.get_configuration("3d_fullres"), None, dataset_json, "medseg", None
    )
    return predictor


def run_nnunet(predictor: Any, crop: torch.Tensor) -> torch.Tensor:
    """(b): nnU-Net's sliding-window logits on the cropped volume, ``(3, *crop)``."""
    logits = predictor.predict_sliding_window_return_logits(crop)
    _synchronize(torch.device(predictor.device))
    return logits


def segment_case(workspace: Workspace, output_dir: Path, segmenter: Any) -> tuple[float, Path]:
    """(c): ``segmenter`` (from :func:`medseg_segmenter`) on the case folder; returns (seconds, output)."""
    from medseg.pipelines.segment_inputs import find_cases

    (case,), _ = find_cases(workspace.case_dir, segmenter.modalities)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = segmenter.segment_case(case, output_dir)
    return time.perf_counter() - start, Path(result.output)


def medseg_segmenter(workspace: Workspace) -> Any:
    """The ``Segmenter`` of (c) with ``medseg segment``'s defaults on the benchmark's device, warmed up."""
    from medseg.pipelines.segment import Segmenter, SegmentOptions

    segmenter = Segmenter(workspace.model_dir, SegmentOptions(device=workspace.device))
    warm_up(segmenter.model, tuple(int(w) for w in segmenter.config.patch_size))
    return segmenter


def labels_from_logits(logits: torch.Tensor) -> np.ndarray:
    """BraTS 2021 label map from TC/WT/ET region logits ``(3, *S)`` (a region where its logit is > 0)."""
    from medseg.transforms import regions_to_labels

    return np.asarray(regions_to_labels((logits.float() > 0).cpu().numpy(), "brats2021"))


def full_labels_to_input(labels: np.ndarray, inputs: Inputs) -> np.ndarray:
    """Map a label map on the whole RAS grid back onto the input file's grid."""
    from medseg.transforms.inversion import to_earlier_grid

    fill = np.zeros(1, dtype=labels.dtype)
    return to_earlier_grid(labels[None], inputs.ras_grid, inputs.input_grid, nearest=True, fill=fill)[0]


def crop_labels_to_input(labels: np.ndarray, inputs: Inputs) -> np.ndarray:
    """Map a label map on the cropped grid back onto the input file's grid."""
    from medseg.transforms import invert_to_input

    return invert_to_input(labels, inputs.data, kind="label", fill=0)


def dice_per_label(ours: np.ndarray, reference: np.ndarray, labels: tuple[int, ...] = LABELS) -> dict[int, float]:
    """Dice of ``ours`` with ``reference`` for each label value (1.0 where both lack the label)."""
    scores = {}
    for value in labels:
        a, b = ours == value, reference == value
        total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
        scores[value] = 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
    return scores


def run_inference_bench(
    config: InferenceBenchConfig, root: str | Path, log: Callable[[str], None] = print
) -> InferenceBenchReport:
    """Run the benchmark in ``root`` (a scratch folder) and return its report.

    Args:
        config: what to run.
        root: scratch folder for the case, the model and the outputs.
        log: called with one line per finished step.

    Returns:
        The report; a method that fails is recorded with its error.
    """
    from medseg.io import load_volume

    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    workspace = prepare_workspace(config, root)
    window = tuple(int(w) for w in _model_window(workspace))
    with Timer() as timer:
        inputs = preprocess(workspace)
    np.save(workspace.full_path, inputs.full.numpy())
    np.save(workspace.crop_path, inputs.crop.numpy())
    log(f"case {tuple(inputs.full.shape)} -> crop {tuple(inputs.crop.shape)}, window {window}; {workspace.weights}")
    truth = np.asarray(load_volume(next(workspace.case_dir.glob("*_seg.nii.gz"))).array)
    methods, reference = _methods_in_process(workspace, inputs, window, truth, log)
    child_args = ["--workdir", str(workspace.root), *(["--threads", str(config.threads)] if config.threads else [])]
    if config.own_process:
        for result in methods:
            child = run_child(["bench", "inference", "--child", result.method, *child_args], config.child_timeout)
            result.own_seconds, result.peak_rss_mib = child.get("seconds"), child.get("peak_rss_mib")
            result.peak_gpu_mib = child.get("peak_gpu_mib")
            if "error" in child:
                result.error = result.error or f"own process: {child['error']}"
            log(f"{result.method} alone: {child}")
    levers = []
    if config.levers:
        levers = _levers(workspace, inputs, reference, truth, child_args, config.child_timeout, log)
    return InferenceBenchReport(
        config=config,
        machine=machine_description(),
        weights=workspace.weights,
        window=window,
        crop_shape=tuple(inputs.crop.shape[1:]),
        preprocess_seconds=timer.seconds,
        methods=methods,
        levers=levers,
        seconds_total=time.perf_counter() - started,
        device=config.device,
    )


def _model_window(workspace: Workspace) -> list[int]:
    from medseg.pipelines.model_folder import load_model_config

    return load_model_config(workspace.model_dir).patch_size


def _methods_in_process(
    workspace: Workspace, inputs: Inputs, window: tuple[int, ...], truth: np.ndarray, log: Callable[[str], None]
) -> tuple[list[MethodResult], np.ndarray]:
    """(a), (b), (c) one after the other in this process; returns their results and (a)'s label map."""
    from medseg.io import load_volume
    from medseg.pipelines.model_folder import load_model_folder

    model, _ = load_model_folder(workspace.model_dir, device=workspace.device)
    warm_up(model, window)
    results = {m: MethodResult(m, TITLES[m]) for m in METHODS}
    with Timer() as timer:
        logits = run_monai(model, inputs.full, window)
    reference = full_labels_to_input(labels_from_logits(logits), inputs)
    del logits
    results["monai"].seconds, results["monai"].load = timer.seconds, timer.load_before
    results["monai"].dice_truth = dice_per_label(reference, truth)
    log(f"(a) monai: {timer.seconds:.1f} s (load {timer.load_before:.1f})")

    try:
        predictor = nnunet_predictor(model, window)
        with Timer() as timer:
            logits = run_nnunet(predictor, inputs.crop)
        labels = crop_labels_to_input(labels_from_logits(logits), inputs)
        results["nnunet"].seconds, results["nnunet"].load = timer.seconds, timer.load_before
        results["nnunet"].dice = dice_per_label(labels, reference)
        results["nnunet"].dice_truth = dice_per_label(labels, truth)
        log(f"(b) nnunet: {timer.seconds:.1f} s (load {timer.load_before:.1f})")
    except Exception as exc:  # noqa: BLE001 - a broken comparison must not hide the others
        results["nnunet"].error = f"{type(exc).__name__}: {exc}"
        log(f"(b) nnunet failed: {results['nnunet'].error}")

    segmenter = medseg_segmenter(workspace)
    load = load_average()
    seconds, output = segment_case(workspace, workspace.root / "out_medseg", segmenter)
    labels = np.asarray(load_volume(output).array)
    results["medseg"].seconds, results["medseg"].load = seconds, load
    results["medseg"].dice = dice_per_label(labels, reference)
    results["medseg"].dice_truth = dice_per_label(labels, truth)
    log(f"(c) medseg: {seconds:.1f} s (load {load:.1f})")
    return [results[m] for m in METHODS], reference


def _levers(
    workspace: Workspace,
    inputs: Inputs,
    reference: np.ndarray,
    truth: np.ndarray,
    child_args: list[str],
    timeout: float,
    log: Callable[[str], None],
) -> list[MethodResult]:
    """Every lever in its own process; Dice with (a), with the truth and with the first (crop) lever's mask."""
    levers = []
    crop_labels: np.ndarray | None = None
    for name, (description, _) in LEVERS.items():
        lever = MethodResult(name, description, load=load_average())
        child = run_child(["bench", "inference", "--child", f"lever:{name}", *child_args], timeout)
        lever.own_seconds, lever.peak_rss_mib = child.get("seconds"), child.get("peak_rss_mib")
        lever.error = child.get("error")
        labels_path = workspace.root / "levers" / f"{name}.npy"
        if lever.error is None and labels_path.is_file():
            on_crop = np.load(labels_path)
            crop_labels = on_crop if crop_labels is None else crop_labels
            labels = crop_labels_to_input(on_crop, inputs)
            lever.dice, lever.dice_truth = dice_per_label(labels, reference), dice_per_label(labels, truth)
            lever.dice_crop = dice_per_label(on_crop, crop_labels)
        levers.append(lever)
        log(f"lever {name}: {child}")
    return levers


# ---- child processes -------------------------------------------------------------------------------------


def _fitted_window(shape: tuple[int, ...], divisor: tuple[int, ...]) -> tuple[int, ...]:
    """The smallest window covering ``shape`` whose sizes are multiples of the network's divisor."""
    return tuple(int(math.ceil(s / d) * d) for s, d in zip(shape, divisor))


def _lever_predict(name: str, model: torch.nn.Module, crop: torch.Tensor, window: tuple[int, ...]) -> torch.Tensor:
    """Logits ``(3, *crop)`` of the cropped volume with lever ``name``'s settings (see :data:`LEVERS`)."""
    from medseg.pipelines.predictor import window_logits
    from medseg.pipelines.sliding_window import sliding_window_predict

    cpu = torch.device("cpu")
    settings = LEVERS[name][1]
    if settings.get("monai"):
        return run_monai(model, crop, window)
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    if settings.get("channels_last"):
        model = model.to(memory_format=torch.channels_last_3d)
    if settings.get("compile"):
        model = torch.compile(model, dynamic=False)
    if settings.get("onnx"):
        forward = _onnx_forward(model, window)
    else:
        forward = window_logits(model, cpu, settings.get("precision", "float32"))
    if settings.get("channels_last"):
        plain = forward

        def forward(windows: torch.Tensor) -> torch.Tensor:
            return plain(windows.contiguous(memory_format=torch.channels_last_3d))

    if settings.get("fit"):
        window = _fitted_window(tuple(crop.shape[1:]), tuple(getattr(model, "divisor", (16, 16, 16))))
    buffer = torch.float16 if settings.get("buffer") == "float16" else torch.float32
    context = torch.no_grad() if settings.get("no_grad") else torch.inference_mode()
    with context:
        return sliding_window_predict(
            crop[None], forward, window, settings.get("overlap", 0.5), "gaussian", settings.get("batch", 1), buffer
        )[0]


def _onnx_forward(model: torch.nn.Module, window: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Export ``model`` at one window to ONNX in memory; return a forward through ONNX Runtime (CPU)."""
    from medseg.optional import require

    ort = require("onnxruntime", "the ONNX Runtime lever of `medseg bench inference`")
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            torch.zeros(1, 4, *window),
            buffer,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def forward(windows: torch.Tensor) -> torch.Tensor:
        outs = [session.run(None, {"x": w[None].numpy()})[0] for w in windows]
        return torch.from_numpy(np.concatenate(outs))

    return forward


#: name -> (description, settings). Every lever predicts the cropped volume (the crop itself is the first lever).
LEVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "crop": ("crop to nonzero box; MONAI sliding_window_inference, fp32", {"monai": True}),
    "tiler_fp32": ("medseg tiler, fp32 net, fp32 buffer, no_grad", {"no_grad": True}),
    "inference_mode": ("+ torch.inference_mode", {}),
    "buffer_fp16": ("+ fp16 logit buffer", {"buffer": "float16"}),
    "bf16": ("+ bf16 autocast (= medseg default)", {"buffer": "float16", "precision": "bfloat16"}),
    "bf16_channels_last": ("+ channels_last_3d", {"buffer": "float16", "precision": "bfloat16", "channels_last": True}),
    "bf16_batch2": ("bf16, 2 windows per batch", {"buffer": "float16", "precision": "bfloat16", "batch": 2}),
    "bf16_1thread": ("bf16, torch.set_num_threads(1)", {"buffer": "float16", "precision": "bfloat16", "threads": 1}),
    "bf16_overlap025": ("bf16, overlap 0.25", {"buffer": "float16", "precision": "bfloat16", "overlap": 0.25}),
    "fp32_one_window": ("fp32, one window fitted to the crop", {"buffer": "float16", "fit": True}),
    "bf16_one_window": (
        "bf16, one window fitted to the crop",
        {"buffer": "float16", "precision": "bfloat16", "fit": True},
    ),
    "bf16_compile": (
        "bf16 + torch.compile (incl. compile time)",
        {"buffer": "float16", "precision": "bfloat16", "compile": True},
    ),
    "onnxruntime": ("ONNX Runtime fp32 (incl. export)", {"buffer": "float16", "onnx": True}),
}


def run_child_method(method: str, root: str | Path) -> str:
    """One method (or ``lever:NAME``) alone in this process; returns the JSON line with seconds and peak RSS.

    Args:
        method: one of :data:`METHODS` or ``"lever:" + `` a key of :data:`LEVERS`.
        root: the workspace written by :func:`prepare_workspace` (and the ``.npy`` inputs).

    Returns:
        The JSON text to print.

    Raises:
        ConfigError: an unknown method or lever.
    """
    from medseg.pipelines.model_folder import load_model_folder

    workspace = Workspace.load(root)
    valid = [*METHODS, *(f"lever:{n}" for n in LEVERS)]
    if method not in valid:
        raise unknown_choice("benchmark method", method, valid)
    if method == "medseg":
        seconds, _ = segment_case(workspace, workspace.root / "out_child", medseg_segmenter(workspace))
        return child_result({"method": method, "seconds": round(seconds, 2)})
    import monai.inferers  # noqa: F401 - MONAI's import (seconds) stays outside the timed part, as in (a) in-process

    model, model_config = load_model_folder(workspace.model_dir, device=workspace.device)
    window = tuple(int(w) for w in model_config.patch_size)
    warm_up(model, window)
    if method == "monai":
        full = torch.from_numpy(np.load(workspace.full_path))
        start = time.perf_counter()
        run_monai(model, full, window)
        return child_result({"method": method, "seconds": round(time.perf_counter() - start, 2)})
    crop = torch.from_numpy(np.load(workspace.crop_path))
    if method == "nnunet":
        predictor = nnunet_predictor(model, window)
        start = time.perf_counter()
        run_nnunet(predictor, crop)
        return child_result({"method": method, "seconds": round(time.perf_counter() - start, 2)})
    name = method.split(":", 1)[1]
    start = time.perf_counter()
    logits = _lever_predict(name, model, crop, window)
    seconds = time.perf_counter() - start
    out = workspace.root / "levers"
    out.mkdir(exist_ok=True)
    np.save(out / f"{name}.npy", labels_from_logits(logits))
    return child_result({"method": method, "seconds": round(seconds, 2)})


# ---- report ---------------------------------------------------------------------------------------------


def format_report(report: InferenceBenchReport) -> str:
    """The report as Markdown: header lines, the methods table with ratios to (a), the lever table."""
    m = report.machine
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
        f"torch {m['torch']} ({m['torch_threads']} threads); "
        f"{m['date']}; commit {m['commit']}"
        + (f"; device cuda ({m.get('gpu')})" if report.device == "cuda" else ""),
        f"Case: synthetic BraTS 2021, {tuple(report.config.shape)} x 4 channels, nonzero crop {report.crop_shape}; "
        f"window {report.window}; weights: {report.weights}",
        f"Preprocessing shared by (a) and (b) (load + RAS + crop + z-score): {report.preprocess_seconds:.1f} s; "
        f"whole benchmark {report.seconds_total:.0f} s",
        "",
    ]
    base = report.methods[0]
    gpu = report.device == "cuda"
    rows = []
    for r in report.methods:
        ratio = base.seconds / r.seconds if base.seconds and r.seconds else None
        own_ratio = base.own_seconds / r.own_seconds if base.own_seconds and r.own_seconds else None
        dice = _dice(r.dice) or ("reference" if r is base else "-")
        memory = [r.peak_rss_mib, r.peak_gpu_mib] if gpu else [r.peak_rss_mib]
        rows.append([r.title, r.seconds, ratio, r.own_seconds, own_ratio, *memory, dice, _dice(r.dice_truth),
                     _load(r.load), r.error or ""])
    memory_header = ["peak RSS alone (MiB)", "peak GPU alone (MiB)"] if gpu else ["peak RSS alone (MiB)"]
    header = ["method", "time (s)", "speed-up vs (a)", "time alone (s)", "speed-up alone", *memory_header,
              "Dice vs (a), labels 1/2/4", "Dice vs truth, 1/2/4", "load", "error"]
    lines.append(markdown_table(header, rows))
    if report.levers:
        lines += ["", "Levers (each alone in a fresh process, prediction step only, on the nonzero crop):", ""]
        crop_time = report.levers[0].own_seconds
        lever_rows = []
        for r in report.levers:
            base_seconds = base.own_seconds or base.seconds  # (a) alone, else (a) in the sequence
            vs_a = base_seconds / r.own_seconds if base_seconds and r.own_seconds else None
            vs_crop = crop_time / r.own_seconds if crop_time and r.own_seconds else None
            lever_rows.append([r.method, r.title, r.own_seconds, vs_a, vs_crop, r.peak_rss_mib, _dice(r.dice),
                               _dice(r.dice_crop), _dice(r.dice_truth), _load(r.load), r.error or ""])
        lines.append(markdown_table(
            ["lever", "settings", "time (s)", "speed-up vs (a)", "vs crop row", "peak RSS (MiB)",
             "Dice vs (a), 1/2/4", "Dice vs crop row", "Dice vs truth", "load", "error"],
            lever_rows,
        ))
    return "\n".join(lines)


def _dice(scores: dict[int, float]) -> str | None:
    return " / ".join(f"{scores[v]:.4f}" for v in LABELS) if scores else None


def _load(value: float | None) -> str | None:
    return f"{value:.1f}" if value is not None else None


def report_to_json(report: InferenceBenchReport) -> str:
    """The report as JSON text."""
    return json.dumps(dataclasses.asdict(report), indent=2, default=str) + "\n"
