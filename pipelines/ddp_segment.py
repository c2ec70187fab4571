"""Segmentation of a folder sharded over the processes of a torchrun job: gather every rank's results.

``medseg.pipelines.segment.segment`` gives rank ``r`` of ``N`` the cases ``r, r + N, ...`` of the folder
(:meth:`~medseg.pipelines.distributed.DistributedContext.shard`); each rank writes its own outputs. Then
:func:`gather_summary` collects the results of all ranks (as JSON, no pickle) in the order of the folder, so
every rank holds the whole summary: rank 0 prints it, and every rank's exit code counts every failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.pipelines.distributed import DistributedContext, interleave

if TYPE_CHECKING:
    from medseg.pipelines.segment import CaseResult, SegmentSummary


def gather_summary(summary: SegmentSummary, distributed: DistributedContext) -> SegmentSummary:
    """The summary of the whole job from this rank's summary (a collective: every rank must call it).

    Args:
        summary: this rank's results, for the cases :meth:`DistributedContext.shard` gave it, in order.
        distributed: the process group context.

    Returns:
        The results of every rank's cases, in the order of the full case list; ``folder_run`` is true when
        it is true on any rank.
    """
    from medseg.pipelines.segment import SegmentSummary

    gathered = distributed.all_gather_json(
        {"folder_run": summary.folder_run, "results": [result_to_json(r) for r in summary.results]}
    )
    results = interleave([[result_from_json(r) for r in part["results"]] for part in gathered])
    return SegmentSummary(results, any(part["folder_run"] for part in gathered))


def result_to_json(result: CaseResult) -> dict[str, Any]:
    """A :class:`~medseg.pipelines.segment.CaseResult` as JSON-able values.

    Args:
        result: the result of one case.
    """
    return {
        "case_id": result.case_id,
        "output": str(result.output) if result.output is not None else None,
        "error": result.error,
        "seconds": float(result.seconds),
        "shape": [int(n) for n in result.shape],
    }


def result_from_json(data: dict[str, Any]) -> CaseResult:
    """Rebuild a :class:`~medseg.pipelines.segment.CaseResult` from :func:`result_to_json`.

    Args:
        data: the JSON-able values.
    """
    from medseg.pipelines.segment import CaseResult

    return CaseResult(
        case_id=data["case_id"],
        output=Path(data["output"]) if data["output"] is not None else None,
        error=data["error"],
        seconds=float(data["seconds"]),
        shape=tuple(int(n) for n in data["shape"]),
    )
