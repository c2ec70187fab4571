"""Untrusted model folders and checkpoints cannot run code: a pickle where weights belong is refused with no
side effect, stray ``.pt``/``.pth``/``.pkl`` files are never opened, a damaged ``config.json`` is a clear
error. Every test also replaces the unpickling entry points by tripwires, so merely trying to unpickle fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from robust_helpers import ct_phantom, only_files, write_nifti

from medseg.errors import InputError


class _Payload:
    """Unpickling this creates the marker file: the side effect an attacker would want."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every unpickling entry point record the attempt and fail."""
    attempts: list[str] = []

    def tripwire(name: str):
        def refuse(*args, **kwargs):
            attempts.append(name)
            raise AssertionError(f"{name} was called: medseg must never unpickle")

        return refuse

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, tripwire(f"{module.__name__}.{name}"))
    return attempts


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    return write_nifti(tmp_path / "in" / "c1.nii.gz", ct_phantom((16, 16, 10)), np.diag([1.5, 1.5, 2.5, 1.0]))


def _copy_model(ct_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ct_model, tmp_path / "model"))


def _torch_zip_pickle(path: Path, marker: Path) -> None:
    real_save = torch.save  # torch.save itself is fine to call; only loading is forbidden
    real_save({"state_dict": _Payload(marker)}, path)


WEIGHT_REPLACEMENTS = {
    "raw-pickle": lambda path, marker: path.write_bytes(pickle.dumps(_Payload(marker))),
    "torch-save-archive": _torch_zip_pickle,
    "random-bytes": lambda path, marker: path.write_bytes(np.random.default_rng(0).bytes(4096)),
    "empty": lambda path, marker: path.write_bytes(b""),
    "huge-header-length": lambda path, marker: path.write_bytes((2**62).to_bytes(8, "little") + b"{}"),
}


@pytest.mark.parametrize("replacement", sorted(WEIGHT_REPLACEMENTS))
def test_weights_that_are_not_safetensors_are_refused_without_side_effect(
    replacement, ct_model, scan, cli, tmp_path, tripwires
):
    model = _copy_model(ct_model, tmp_path)
    marker = tmp_path / "pwned"
    WEIGHT_REPLACEMENTS[replacement](model / "weights.safetensors", marker)
    code, _, err = cli("segment", scan, "--model", model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert "weights.safetensors" in err and err.count("\n") == 1
    assert not marker.exists() and tripwires == []
    assert only_files(tmp_path / "out") == []


def test_stray_pickles_beside_the_weights_are_never_opened(ct_model, scan, cli, tmp_path, tripwires):
    model = _copy_model(ct_model, tmp_path)
    marker = tmp_path / "pwned"
    for name in ("model.pt", "model.pth", "checkpoint.pkl", "weights.bin"):
        (model / name).write_bytes(pickle.dumps(_Payload(marker)))
    code, _, err = cli("segment", scan, "--model", model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 0, err
    assert not marker.exists() and tripwires == []
    assert only_files(tmp_path / "out") == ["c1.nii.gz"]


def _config_with(ct_model: Path, **changes) -> bytes:
    return json.dumps({**json.loads((ct_model / "config.json").read_text()), **changes}).encode()


GARBAGE_CONFIGS = {
    "binary": lambda m, marker: b"\x00\xff\xfe\x80 not text",
    "pickle": lambda m, marker: pickle.dumps(_Payload(marker)),
    "json-list": lambda m, marker: b"[1, 2, 3]",
    "json-null": lambda m, marker: b"null",
    "nan-network": lambda m, marker: b'{"network": NaN}',
    "unknown-option": lambda m, marker: _config_with(m, network_kwargs={"__class__": "os.system"}),
    "negative-window": lambda m, marker: _config_with(m, patch_size=[-16, 16, 16]),
    "huge-window": lambda m, marker: _config_with(m, patch_size=[10**9, 16, 16]),
    "bad-preset-option": lambda m, marker: _config_with(
        m, preprocessing={"preset": "synapse", "config": {"spacing": "x"}}
    ),
    "unknown-preset": lambda m, marker: _config_with(m, preprocessing={"preset": "exec", "config": {}}),
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE_CONFIGS))
def test_damaged_config_json_is_one_clear_error(garbage, ct_model, scan, cli, tmp_path, tripwires):
    model = _copy_model(ct_model, tmp_path)
    marker = tmp_path / "pwned"
    (model / "config.json").write_bytes(GARBAGE_CONFIGS[garbage](ct_model, marker))
    code, _, err = cli("segment", scan, "--model", model, "--output", tmp_path / "out", "--device", "cpu")
    assert code == 2
    assert err.count("\n") == 1 and ("config.json" in err or str(model) in err), err
    assert not marker.exists() and tripwires == []
    assert only_files(tmp_path / "out") == []


def test_deeply_nested_config_json_is_an_input_error(ct_model, tmp_path):
    from medseg.pipelines.model_folder import load_model_folder

    model = _copy_model(ct_model, tmp_path)
    (model / "config.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InputError, match="config.json"):
        load_model_folder(model)


@contextlib.contextmanager
def _address_space_limited(extra_bytes: int):
    """Within the block, reserving more than ``extra_bytes`` of new address space fails at once (Linux)."""
    import resource

    with open("/proc/self/status") as handle:
        used = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc and RLIMIT_AS")
def test_config_declaring_absurd_channels_is_refused_before_building_the_network(ct_model, tmp_path):
    from medseg.pipelines.model_folder import load_model_folder

    model = _copy_model(ct_model, tmp_path)
    (model / "config.json").write_bytes(_config_with(ct_model, in_channels=10**9, modalities=[]))
    with _address_space_limited(2 * 2**30), pytest.raises(InputError, match="weights.safetensors"):
        load_model_folder(model)


def test_checkpoint_whose_tensors_are_a_pickle_is_refused_even_with_a_matching_manifest(tmp_path, tripwires):
    from medseg.pipelines.checkpoint import MANIFEST_NAME, load_checkpoint, save_checkpoint

    folder = save_checkpoint(tmp_path / "checkpoint_last", {"w": torch.ones(3)}, {"epoch": 1})
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    marker = tmp_path / "pwned"
    tensors = folder / manifest["tensors"]
    tensors.write_bytes(pickle.dumps(_Payload(marker)))
    data = tensors.read_bytes()  # the attacker also rewrites the manifest to match
    manifest["files"][manifest["tensors"]] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="cannot read"):
        load_checkpoint(folder)
    assert not marker.exists() and tripwires == []
