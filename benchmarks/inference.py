"""CPU inference benchmark: ``python benchmarks/inference.py [OPTIONS]`` is ``medseg bench inference [OPTIONS]``.

One synthetic BraTS case (240 x 240 x 155, 4 channels) through (a) MONAI's ``sliding_window_inference``,
(b) nnU-Net v2's sliding-window predictor and (c) ``medseg segment``'s defaults; see
:mod:`medseg.pipelines.bench_inference` and docs/benchmarks.md ("Inference (CPU and GPU)").

Usage::

    python benchmarks/inference.py                      # random weights, about 5 minutes on 2 quiet cores
    python benchmarks/inference.py --model RUN/model    # trained weights
    python benchmarks/inference.py --levers             # also every lever, each in its own process
    python benchmarks/inference.py --quick              # smoke test
"""

from __future__ import annotations

import sys

from medseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "inference", *sys.argv[1:]]))
