"""``medseg bench train``: speed and peak memory of one training step per network, on the CPU.

For each network (``medseg.networks.create(name, 3, 4, 3)``, default variant) a fresh process builds the
network, an AdamW optimiser and a random batch ``(1, 4, S, S, S)`` with random TC/WT/ET region targets,
runs one untimed warm-up step, then ``steps`` timed steps of forward, medseg's training loss (Dice + BCE,
deep supervision aware), backward and optimiser step. It reports voxels per second (``S^3`` voxels per
step over the mean step time), the peak resident memory of the process, and the peak minus the resident
memory just before the first step (what the step itself adds). A network that fails to build or to run is
reported with its error and the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import ConfigError
from medseg.pipelines.bench_common import (
    child_result,
    load_average,
    machine_description,
    markdown_table,
    peak_rss_mib,
    run_child,
)

NETWORKS = ("unet", "reversible_unet", "swin_unetr", "mamba_unet", "transunet")
FULL_SIZE = 96
QUICK_SIZE = 64  # swin_unetr's deepest stage needs more than one voxel when training


@dataclass(frozen=True)
class TrainBenchConfig:
    """What the training benchmark runs.

    Attributes:
        networks: registry names, each measured in its own process.
        size: edge of the cubic training patch ``S``.
        batch_size: patches per step.
        steps: timed steps after one warm-up step.
        threads: torch CPU threads in each process (``None``: torch's default).
        child_timeout: seconds after which a network's process is stopped.
    """

    networks: tuple[str, ...] = NETWORKS
    size: int = FULL_SIZE
    batch_size: int = 1
    steps: int = 2
    threads: int | None = None
    child_timeout: float = 1200.0

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 16:
            raise ConfigError(f"patch size must be a multiple of 16 and >= 16, got {self.size}")
        if self.batch_size < 1 or self.steps < 1:
            raise ConfigError(f"batch size and steps must be >= 1, got {self.batch_size}, {self.steps}")
        if not self.networks:
            raise ConfigError("no networks to benchmark")


@dataclass
class TrainStepResult:
    """One network's figures: parameters, seconds per step, voxels per second, memory in MiB, or an error."""

    network: str
    parameters: int | None = None
    seconds_per_step: float | None = None
    voxels_per_second: float | None = None
    peak_rss_mib: float | None = None
    step_rss_mib: float | None = None
    load: float | None = None
    error: str | None = None


@dataclass
class TrainBenchReport:
    """The configuration, the machine and one result per network."""

    config: TrainBenchConfig
    machine: dict[str, Any]
    results: list[TrainStepResult] = field(default_factory=list)


def _rss_now_mib() -> float:
    """Current resident set size of this process in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def measure_train_step(
    name: str, size: int, batch_size: int = 1, steps: int = 2, threads: int | None = None
) -> dict[str, Any]:
    """Time training steps of one network in this process.

    Args:
        name: registry name of the network.
        size: edge of the cubic patch.
        batch_size: patches per step.
        steps: timed steps (after one warm-up step).
        threads: ``torch.set_num_threads`` value, or ``None`` to keep torch's default.

    Returns:
        ``{"network", "parameters", "seconds_per_step", "voxels_per_second", "step_rss_mib"}``.
    """
    import torch

    from medseg.networks import create
    from medseg.pipelines.losses import SegmentationLoss

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create(name, 3, 4, 3).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = SegmentationLoss("sigmoid")
    image = torch.randn(batch_size, 4, size, size, size)
    target = (torch.rand(batch_size, 3, size, size, size) > 0.8).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(image), target)
        loss.backward()
        optimizer.step()

    before = _rss_now_mib()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return {
        "network": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_step": round(seconds, 3),
        "voxels_per_second": round(batch_size * size**3 / seconds, 1),
        "step_rss_mib": round(peak_rss_mib() - before, 1),
    }


def child_train_step(name: str, size: int, batch_size: int, steps: int, threads: int | None) -> str:
    """:func:`measure_train_step` in a child process; returns the JSON line it prints (with peak RSS)."""
    return child_result(measure_train_step(name, size, batch_size, steps, threads))


def run_train_bench(config: TrainBenchConfig, log: Callable[[str], None] = print) -> TrainBenchReport:
    """Measure every network of ``config`` in its own process.

    Args:
        config: what to run.
        log: called with one line per network.

    Returns:
        The report (failed networks carry their error).
    """
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    report = TrainBenchReport(config, machine_description())
    for name in config.networks:
        args = ["bench", "train", "--child", name, "--size", str(config.size), "--batch-size", str(config.batch_size),
                "--steps", str(config.steps)]
        if config.threads:
            args += ["--threads", str(config.threads)]
        load = load_average()
        child = run_child(args, config.child_timeout)
        result = TrainStepResult(
            network=name,
            parameters=child.get("parameters"),
            seconds_per_step=child.get("seconds_per_step"),
            voxels_per_second=child.get("voxels_per_second"),
            peak_rss_mib=child.get("peak_rss_mib"),
            step_rss_mib=child.get("step_rss_mib"),
            load=round(load, 1),
            error=child.get("error"),
        )
        report.results.append(result)
        log(f"{name}: {child}")
    return report


def format_train_report(report: TrainBenchReport) -> str:
    """The report as Markdown: a header line and one table row per network."""
    m, c = report.machine, report.config
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
        f"torch {m['torch']} ({m['torch_threads']} threads); "
        f"{m['date']}; commit {m['commit']}",
        f"One training step (forward, Dice + BCE loss, backward, AdamW step), batch {c.batch_size} x 4 x {c.size}^3, "
        f"3 region outputs, mean of {c.steps} steps after one warm-up; each network in its own process.",
        "",
    ]
    rows = [
        [
            r.network,
            f"{r.parameters / 1e6:.2f}M" if r.parameters else None,
            r.seconds_per_step,
            f"{r.voxels_per_second:,.0f}" if r.voxels_per_second else None,
            r.peak_rss_mib,
            r.step_rss_mib,
            f"{r.load:.1f}" if r.load is not None else None,
            r.error or "",
        ]
        for r in report.results
    ]
    header = ["network", "parameters", "s / step", "voxels / s", "peak RSS (MiB)", "step adds (MiB)", "load", "error"]
    lines.append(markdown_table(header, rows))
    return "\n".join(lines)


def train_report_to_json(report: TrainBenchReport) -> str:
    """The report as JSON text."""
    return json.dumps(dataclasses.asdict(report), indent=2, default=str) + "\n"

