"""``medseg bench``: tables, Dice agreement, peak memory of child processes, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.cli import main
from medseg.errors import InputError
from medseg.pipelines.bench_common import markdown_table
from medseg.pipelines.bench_inference import (
    InferenceBenchConfig,
    InferenceBenchReport,
    MethodResult,
    dice_per_label,
    format_report,
)
from medseg.pipelines.bench_train import (
    TrainBenchConfig,
    TrainBenchReport,
    TrainStepResult,
    format_train_report,
    run_train_bench,
)

MACHINE = {"cpu": "Test CPU", "cores": 2, "memory_gib": 8.0, "torch": "2.x", "torch_threads": 2, "date": "today", "commit": "abc"}


def test_markdown_table_formats_numbers_and_missing_values():
    table = markdown_table(["a", "b", "c"], [[1.23456, None, "x|y"], [123.456, 7, ""]])
    assert table.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1.235 | - | x/y |", "| 123.5 | 7 |  |"]
    with pytest.raises(InputError, match="2 cells"):
        markdown_table(["a", "b", "c"], [[1, 2]])


def test_inference_report_prints_speed_ups_relative_to_monai_and_dice_per_label():
    methods = [
        MethodResult("monai", "(a)", seconds=80.0, own_seconds=90.0, peak_rss_mib=1500.0),
        MethodResult("nnunet", "(b)", seconds=40.0, own_seconds=45.0, peak_rss_mib=1200.0, dice={1: 0.99, 2: 0.995, 4: 1.0}),
        MethodResult("medseg", "(c)", seconds=20.0, own_seconds=30.0, peak_rss_mib=1000.0, dice={1: 0.991, 2: 0.992, 4: 0.993}),
    ]
    report = InferenceBenchReport(InferenceBenchConfig(), MACHINE, "random", (128, 128, 128), (145, 171, 129), 2.0, methods, [])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in format_report(report).splitlines() if line.startswith("| (")}
    assert "| 4.000 |" in rows["(c)"] and "| 3.000 |" in rows["(c)"]  # 80 / 20 in-process, 90 / 30 alone
    assert "0.9910 / 0.9920 / 0.9930" in rows["(c)"]
    assert "reference" in rows["(a)"]
    assert "weights: random" in format_report(report)


def test_dice_per_label_counts_each_label_and_agrees_when_both_lack_it():
    reference = np.array([0, 1, 1, 2, 2, 2, 0, 0])
    ours = np.array([0, 1, 0, 2, 2, 2, 2, 0])
    scores = dice_per_label(ours, reference)
    assert scores[1] == pytest.approx(2 * 1 / 3)
    assert scores[2] == pytest.approx(2 * 3 / 7)
    assert scores[4] == 1.0


def test_train_report_has_one_row_per_network_and_shows_errors():
    results = [
        TrainStepResult("unet", 5_650_000, 2.0, 442_368.0, 900.0, 500.0, 1.0),
        TrainStepResult("mamba_unet", error="exit code 2: medseg bench: error: unknown network"),
    ]
    text = format_train_report(TrainBenchReport(TrainBenchConfig(size=96), MACHINE, results))
    assert "| unet | 5.65M | 2.000 | 442,368 | 900.0 | 500.0 |" in text
    assert "| mamba_unet | - | - | - | - | - |" in text and "unknown network" in text


def test_peak_memory_of_a_child_process_is_its_own_not_its_parents():
    # getrusage's ru_maxrss of a child starts at the parent's resident size; VmHWM does not.
    import subprocess
    import sys

    big = np.ones(300 * 1024 * 1024 // 8)  # the parent holds 300 MiB while the child starts
    code = "from medseg.pipelines.bench_common import peak_rss_mib; print(peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", check=True).stdout)
    assert 1.0 < child < 150.0
    assert big.sum() > 0


def test_a_network_that_fails_is_reported_as_an_error_row():
    report = run_train_bench(TrainBenchConfig(networks=("no_such_network",), size=16, steps=1), log=lambda line: None)
    (row,) = report.results
    assert row.network == "no_such_network" and row.voxels_per_second is None
    assert "no_such_network" in row.error


def test_bench_inference_runs_end_to_end_on_a_tiny_case(tmp_path, capsys):
    code = main(["bench", "inference", "--quick", "--shape", "32", "36", "24", "--no-own-process", "--threads", "1",
                 "--workdir", str(tmp_path / "w"), "--json", str(tmp_path / "r.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "(a) MONAI" in out and "(b) nnU-Net" in out and "(c) medseg" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert [m["method"] for m in report["methods"]] == ["monai", "nnunet", "medseg"]
    assert all(m["error"] is None and m["seconds"] > 0 for m in report["methods"])
    assert set(report["methods"][2]["dice"]) == {"1", "2", "4"}


def test_inference_report_on_a_gpu_shows_peak_gpu_memory_and_the_device():
    methods = [
        MethodResult("monai", "(a)", seconds=0.4, own_seconds=0.4, peak_rss_mib=1600.0, peak_gpu_mib=1300.0),
        MethodResult("nnunet", "(b)", seconds=1.4, own_seconds=1.8, peak_rss_mib=1700.0, peak_gpu_mib=724.0),
        MethodResult("medseg", "(c)", seconds=0.7, own_seconds=1.0, peak_rss_mib=1800.0, peak_gpu_mib=650.0),
    ]
    report = InferenceBenchReport(InferenceBenchConfig(), {**MACHINE, "gpu": "Test GPU"}, "random", (128,) * 3,
                                  (145, 171, 129), 2.0, methods, [], device="cuda")
    text = format_report(report)
    assert "device cuda (Test GPU)" in text and "peak GPU alone (MiB)" in text
    assert "| 650.0 |" in text


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_bench_inference_on_cuda_without_a_gpu_is_refused_with_the_alternative(capsys):
    assert main(["bench", "inference", "--quick", "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_levers_are_refused_on_the_gpu():
    from medseg.errors import ConfigError

    with pytest.raises(ConfigError, match="--levers"):
        InferenceBenchConfig(device="cuda", levers=True)
