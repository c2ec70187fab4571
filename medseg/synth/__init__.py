"""Synthetic phantom datasets in the official folder layouts (BraTS 2021/2023, Synapse raw and TransUNet).

The phantoms are pure numpy (:mod:`medseg.synth.brain`, :mod:`medseg.synth.abdomen`); the writers
(:mod:`medseg.synth.brats`, :mod:`medseg.synth.synapse`) lay them out exactly as the real datasets are
distributed, through :mod:`medseg.io`. Every dataset is a deterministic function of its seed.
See docs/datasets.md.
"""

from medseg.synth.abdomen import AbdomenPhantom, abdomen_phantom
from medseg.synth.brain import BrainPhantom, brain_phantom
from medseg.synth.brats import BRATS_YEARS, write_brats
from medseg.synth.synapse import SYNAPSE_FORMATS, write_synapse

__all__ = [
    "BRATS_YEARS",
    "SYNAPSE_FORMATS",
    "AbdomenPhantom",
    "BrainPhantom",
    "abdomen_phantom",
    "brain_phantom",
    "write_brats",
    "write_synapse",
]
