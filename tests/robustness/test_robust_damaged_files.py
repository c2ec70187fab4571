"""Damaged inputs through ``medseg segment``: one line naming the file, exit 2, nothing written; header bombs
are refused before any voxel memory exists (peak memory measured in a separate process).

The file-level refusals themselves are tested in tests/io/test_io_bad_inputs.py; here the same damage goes
through the whole command, alone and inside a folder run.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from robust_helpers import ct_phantom, only_files, write_nifti

SHAPE = (20, 20, 12)
AFFINE = np.diag([1.5, 1.5, 2.5, 1.0])


def _good(path: Path, seed: int = 0) -> Path:
    return write_nifti(path, ct_phantom(SHAPE, seed), AFFINE)


def _truncated(path: Path) -> Path:
    raw = _good(path).read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _corrupt(path: Path) -> Path:
    raw = bytearray(_good(path).read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 16] = bytes(255 - b for b in raw[middle : middle + 16])  # size trailer intact
    path.write_bytes(bytes(raw))
    return path


def _bomb_bytes(shape: tuple[int, ...]) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    return header.binaryblock + bytes(4) + bytes(64)


def _bomb(path: Path) -> Path:
    path.write_bytes(gzip.compress(_bomb_bytes((32767, 32767, 32767))))
    return path


def _text(path: Path) -> Path:
    path.write_bytes(gzip.compress(b"patient notes, certainly not an image\n" * 40))
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


DAMAGE = {
    "truncated": (_truncated, r"truncated or corrupt"),
    "corrupt": (_corrupt, r"corrupt"),
    "bomb": (_bomb, r"32767, 32767, 32767.*more than the limit"),
    "text": (_text, r"not a NIfTI image"),
    "empty": (_empty, r"not gzip data"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_single_file_exits_2_with_one_line_naming_it(damage, ct_model, cli, tmp_path):
    make, problem = DAMAGE[damage]
    (tmp_path / "in").mkdir()
    source = make(tmp_path / "in" / f"{damage}.nii.gz")
    out = tmp_path / "out"
    code, _, err = cli("segment", source, "--model", ct_model, "--output", out, "--device", "cpu")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert source.name in lines[0]
    assert re.search(problem, lines[0]), lines[0]
    assert only_files(out) == []


def test_damaged_files_in_a_folder_run_fail_alone(ct_model, cli, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _good(folder / "good.nii.gz")
    for damage, (make, _) in DAMAGE.items():
        make(folder / f"{damage}.nii.gz")
    out = tmp_path / "out"
    code, stdout, err = cli("segment", folder, "--model", ct_model, "--output", out, "--device", "cpu")
    assert code == 1
    assert only_files(out) == ["good.nii.gz"]
    for damage in DAMAGE:
        assert f"{damage}: FAILED: " in err
    assert f"{len(DAMAGE)} case(s) failed" in err
    assert nib.load(out / "good.nii.gz").shape == SHAPE


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from medseg.errors import InputError
    from medseg.io import load_volume

    def vm_bytes():
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    load_volume(sys.argv[1])  # warm up: every import and code path of a normal load
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # From here on, reserving 256 MB more address space fails at once (even without touching it).
    limit = vm_bytes() + 256 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    results = {}
    for path in sys.argv[2:]:
        try:
            load_volume(path)
            results[path] = "loaded"
        except InputError as exc:
            results[path] = "InputError: " + str(exc)
        except MemoryError as exc:
            results[path] = "MemoryError"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"results": results, "peak_growth_kb": after - before}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read the address space size")
def test_header_bombs_are_refused_before_allocation_in_bounded_memory(tmp_path):
    small = _good(tmp_path / "small.nii.gz")
    bombs = {
        tmp_path / "bomb.nii": _bomb_bytes((32767, 32767, 32767)),
        tmp_path / "bomb.nii.gz": gzip.compress(_bomb_bytes((32767, 32767, 32767))),
        # under the voxel cap (1e9 voxels, 4 GB of float32) but far more than the file holds
        tmp_path / "liar.nii.gz": gzip.compress(_bomb_bytes((1000, 1000, 1000))),
        tmp_path / "liar.nii": _bomb_bytes((1000, 1000, 1000)),
    }
    for path, payload in bombs.items():
        path.write_bytes(payload)
        assert path.stat().st_size < 600
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(small), *map(str, bombs)],
        capture_output=True,
        encoding="utf-8", errors="replace",
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    for path in bombs:
        message = report["results"][str(path)]
        assert message.startswith("InputError: "), (path.name, message)
        assert path.name in message
    assert "more than the limit" in report["results"][str(tmp_path / "bomb.nii.gz")]
    assert "truncated or corrupt" in report["results"][str(tmp_path / "liar.nii.gz")]
    assert report["peak_growth_kb"] < 20 * 1024  # peak RSS grew by less than 20 MB over a normal load
