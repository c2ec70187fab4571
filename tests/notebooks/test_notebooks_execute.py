"""The notebooks in notebooks/ are stored clean, have a parameters cell, and run top to bottom.

Each notebook is executed with nbclient in a kernel started from the Python that runs the tests (so the
kernel sees this virtual environment whatever kernel specs the machine has), with the notebook folder as
the working directory, as Jupyter does. Like papermill, the test adds a cell after the one tagged
``parameters`` that points ``output_dir`` at a temporary folder; every other parameter keeps its default,
so these tests also check that the defaults stay within the time budget (pytest-timeout). Then the files
each notebook writes are checked.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_evaluate_predictions.ipynb",
    "03_synapse_organs.ipynb",
    "04_memory.ipynb",
)
# One notebook's default run takes about a minute of compute; this bounds a run on a busy 2-core machine.
NOTEBOOK_TIMEOUT_S = 480


class _ThisPythonKernelSpecs(KernelSpecManager):
    """Kernel specs that always start ipykernel with the interpreter running the tests."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python ({sys.executable})",
            language="python",
        )


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def _parameters_index(nb: nbformat.NotebookNode) -> int:
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise AssertionError(f"expected one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def _execute(name: str, output_dir: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook with ``output_dir`` injected after its parameters cell; returns it and the seconds taken."""
    nb = _read(name)
    injected = nbformat.v4.new_code_cell(f"output_dir = {str(output_dir)!r}")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(_parameters_index(nb) + 1, injected)
    km = AsyncKernelManager(kernel_spec_manager=_ThisPythonKernelSpecs())
    client = NotebookClient(
        nb,
        km=km,
        timeout=NOTEBOOK_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and the traceback, when a cell fails
    return nb, time.perf_counter() - start


def _images_shown(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise AssertionError(f"expected a value in [0, 1], got {value}")
    return number


def test_every_notebook_is_in_the_folder():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has stored outputs"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"{name} cell {i} has execution timing metadata"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_has_one_parameters_cell_defining_output_dir(name):
    nb = _read(name)
    cell = nb.cells[_parameters_index(nb)]
    assert cell.cell_type == "code"
    assert "output_dir = " in cell.source
    assert not any(c.cell_type == "code" for c in nb.cells[: _parameters_index(nb)]), "parameters must come first"


@pytest.mark.slow
def test_quickstart_notebook_trains_segments_and_tabulates_dice(tmp_path):
    nb, seconds = _execute("01_quickstart.ipynb", tmp_path)
    rows = _csv_rows(tmp_path / "metrics.csv")
    assert {row["region"] for row in rows} == {"TC", "WT", "ET"}
    assert len(rows) == 3 * 4  # the default 4 test cases
    dice = [_fraction(row["dice"]) for row in rows]
    assert sum(dice) / len(dice) > 0.3, "the briefly trained network should clearly beat chance"
    assert (tmp_path / "run" / "model" / "weights.safetensors").is_file()
    assert (tmp_path / "dice_boxplot.png").is_file() and (tmp_path / "overlays.png").is_file()
    assert _images_shown(nb) >= 2
    print(f"01_quickstart: {seconds:.0f} s")


@pytest.mark.slow
def test_evaluate_predictions_notebook_scores_each_perturbation(tmp_path):
    nb, seconds = _execute("02_evaluate_predictions.ipynb", tmp_path)
    rows = _csv_rows(tmp_path / "metrics.csv")
    perturbation = {row["case"]: row["perturbation"] for row in rows}
    unchanged = [row for row in rows if perturbation[row["case"]] == "none"]
    assert unchanged, "the default set includes one unperturbed prediction"
    for row in unchanged:  # a prediction equal to the reference is perfect
        assert (float(row["dice"]), float(row["hd95"]), float(row["nsd"])) == (1.0, 0.0, 1.0)
    changed = [row for row in rows if perturbation[row["case"]] != "none"]
    assert any(_fraction(row["dice"]) < 1.0 for row in changed)
    assert all(math.isfinite(float(row["hd95"])) for row in rows)
    assert (tmp_path / "worst_cases.png").is_file()
    assert _images_shown(nb) >= 2
    print(f"02_evaluate_predictions: {seconds:.0f} s")


@pytest.mark.slow
def test_synapse_notebook_reports_dice_for_every_organ(tmp_path):
    nb, seconds = _execute("03_synapse_organs.ipynb", tmp_path)
    rows = _csv_rows(tmp_path / "organ_metrics.csv")
    organs = {row["region"] for row in rows}
    assert len(organs) == 13 and "liver" in organs and "spleen" in organs
    for row in rows:
        _fraction(row["dice"])
    assert (tmp_path / "organ_dice.png").is_file() and (tmp_path / "ct_overlays.png").is_file()
    assert _images_shown(nb) >= 2
    print(f"03_synapse_organs: {seconds:.0f} s")


@pytest.mark.slow
def test_memory_notebook_measures_both_modes_at_every_size(tmp_path):
    nb, seconds = _execute("04_memory.ipynb", tmp_path)
    rows = _csv_rows(tmp_path / "memory.csv")
    sizes = sorted({int(row["size"]) for row in rows})
    assert len(sizes) >= 2
    assert {(int(row["size"]), row["mode"]) for row in rows} == {(s, m) for s in sizes for m in ("reversible", "plain")}
    assert all(float(row["step_mib"]) > 0 for row in rows)
    assert (tmp_path / "memory.png").is_file()
    assert _images_shown(nb) >= 1
    print(f"04_memory: {seconds:.0f} s")
