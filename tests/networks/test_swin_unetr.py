"""Swin UNETR wrapper around MONAI: paper size, options, checkpointing switch."""

from __future__ import annotations

import pytest

from medseg.errors import ConfigError
from medseg.networks import create


def test_default_matches_brats_paper_parameter_count():
    # Hatamizadeh et al. 2021 (BraTS, 4 -> 3 channels, feature size 48): 62.19M parameters.
    net = create("swin_unetr", 3, 4, 3)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == 62.19
    assert net.divisor == (32, 32, 32)


def test_set_grad_checkpointing_reaches_every_swin_block():
    net = create("swin_unetr", 2, 1, 2, variant="tiny")
    flags = lambda: [m.use_checkpoint for m in net.model.modules() if hasattr(m, "use_checkpoint")]  # noqa: E731
    assert flags() and not any(flags())
    net.set_grad_checkpointing(True)
    assert all(flags())
    net.set_grad_checkpointing(False)
    assert not any(flags())


@pytest.mark.parametrize(
    ("message", "kwargs"),
    [("multiple of 12", {"feature_size": 16}), ("do not divide", {"num_heads": (5, 1, 1, 1)})],
)
def test_invalid_configuration_raises(message, kwargs):
    with pytest.raises(ConfigError, match=message):
        create("swin_unetr", 3, 1, 2, variant="tiny", **kwargs)
