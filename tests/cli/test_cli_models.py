"""``medseg models``: lists networks, variants, dimensions and parameter counts."""

from __future__ import annotations

import json

from medseg.cli import main
from medseg.networks import get_info
from medseg.networks.summary import summarize


def test_models_json_lists_variants_with_counts_and_divisors(capsys):
    assert main(["models", "unet", "--json", "--in-channels", "1", "--out-channels", "2"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (unet,) = listing["networks"]
    assert unet["spatial_dims"] == [2, 3]
    assert [v["variant"] for v in unet["variants"]] == list(get_info("unet").variants)
    tiny = next(v for v in unet["variants"] if v["variant"] == "tiny")
    assert tiny["parameters"]["3d"] == summarize("unet", 3, 1, 2, variant="tiny").parameters
    assert tiny["divisor"]["2d"] == [4, 4]


def test_models_table_shows_each_variant(capsys):
    assert main(["models", "transunet"]) == 0
    out = capsys.readouterr().out
    assert "r50_vit_b16" in out and "105,279,347" in out and "params 3D" in out


def test_models_unknown_network_exits_2_with_valid_names(capsys):
    assert main(["models", "unett"]) == 2
    assert "Did you mean 'unet'" in capsys.readouterr().err


def test_summarize_counts_what_a_cpu_build_has():
    from medseg.networks import create

    net = create("unet", 2, 4, 3, variant="small")
    assert summarize("unet", 2, variant="small").parameters == sum(p.numel() for p in net.parameters())
