"""Training checkpoints without pickle: tensors in safetensors, structure in JSON, a manifest written last.

A checkpoint is a folder (e.g. ``RUN_DIR/checkpoint_last``) holding::

    tensors-<id>.safetensors   every tensor (model, optimizer state, RNG states), safetensors format
    state-<id>.json            everything else (epoch, step, optimizer param groups, schedule, config, ...)
    manifest.json              names the pair of files above with their sizes and SHA-256 digests

Saving writes the two data files under a fresh ``<id>`` (each atomically), then replaces ``manifest.json``
atomically, and only then deletes the files of the previous checkpoint. Until the new manifest is in place,
the old manifest still names the old, untouched pair: an exception or a crash at any point of a save leaves
the previous checkpoint loadable. The loader refuses a folder without a manifest, a file whose size or
digest differs from the manifest, and a pair whose embedded ids disagree.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medseg.errors import InputError
from medseg.io.atomic import atomic_write, atomic_write_text

CHECKPOINT_FORMAT = "medseg-checkpoint"
CHECKPOINT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_TENSOR_PREFIX = "tensors-"
_STATE_PREFIX = "state-"


def save_checkpoint(folder: str | os.PathLike, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically, replacing the one in ``folder`` (if any) only once complete.

    Args:
        folder: the checkpoint folder (created if missing).
        tensors: name -> tensor; each is stored as a contiguous CPU copy.
        state: JSON-able structure (no tensors; see :mod:`medseg.pipelines.state_io`).

    Returns:
        The folder path.

    Raises:
        TypeError: ``state`` is not JSON-serialisable (nothing on disk changes).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_id = secrets.token_hex(8)
    state_text = json.dumps({"checkpoint_id": checkpoint_id, "state": state}, indent=1) + "\n"
    cpu_tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}

    tensor_name = f"{_TENSOR_PREFIX}{checkpoint_id}.safetensors"
    state_name = f"{_STATE_PREFIX}{checkpoint_id}.json"
    _write_tensors(folder / tensor_name, cpu_tensors, checkpoint_id)
    _write_text(folder / state_name, state_text)
    files = {name: _describe(folder / name) for name in (tensor_name, state_name)}
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "checkpoint_id": checkpoint_id,
        "tensors": tensor_name,
        "state": state_name,
        "files": files,
    }
    # The manifest is the commit point: written last, atomically.
    _write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    _remove_stale(folder, keep={tensor_name, state_name})
    return folder


def load_checkpoint(
    folder: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Args:
        folder: the checkpoint folder.
        device: where to place the tensors.

    Returns:
        ``(tensors, state)``.

    Raises:
        InputError: no checkpoint, an incomplete one (missing manifest or file), or files that do not match
            the manifest (size, digest or id).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"checkpoint {folder} is incomplete: {name} named by {MANIFEST_NAME} is missing")
        actual = _describe(path)
        if actual != expected:
            raise InputError(
                f"checkpoint {folder}: {name} does not match {MANIFEST_NAME} (size/digest differ); "
                "the file was modified or only partly written"
            )
    tensor_path = folder / manifest["tensors"]
    state_path = folder / manifest["state"]
    try:
        with safe_open(str(tensor_path), framework="pt") as handle:
            tensor_id = (handle.metadata() or {}).get("checkpoint_id")
        tensors = load_file(str(tensor_path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"checkpoint {folder}: cannot read {tensor_path.name}: {exc}") from exc
    try:
        payload = json.loads(state_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"checkpoint {folder}: {state_path.name} is not valid JSON: {exc}") from exc
    ids = {manifest["checkpoint_id"], tensor_id, payload.get("checkpoint_id")}
    if len(ids) != 1:
        raise InputError(f"checkpoint {folder}: the manifest, tensors and state belong to different saves")
    return tensors, payload["state"]


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check the manifest of a checkpoint folder.

    Args:
        folder: the checkpoint folder.

    Returns:
        The manifest.

    Raises:
        InputError: the folder or its manifest is missing or not a medseg checkpoint manifest.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise InputError(f"no checkpoint at {folder} (folder missing)")
    if not path.is_file():
        raise InputError(f"checkpoint {folder} is incomplete: {MANIFEST_NAME} is missing (a save was interrupted?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"checkpoint manifest {path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a medseg checkpoint manifest")
    if manifest.get("version") != CHECKPOINT_VERSION:
        raise InputError(
            f"{path}: checkpoint version {manifest.get('version')!r} is not supported (expected {CHECKPOINT_VERSION})"
        )
    for key in ("checkpoint_id", "tensors", "state", "files"):
        if key not in manifest:
            raise InputError(f"{path}: manifest lacks {key!r}")
    if set(manifest["files"]) != {manifest["tensors"], manifest["state"]}:
        raise InputError(f"{path}: manifest file list does not match its tensors/state entries")
    return manifest


def checkpoint_exists(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a committed checkpoint (a manifest); its files are verified only on load.

    Args:
        folder: the checkpoint folder.
    """
    return (Path(folder) / MANIFEST_NAME).is_file()


def _write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], checkpoint_id: str) -> None:
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata={"checkpoint_id": checkpoint_id})


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _describe(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Delete data files of earlier (or failed) saves; only names this module writes are touched."""
    for path in folder.iterdir():
        name = path.name
        ours = (name.startswith(_TENSOR_PREFIX) and name.endswith(".safetensors")) or (
            name.startswith(_STATE_PREFIX) and name.endswith(".json")
        )
        if ours and name not in keep and path.is_file():
            path.unlink(missing_ok=True)
