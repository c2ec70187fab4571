"""Loading the official R50+ViT-B_16.npz layout, checked on a synthetic file with the official key names and
shapes for a tiny configuration (the real 400 MB file is never needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError, InputError, UnsafeFileError
from medseg.networks import create, load_pretrained_npz

TINY = dict(
    hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, grid_size=2,
    stem_width=8, stem_blocks=(1, 2, 1), stem_groups=4, decoder_channels=(16, 8, 8, 4), head_channels=16,
    dropout_rate=0.0,
)


def official_arrays(rng, *, in_channels=3, grid=2, hidden=32, layers=2, heads=2, mlp=64, width=8, blocks=(1, 2, 1)):
    """Arrays named and shaped as in Google's ViT hybrid checkpoint (HWIO kernels, per-head attention)."""
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    a = {"conv_root/kernel": f(7, 7, in_channels, width), "gn_root/scale": f(width), "gn_root/bias": f(width)}
    cin = width
    for b, n_units in enumerate(blocks, start=1):
        mid, out = width * 2 ** (b - 1), 4 * width * 2 ** (b - 1)
        for u in range(1, n_units + 1):
            p = f"block{b}/unit{u}/"
            a[p + "conv1/kernel"], a[p + "conv2/kernel"], a[p + "conv3/kernel"] = (
                f(1, 1, cin, mid), f(3, 3, mid, mid), f(1, 1, mid, out)
            )
            for gn, c in (("gn1", mid), ("gn2", mid), ("gn3", out)):
                a[p + f"{gn}/scale"], a[p + f"{gn}/bias"] = f(c), f(c)
            if u == 1:
                a[p + "conv_proj/kernel"] = f(1, 1, cin, out)
                a[p + "gn_proj/scale"], a[p + "gn_proj/bias"] = f(out), f(out)
            cin = out
    a["embedding/kernel"], a["embedding/bias"] = f(1, 1, cin, hidden), f(hidden)
    a["cls"] = f(1, 1, hidden)
    a["Transformer/posembed_input/pos_embedding"] = f(1, 1 + grid * grid, hidden)
    hd = hidden // heads
    for i in range(layers):
        p = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            a[p + f"{ln}/scale"], a[p + f"{ln}/bias"] = f(hidden), f(hidden)
        for proj in ("query", "key", "value"):
            a[p + f"MultiHeadDotProductAttention_1/{proj}/kernel"] = f(hidden, heads, hd)
            a[p + f"MultiHeadDotProductAttention_1/{proj}/bias"] = f(heads, hd)
        a[p + "MultiHeadDotProductAttention_1/out/kernel"] = f(heads, hd, hidden)
        a[p + "MultiHeadDotProductAttention_1/out/bias"] = f(hidden)
        a[p + "MlpBlock_3/Dense_0/kernel"], a[p + "MlpBlock_3/Dense_0/bias"] = f(hidden, mlp), f(mlp)
        a[p + "MlpBlock_3/Dense_1/kernel"], a[p + "MlpBlock_3/Dense_1/bias"] = f(mlp, hidden), f(hidden)
    a["Transformer/encoder_norm/scale"], a["Transformer/encoder_norm/bias"] = f(hidden), f(hidden)
    a["head/kernel"], a["head/bias"] = f(hidden, 10), f(10)  # the classifier, unused
    return a


@pytest.fixture
def npz(tmp_path, rng):
    arrays = official_arrays(rng)
    path = tmp_path / "R50+ViT-B_16.npz"
    np.savez(path, **arrays)
    return path, arrays


def tiny(dims=2, in_channels=3, **kwargs):
    torch.manual_seed(0)
    return create("transunet", dims, in_channels, 2, **{**TINY, **kwargs})


def test_loads_every_stem_and_transformer_parameter(npz):
    path, _ = npz
    model = tiny()
    not_in_file = ("decoder", "conv_more", "segmentation_head")
    decoder_before = {n: p.clone() for n, p in model.named_parameters() if n.startswith(not_in_file)}
    loaded = set(load_pretrained_npz(model, path))
    expected = {n for n, _ in model.named_parameters() if n.startswith(("stem.", "embeddings.", "encoder."))}
    assert loaded == expected
    for n, p in model.named_parameters():
        if n in decoder_before:
            assert torch.equal(p, decoder_before[n])


def test_conv_kernels_go_from_hwio_to_oihw(npz):
    path, arrays = npz
    model = tiny()
    load_pretrained_npz(model, path)
    expect = np.einsum("yxio->oiyx", arrays["block2/unit1/conv2/kernel"])
    np.testing.assert_array_equal(model.stem.body.block2.unit1.conv2.weight.detach().numpy(), expect)
    np.testing.assert_array_equal(model.stem.root.gn.bias.detach().numpy(), arrays["gn_root/bias"])


def test_attention_equals_reference_computed_from_official_arrays(npz):
    path, a = npz
    model = tiny().eval()
    load_pretrained_npz(model, path)
    x = np.random.default_rng(1).normal(size=(5, 32)).astype(np.float32)
    p = "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/"
    q, k, v = (
        np.einsum("nd,dhk->hnk", x, a[p + f"{n}/kernel"]) + a[p + f"{n}/bias"][:, None] for n in ("query", "key", "value")
    )
    logits = np.einsum("hnk,hmk->hnm", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    reference = np.einsum("hnk,hkd->nd", np.einsum("hnm,hmk->hnk", weights, v), a[p + "out/kernel"]) + a[p + "out/bias"]
    with torch.no_grad():
        got = model.encoder.layers[1].attn(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_mlp_equals_reference_computed_from_official_arrays(npz):
    path, a = npz
    model = tiny().eval()
    load_pretrained_npz(model, path)
    x = np.random.default_rng(2).normal(size=(3, 32)).astype(np.float32)
    p = "Transformer/encoderblock_0/MlpBlock_3/"
    h = torch.nn.functional.gelu(torch.from_numpy(x @ a[p + "Dense_0/kernel"] + a[p + "Dense_0/bias"])).numpy()
    reference = h @ a[p + "Dense_1/kernel"] + a[p + "Dense_1/bias"]
    with torch.no_grad():
        got = model.encoder.layers[0].ffn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_position_embedding_drops_class_token_and_is_resampled(npz):
    path, a = npz
    table = a["Transformer/posembed_input/pos_embedding"][0, 1:]
    same = tiny()
    load_pretrained_npz(same, path)
    np.testing.assert_array_equal(same.embeddings.position_embeddings.detach().numpy()[0], table)
    bigger = tiny(grid_size=3)
    load_pretrained_npz(bigger, path)
    assert bigger.embeddings.position_embeddings.shape == (1, 9, 32)


def test_3d_model_inflates_kernels_and_repeats_position_grid(npz):
    path, a = npz
    model = tiny(dims=3, in_channels=3)
    load_pretrained_npz(model, path)
    root = model.stem.root.conv.weight.detach().numpy()
    assert root.shape == (8, 3, 7, 7, 7)
    np.testing.assert_allclose(root.sum(axis=2), np.einsum("yxio->oiyx", a["conv_root/kernel"]), rtol=1e-5, atol=1e-6)
    pos = model.embeddings.position_embeddings.detach().numpy()[0].reshape(2, 4, 32)
    for depth in range(2):
        np.testing.assert_array_equal(pos[depth], a["Transformer/posembed_input/pos_embedding"][0, 1:])


def test_other_input_channel_counts_get_the_mean_rgb_filter(npz):
    path, a = npz
    model = tiny(in_channels=1)
    load_pretrained_npz(model, path)
    mean = np.einsum("yxio->oiyx", a["conv_root/kernel"]).mean(axis=1)
    np.testing.assert_allclose(model.stem.root.conv.weight.detach().numpy()[:, 0], mean, rtol=1e-6)


def test_load_stem_false_leaves_stem_untouched(npz):
    path, _ = npz
    model = tiny()
    before = model.stem.root.conv.weight.clone()
    loaded = load_pretrained_npz(model, path, load_stem=False)
    assert torch.equal(model.stem.root.conv.weight, before)
    assert not any(n.startswith("stem.") for n in loaded)


def test_missing_key_is_named(tmp_path, rng):
    arrays = official_arrays(rng)
    del arrays["Transformer/encoderblock_1/LayerNorm_2/scale"]
    path = tmp_path / "partial.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="partial.npz: missing key.*encoderblock_1/LayerNorm_2/scale"):
        load_pretrained_npz(tiny(), path)


def test_shape_mismatch_names_key_and_shapes(npz):
    path, _ = npz
    with pytest.raises(InputError, match="embedding/kernel has shape .* expects"):
        load_pretrained_npz(tiny(hidden_size=16, num_heads=2), path)


def test_pickled_arrays_are_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"conv_root/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(UnsafeFileError, match="pickled"):
        load_pretrained_npz(tiny(), path)


def test_missing_or_corrupt_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_pretrained_npz(tiny(), tmp_path / "absent.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_pretrained_npz(tiny(), bad)


def test_other_networks_are_refused(npz):
    path, _ = npz
    with pytest.raises(ConfigError, match="TransUNet"):
        load_pretrained_npz(create("unet", 2, 3, 2, variant="tiny"), path)
