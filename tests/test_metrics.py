"""Tests of pivq.metrics: the attribute-CNN extractor, torch-fidelity registration, FID/P/R/D/C.

Synthetic "visible label" images stand in for faces: a background colour, and a coloured square in
one of four quadrants; each is a label the extractor must learn. Images are 16x16, a few hundred.
"""

from __future__ import annotations

import re

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


@pytest.mark.parametrize("k", [3, 6])
def test_torch_fidelity_registration_and_equivalence(trained, real_images, k):
    """calculate_metrics runs with the registered extractor and gives compute_fidelity's FID, and its precision/recall
    at prc_neighborhood = k are the "_torch_fidelity" keys at nearest_k = k."""
    import torch_fidelity

    path, _ = trained
    register()
    register()  # idempotent
    fake = make_patches(150, seed=2)[0]
    tf = torch_fidelity.calculate_metrics(
        input1=ImageArrayDataset(fake), input2=ImageArrayDataset(real_images), fid=True, prc=True,
        feature_extractor=TOYFACES_CNN, feature_extractor_weights_path=str(path),
        cuda=False, cache=False, verbose=False, save_cpu_ram=True, batch_size=64, prc_neighborhood=k,
    )
    ours = compute_fidelity(real_images, fake, TOYFACES_CNN, path, nearest_k=k, batch_size=64)
    assert ours["fid"] == pytest.approx(tf["frechet_inception_distance"], rel=1e-4, abs=1e-4)
    assert ours["nearest_k"] == k
    assert ours["precision_torch_fidelity"] == tf["precision"] and ours["recall_torch_fidelity"] == tf["recall"]


def test_identical_sets_score_perfectly(trained, real_images):
    path, _ = trained
    out = compute_fidelity(real_images, real_images.copy(), TOYFACES_CNN, path)
    assert out["feature_extractor"] == TOYFACES_CNN and out["feature_layer"] == "features"
    assert out["n_real"] == out["n_fake"] == 200 and out["nearest_k"] == 3  # UT's k (calc_PRDC.py line 86)
    assert "prc_neighborhood" not in out and "precision_prdc" not in out and "recall_prdc" not in out
    assert len(out["feature_extractor_weights_sha256"]) == 64
    assert set(out["versions"]) == {"torch", "torch_fidelity", "prdc", "pivq"}
    assert abs(out["fid"]) < 1e-3
    for key in ("precision", "recall", "precision_torch_fidelity", "recall_torch_fidelity", "coverage"):
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


@pytest.mark.parametrize("k", [3, 7])
def test_one_k_for_all_four_metrics_and_torch_fidelitys_pair(trained, real_images, monkeypatch, k):
    """On random features (the extraction replaced), compute_fidelity's precision, recall, density and coverage are
    prdc.compute_prdc(real, fake, nearest_k=k)'s, and its "_torch_fidelity" pair is prc_features_to_metric's at
    prc_neighborhood = k (UT experiments/calc_PRDC.py line 86: one k for all four)."""
    from prdc import compute_prdc

    from pivq.metrics import fidelity

    g = torch.Generator().manual_seed(k)
    # integer-valued: many distances tie with a k-NN radius, where prdc's "<" and torch-fidelity's "<=" part ways
    features = {200: torch.randint(0, 5, (200, 4), generator=g).float(),  # real: 200 images
                90: torch.randint(0, 6, (90, 4), generator=g).float()}  # fake: 90 images, partly off the reals
    monkeypatch.setattr(fidelity, "_extract", lambda net, images, batch_size, device: features[len(images)])
    out = compute_fidelity(real_images, real_images[:90], TOYFACES_CNN, trained[0], nearest_k=k)
    real, fake = features[200], features[90]
    expected = compute_prdc(real_features=real.numpy(), fake_features=fake.numpy(), nearest_k=k)
    assert out["nearest_k"] == k
    for key in ("precision", "recall", "density", "coverage"):
        assert out[key] == pytest.approx(float(expected[key]), abs=1e-12), key
    assert (out["precision_torch_fidelity"], out["recall_torch_fidelity"]) == _torch_fidelity_prc(fake, real, k, 10_000)
    # the two definitions differ on these sets (ties), so the keys cannot be swapped unnoticed
    assert out["precision"] < out["precision_torch_fidelity"] and out["recall"] < out["recall_torch_fidelity"]
    # and k reaches them: prdc's numbers at another k are others
    other = compute_prdc(real_features=real.numpy(), fake_features=fake.numpy(), nearest_k=k + 2)
    assert any(float(other[key]) != pytest.approx(out[key], abs=1e-12) for key in other)


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

METRIC_KEYS = ("fid", "precision", "recall", "density", "coverage", "precision_torch_fidelity",
               "recall_torch_fidelity")


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


# --- image sources read batch by batch (host memory set by the batch size) ----------------------------------


class RecordingSource:
    """Wraps an image source; records each batches() call and the largest batch it handed out. It has no
    __getitem__ and no __array__: whatever reads the images must go through batches()."""

    def __init__(self, source):
        self.source, self.shape, self.dtype = source, source.shape, source.dtype
        self.calls, self.largest, self.rows = [], 0, 0

    def __len__(self):
        return len(self.source)

    def batches(self, batch_size):
        self.calls.append(batch_size)
        for batch in self.source.batches(batch_size):
            self.largest, self.rows = max(self.largest, len(batch)), self.rows + len(batch)
            yield batch


def _sources(real_images, fake_images, tmp_path):
    """(ImageRows of the real images inside a larger memmap, ShardImages of the fakes in shards of 50, 33, 37)."""
    from pivq.data import ImageRows
    from pivq.sample import ShardImages, save_shard

    rows = np.arange(1, 2 * len(real_images), 2)  # every other row of a memmap twice the size
    mm = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8,
                                   shape=(2 * len(real_images), *real_images.shape[1:]))
    mm[rows] = real_images
    mm.flush()
    paths, start = [], 0
    for k, m in enumerate((50, 33, 37)):
        paths.append(tmp_path / f"shard-{k}.npz")
        save_shard(paths[-1], {"images": fake_images[start : start + m], "sample_index": np.arange(start, start + m)})
        start += m
    assert start == len(fake_images)
    return ImageRows(np.load(tmp_path / "images.npy", mmap_mode="r"), rows), ShardImages(paths)


def test_compute_fidelity_on_batch_sources_equals_arrays(trained, real_images, fake_images, tmp_path):
    """ImageRows and ShardImages give the arrays' result dict, every number equal, the reference key too; batch
    size 64 cuts both sets and the shards (50, 33, 37) elsewhere than shard boundaries."""
    from pivq.data import ImageRows
    from pivq.sample import ShardImages, save_shard

    path, _ = trained
    real, fake = _sources(real_images, fake_images, tmp_path)
    for cache in (None, tmp_path / "ref-arrays"):
        arrays = compute_fidelity(real_images, fake_images, TOYFACES_CNN, path, batch_size=64, reference_cache=cache)
        streamed = compute_fidelity(real, fake, TOYFACES_CNN, path, batch_size=64,
                                    reference_cache=None if cache is None else tmp_path / "ref-sources")
        assert streamed == arrays
    # a source's declared dtype and count are checked before any image is read
    with pytest.raises(ValueError, match="expected uint8 images"):
        compute_fidelity(ImageRows(real_images.astype(np.float32)), fake, TOYFACES_CNN, path)
    save_shard(tmp_path / "few.npz", {"images": fake_images[:5]})
    few = RecordingSource(ShardImages([tmp_path / "few.npz"]))
    with pytest.raises(ValueError, match="need more than 5 fake images"):
        compute_fidelity(real, few, TOYFACES_CNN, path, nearest_k=5)
    assert few.calls == []


def test_images_sha256_of_sources_equals_the_array(real_images, fake_images, tmp_path):
    from pivq.data import ImageRows
    from pivq.metrics.reference_cache import images_sha256

    real, fake = _sources(real_images, fake_images, tmp_path)
    row = RES * RES * 3
    for chunk_bytes in (row, 7 * row, 64 * row, 1 << 26):  # chunks of 1, 7, 64 rows and the default
        assert images_sha256(real, chunk_bytes) == images_sha256(real_images)
        assert images_sha256(fake, chunk_bytes) == images_sha256(fake_images)
        assert images_sha256(ImageRows(real_images), chunk_bytes) == images_sha256(real_images)
    recorded = RecordingSource(real)
    images_sha256(recorded, chunk_bytes=7 * row)
    assert recorded.calls == [7] and recorded.largest == 7 and recorded.rows == len(real_images)


def test_compute_fidelity_reads_one_batch_of_images_at_a_time(trained, real_images, fake_images, tmp_path):
    """Every image reaches compute_fidelity through batches() of batch_size rows (the reference key reads chunks
    of at most HASH_CHUNK_BYTES): never the whole set, whichever way (cache off, miss, hit)."""
    from pivq.metrics.reference_cache import HASH_CHUNK_BYTES

    path, _ = trained
    real, fake = _sources(real_images, fake_images, tmp_path)
    hash_rows = HASH_CHUNK_BYTES // (RES * RES * 3)
    for cache, status in ((None, "off"), (tmp_path / "ref", "miss"), (tmp_path / "ref", "hit")):
        r, f = RecordingSource(real), RecordingSource(fake)
        out = compute_fidelity(r, f, TOYFACES_CNN, path, batch_size=16, reference_cache=cache)
        assert out["reference_features_cache"] == status
        assert f.calls == [16] and f.largest == 16 and f.rows == len(fake_images)
        assert r.calls == {"off": [16], "miss": [hash_rows, 16], "hit": [hash_rows]}[status]
        assert r.largest == min(len(real_images), hash_rows if status != "off" else 16)


def test_fidelity_stage_never_holds_a_whole_image_set(trained, tmp_path):
    """The stage's numpy allocations (tracemalloc traces them: images read from the memmap or the shards, their
    copies) peak far below one image set: 400 real and 400 fake 80x80 images are 7.7 MB each, a batch of 25 is
    0.5 MB (the rest of the peak is the tables and the extractor's checkpoint). A full load (load_sample_images,
    np.asarray(data.images[idx])) would trace at least 7.7 MB. The result equals compute_fidelity on the arrays."""
    import tracemalloc

    from pivq import stages
    from pivq.data import PreparedDataset, prepare_toyfaces
    from pivq.sample import load_sample_images, save_shard

    path, _ = trained
    prepare_toyfaces(tmp_path / "data", resolution=80, n_train=400, n_test=400, seed=0)
    data = PreparedDataset(tmp_path / "data")
    test = data.indices("test")
    shards = [tmp_path / f"shard-{k}.npz" for k in range(3)]
    for shard, rows, index in zip(shards, np.array_split(test, 3), np.array_split(np.arange(len(test)), 3)):
        # what sample_shard records besides the images: one sample set of one run (pivq.sample.check_shards)
        save_shard(shard, {"images": np.asarray(data.images[rows]), "sample_index": index,
                           "experiment": np.str_("toy"), "run": np.str_("r"), "n": np.int64(len(test))})
    set_bytes = 400 * 80 * 80 * 3
    metrics = {"n_real": 500, "reference": "all", "reference_rows": "first", "nearest_k": 5, "batch_size": 25,
               "seed": 0}
    kwargs = dict(name="toy", dataset_name="toyfaces80", metrics=metrics, extractor={"name": TOYFACES_CNN},
                  shard_paths=shards, dataset_dir=tmp_path / "data", extractor_weights=path)
    tracemalloc.start()
    try:
        result = stages.fidelity(out_path=tmp_path / "fidelity.json", **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < set_bytes / 2, f"traced peak {peak / 1e6:.2f} MB, one image set is {set_bytes / 1e6:.2f} MB"
    whole = compute_fidelity(np.asarray(data.images[:500]), load_sample_images(shards),
                             TOYFACES_CNN, path, nearest_k=5, batch_size=25)
    for key in METRIC_KEYS:
        assert result[key] == whole[key], key
    assert result["reference"] == {"split": "all", "rows": "first", "n": 500, "of": 800}
    assert result["n_real"] == 500 and result["nearest_k"] == 5 and "real_split" not in result


@pytest.fixture(scope="module")
def small_stage_inputs(tmp_path_factory):
    """A prepared toyfaces16 set of 30 train + 20 test images, and one shard of 12 samples (copies of its images)."""
    from pivq.data import PreparedDataset, prepare_toyfaces
    from pivq.sample import save_shard

    root = tmp_path_factory.mktemp("reference")
    prepare_toyfaces(root / "data", resolution=RES, n_train=30, n_test=20, seed=0)
    data = PreparedDataset(root / "data")
    save_shard(root / "shard-0.npz", {"images": np.asarray(data.images[:12]), "sample_index": np.arange(12),
                                      "experiment": np.str_("toy"), "run": np.str_("r"), "n": np.int64(12)})
    return root / "data", [root / "shard-0.npz"], data


def _stage(data_dir, shards, weights, out, **metrics):
    from pivq import stages

    metrics = {"n_real": 10, "reference": "all", "reference_rows": "first", "nearest_k": 3, "batch_size": 8,
               "seed": 0, **metrics}
    return stages.fidelity("toy", "toyfaces16", metrics, {"name": TOYFACES_CNN}, shards, data_dir, weights, out)


@pytest.mark.parametrize("reference,rows,n", [("all", "first", 50), ("all", "first", 35), ("train", "first", 10),
                                              ("test", "first", 20), ("test", "random", 7), ("all", "random", 40)])
def test_the_reference_set_is_the_split_s_first_or_random_rows(trained, small_stage_inputs, tmp_path, monkeypatch,
                                                                reference, rows, n):
    """metrics.reference picks the split (all = train + test), reference_rows the first n_real rows of it in the
    prepared order or n_real drawn with metrics.seed (sorted); the images compute_fidelity gets are those rows, and
    the JSON records {"split", "rows", "n", "of"}."""
    import json

    import pivq.metrics
    from pivq.data import ImageRows

    data_dir, shards, data = small_stage_inputs
    pool = {"all": np.arange(50), "train": data.indices("train"), "test": data.indices("test")}[reference]
    assert len(data.indices("train")) == 30 and len(data.indices("test")) == 20
    expected = pool[:n] if rows == "first" else np.sort(np.random.default_rng(4).choice(pool, n, replace=False))
    seen = {}
    real_compute = pivq.metrics.compute_fidelity

    def recording(real, fake, **kw):
        seen["rows"] = np.asarray(real.rows)
        assert isinstance(real, ImageRows)
        return real_compute(real, fake, **kw)

    monkeypatch.setattr(pivq.metrics, "compute_fidelity", recording)
    result = _stage(data_dir, shards, trained[0], tmp_path / "f.json", n_real=n, reference=reference,
                    reference_rows=rows, seed=4)
    np.testing.assert_array_equal(seen["rows"], expected)
    if rows == "random" and n < len(pool):
        assert not np.array_equal(expected, pool[:n])  # the draw is not the first rows
    record = {"split": reference, "rows": rows, "n": n, "of": len(pool)}
    assert result["reference"] == record and result["n_real"] == n
    assert json.loads((tmp_path / "f.json").read_text())["reference"] == record


@pytest.mark.parametrize("reference,held,what", [("all", 50, r"train \+ test"), ("train", 30, "train"),
                                                 ("test", 20, "test")])
def test_more_real_images_than_the_reference_holds_is_refused_before_any_feature(
        trained, small_stage_inputs, tmp_path, monkeypatch, reference, held, what):
    """n_real beyond the split is an error naming metrics.n_real, the count there, the split and the folder, raised
    before images.npy is hashed or any feature computed; never a smaller real set."""
    import pivq.data.prepared
    import pivq.metrics

    data_dir, shards, _ = small_stage_inputs
    hashed = []
    real_sha256 = pivq.data.prepared.sha256_file
    monkeypatch.setattr(pivq.data.prepared, "sha256_file", lambda path: hashed.append(path.name) or real_sha256(path))
    monkeypatch.setattr(pivq.metrics, "compute_fidelity", lambda *a, **kw: pytest.fail("features were computed"))
    with pytest.raises(ValueError) as err:
        _stage(data_dir, shards, trained[0], tmp_path / "f.json", n_real=held + 1, reference=reference)
    message = str(err.value)
    assert "experiments.toy.metrics.n_real = " + str(held + 1) in message, message
    assert re.search(rf"holds {held} {what} images", message) and str(data_dir) in message, message
    assert "images.npy" not in hashed and not (tmp_path / "f.json").exists()
    # nearest_k must stay below n_real (and the sample count), named too
    with pytest.raises(ValueError, match=r"experiments.toy.metrics.nearest_k = 10 needs more real images"):
        _stage(data_dir, shards, trained[0], tmp_path / "f.json", n_real=10, nearest_k=10)
    with pytest.raises(ValueError, match=r"experiments.toy.metrics.nearest_k = 12 needs more samples than the 12"):
        _stage(data_dir, shards, trained[0], tmp_path / "f.json", n_real=20, nearest_k=12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compute_fidelity_on_cuda_agrees_with_the_cpu(trained, real_images, fake_images, tmp_path):
    """On a GPU the features, precision/recall's and prdc's distance tiles run there; the numbers agree with the
    CPU's up to float rounding (a k-NN ball may flip for a sample or two), from arrays and from sources alike."""
    path, _ = trained
    cpu = compute_fidelity(real_images, fake_images, TOYFACES_CNN, path, batch_size=64)
    real, fake = _sources(real_images, fake_images, tmp_path)
    for gpu in (compute_fidelity(real_images, fake_images, TOYFACES_CNN, path, batch_size=64, device="cuda"),
                compute_fidelity(real, fake, TOYFACES_CNN, path, batch_size=64, device="cuda")):
        assert gpu["fid"] == pytest.approx(cpu["fid"], rel=1e-3, abs=1e-3)
        for key in ("precision", "recall", "density", "coverage", "precision_torch_fidelity",
                    "recall_torch_fidelity"):
            assert gpu[key] == pytest.approx(cpu[key], abs=0.03), key


# --- torch-fidelity's precision/recall in batch_size x batch_size memory (prc_chunked) -----------------------


def _torch_fidelity_prc(fake, real, neighborhood, batch_size):
    from torch_fidelity.metric_prc import prc_features_to_metric

    out = prc_features_to_metric(fake, real, prc_neighborhood=neighborhood, prc_batch_size=batch_size,
                                 save_cpu_ram=True, verbose=False)
    return out["precision"], out["recall"]


def _feature_sets():
    """(name, fake, real) float32 feature sets: continuous, integer-valued with duplicated points (ties at the k-th
    distance and at the ball's edge), shifted, with N below, above and not a multiple of the batch sizes used."""
    g = torch.Generator().manual_seed(0)
    yield "gaussian", torch.randn(301, 16, generator=g), torch.randn(257, 16, generator=g) * 1.2 + 0.1
    yield "small", torch.randn(9, 4, generator=g), torch.randn(13, 4, generator=g)
    grid = torch.randint(0, 3, (150, 3), generator=g).float()  # 27 distinct points: many exact duplicates
    yield "duplicates", torch.cat([grid, grid[:40]]), torch.randint(0, 3, (170, 3), generator=g).float()
    base = torch.randn(60, 8, generator=g)
    yield "repeated rows", base.repeat(4, 1), base[:50].repeat(3, 1) + 0.5
    yield "shifted", torch.randn(200, 32, generator=g) + 1.0, torch.randn(330, 32, generator=g)


@pytest.mark.parametrize("batch_size", [7, 64, 10_000])
@pytest.mark.parametrize("neighborhood", [1, 3, 5])
def test_prc_chunked_equals_torch_fidelity(batch_size, neighborhood):
    """Bit-identical (==) to prc_features_to_metric(save_cpu_ram=True) at the same prc_batch_size."""
    from pivq.metrics.prc_chunked import precision_recall

    for name, fake, real in _feature_sets():
        expected = _torch_fidelity_prc(fake, real, neighborhood, batch_size)
        assert precision_recall(fake, real, neighborhood, batch_size) == expected, name


def test_prc_chunked_radii_and_flags_equal_torch_fidelity_per_point():
    """Stronger than the means: every radius (kthvalue over the whole row) and every in-some-ball flag is
    torch-fidelity's, with batch sizes that cut the sets into blocks of uneven sizes."""
    from torch_fidelity.metric_prc import calc_cdist_part

    from pivq.metrics.prc_chunked import _kth_smallest, _within_some_ball

    for name, fake, real in _feature_sets():
        for batch_size in (7, 64):
            radii = torch.cat([calc_cdist_part(b, real, batch_size).kthvalue(4).values
                               for b in real.split(batch_size)])
            ours = _kth_smallest(real, real, 4, batch_size)
            assert torch.equal(ours, radii), (name, batch_size)
            flags = torch.cat([(calc_cdist_part(b, real, batch_size) <= radii).any(dim=1)
                               for b in fake.split(batch_size)])
            assert torch.equal(_within_some_ball(fake, real, ours, batch_size), flags), (name, batch_size)


def test_prc_chunked_rejects_bad_inputs():
    from pivq.metrics.prc_chunked import precision_recall

    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="at least 4 points"):
        precision_recall(x, x[:3])
    with pytest.raises(ValueError, match="dimensions differ"):
        precision_recall(x, torch.randn(10, 5))
    with pytest.raises(ValueError, match="2-D"):
        precision_recall(x.numpy(), x)


class _LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the element count of the largest tensor any aten op returns (cdist's tiles and temporaries,
    cat, kthvalue, comparisons): a stand-in for peak memory that sees every allocation's size."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_prc_chunked_holds_one_tile_of_distances():
    """No tensor larger than batch_size x batch_size (or the N-long per-row state) is ever created, whereas
    torch-fidelity's row-wide concatenation makes batch_size x N ones: the test fails if that comes back."""
    from pivq.metrics.prc_chunked import precision_recall

    g = torch.Generator().manual_seed(1)
    fake, real, batch_size, k = torch.randn(700, 8, generator=g), torch.randn(600, 8, generator=g), 64, 3
    bound = max(batch_size * batch_size, len(fake), len(real))  # 4,096 elements; a row-wide block is 44,800
    ours, theirs = _LargestTensor(), _LargestTensor()
    with ours:
        result = precision_recall(fake, real, k, batch_size)
    with theirs:
        expected = _torch_fidelity_prc(fake, real, k, batch_size)
    assert result == expected
    assert ours.largest <= bound, f"largest tensor {ours.largest} elements, bound {bound}"
    assert theirs.largest >= batch_size * len(real) > bound  # the measure does see a row-wide block


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prc_chunked_on_cuda_equals_torch_fidelity_there():
    """On CUDA tensors the tiles are the same cdist calls on the GPU as torch-fidelity's (which then copies them to
    the host), so the results are equal there too; and close to the CPU's."""
    from pivq.metrics.prc_chunked import precision_recall

    for name, fake, real in _feature_sets():
        fake_gpu, real_gpu = fake.cuda(), real.cuda()
        for batch_size in (64, 10_000):
            ours = precision_recall(fake_gpu, real_gpu, 3, batch_size)
            assert ours == _torch_fidelity_prc(fake_gpu, real_gpu, 3, batch_size), (name, batch_size)
            assert ours == pytest.approx(precision_recall(fake, real, 3, batch_size), abs=0.05), (name, batch_size)
