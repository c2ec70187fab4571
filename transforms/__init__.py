"""MONAI dictionary-transform presets per dataset, label/region conversion and exact inversion.

* Label conversion (plain functions on numpy arrays or tensors, and dictionary transforms):
  :func:`labels_to_regions`, :func:`regions_to_labels` (BraTS TC/WT/ET), :func:`synapse_to_transunet`.
* Loading: :class:`LoadVolumed` (through :mod:`medseg.io`, keeping the input Geometry), :class:`LoadSliced`.
* Presets returning ``monai.transforms.Compose``: :func:`brats_train_transforms`,
  :func:`brats_inference_transforms`, :func:`synapse_train_transforms`, :func:`synapse_inference_transforms`,
  :func:`transunet_slice_train_transforms`, each with a typed config dataclass.
* Inversion: :func:`invert_to_input` maps a prediction made in preset space back onto the input's exact
  voxel grid; :func:`input_geometry` gives the Geometry to write it with ``medseg.io.save_like``.
"""

from medseg.transforms.brats import BratsTransformConfig, brats_inference_transforms, brats_train_transforms
from medseg.transforms.brats_regions import (
    CONVENTIONS,
    REGION_NAMES,
    BratsConvention,
    brats_convention,
    labels_to_regions,
    regions_to_labels,
)
from medseg.transforms.compose import PresetCompose, find_medseg_error
from medseg.transforms.grids import GEOMETRY_KEY, GRIDS_KEY, Grid, RecordGridd
from medseg.transforms.inversion import InvertToInputd, input_geometry, invert_to_input
from medseg.transforms.label_transforms import CheckLabelsd, LabelsToRegionsd, RegionsToLabelsd, SynapseToTransUNetd
from medseg.transforms.label_values import check_label_values
from medseg.transforms.loading import LoadVolumed
from medseg.transforms.preset_parts import CropNonzerod, RequireChannelsd, nonzero_box
from medseg.transforms.synapse import (
    LABEL_SETS,
    SynapseTransformConfig,
    synapse_inference_transforms,
    synapse_train_transforms,
)
from medseg.transforms.synapse_labels import SYNAPSE_ORGANS, TRANSUNET_ORGANS, synapse_to_transunet
from medseg.transforms.transunet_slices import LoadSliced, TransUNetSliceConfig, transunet_slice_train_transforms

__all__ = [
    "CONVENTIONS",
    "GEOMETRY_KEY",
    "GRIDS_KEY",
    "LABEL_SETS",
    "REGION_NAMES",
    "SYNAPSE_ORGANS",
    "TRANSUNET_ORGANS",
    "BratsConvention",
    "BratsTransformConfig",
    "CheckLabelsd",
    "CropNonzerod",
    "Grid",
    "InvertToInputd",
    "LabelsToRegionsd",
    "LoadSliced",
    "LoadVolumed",
    "PresetCompose",
    "RecordGridd",
    "RegionsToLabelsd",
    "RequireChannelsd",
    "SynapseToTransUNetd",
    "SynapseTransformConfig",
    "TransUNetSliceConfig",
    "brats_convention",
    "brats_inference_transforms",
    "brats_train_transforms",
    "check_label_values",
    "find_medseg_error",
    "input_geometry",
    "invert_to_input",
    "labels_to_regions",
    "nonzero_box",
    "regions_to_labels",
    "synapse_inference_transforms",
    "synapse_to_transunet",
    "synapse_train_transforms",
    "transunet_slice_train_transforms",
]
