"""An out-of-memory error during inference falls back instead of crashing: first one window per batch, then
(on a GPU) the model and the whole case on the CPU, each step announced with a warning; only when the last
step also runs out of memory does the case fail, and a folder run goes on with the next case.

Without a GPU the error is simulated by a predictor that raises ``torch.cuda.OutOfMemoryError`` (the class
that ``torch.OutOfMemoryError`` names in torch >= 2.5) the first time(s) it is called.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from robust_helpers import ct_phantom, only_files, write_nifti

import medseg.pipelines.segment as segment_module
from medseg.pipelines.predictor import InferenceOptions
from medseg.pipelines.segment import SegmentOptions, out_of_memory_fallbacks, segment

AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])
SHAPE = (24, 24, 16)


def _flaky_predictor(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[tuple[int, str]]:
    """Replace the predictor by one that runs out of memory on its first ``failures`` calls; record each call."""
    calls: list[tuple[int, str]] = []
    real = segment_module.predict_probabilities

    def flaky(model, image, roi_size, activation, options):
        calls.append((options.batch_size, image.device.type))
        if len(calls) <= failures:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(model, image, roi_size, activation, options)

    monkeypatch.setattr(segment_module, "predict_probabilities", flaky)
    return calls


@pytest.mark.parametrize(
    ("batch_size", "device", "expected"),
    [
        (4, "cuda", [(4, "cuda"), (1, "cuda"), (1, "cpu")]),
        (1, "cuda", [(1, "cuda"), (1, "cpu")]),
        (4, "cpu", [(4, "cpu"), (1, "cpu")]),
        (1, "cpu", [(1, "cpu")]),
    ],
)
def test_fallback_steps_shrink_the_batch_then_move_to_the_cpu(batch_size, device, expected):
    options = InferenceOptions(batch_size=batch_size, overlap=0.25, tta=True)
    steps = out_of_memory_fallbacks(options, torch.device(device))
    assert [(step.batch_size, where.type) for _, step, where in steps] == expected
    assert all(step.overlap == 0.25 and step.tta for _, step, _ in steps)  # nothing else changes


def test_out_of_memory_retries_with_one_window_per_batch_and_gives_the_same_mask(monkeypatch, ct_model, tmp_path):
    source = write_nifti(tmp_path / "in" / "c1.nii.gz", ct_phantom(SHAPE, 3), AFFINE)
    options = SegmentOptions(device="cpu", inference=InferenceOptions(batch_size=4))
    segment(source, ct_model, tmp_path / "reference", options)
    calls = _flaky_predictor(monkeypatch, failures=1)
    expected = r"case c1: out of memory during inference \(as configured\); retrying with one window per batch"
    with pytest.warns(RuntimeWarning, match=expected):
        summary = segment(source, ct_model, tmp_path / "out", options)
    assert [r.error for r in summary.results] == [None]
    assert calls == [(4, "cpu"), (1, "cpu")]
    np.testing.assert_array_equal(
        np.asarray(nib.load(tmp_path / "out" / "c1.nii.gz").dataobj),
        np.asarray(nib.load(tmp_path / "reference" / "c1.nii.gz").dataobj),
    )


def test_out_of_memory_on_every_step_fails_only_that_case(monkeypatch, ct_model, tmp_path):
    inputs = tmp_path / "in"
    write_nifti(inputs / "a.nii.gz", ct_phantom(SHAPE, 1), AFFINE)
    write_nifti(inputs / "b.nii.gz", ct_phantom(SHAPE, 2), AFFINE)
    calls = _flaky_predictor(monkeypatch, failures=2)  # both steps of case a (batch 2, then 1) fail
    options = SegmentOptions(device="cpu", inference=InferenceOptions(batch_size=2))
    with pytest.warns(RuntimeWarning, match="case a: out of memory"):
        summary = segment(inputs, ct_model, tmp_path / "out", options)
    errors = {r.case_id: r.error for r in summary.results}
    assert errors["b"] is None
    assert errors["a"].startswith("OutOfMemoryError: CUDA out of memory")
    assert calls == [(2, "cpu"), (1, "cpu"), (2, "cpu")]
    assert only_files(tmp_path / "out") == ["b.nii.gz"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_out_of_memory_on_the_gpu_finishes_the_case_on_the_cpu(monkeypatch, ct_model, tmp_path):
    from medseg.pipelines.segment_inputs import find_cases

    source = write_nifti(tmp_path / "in" / "c1.nii.gz", ct_phantom(SHAPE, 4), AFFINE)
    segment(source, ct_model, tmp_path / "reference", SegmentOptions(device="cpu"))
    options = SegmentOptions(device="cuda", inference=InferenceOptions(batch_size=2))
    segmenter = segment_module.Segmenter(ct_model, options)
    (case,), _ = find_cases(source, segmenter.modalities)
    calls = _flaky_predictor(monkeypatch, failures=2)
    with pytest.warns(RuntimeWarning, match="retrying with the model and the whole case on the CPU"):
        segmenter.segment_case(case, tmp_path / "out")
    assert calls == [(2, "cuda"), (1, "cuda"), (1, "cpu")]
    reference = np.asarray(nib.load(tmp_path / "reference" / "c1.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "out" / "c1.nii.gz").dataobj), reference)
    assert next(segmenter.model.parameters()).device.type == "cuda"  # back on the GPU for the next case
