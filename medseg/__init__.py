"""medseg: medical image segmentation toolkit.

Layers, lowest first: ``medseg.io`` (volumes and geometry), ``medseg.data`` (dataset layouts),
``medseg.transforms`` (MONAI presets), ``medseg.networks`` and ``medseg.kernels``, ``medseg.pipelines``,
then the command line (``medseg.cli``). Importing ``medseg`` has no side effects and imports no torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
