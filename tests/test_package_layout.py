"""The package layout promised by the design card: one `medseg` namespace, usable from any directory."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import medseg

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("module", "folder"),
    [
        ("medseg.networks", "networks"),
        ("medseg.transforms", "transforms"),
        ("medseg.pipelines", "pipelines"),
        ("medseg.kernels", "kernels"),
    ],
)
def test_subpackage_maps_to_top_level_folder(module: str, folder: str) -> None:
    mod = importlib.import_module(module)
    assert Path(mod.__file__).resolve().parent == REPO / folder


@pytest.mark.parametrize("name", ["networks", "transforms", "pipelines", "kernels"])
def test_folders_are_not_top_level_import_names(name: str, tmp_path: Path) -> None:
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({name!r}) is None else 1)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode == 0, f"{name!r} is importable as a top-level package"


def test_cli_runs_from_another_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "medseg", "--version"], cwd=tmp_path, capture_output=True, encoding="utf-8", errors="replace", check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"medseg {medseg.__version__}"


def test_importing_medseg_does_not_import_torch(tmp_path: Path) -> None:
    code = "import sys, medseg, medseg.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode == 0, "importing medseg or building the CLI imported torch"


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from medseg.cli import SUBCOMMANDS, main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out
