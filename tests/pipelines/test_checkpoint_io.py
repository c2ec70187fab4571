"""Checkpoints: safetensors + JSON without pickle, atomic saves, refusal of incomplete or mismatched files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.pipelines import checkpoint
from medseg.pipelines.checkpoint import MANIFEST_NAME, checkpoint_exists, load_checkpoint, save_checkpoint
from medseg.pipelines.state_io import capture_rng_state, join_tensors, restore_rng_state, split_tensors


def _trained_optimizer(kind: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    if kind == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-3)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 3)).square().mean().backward()
        optimizer.step()
    return model, optimizer


def _state(value: int) -> tuple[dict, dict]:
    return {"weights": torch.full((3, 2), float(value)), "step": torch.tensor(value)}, {"epoch": value, "name": "x"}


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_optimizer_state_round_trips_exactly(tmp_path, kind):
    model, optimizer = _trained_optimizer(kind)
    structure, tensors = split_tensors(optimizer.state_dict(), "optimizer")
    save_checkpoint(tmp_path / "ckpt", tensors, {"optimizer": structure})
    loaded_tensors, state = load_checkpoint(tmp_path / "ckpt")
    restored = join_tensors(state["optimizer"], loaded_tensors)

    twin, twin_optimizer = _trained_optimizer(kind)
    twin_optimizer.load_state_dict(restored)
    assert twin_optimizer.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    # One more identical step from both must give identical parameters.
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        torch.manual_seed(1)
        opt.zero_grad()
        m(torch.randn(5, 3)).square().mean().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_rng_states_round_trip(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    structure, tensors = capture_rng_state()
    save_checkpoint(tmp_path / "ckpt", tensors, {"rng": structure})
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    loaded, state = load_checkpoint(tmp_path / "ckpt")
    restore_rng_state(state["rng"], loaded)
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])
    assert [random.random() for _ in range(4)] == expected[2]


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path):
    tensors, state = _state(1)
    save_checkpoint(tmp_path / "ckpt", tensors, state)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names[0] == MANIFEST_NAME
    assert [n.rsplit(".", 1)[-1] for n in names] == ["json", "json", "safetensors"]
    loaded, loaded_state = load_checkpoint(tmp_path / "ckpt")
    assert loaded_state == state
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize("fail_at", ["tensors", "state", "manifest"])
def test_exception_inside_save_keeps_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, *_state(1))
    real_tensors, real_text = checkpoint._write_tensors, checkpoint._write_text

    def failing_tensors(path, tensors, checkpoint_id):
        if fail_at == "tensors":
            path.write_bytes(b"half a file")  # a partial write next to the real files
            raise OSError("disk full")
        real_tensors(path, tensors, checkpoint_id)

    def failing_text(path, text):
        if path.name.startswith("state-") and fail_at == "state" or path.name == MANIFEST_NAME and fail_at == "manifest":
            raise OSError("disk full")
        real_text(path, text)

    monkeypatch.setattr(checkpoint, "_write_tensors", failing_tensors)
    monkeypatch.setattr(checkpoint, "_write_text", failing_text)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(folder, *_state(2))
    tensors, state = load_checkpoint(folder)
    assert state["epoch"] == 1 and torch.equal(tensors["weights"], torch.full((3, 2), 1.0))

    monkeypatch.undo()
    save_checkpoint(folder, *_state(3))
    assert load_checkpoint(folder)[1]["epoch"] == 3
    assert len(list(folder.iterdir())) == 3  # leftovers of the failed save are cleaned up


def test_incomplete_or_mismatched_checkpoints_are_refused(tmp_path):
    folder = tmp_path / "ckpt"
    with pytest.raises(InputError, match="folder missing"):
        load_checkpoint(folder)
    save_checkpoint(folder, *_state(1))
    manifest = json.loads((folder / MANIFEST_NAME).read_text())

    state_file = folder / manifest["state"]
    original = state_file.read_text()
    state_file.write_text(original.replace('"epoch": 1', '"epoch": 7'))
    with pytest.raises(InputError, match="does not match"):
        load_checkpoint(folder)
    state_file.write_text(original)

    (folder / manifest["tensors"]).unlink()
    with pytest.raises(InputError, match="missing"):
        load_checkpoint(folder)

    save_checkpoint(folder, *_state(2))
    (folder / MANIFEST_NAME).unlink()
    assert not checkpoint_exists(folder)
    with pytest.raises(InputError, match="incomplete"):
        load_checkpoint(folder)


def test_pair_from_different_saves_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    save_checkpoint(a, *_state(1))
    save_checkpoint(b, *_state(2))
    manifest_a = json.loads((a / MANIFEST_NAME).read_text())
    manifest_b = json.loads((b / MANIFEST_NAME).read_text())
    # Put b's tensors under a's name and fix the manifest digest: the embedded ids still disagree.
    (a / manifest_a["tensors"]).write_bytes((b / manifest_b["tensors"]).read_bytes())
    manifest_a["files"][manifest_a["tensors"]] = manifest_b["files"][manifest_b["tensors"]]
    (a / MANIFEST_NAME).write_text(json.dumps(manifest_a))
    with pytest.raises(InputError, match="different saves"):
        load_checkpoint(a)


def test_state_with_unsupported_objects_is_rejected():
    with pytest.raises(TypeError, match="without pickle"):
        split_tensors({"fn": object()}, "x")
    structure, tensors = split_tensors({0: (torch.ones(2), 1.5, None), 1: [np.float32(2.0)]}, "s")
    json.dumps(structure)
    rebuilt = join_tensors(structure, tensors)
    assert isinstance(rebuilt[0], tuple) and torch.equal(rebuilt[0][0], torch.ones(2)) and rebuilt[1] == [2.0]
