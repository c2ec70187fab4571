"""A process killed with SIGKILL in the middle of a write loses nothing: the previous checkpoint stays loadable
and a segmentation file is either the old complete one or the new complete one, never a partial file.

A forked child writes in a loop (forked, so that it starts in milliseconds with torch already imported)
and is killed at random moments, several times in a row on the same folder.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to start the writer quickly")

ROUNDS = 6


def _kill_during(loop: Callable[[], None], delay_s: float) -> None:
    """Run ``loop`` (which never returns) in a forked child and SIGKILL it after ``delay_s`` seconds."""
    pid = os.fork()
    if pid == 0:  # child: write until killed; never return into pytest
        try:
            loop()
        finally:
            os._exit(0)
    time.sleep(delay_s)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL  # it was still writing


def _versions_of_weights() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(2_000_000, generator=generator) for _ in range(3)]  # 8 MB each


def test_killed_checkpoint_save_leaves_a_complete_loadable_checkpoint(tmp_path):
    from medseg.pipelines.checkpoint import load_checkpoint, read_manifest, save_checkpoint

    folder = tmp_path / "checkpoint_last"
    weights = _versions_of_weights()
    save_checkpoint(folder, {"w": weights[0], "version": torch.tensor([0])}, {"version": 0})
    delays = random.Random(1234)
    next_version = [1]
    debris_rounds = 0

    for _ in range(ROUNDS):
        start = next_version[0]

        def loop(start: int = start) -> None:
            version = start
            while True:
                tensors = {"w": weights[version % 3], "version": torch.tensor([version])}
                save_checkpoint(folder, tensors, {"version": version})
                version += 1

        _kill_during(loop, delays.uniform(0.05, 0.6))
        tensors, state = load_checkpoint(folder)  # must succeed after every kill
        version = state["version"]
        assert int(tensors["version"]) == version
        assert torch.equal(tensors["w"], weights[version % 3])  # one complete version, not a mixture
        committed = set(read_manifest(folder)["files"]) | {"manifest.json"}
        debris_rounds += any(p.name not in committed for p in folder.iterdir())
        next_version[0] = version + 1_000  # later rounds write versions that cannot be confused with these

    assert debris_rounds >= 1  # at least one kill landed inside a write (temporary or uncommitted files left)
    # The next ordinary save works despite the debris and removes the uncommitted data files.
    save_checkpoint(folder, {"w": weights[1], "version": torch.tensor([-1])}, {"version": -1})
    tensors, state = load_checkpoint(folder)
    assert state["version"] == -1 and torch.equal(tensors["w"], weights[1])
    visible = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert len(visible) == 3 and "manifest.json" in visible


def test_killed_segmentation_write_leaves_no_partial_nifti(tmp_path):
    from medseg.io import Geometry, load_volume, save_like
    from medseg.pipelines.evaluate import find_label_files

    shape = (96, 96, 64)
    geometry = Geometry.from_affine(np.diag([0.8, 0.8, 2.0, 1.0]), shape, "uint8")
    rng = np.random.default_rng(0)
    versions = [rng.integers(0, 4, size=shape, dtype=np.uint8) for _ in range(3)]  # poorly compressible: slow
    out = tmp_path / "out"
    target = out / "case1.nii.gz"
    save_like(versions[0], geometry, target)
    delays = random.Random(99)

    def loop() -> None:
        index = 1
        while True:
            save_like(versions[index % 3], geometry, target)
            index += 1

    for _ in range(ROUNDS):
        _kill_during(loop, delays.uniform(0.05, 0.5))
        loaded = load_volume(target).array  # complete and readable (a partial gzip would be refused)
        assert any(np.array_equal(loaded, v) for v in versions)
    leftovers = [p.name for p in out.iterdir() if p != target]
    # Killed writes can leave temporary files; they are hidden, so folder scans never take them for outputs.
    assert leftovers, "no kill landed inside a write: the test did not test anything"
    assert all(name.startswith(".case1.nii.gz.") and name.endswith(".tmp.nii.gz") for name in leftovers), leftovers
    assert list(find_label_files(out)) == ["case1"]
