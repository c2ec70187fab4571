"""Synapse 13-organ labels -> TransUNet's 8 organs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.transforms import SynapseToTransUNetd, synapse_to_transunet


def test_every_synapse_label_maps_as_transunet_does():
    synapse = np.arange(14).reshape(2, 7)
    expected = [0, 1, 2, 3, 4, 0, 5, 6, 7, 0, 0, 8, 0, 0]
    assert synapse_to_transunet(synapse).ravel().tolist() == expected
    assert synapse_to_transunet(torch.arange(14)).tolist() == expected


def test_values_outside_synapse_labels_are_named():
    with pytest.raises(InputError, match=r"label values 14, 20 are not valid"):
        synapse_to_transunet(np.array([0, 14, 20]))
    with pytest.raises(InputError, match=r"case7.*label values -1"):
        SynapseToTransUNetd("label")({"label": torch.tensor([[0, -1]]), "case_id": "case7"})


def test_dictionary_transform_keeps_shape():
    out = SynapseToTransUNetd("label")({"label": torch.tensor([[[6, 11], [5, 1]]], dtype=torch.uint8)})
    assert out["label"].shape == (1, 2, 2)
    assert out["label"].tolist() == [[[5, 8], [0, 1]]]
