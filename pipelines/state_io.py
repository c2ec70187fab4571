"""Split training state into tensors (for safetensors) and plain structure (for JSON), and back, without pickle.

PyTorch ``state_dict()`` objects mix tensors with Python scalars, tuples and integer-keyed dicts (an
optimizer's ``state`` is keyed by parameter index). :func:`split_tensors` replaces every tensor by a
reference ``{"__tensor__": key}`` and collects the tensors under those keys; integer keys and tuples are
tagged so that :func:`join_tensors` rebuilds exactly the original structure. Random number generator states
(torch, CUDA, numpy, Python) are captured and restored the same way.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from medseg.errors import InputError

TENSOR_TAG = "__tensor__"
TUPLE_TAG = "__tuple__"
INT_KEYS_TAG = "__int_keys__"
_TAGS = (TENSOR_TAG, TUPLE_TAG, INT_KEYS_TAG)


def split_tensors(obj: Any, prefix: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """Separate the tensors of a nested structure from the rest.

    Args:
        obj: nested dicts (string or integer keys), lists, tuples, tensors, and JSON scalars
            (``None``, bool, int, float, str); numpy scalars are converted to Python ones.
        prefix: key prefix for the collected tensors, e.g. ``"optimizer"``.

    Returns:
        ``(structure, tensors)``: the JSON-able structure with ``{"__tensor__": key}`` in place of each tensor,
        and ``key -> tensor`` (detached, contiguous CPU copies).

    Raises:
        TypeError: a value that has no JSON or tensor representation (a bug in the caller, not user input).
    """
    tensors: dict[str, torch.Tensor] = {}
    structure = _split(obj, prefix, tensors)
    return structure, tensors


def join_tensors(structure: Any, tensors: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Any:
    """Rebuild the nested structure that :func:`split_tensors` split.

    Args:
        structure: the JSON structure.
        tensors: key -> tensor, as loaded from safetensors.
        source: name of the file the data came from, for error messages.

    Returns:
        The original nested structure with tensors, tuples and integer keys restored.

    Raises:
        InputError: a referenced tensor is missing.
    """
    if isinstance(structure, dict):
        if set(structure) == {TENSOR_TAG}:
            key = structure[TENSOR_TAG]
            if key not in tensors:
                raise InputError(f"{source}: tensor {key!r} is referenced but missing")
            return tensors[key]
        if set(structure) == {TUPLE_TAG}:
            return tuple(join_tensors(item, tensors, source) for item in structure[TUPLE_TAG])
        if set(structure) == {INT_KEYS_TAG}:
            return {int(key): join_tensors(item, tensors, source) for key, item in structure[INT_KEYS_TAG].items()}
        return {key: join_tensors(item, tensors, source) for key, item in structure.items()}
    if isinstance(structure, list):
        return [join_tensors(item, tensors, source) for item in structure]
    return structure


def capture_rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The global random states of torch (CPU and every initialised CUDA device), numpy and Python.

    Returns:
        ``(structure, tensors)``: numpy and Python states as JSON, torch states as ``uint8`` tensors under
        ``rng.torch`` and ``rng.cuda.<i>``.
    """
    tensors = {"rng.torch": torch.get_rng_state()}
    n_cuda = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
            n_cuda += 1
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    structure = {
        "cuda_devices": n_cuda,
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": [int(v) for v in np_state["state"]["key"]],
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }
    return structure, tensors


def restore_rng_state(structure: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """Restore what :func:`capture_rng_state` captured.

    CUDA states are restored only when CUDA is available (a CPU resume of a GPU run keeps the CPU states).

    Args:
        structure: the JSON part.
        tensors: the tensor part.
    """
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    n_cuda = int(structure.get("cuda_devices", 0))
    if n_cuda and torch.cuda.is_available():
        for index in range(min(n_cuda, torch.cuda.device_count())):
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{index}"].to(torch.uint8), device=index)
    np_part = structure["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_part["bit_generator"],
            "state": {"key": np.asarray(np_part["key"], dtype=np.uint32), "pos": np_part["pos"]},
            "has_gauss": np_part["has_gauss"],
            "gauss": np_part["gauss"],
        }
    )
    py_part = structure["python"]
    random.setstate((py_part["version"], tuple(py_part["internal"]), py_part["gauss_next"]))


def _split(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        if key in tensors:
            raise TypeError(f"duplicate tensor key {key!r}")
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {TENSOR_TAG: key}
    if isinstance(obj, Mapping):
        keys = list(obj)
        if keys and all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            return {INT_KEYS_TAG: {str(k): _split(obj[k], f"{key}.{k}", tensors) for k in keys}}
        if not all(isinstance(k, str) for k in keys):
            raise TypeError(f"{key}: dict keys must be all strings or all integers, got {keys!r}")
        if len(keys) == 1 and keys[0] in _TAGS:
            raise TypeError(f"{key}: the key {keys[0]!r} is reserved")
        return {k: _split(v, f"{key}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {TUPLE_TAG: [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{key}: cannot store a {type(obj).__name__} without pickle")
