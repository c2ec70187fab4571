"""atomic_write: all or nothing, never a temporary file left behind."""

from __future__ import annotations

import os

import pytest

from medseg.io import atomic_write, atomic_write_bytes, atomic_write_text
from medseg.io.atomic import full_suffix


def test_exception_inside_the_block_leaves_no_file_and_no_temp(tmp_path):
    target = tmp_path / "result.nii.gz"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_write_intact(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old,content\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old,content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_temp_file_is_in_the_same_folder_with_the_same_suffix(tmp_path):
    target = tmp_path / "case_001.t1.nii.gz"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["case_001.t1.nii.gz"]


def test_success_replaces_an_existing_file(tmp_path):
    target = atomic_write_text(tmp_path / "a.json", "{}")
    atomic_write_bytes(target, b'{"x": 1}')
    assert target.read_bytes() == b'{"x": 1}'


def test_missing_parent_folders_are_created(tmp_path):
    target = atomic_write_text(tmp_path / "a" / "b" / "note.txt", "hello")
    assert target.read_text() == "hello"


def test_written_file_gets_ordinary_permissions(tmp_path):
    target = atomic_write_text(tmp_path / "perm.txt", "x")
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    assert os.stat(target).st_mode == os.stat(reference).st_mode


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("a.nii.gz", ".nii.gz"), ("case.001.nii", ".nii"), ("x.json", ".json"), ("README", ""), ("b.tar.gz", ".tar.gz")],
)
def test_full_suffix_keeps_compression_with_its_format(name, suffix):
    assert full_suffix(name) == suffix
