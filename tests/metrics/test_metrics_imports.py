"""The wall around medseg.metrics: numpy and scipy only."""

from __future__ import annotations

import subprocess
import sys


def test_metrics_import_neither_torch_nor_monai(tmp_path):
    code = (
        "import sys, medseg.metrics; "
        "bad = [m for m in ('torch', 'monai', 'medseg.transforms') if m in sys.modules]; "
        "sys.exit(', '.join(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode == 0, f"importing medseg.metrics imported {result.stderr.strip()}"
