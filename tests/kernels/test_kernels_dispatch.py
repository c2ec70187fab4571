"""Backend choice: auto falls back to torch on CPU, explicit cupy errors clearly, CuPy stays optional."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from medseg.errors import ConfigError, InputError, MissingDependencyError
from medseg.kernels import dispatch, resolve_backend


def _no_cupy():
    raise MissingDependencyError("the 'cupy' kernel backend needs the optional package 'cupy' (simulated)")


def test_auto_picks_torch_for_cpu_tensors():
    x = torch.zeros(2, 3)
    assert resolve_backend("auto", x, None, x) == "torch"


def test_auto_picks_torch_without_tensors():
    assert resolve_backend("auto") == "torch"


def test_torch_backend_is_always_torch():
    assert resolve_backend("torch", torch.zeros(1)) == "torch"


def test_cupy_backend_on_cpu_tensors_names_the_device(monkeypatch):
    monkeypatch.setattr(dispatch, "import_cupy", lambda: None)
    with pytest.raises(InputError, match="CUDA device.*cpu.*backend='torch'"):
        resolve_backend("cupy", torch.zeros(2))


def test_cupy_backend_without_cupy_raises_missing_dependency(monkeypatch):
    monkeypatch.setattr(dispatch, "import_cupy", _no_cupy)
    with pytest.raises(MissingDependencyError, match="cupy"):
        resolve_backend("cupy", torch.zeros(2))


def test_auto_without_cupy_still_works(monkeypatch):
    monkeypatch.setattr(dispatch, "import_cupy", _no_cupy)
    assert resolve_backend("auto", torch.zeros(2)) == "torch"


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown kernel backend 'cuda'; valid: auto, cupy, torch"):
        resolve_backend("cuda", torch.zeros(1))


def test_ops_reject_unknown_backend():
    from medseg.kernels import coupling_forward

    with pytest.raises(ConfigError, match="valid: auto, cupy, torch"):
        coupling_forward(torch.zeros(3), torch.zeros(3), backend="tourch")


def test_auto_ops_run_on_cpu_when_cupy_cannot_be_imported(monkeypatch):
    from medseg.kernels import coupling_forward, depthwise_conv3d, selective_scan

    monkeypatch.setattr(dispatch, "import_cupy", _no_cupy)
    x = torch.randn(1, 2, 4, 4, 4)
    assert depthwise_conv3d(x, torch.randn(2, 1, 3, 3, 3)).shape == x.shape
    assert torch.equal(coupling_forward(x, x), 2 * x)
    u = torch.randn(1, 2, 5)
    assert selective_scan(u, u, -torch.ones(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5)).shape == u.shape


def test_importing_kernels_does_not_need_cupy():
    # A fresh interpreter where `import cupy` fails: the import must succeed and asking for the backend
    # must say how to install CuPy.
    code = """
import sys
sys.modules["cupy"] = None
import torch
import medseg.kernels as k
from medseg.errors import MissingDependencyError
try:
    k.resolve_backend("cupy", torch.zeros(1))
except MissingDependencyError as exc:
    assert "pip install cupy" in str(exc), exc
else:
    raise SystemExit("no MissingDependencyError")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
