"""The attribute metrics (pivq.metrics.attributes) and their stage: reconstructions keep the attributes, and
Algorithm 1's samples recombine them; a model that decodes every code set to one image fails both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pivq.metrics.attributes import RETENTION_TARGET, recombination_rates, reconstruction_attributes


def _truth(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"colour": rng.integers(0, 4, n), "shape": rng.choice([0, 0, 0, 1], n)}


def test_perfect_decodes_retain_everything_and_constant_ones_do_not():
    truth = _truth()
    original = {a: v.copy() for a, v in truth.items()}
    original["colour"][:20] = (original["colour"][:20] + 1) % 4  # the classifier errs on 10% of the originals
    same = reconstruction_attributes(original, original, truth)
    assert same["retention_min"] == 1.0 and same["retained"]
    assert same["attributes"]["colour"]["original"] == pytest.approx(0.9)
    constant = {a: np.zeros_like(v) for a, v in truth.items()}  # one image: one predicted value
    flat = reconstruction_attributes(original, constant, truth)
    colour = flat["attributes"]["colour"]
    assert colour["reconstruction"] == pytest.approx((truth["colour"] == 0).mean())
    assert colour["retention"] == pytest.approx(colour["reconstruction"] / 0.9)
    assert flat["retention_min"] < RETENTION_TARGET and not flat["retained"]
    assert flat["retention_min_attribute"] == "colour"  # 4 values: the majority rate is the furthest off
    assert flat["attributes"]["shape"]["majority"] == pytest.approx((truth["shape"] == 0).mean())


def test_unknown_labels_are_left_out():
    truth = {"colour": np.array([0, 1, -1, -1])}
    result = reconstruction_attributes({"colour": np.array([0, 1, 3, 3])}, {"colour": np.array([0, 0, 1, 1])}, truth)
    assert result["attributes"]["colour"]["original"] == 1.0
    assert result["attributes"]["colour"]["reconstruction"] == 0.5


def test_recombination_rates_count_shared_and_differing_values():
    a = {"colour": np.array([0, 1, 2, 3, 0, 1]), "shape": np.array([0, 0, 1, 1, 0, -1])}
    b = {"colour": np.array([0, 1, 0, 0, 3, 2]), "shape": np.array([0, 1, 1, 0, 0, 1])}
    # colour: shared in samples 0, 1 (kept in 0); differing in 2..5, resolved to a parent in 2 and 5 only
    predicted = {"colour": np.array([0, 3, 0, 1, 1, 2]), "shape": np.array([0, 1, 1, 0, 0, 1])}
    result = recombination_rates(predicted, a, b)
    colour = result["attributes"]["colour"]
    assert (colour["n_shared"], colour["kept"], colour["n_differ"], colour["parental"]) == (2, 0.5, 4, 0.5)
    shape = result["attributes"]["shape"]  # sample 5's shape is unknown in parent a: left out
    assert (shape["n_shared"], shape["kept"], shape["n_differ"], shape["parental"]) == (3, 1.0, 2, 1.0)
    assert result["kept"] == pytest.approx((1 + 3) / 5) and result["parental"] == pytest.approx((2 + 2) / 6)
    # the chance twins score the same predictions against the next sample's parents
    shifted = recombination_rates(predicted, {k: np.roll(v, -1) for k, v in a.items()},
                                  {k: np.roll(v, -1) for k, v in b.items()})
    assert result["kept_chance"] == shifted["kept"] and result["parental_chance"] == shifted["parental"]


def test_samples_that_copy_a_parent_beat_chance():
    rng = np.random.default_rng(1)
    n = 400
    a = {"colour": rng.integers(0, 4, n)}
    b = {"colour": rng.integers(0, 4, n)}
    pick = rng.random(n) < 0.5
    predicted = {"colour": np.where(pick, a["colour"], b["colour"])}
    result = recombination_rates(predicted, a, b)
    assert result["parental"] == 1.0 and result["kept"] == 1.0
    assert result["parental_chance"] < 0.6 and result["kept_chance"] < 0.4


# --- the stage, on tiny runs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extractor16(toyfaces16, tmp_path_factory):
    """An attribute CNN trained briefly on toyfaces16 (its weights file)."""
    from pivq.stages import train_feature_extractor

    out = tmp_path_factory.mktemp("extractor16")
    settings = {"name": "pivq-toyfaces-cnn", "weights": None, "steps": 60, "batch_size": 32, "lr": 2e-3, "seed": 0,
                "blur": 0.5}
    train_feature_extractor(toyfaces16, settings, out / "extractor.pt", out / "summary.json")
    return out / "extractor.pt"


def _run(tmp_path, toyfaces16, model):
    """model.pt, codes.npz and two sample shards of ``model`` (the files the stage reads)."""
    from pivq.data import PreparedDataset
    from pivq.encode import encode_images, save_codes
    from pivq.model.checkpoint import save_model
    from pivq.sample import generate_shard, save_shard

    root = tmp_path / "run"
    save_model(root / "model.pt", model, model, meta={"experiment": "toy", "run": "r"})
    data = PreparedDataset(toyfaces16)
    codes = encode_images(model, np.array(data.images), progress=False)
    save_codes(root / "codes.npz", codes, data.split, model.cfg.codebook_size, experiment="toy", run="r")
    shards = []
    for shard in range(2):
        result = generate_shard(model, codes[data.split == "train"], n=40, shards=2, shard=shard, seed=1, batch_size=16,
                                progress=False)
        shards.append(root / f"shard-{shard}.npz")
        save_shard(shards[-1], {**result, "experiment": np.str_("toy"), "run": np.str_("r"), "n": np.int64(40)})
    return root, shards


def _stage(tmp_path, toyfaces16, extractor16, model):
    from pivq.stages import attributes

    root, shards = _run(tmp_path, toyfaces16, model)
    out = tmp_path / "metrics" / "toy"
    result = attributes("toy", "toyfaces16", root / "model.pt", root / "codes.npz", toyfaces16, extractor16,
                        out / "attributes.json", out / "reconstructions.npz", shard_paths=shards, batch_size=16)
    return result, out


def test_stage_fails_a_model_that_decodes_one_constant_image(toyfaces16, extractor16, tmp_path, make_model,
                                                             one_thread):
    from pivq.report import metrics_json, reconstructions

    model = make_model(pixel_range="symmetric")
    with torch.no_grad():  # the decoder's last conv outputs its bias alone: one grey image for every code set
        model.conv_decoder.conv_out.weight.zero_()
        model.conv_decoder.conv_out.bias.fill_(0.1)
    result, out = _stage(tmp_path, toyfaces16, extractor16, model)
    rec = result["reconstruction"]
    assert rec["n_images"] == 50 and not rec["retained"]
    assert rec["retention_min"] < RETENTION_TARGET
    for attribute, values in rec["attributes"].items():  # one image, one prediction: at most the majority rate
        assert values["reconstruction"] <= values["majority"] + 1e-9, attribute
    mix = result["recombination"]
    assert mix["n_samples"] == 40
    assert mix["kept"] == pytest.approx(mix["kept_chance"], abs=0.25)  # no better than other samples' parents
    assert metrics_json(tmp_path / "metrics", "toy", "attributes.json") == result
    figure = reconstructions(tmp_path / "metrics", "toy")
    assert figure["original"].shape == (8, 16, 16, 3)
    assert (figure["reconstruction"] == figure["reconstruction"][0]).all()  # the same constant image throughout
    assert sorted(p.name for p in out.iterdir()) == ["attributes.json", "reconstructions.npz"]  # no temporaries


def test_stage_scores_the_originals_as_their_own_reconstructions(toyfaces16, extractor16, tmp_path, make_model,
                                                                 one_thread):
    """The same classifier on the same images gives retention 1: what the stage compares is only the decodes."""
    from pivq.data import PreparedDataset
    from pivq.metrics import load_extractor
    from pivq.metrics.attributes import label_codes, predict

    data = PreparedDataset(toyfaces16)
    extractor = load_extractor(extractor16)
    test = np.asarray(data.images)[data.indices("test")]
    truth = label_codes(data.attributes.iloc[data.indices("test")], extractor)
    result = reconstruction_attributes(predict(extractor, [test]), predict(extractor, [test[:25], test[25:]]), truth)
    assert result["retained"] and result["retention_min"] == pytest.approx(1.0)
    assert set(result["attributes"]) == set(data.categorical_attributes)


def test_label_codes_names_a_missing_column(extractor16):
    from pivq.metrics import load_extractor
    from pivq.metrics.attributes import label_codes

    with pytest.raises(ValueError, match="has no column"):
        label_codes(pd.DataFrame({"hat": ["yes"]}), load_extractor(extractor16))


def test_soften_blurs_the_drawn_fraction_and_keeps_the_rest():
    from pivq.metrics.extractor import soften

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, size=(64, 3, 16, 16), dtype=np.uint8))
    out = soften(images, 0.5, torch.Generator().manual_seed(0))
    same = (out * 255 - images.float()).abs().amax(dim=(1, 2, 3)) < 1e-3
    assert 16 < int((~same).sum()) < 48  # about half of them changed
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    changed = out[~same] * 255
    assert changed.std() < images[~same].float().std()  # blurred noise: less spread than the noise
    untouched = soften(images, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(untouched, images.float() / 255)
