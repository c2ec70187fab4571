"""Fixtures of the robustness suite: tiny random model folders, built once per session, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from robust_helpers import make_brats_model, make_ct_model


@pytest.fixture(scope="session")
def brats_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-modality BraTS 2021 model folder (sigmoid TC/WT/ET, patch 16^3)."""
    return make_brats_model(tmp_path_factory.mktemp("robust_brats_model"))


@pytest.fixture(scope="session")
def ct_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-channel CT model folder (softmax, 3 classes), resampling to 1 x 1 x 2 mm."""
    return make_ct_model(tmp_path_factory.mktemp("robust_ct_model"))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``medseg ARGS...`` in-process: ``cli(*args) -> (exit_code, stdout, stderr)``."""
    from medseg.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
