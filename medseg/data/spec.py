"""What a dataset layout holds: modalities, label values and their meaning.

One :class:`DatasetSpec` describes each supported layout. The built-in layouts are constants here;
an nnU-Net raw dataset builds its spec from its own ``dataset.json`` (see :mod:`medseg.data.nnunet`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from medseg.data.labels import (
    BRATS2021_LABELS,
    BRATS2021_REGIONS,
    BRATS2023_LABELS,
    BRATS2023_REGIONS,
    BTCV_LABELS,
    TRANSUNET_LABELS,
)
from medseg.errors import unknown_choice

LAYOUT_NAMES: tuple[str, ...] = ("brats2021", "brats2023", "synapse", "transunet", "nnunet")


@dataclass(frozen=True)
class DatasetSpec:
    """The contents of one dataset layout.

    Args:
        name: layout name, one of :data:`LAYOUT_NAMES`.
        modalities: input channels in the order they are stacked, e.g. ``("t1", "t1ce", "t2", "flair")``.
        labels: label value -> name, background (0) included.
        label_convention: one line saying what the label values mean, for messages and docs.
        region_based: whether the evaluated classes are overlapping regions (BraTS TC/WT/ET) rather
            than the label values themselves.
        regions: region name -> the label values it unites (empty unless ``region_based``).
        file_ending: suffix of every image and label file (``".npz"`` marks TransUNet's preprocessed form).
        description: free text (nnU-Net's dataset name, for example).
    """

    name: str
    modalities: tuple[str, ...]
    labels: Mapping[int, str]
    label_convention: str
    region_based: bool = False
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    file_ending: str = ".nii.gz"
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "regions", MappingProxyType({k: tuple(v) for k, v in self.regions.items()}))
        object.__setattr__(self, "modalities", tuple(self.modalities))

    @property
    def allowed_labels(self) -> frozenset[int]:
        """The label values a label file of this layout may contain."""
        return frozenset(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of output classes a network needs: regions when region-based, else label values."""
        return len(self.regions) if self.region_based else len(self.labels)


BRATS2021 = DatasetSpec(
    name="brats2021",
    modalities=("t1", "t1ce", "t2", "flair"),
    labels=BRATS2021_LABELS,
    label_convention="BraTS 2021: 0 background, 1 necrotic core, 2 oedema, 4 enhancing tumour (no 3)",
    region_based=True,
    regions=BRATS2021_REGIONS,
    description="BraTS 2021 (RSNA-ASNR-MICCAI) glioma: BraTS2021_NNNNN folders",
)

BRATS2023 = DatasetSpec(
    name="brats2023",
    modalities=("t1n", "t1c", "t2w", "t2f"),
    labels=BRATS2023_LABELS,
    label_convention="BraTS 2023: 0 background, 1 necrotic core, 2 oedema, 3 enhancing tumour",
    region_based=True,
    regions=BRATS2023_REGIONS,
    description="BraTS 2023 (GLI and sister challenges): BraTS-XXX-NNNNN-NNN folders",
)

SYNAPSE = DatasetSpec(
    name="synapse",
    modalities=("ct",),
    labels=BTCV_LABELS,
    label_convention="BTCV 13 organs: " + ", ".join(f"{k} {v}" for k, v in BTCV_LABELS.items() if k),
    description="Synapse multi-organ CT (BTCV) raw: RawData/Training/img/imgNNNN.nii.gz",
)

TRANSUNET = DatasetSpec(
    name="transunet",
    modalities=("ct",),
    labels=TRANSUNET_LABELS,
    label_convention="TransUNet 8 organs: " + ", ".join(f"{k} {v}" for k, v in TRANSUNET_LABELS.items() if k),
    file_ending=".npz",
    description="Synapse preprocessed by TransUNet: train_npz slices and test_vol_h5 volumes",
)

BUILTIN_SPECS: Mapping[str, DatasetSpec] = MappingProxyType(
    {spec.name: spec for spec in (BRATS2021, BRATS2023, SYNAPSE, TRANSUNET)}
)


def builtin_spec(name: str) -> DatasetSpec:
    """The spec of a built-in layout by name.

    Args:
        name: ``"brats2021"``, ``"brats2023"``, ``"synapse"`` or ``"transunet"`` (an nnU-Net spec
            comes from its ``dataset.json``, see :func:`medseg.data.nnunet.read_spec`).

    Returns:
        The spec.

    Raises:
        ConfigError: for any other name, listing the valid ones.
    """
    if name not in BUILTIN_SPECS:
        raise unknown_choice("dataset layout", name, BUILTIN_SPECS)
    return BUILTIN_SPECS[name]
