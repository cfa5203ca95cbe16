"""The PI-VQ autoencoder: shapes, the set property of the decoder, straight-through gradients, checkpoints."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from pivq.model import PIVQ, ModelConfig
from pivq.model.checkpoint import load_model, read_checkpoint, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("quantizer", ["matching", "nearest"])
def test_shapes(make_model, quantizer):
    model = make_model(quantizer=quantizer)
    cfg = model.cfg
    assert cfg.grid == 8
    x = _images(3)
    z = model.encode(x)
    assert z.shape == (3, cfg.codes, cfg.width)
    rec, z2, indices, vq_loss = model(x)
    assert rec.shape == x.shape and z2.shape == z.shape
    assert indices.shape == (3, cfg.codes) and indices.dtype == torch.int64
    assert ((0 <= indices) & (indices < cfg.codebook_size)).all()
    assert vq_loss.ndim == 0 and vq_loss.item() > 0
    if quantizer == "matching":
        assert all(torch.unique(row).numel() == cfg.codes for row in indices)
    rec0, _, none, zero = model(x, quantize=False)
    assert rec0.shape == x.shape and none is None and zero.item() == 0
    assert model.decode_indices(indices).shape == x.shape
    codes = model.codes_of(x)
    assert codes.shape == (3, cfg.codes)
    assert (codes[:, 1:] >= codes[:, :-1]).all()  # sorted


def test_decoder_is_invariant_to_the_order_of_the_codes(make_model):
    model = make_model()
    g = torch.Generator().manual_seed(1)
    zq = torch.randn(5, model.cfg.codes, model.cfg.width, generator=g)
    with torch.no_grad():
        ref = model.decode(zq)
        for _ in range(4):
            perm = torch.randperm(model.cfg.codes, generator=g)
            assert torch.allclose(model.decode(zq[:, perm]), ref, atol=1e-5)
        # and the decoding does depend on the codes themselves (the check above could fail)
        other = zq.clone()
        other[:, 0] = torch.randn(model.cfg.width, generator=g) * 3
        assert (model.decode(other) - ref).abs().max() > 1e-3

        indices = torch.stack([torch.randperm(model.cfg.codebook_size, generator=g)[: model.cfg.codes]
                               for _ in range(5)])
        ref_idx = model.decode_indices(indices)
        perm = torch.randperm(model.cfg.codes, generator=g)
        assert torch.allclose(model.decode_indices(indices[:, perm]), ref_idx, atol=1e-5)


def test_code_set_does_not_depend_on_decoding_order(make_model):
    """codes_of gives the set that forward() quantizes to; decoding it sorted or in assignment order agrees."""
    model = make_model()
    x = _images(4)
    with torch.no_grad():
        rec, _, indices, _ = model(x)
        codes = model.codes_of(x)
        assert torch.equal(codes, indices.sort(dim=1).values)
        assert torch.allclose(model.decode_indices(codes), rec, atol=1e-5)
        # each image's set is its own: encoding a batch in another order permutes the rows, nothing else
        perm = torch.tensor([2, 0, 3, 1])
        assert torch.equal(model.codes_of(x[perm]), codes[perm])


def test_positional_side_is_not_permutation_invariant(make_model):
    """Sanity check: the input/output positional embeddings carry order, so permuting them changes outputs."""
    model = make_model()
    x = _images(2)
    g = torch.Generator().manual_seed(3)
    tokens = model.cfg.grid**2
    with torch.no_grad():
        z = model.encode(x)
        zq = model.quantizer.lookup(model.codes_of(x))
        ref = model.decode(zq)
        perm = torch.randperm(tokens, generator=g)
        permuted = copy.deepcopy(model)
        permuted.pos_in.copy_(model.pos_in[:, perm])
        assert (permuted.encode(x) - z).abs().max() > 1e-3
        permuted = copy.deepcopy(model)
        permuted.pos_out.copy_(model.pos_out[:, perm])
        assert (permuted.decode(zq) - ref).abs().max() > 1e-3
        # and the image itself is not treated as a set of pixels: a spatial flip changes the latent
        assert (model.encode(x.flip(-1)) - z).abs().max() > 1e-3


@pytest.mark.parametrize("quantizer", ["matching", "nearest"])
def test_straight_through_gradients_reach_the_encoder(make_model, quantizer):
    model = make_model(quantizer=quantizer).train()
    x = _images(2)
    rec, z, indices, vq_loss = model(x, quantize=True)
    (rec - x).abs().mean().backward()
    for name in ("queries", "pos_in"):
        grad = getattr(model, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    enc_grads = [p.grad for p in model.conv_encoder.parameters()]
    assert all(g is not None for g in enc_grads) and sum(g.abs().sum() for g in enc_grads) > 0
    # the reconstruction term alone does not move the codebook (straight-through skips it)
    cb = model.quantizer.codebook.grad
    assert cb is None or not cb.any()
    model.zero_grad()
    _, _, _, vq_loss = model(x, quantize=True)
    vq_loss.backward()
    assert model.quantizer.codebook.grad.abs().sum() > 0


def test_codes_of_needs_an_initialised_codebook(make_model):
    model = make_model(init_codebook=False)
    x = _images(2)
    with pytest.raises(RuntimeError, match="never initialised"):
        model.codes_of(x)
    with pytest.raises(RuntimeError, match="never initialised"):
        model(x, quantize=True)
    model(x, quantize=False)  # the unquantized warm-up of section 3.7 needs no codebook


def test_config_round_trip_and_bad_resolution(tiny_model_dict):
    cfg = ModelConfig.from_dict(tiny_model_dict, quantizer="nearest", beta=0.5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["quantizer"] == "nearest" and cfg.to_dict()["beta"] == 0.5
    with pytest.raises(ValueError, match="resolution"):
        ModelConfig.from_dict({**tiny_model_dict, "resolution": 18, "ch_mult": [1, 2, 2]})


# --- checkpoints ------------------------------------------------------------------------------------------


def _with_noise(model: PIVQ, seed: int) -> PIVQ:
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return other


def test_save_load_round_trip(make_model, tmp_path):
    model = make_model()
    ema = _with_noise(model, 5)  # the EMA weights differ from the raw ones
    path = tmp_path / "sub" / "model.pt"
    save_model(path, model, ema, meta={"steps": 7})
    assert read_checkpoint(path)["meta"] == {"steps": 7}
    x = _images(3)
    for use_ema, source in ((False, model), (True, ema)):
        loaded = load_model(path, ema=use_ema, expect_config=model.cfg.to_dict())
        assert not loaded.training and loaded.cfg == model.cfg
        for k, v in source.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
        with torch.no_grad():
            assert torch.equal(loaded.codes_of(x), source.codes_of(x))
            assert torch.equal(loaded(x)[0], source(x)[0])
    with torch.no_grad():  # and the two really are different weights
        assert not torch.equal(load_model(path, ema=False)(x)[0], load_model(path, ema=True)(x)[0])
    assert bool(load_model(path).quantizer.initialized)


def test_load_model_rejects_another_preset(make_model, params, tmp_path):
    model = make_model()
    path = tmp_path / "model.pt"
    save_model(path, model, model, meta={})
    other = ModelConfig.from_dict(params["models"]["toy32"], quantizer="matching").to_dict()
    with pytest.raises(ValueError) as err:
        load_model(path, expect_config=other)
    message = str(err.value)
    assert str(path) in message
    named = message.split("differs in:")[1]
    for key in ("resolution", "nf", "ch_mult", "norm_groups", "width", "heads", "layers", "ffn", "codes",
                "codebook_size"):
        assert key in named, key
    for key in ("res_blocks", "attn_resolutions", "quantizer", "beta"):  # equal in both: not named
        assert key not in named, key
    # a quantizer change alone is a configuration change too
    with pytest.raises(ValueError, match="quantizer"):
        load_model(path, expect_config={**model.cfg.to_dict(), "quantizer": "nearest"})


def test_truncated_or_foreign_checkpoint_names_the_path(make_model, tmp_path):
    model = make_model()
    path = tmp_path / "model.pt"
    save_model(path, model, model, meta={})
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(truncated))):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else", "state_dict": {}}, foreign)
    with pytest.raises(ValueError, match=re.escape(str(foreign))):
        load_model(foreign)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries behind


@pytest.mark.parametrize("preset, grid, tokens", [("ut256", 16, 512), ("celeba64", 8, 32), ("toy32", 8, 16)])
def test_paper_presets_instantiate_as_specified(params, preset, grid, tokens):
    """The presets of params.yaml build (on the meta device: no memory) with the paper's shapes."""
    import torch

    cfg = ModelConfig.from_dict(params["models"][preset])
    with torch.device("meta"):
        model = PIVQ(cfg)
    assert cfg.grid == grid and cfg.codes == tokens
    assert model.queries.shape == (1, cfg.codes, cfg.width)  # L learned embeddings appended to the input
    assert model.pos_in.shape == model.pos_out.shape == (1, grid * grid, cfg.width)
    assert model.quantizer.codebook.shape == (cfg.codebook_size, cfg.width)
    layer = model.encoder.layers[0]
    assert len(model.encoder.layers) == len(model.decoder.layers) == cfg.layers
    assert layer.linear1.out_features == cfg.ffn and layer.self_attn.embed_dim == cfg.width
    if preset == "ut256":  # Unleashing Transformers' stack and the paper's transformer (section 4.1)
        assert (cfg.nf, cfg.ch_mult, cfg.res_blocks, cfg.attn_resolutions) == (128, (1, 1, 2, 2, 4), 2, (16,))
        assert (cfg.width, cfg.ffn, cfg.layers, cfg.codes, cfg.codebook_size) == (256, 1024, 4, 512, 4096)
    if preset == "celeba64":
        assert (cfg.width, cfg.ffn, cfg.layers, cfg.codes, cfg.codebook_size) == (128, 512, 4, 32, 512)


def test_saved_checkpoints_are_byte_identical(tmp_path):
    """Equal weights give equal files (torch.save given a path would name the zip records after the temporary
    file): the hashes recorded in metrics and manifests depend on it."""
    from pivq.model.checkpoint import save_atomic

    payload = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"steps": 3}}
    save_atomic(payload, tmp_path / "a.pt")
    save_atomic(payload, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], payload["w"])
