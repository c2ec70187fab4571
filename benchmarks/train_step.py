"""CPU training-step benchmark: ``python benchmarks/train_step.py [OPTIONS]`` is ``medseg bench train [OPTIONS]``.

Voxels per second and peak memory of one training step at 96^3 for ``unet``, ``reversible_unet``,
``swin_unetr``, ``mamba_unet`` and ``transunet`` (3D), each in its own process; see
:mod:`medseg.pipelines.bench_train` and docs/benchmarks.md ("Training step (CPU)").

Usage::

    python benchmarks/train_step.py                     # all five networks at 96^3
    python benchmarks/train_step.py --networks unet     # one network
    python benchmarks/train_step.py --quick             # 64^3, one timed step
"""

from __future__ import annotations

import sys

from medseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "train", *sys.argv[1:]]))
