"""Shared parts of the benchmarks: peak memory, machine load, child processes and Markdown tables.

Peak memory is the peak resident set size of a process (Linux ``VmHWM`` in ``/proc/self/status``); it only
grows, so a measurement that must not see an earlier one's peak runs in a fresh child process
(:func:`run_child`), which prints one JSON object as its last line of output. ``VmHWM`` and not
``getrusage().ru_maxrss``: on Linux a child's ``ru_maxrss`` starts at its parent's resident size at the
fork (it survives ``exec``), so a child of a large parent would report the parent's size.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medseg.errors import InputError

MIB = 1024.0 * 1024.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process's memory image so far, in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``; elsewhere ``ru_maxrss`` (which may include the parent's size).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024.0 / MIB
    except OSError:
        pass
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def load_average() -> float:
    """The 1-minute load average of the machine (runnable processes; compare with the core count)."""
    return os.getloadavg()[0]


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_description() -> dict[str, Any]:
    """CPU model, cores, memory, torch version and threads, for the header of a benchmark table."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024.0**3
    except (ValueError, OSError, AttributeError):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cpu": model,
        "gpu": gpu,
        "cores": cpu_count(),
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(),
    }


def git_commit() -> str:
    """The short commit of the medseg checkout (``"unknown"`` outside a git work tree)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


@dataclass
class Timer:
    """Wall time and machine load around a block: ``with Timer() as t: ...; t.seconds``."""

    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    def __enter__(self) -> Timer:
        self.load_before = load_average()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self.load_after = load_average()


def run_child(args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m medseg ARGS`` in a fresh process and return the JSON object on its last output line.

    Args:
        args: the ``medseg`` command line (e.g. ``["bench", "inference", "--child", "monai", ...]``).
        timeout: seconds before the child is killed.

    Returns:
        The decoded JSON object, or ``{"error": "..."}`` when the child failed, timed out or printed none.
    """
    command = [sys.executable, "-m", "medseg", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode == 0 and lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
        if isinstance(result, dict):
            return result
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit code {done.returncode}: {tail}"}


def child_result(values: dict[str, Any]) -> str:
    """The line a child process prints last: ``values`` plus its peak RSS (and peak CUDA memory), as JSON."""
    import torch

    extra = {"peak_rss_mib": round(peak_rss_mib(), 1)}
    if torch.cuda.is_initialized():
        extra["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
    return json.dumps({**values, **extra})


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats are printed with 3 significant decimals, ``None`` as ``-``.

    Args:
        header: column titles.
        rows: one sequence of cells per row, as long as ``header``.

    Returns:
        The table text (no trailing newline).

    Raises:
        InputError: a row whose length differs from the header's.
    """
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value).replace("|", "/")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise InputError(f"table row {list(row)} has {len(row)} cells, header has {len(header)}")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
