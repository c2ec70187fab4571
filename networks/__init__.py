"""Segmentation networks behind one registry: ``create(name, spatial_dims, in_channels, out_channels)``.

Importing this package registers every network shipped with medseg: each network module registers itself
with :func:`register_network` when imported below. See ``docs/networks.md``.

Example:
    >>> from medseg.networks import create, list_networks
    >>> list_networks()
    ['mamba_unet', 'reversible_unet', 'swin_unetr', 'transunet', 'unet']
    >>> net = create("unet", spatial_dims=3, in_channels=4, out_channels=3)
"""

from medseg.networks.base import SegmentationNetwork
from medseg.networks.registry import NetworkInfo, create, get_info, list_networks, register_network

# The network modules register themselves on import (after the registry above exists).
from medseg.networks import mamba_unet, reversible_unet, swin_unetr, transunet, unet  # noqa: E402,F401  isort: skip
from medseg.networks.transunet_weights import load_pretrained_npz  # noqa: E402  isort: skip

__all__ = [
    "NetworkInfo",
    "SegmentationNetwork",
    "create",
    "get_info",
    "list_networks",
    "load_pretrained_npz",
    "register_network",
]
