"""Dataset layouts: recognise a folder, list its cases, split them, and check them before training.

Supported layouts: BraTS 2021 and 2023, Synapse (BTCV) raw, TransUNet's preprocessed Synapse, and
nnU-Net v2 raw. See docs/datasets.md for the folder trees and label conventions.
"""

from medseg.data.detection import ACCEPTED_LAYOUTS, detect, resolve_spec
from medseg.data.indexing import index, scan_dataset
from medseg.data.integrity import CheckReport, check, check_dataset
from medseg.data.scan import DATASET_CASE_ID, CaseFiles, Problem, Scan
from medseg.data.spec import (
    BRATS2021,
    BRATS2023,
    BUILTIN_SPECS,
    LAYOUT_NAMES,
    SYNAPSE,
    TRANSUNET,
    DatasetSpec,
    builtin_spec,
)
from medseg.data.splits import case_group, split, transunet_split

__all__ = [
    "ACCEPTED_LAYOUTS",
    "BRATS2021",
    "BRATS2023",
    "BUILTIN_SPECS",
    "LAYOUT_NAMES",
    "SYNAPSE",
    "TRANSUNET",
    "DATASET_CASE_ID",
    "CaseFiles",
    "CheckReport",
    "DatasetSpec",
    "Problem",
    "Scan",
    "builtin_spec",
    "case_group",
    "check",
    "check_dataset",
    "detect",
    "index",
    "resolve_spec",
    "scan_dataset",
    "split",
    "transunet_split",
]
