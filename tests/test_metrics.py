"""Tests of pivq.metrics: the attribute-CNN extractor, torch-fidelity registration, FID/P/R/D/C.

Synthetic "visible label" images stand in for faces: a background colour, and a coloured square in
one of four quadrants; each is a label the extractor must learn. Images are 16x16, a few hundred.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pivq.metrics import (
    INCEPTION,
    TOYFACES_CNN,
    ImageArrayDataset,
    compute_features,
    compute_fidelity,
    inception_weights_path,
    load_extractor,
    prdc,
    register,
    train_extractor,
)

RES = 16
BACKGROUNDS = np.array([[30, 30, 30], [128, 128, 128], [200, 180, 160]], np.float32)
PALETTE = np.array([[220, 40, 40], [40, 200, 60], [50, 70, 230], [230, 210, 40]], np.float32)
SHIFTED_PALETTE = np.array([[255, 0, 255], [0, 255, 255]], np.float32)  # colours absent from PALETTE


def make_patches(n: int, seed: int, palette: np.ndarray = PALETTE) -> tuple[np.ndarray, dict]:
    """n noisy images with visible labels: background, square colour, square quadrant."""
    rng = np.random.default_rng(seed)
    labels = {
        "background": rng.integers(0, len(BACKGROUNDS), n),
        "color": rng.integers(0, len(palette), n),
        "quadrant": rng.integers(0, 4, n),
    }
    img = np.repeat(BACKGROUNDS[labels["background"]][:, None, None, :], RES, 1).repeat(RES, 2)
    half, side = RES // 2, RES // 4
    for i, q in enumerate(labels["quadrant"]):
        r, c = (q // 2) * half + side // 2, (q % 2) * half + side // 2
        img[i, r : r + side, c : c + side] = palette[labels["color"][i]]
    img += rng.normal(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), labels


TRAIN = dict(steps=60, batch_size=32, lr=2e-3, seed=0, width=16, feature_dim=32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    images, labels = make_patches(300, seed=0)
    path = tmp_path_factory.mktemp("extractor") / "extractor.pt"
    summary = train_extractor(images, labels, path, **TRAIN)
    return path, summary


@pytest.fixture(scope="module")
def real_images():
    return make_patches(200, seed=1)[0]


def test_extractor_learns_visible_labels(trained):
    _, summary = trained
    assert summary["n_heldout"] == 30 and summary["n_train"] == 270
    for attr, acc in summary["heldout_accuracy"].items():
        assert acc >= 0.9, (attr, acc)
        assert acc > summary["majority_baseline"][attr]


def test_checkpoint_round_trips_with_weights_only(trained):
    path, summary = trained
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["config"]["heads"] == {"background": 3, "color": 4, "quadrant": 4}
    assert ckpt["config"]["resolution"] == RES and ckpt["config"]["feature_dim"] == 32
    assert ckpt["heldout_accuracy"] == summary["heldout_accuracy"]
    assert ckpt["class_names"]["color"] == ["0", "1", "2", "3"]

    model = load_extractor(path)
    assert not model.training
    x = torch.from_numpy(make_patches(8, seed=5)[0]).permute(0, 3, 1, 2)
    features, logits = model(x)
    assert features.shape == (8, 32) and set(logits) == {"background", "color", "quadrant"}
    # Larger inputs are resized to the trained resolution; floats in [0, 1] equal uint8 input.
    assert model(torch.nn.functional.interpolate(x.float(), scale_factor=2))[0].shape == (8, 32)
    torch.testing.assert_close(model(x.float() / 255)[0], features)


def test_training_is_deterministic(tmp_path):
    images, labels = make_patches(40, seed=3)
    short = dict(TRAIN, steps=3)
    train_extractor(images, labels, tmp_path / "a.pt", **short)
    train_extractor(images, labels, tmp_path / "b.pt", **short)
    a, b = (torch.load(tmp_path / f, weights_only=True)["state_dict"] for f in ("a.pt", "b.pt"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_training_rejects_bad_labels(tmp_path):
    images, labels = make_patches(20, seed=3)
    with pytest.raises(ValueError, match="color"):
        train_extractor(images, {"color": labels["color"][:5]}, tmp_path / "x.pt", **TRAIN)
    with pytest.raises(ValueError, match="3 classes"):
        train_extractor(images, {"color": labels["color"]}, tmp_path / "x.pt",
                        class_names={"color": ["a", "b", "c"]}, **TRAIN)


def test_load_extractor_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_extractor(missing)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="other.pt"):
        load_extractor(other)


def test_torch_fidelity_registration_and_equivalence(trained, real_images):
    """calculate_metrics runs with the registered extractor and gives compute_fidelity's numbers."""
    import torch_fidelity

    path, _ = trained
    register()
    register()  # idempotent
    fake = make_patches(150, seed=2)[0]
    tf = torch_fidelity.calculate_metrics(
        input1=ImageArrayDataset(fake), input2=ImageArrayDataset(real_images), fid=True, prc=True,
        feature_extractor=TOYFACES_CNN, feature_extractor_weights_path=str(path),
        cuda=False, cache=False, verbose=False, save_cpu_ram=True, batch_size=64,
    )
    ours = compute_fidelity(real_images, fake, TOYFACES_CNN, path, batch_size=64)
    assert ours["fid"] == pytest.approx(tf["frechet_inception_distance"], rel=1e-4, abs=1e-4)
    assert ours["precision"] == tf["precision"] and ours["recall"] == tf["recall"]


def test_identical_sets_score_perfectly(trained, real_images):
    path, _ = trained
    out = compute_fidelity(real_images, real_images.copy(), TOYFACES_CNN, path)
    assert out["feature_extractor"] == TOYFACES_CNN and out["feature_layer"] == "features"
    assert out["n_real"] == out["n_fake"] == 200 and out["nearest_k"] == 5
    assert len(out["feature_extractor_weights_sha256"]) == 64
    assert set(out["versions"]) == {"torch", "torch_fidelity", "prdc", "pivq"}
    assert abs(out["fid"]) < 1e-3
    for key in ("precision", "recall", "precision_prdc", "recall_prdc", "coverage"):
        assert out[key] == 1.0, key
    assert out["density"] == pytest.approx(1.0, abs=0.02)


def test_shifted_set_scores_worse(trained, real_images):
    path, _ = trained
    same = compute_fidelity(real_images, make_patches(200, seed=2)[0], TOYFACES_CNN, path)
    shifted = compute_fidelity(
        real_images, make_patches(200, seed=2, palette=SHIFTED_PALETTE)[0], TOYFACES_CNN, path
    )
    assert shifted["fid"] > 5 * same["fid"]
    assert shifted["precision"] < same["precision"] - 0.3
    assert shifted["recall"] < same["recall"] and shifted["coverage"] < same["coverage"]
    # Not density: fakes off the real manifold may still crowd into dense real regions (here ~1.3).


def test_compute_features_matches_fidelity_layer(trained, real_images):
    path, _ = trained
    features = compute_features(real_images[:10], TOYFACES_CNN, path, batch_size=4)
    direct = load_extractor(path).features(torch.from_numpy(real_images[:10]).permute(0, 3, 1, 2))
    assert features.dtype == np.float32 and features.shape == (10, 32)
    np.testing.assert_allclose(features, direct.numpy(), rtol=1e-5, atol=1e-6)


def test_prdc_matches_the_prdc_package():
    from prdc import compute_prdc

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(120, 8)), rng.normal(0.3, 1.0, size=(100, 8))
    ours = prdc(real, fake, nearest_k=5)
    reference = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    assert set(ours) == {"precision", "recall", "density", "coverage"}
    for key, value in reference.items():
        assert ours[key] == pytest.approx(float(value), abs=1e-12), key
    with pytest.raises(ValueError, match="nearest_k"):
        prdc(real[:5], fake, nearest_k=5)


def test_inception_weights_path_never_downloads(tmp_path, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    from pivq.metrics.registry import INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL

    assert INCEPTION_WEIGHTS_URL == URL_INCEPTION_V3
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as err:
        inception_weights_path()
    assert INCEPTION_WEIGHTS_FILE in str(err.value) and str(folder) in str(err.value)
    with pytest.raises(FileNotFoundError, match="elsewhere.pth"):
        inception_weights_path(tmp_path / "elsewhere.pth")
    # compute_fidelity checks the weights before touching the images.
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_FILE):
        compute_fidelity(np.zeros((1, 4, 4, 3), np.uint8), None, INCEPTION, None)

    folder.mkdir(parents=True)
    (folder / INCEPTION_WEIGHTS_FILE).write_bytes(b"")
    assert inception_weights_path() == folder / INCEPTION_WEIGHTS_FILE
    assert inception_weights_path(folder / INCEPTION_WEIGHTS_FILE) == folder / INCEPTION_WEIGHTS_FILE


def test_unknown_extractor_is_rejected(real_images):
    with pytest.raises(ValueError, match="unknown feature extractor"):
        compute_fidelity(real_images, real_images, "vgg99", None)


def test_extractor_learns_toyfaces(tmp_path):
    """With the real generator: easy attributes are learnt far above the majority baseline."""
    toyfaces = pytest.importorskip("pivq.data.toyfaces")
    import pandas as pd

    images, table, _ = toyfaces.render_toyfaces(600, RES, seed=0)
    names = {attr: list(values) for attr, values in toyfaces.FACTORS.items()}
    labels = {a: pd.Categorical(table[a], categories=c).codes.astype(np.int64) for a, c in names.items()}
    summary = train_extractor(
        images, labels, tmp_path / "toy.pt", steps=100, batch_size=32, lr=2e-3, seed=0, class_names=names
    )
    assert load_extractor(tmp_path / "toy.pt").class_names == names
    for attr in ("background", "hat"):
        assert summary["heldout_accuracy"][attr] >= 0.9, (attr, summary["heldout_accuracy"])
    assert summary["heldout_accuracy_mean"] > np.mean(list(summary["majority_baseline"].values())) + 0.1


# --- reference-feature cache keyed by content (issue 6) ---------------------------------------------------

METRIC_KEYS = ("fid", "precision", "recall", "density", "coverage", "precision_prdc", "recall_prdc")


def _fidelity_with_cache(real, fake, weights, cache):
    return compute_fidelity(real, fake, TOYFACES_CNN, weights, batch_size=64, reference_cache=cache)


@pytest.fixture(scope="module")
def fake_images():
    return make_patches(120, seed=2)[0]


def test_reference_cache_second_call_hits_with_identical_metrics(trained, real_images, fake_images, tmp_path):
    import json

    path, _ = trained
    first = _fidelity_with_cache(real_images, fake_images, path, tmp_path / "ref")
    second = _fidelity_with_cache(real_images, fake_images, path, tmp_path / "ref")
    uncached = compute_fidelity(real_images, fake_images, TOYFACES_CNN, path, batch_size=64)
    assert first["reference_features_cache"] == "miss" and second["reference_features_cache"] == "hit"
    assert uncached["reference_features_cache"] == "off" and uncached["reference_features_key"] is None
    key = first["reference_features_key"]
    assert len(key) == 64 and second["reference_features_key"] == key
    for k in METRIC_KEYS:
        assert first[k] == second[k] == uncached[k], k
    npy = tmp_path / "ref" / f"{TOYFACES_CNN}-features-{key[:16]}.npy"
    sidecar = json.loads(npy.with_suffix(".json").read_text())
    assert sidecar["key"] == key and sidecar["shape"] == [200, 32] and sidecar["dtype"] == "float32"
    assert set(sidecar["key_inputs"]) == {"feature_code_version", "images_sha256", "layer", "weights_sha256"}
    assert sidecar["key_inputs"]["weights_sha256"] == first["feature_extractor_weights_sha256"]
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == sorted([npy.name, npy.with_suffix(".json").name])


def test_reference_cache_one_pixel_changes_the_key(trained, real_images, fake_images, tmp_path):
    from pivq.metrics.reference_cache import images_sha256

    path, _ = trained
    first = _fidelity_with_cache(real_images, fake_images, path, tmp_path)
    changed = real_images.copy()
    changed[17, 3, 5, 1] ^= 1
    second = _fidelity_with_cache(changed, fake_images, path, tmp_path)
    assert second["reference_features_cache"] == "miss"
    assert second["reference_features_key"] != first["reference_features_key"]
    assert len(list(tmp_path.glob("*.npy"))) == 2
    # The image hash reads a memmap in chunks of rows and equals the in-memory one; the shape is hashed too.
    mm = np.lib.format.open_memmap(tmp_path / "real.npy", mode="w+", dtype=np.uint8, shape=real_images.shape)
    mm[:] = real_images
    assert images_sha256(mm, chunk_bytes=7 * RES * RES * 3) == images_sha256(real_images)
    assert images_sha256(real_images[:100]) != images_sha256(real_images[:100].reshape(50, 2 * RES, RES, 3))


def test_reference_cache_other_extractor_weights_miss(trained, real_images, fake_images, tmp_path):
    path, _ = trained
    ckpt = torch.load(path, weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][name] = ckpt["state_dict"][name] * 1.01
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    first = _fidelity_with_cache(real_images, fake_images, path, tmp_path / "ref")
    second = _fidelity_with_cache(real_images, fake_images, other, tmp_path / "ref")
    assert second["reference_features_cache"] == "miss"
    assert second["reference_features_key"] != first["reference_features_key"]
    assert second["fid"] == compute_fidelity(real_images, fake_images, TOYFACES_CNN, other, batch_size=64)["fid"]


def test_reference_cache_truncated_file_is_recomputed(trained, real_images, fake_images, tmp_path, caplog):
    path, _ = trained
    first = _fidelity_with_cache(real_images, fake_images, path, tmp_path)
    npy = tmp_path / f"{TOYFACES_CNN}-features-{first['reference_features_key'][:16]}.npy"
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="pivq.metrics.reference_cache"):
        second = _fidelity_with_cache(real_images, fake_images, path, tmp_path)
    assert second["reference_features_cache"] == "miss"
    assert any(r.levelname == "WARNING" and str(npy) in r.getMessage() for r in caplog.records), caplog.text
    for k in METRIC_KEYS:
        assert second[k] == first[k], k
    # rewritten intact: the next call hits; a same-size corruption (one flipped bit) is caught by the sha256
    assert _fidelity_with_cache(real_images, fake_images, path, tmp_path)["reference_features_cache"] == "hit"
    data = bytearray(npy.read_bytes())
    data[-1] ^= 1
    npy.write_bytes(bytes(data))
    caplog.clear()
    with caplog.at_level("WARNING", logger="pivq.metrics.reference_cache"):
        third = _fidelity_with_cache(real_images, fake_images, path, tmp_path)
    assert third["reference_features_cache"] == "miss" and third["fid"] == first["fid"]
    assert str(npy) in caplog.text
