"""Interpolation-based sampling (Algorithm 1), smooth paths, and sharded generation."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from pivq.sample import (
    draw_pairs,
    generate_shard,
    interpolate,
    interpolation_paths,
    load_sample_images,
    sample_generator,
    save_shard,
    shard_range,
    smooth_path,
    to_uint8,
)

pytestmark = pytest.mark.usefixtures("one_thread")

K, L = 32, 8


def _random_pair(rng: np.random.Generator, common: int, n_codes: int = L, k: int = K):
    """Two code sets of size n_codes sharing exactly ``common`` codes."""
    pool = rng.permutation(k)
    shared = pool[:common]
    a = np.concatenate([shared, pool[common:n_codes]])
    b = np.concatenate([shared, pool[n_codes : 2 * n_codes - common]])
    return torch.from_numpy(rng.permutation(a)).long(), torch.from_numpy(rng.permutation(b)).long()


def _set(t: torch.Tensor) -> set[int]:
    return set(t.tolist())


@pytest.fixture
def train_codes():
    """30 matching code sets (L = 8 distinct codes of K = 32), sorted like encode_images writes them."""
    rng = np.random.default_rng(0)
    return np.sort(np.stack([rng.permutation(K)[:L] for _ in range(30)]), axis=1).astype(np.int32)


# --- Algorithm 1 --------------------------------------------------------------------------------------------


def test_interpolate_set_properties():
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    for common in range(L + 1):  # from disjoint sets to identical ones
        for _ in range(20):
            a, b = _random_pair(rng, common)
            out = interpolate(a, b, gen)
            sa, sb, so = _set(a), _set(b), _set(out)
            assert out.dtype == torch.int64 and out.shape == (L,)
            assert len(so) == L  # distinct codes
            assert sa & sb <= so  # the intersection is kept
            assert so - (sa & sb) <= sa ^ sb  # the rest from the symmetric difference
            if common == L:
                assert so == sa


def test_interpolate_is_reproducible_from_its_generator():
    a, b = _random_pair(np.random.default_rng(1), 2)
    draws = [_set(interpolate(a, b, torch.Generator().manual_seed(s))) for s in (5, 5, 6, 7, 8, 9)]
    assert draws[0] == draws[1]
    assert len({frozenset(d) for d in draws}) > 2  # and the draw does vary with the seed


def test_interpolate_draws_uniformly_from_the_symmetric_difference():
    a, b = _random_pair(np.random.default_rng(2), 3)
    exclusive = sorted(_set(a) ^ _set(b))
    assert len(exclusive) == 10  # 5 + 5 exclusive codes, 5 drawn
    gen = torch.Generator().manual_seed(0)
    n = 4000
    counts = Counter()
    for _ in range(n):
        counts.update(_set(interpolate(a, b, gen)) - (_set(a) & _set(b)))
    observed = [counts[c] for c in exclusive]
    assert sum(observed) == n * 5
    assert chisquare(observed).pvalue > 1e-3, observed
    # sanity: the test rejects a draw that favours a's exclusive codes 55:45
    only_a = set(exclusive) & _set(a)
    biased = [int(n * 5 / 10 * (1.1 if c in only_a else 0.9)) for c in exclusive]
    assert chisquare(biased).pvalue < 1e-3


def test_interpolate_draws_uniform_subsets():
    """Uniform without replacement: every (L - |C_c|)-subset of C_d equally likely (6 subsets here)."""
    a, b = torch.tensor([0, 1, 2]), torch.tensor([0, 3, 4])
    gen = torch.Generator().manual_seed(1)
    counts = Counter(frozenset(_set(interpolate(a, b, gen)) - {0}) for _ in range(3000))
    subsets = [frozenset(s) for s in itertools.combinations([1, 2, 3, 4], 2)]
    assert set(counts) == set(subsets)
    assert chisquare([counts[s] for s in subsets]).pvalue > 1e-3


def test_interpolate_rejects_non_sets():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="repeated"):
        interpolate(torch.tensor([1, 1, 2]), torch.tensor([3, 4, 5]), gen)
    with pytest.raises(ValueError, match="repeated"):
        interpolate(torch.tensor([1, 2, 3]), torch.tensor([3, 4, 4]), gen)
    with pytest.raises(ValueError, match="sizes"):
        interpolate(torch.tensor([1, 2, 3]), torch.tensor([3, 4]), gen)
    with pytest.raises(ValueError):
        interpolate(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), gen)
    with pytest.raises(ValueError):
        interpolate(torch.tensor([[1, 2]]), torch.tensor([[3, 4]]), gen)
    with pytest.raises(ValueError, match="repeated"):
        smooth_path(torch.tensor([1, 1]), torch.tensor([3, 4]), gen)


# --- smooth paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("common", [0, 3, 7, 8])
def test_smooth_path_swaps_one_code_per_step(common):
    rng = np.random.default_rng(common)
    gen = torch.Generator().manual_seed(common)
    for _ in range(10):
        a, b = _random_pair(rng, common)
        path = smooth_path(a, b, gen)
        assert len(path) == L - common + 1
        assert _set(path[0]) == _set(a) and _set(path[-1]) == _set(b)
        for step in path:
            assert step.shape == (L,) and len(_set(step)) == L
            assert _set(a) & _set(b) <= _set(step) <= _set(a) | _set(b)
        for p, q in zip(path, path[1:]):
            assert len(_set(p) - _set(q)) == 1 and len(_set(q) - _set(p)) == 1
            assert _set(p) - _set(q) <= _set(a) - _set(b)  # an a-only code leaves
            assert _set(q) - _set(p) <= _set(b) - _set(a)  # a b-only code arrives


# --- pairs and shards ---------------------------------------------------------------------------------------


def test_draw_pairs_distinct_covering_and_uniform():
    pairs = draw_pairs(5, 4000, seed=3)
    assert pairs.shape == (4000, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert ((0 <= pairs) & (pairs < 5)).all()
    counts = Counter(map(tuple, pairs.tolist()))
    ordered = [(i, j) for i in range(5) for j in range(5) if i != j]
    assert set(counts) == set(ordered)  # every ordered pair occurs
    assert chisquare([counts[p] for p in ordered]).pvalue > 1e-3
    assert np.array_equal(draw_pairs(5, 4000, seed=3), pairs)
    assert not np.array_equal(draw_pairs(5, 4000, seed=4), pairs)
    two = draw_pairs(2, 200, seed=0)
    assert set(map(tuple, two.tolist())) == {(0, 1), (1, 0)}
    big = draw_pairs(1000, 5000, seed=0)
    assert (big[:, 0] != big[:, 1]).all() and big.min() == 0 and big.max() == 999


@pytest.mark.parametrize("n", [0, 1, 7, 100, 2001])
@pytest.mark.parametrize("shards", [1, 2, 3, 7, 10])
def test_shard_range_partitions(n, shards):
    parts = [shard_range(n, shards, k) for k in range(shards)]
    assert [i for p in parts for i in p] == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_shard_range_rejects_bad_shard():
    with pytest.raises(ValueError):
        shard_range(10, 3, 3)
    with pytest.raises(ValueError):
        shard_range(10, 3, -1)


def test_sample_generator_depends_on_seed_and_index_only():
    draw = lambda g: torch.randint(1 << 30, (4,), generator=g).tolist()  # noqa: E731
    assert draw(sample_generator(1, 5)) == draw(sample_generator(1, 5))
    assert draw(sample_generator(1, 5)) != draw(sample_generator(1, 6))
    assert draw(sample_generator(1, 5)) != draw(sample_generator(2, 5))


# --- generation ---------------------------------------------------------------------------------------------


def test_generate_shard_is_independent_of_sharding(make_model, train_codes):
    model = make_model()
    n, seed = 13, 5
    whole = generate_shard(model, train_codes, n, 1, 0, seed, batch_size=4, progress=False)
    assert whole["images"].dtype == np.uint8 and whole["images"].shape == (n, 16, 16, 3)
    assert np.array_equal(whole["sample_index"], np.arange(n))
    parts = [generate_shard(model, train_codes, n, 3, k, seed, batch_size=3, progress=False) for k in range(3)]
    for key in ("pairs", "sample_index"):
        assert np.array_equal(np.concatenate([p[key] for p in parts]), whole[key]), key
    # the same code sets: decoded one at a time the pixels are equal; in batches of other sizes the decoder's
    # float sums may round a pixel to the next level (oneDNN picks its kernels by batch size and CPU)
    apart = np.abs(np.concatenate([p["images"] for p in parts]).astype(int) - whole["images"])
    assert apart.max() <= 1 and (apart > 0).mean() < 0.01
    single = generate_shard(model, train_codes, n, 1, 0, seed, batch_size=1, progress=False)["images"]
    single_parts = [generate_shard(model, train_codes, n, 3, k, seed, batch_size=1, progress=False)["images"]
                    for k in range(3)]
    assert np.array_equal(np.concatenate(single_parts), single)
    assert [len(p["images"]) for p in parts] == [len(shard_range(n, 3, k)) for k in range(3)]
    # another seed gives other samples
    other = generate_shard(model, train_codes, n, 1, 0, seed + 1, batch_size=4, progress=False)
    assert not np.array_equal(other["pairs"], whole["pairs"])


def test_generated_images_decode_the_algorithm_1_sets(make_model, train_codes):
    model = make_model()
    n, seed = 10, 2
    out = generate_shard(model, train_codes, n, 2, 1, seed, batch_size=2, progress=False)
    assert np.array_equal(out["pairs"], draw_pairs(len(train_codes), n, seed)[5:10])
    codes = torch.from_numpy(train_codes).long()
    with torch.no_grad():
        for image, (a, b), i in zip(out["images"], out["pairs"], out["sample_index"]):
            assert a != b
            expected = interpolate(codes[a], codes[b], sample_generator(seed, int(i)))
            decoded = to_uint8(model.decode_indices(expected[None]), model.cfg.pixel_range)[0]
            diff = np.abs(image.astype(int) - decoded.astype(int))
            assert diff.max() <= 1  # the same set (up to float rounding across batch sizes)
            # ... and not just any set: another draw for the same pair decodes differently
            other = interpolate(codes[a], codes[b], sample_generator(seed + 100, int(i)))
            if _set(other) != _set(expected):
                wrong = to_uint8(model.decode_indices(other[None]), model.cfg.pixel_range)[0]
                assert np.abs(image.astype(int) - wrong.astype(int)).max() > 1


def test_save_and_load_shards(make_model, train_codes, tmp_path):
    model = make_model()
    parts = [generate_shard(model, train_codes, 6, 2, k, 0, batch_size=8, progress=False) for k in range(2)]
    paths = [tmp_path / f"shard{k}.npz" for k in range(2)]
    for p, part in zip(paths, parts):
        save_shard(p, part)
    loaded = load_sample_images(paths)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, np.concatenate([p["images"] for p in parts]))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz"):
        load_sample_images([paths[0], bad])


def test_interpolation_paths(make_model, train_codes):
    model = make_model()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(len(train_codes), 16, 16, 3), dtype=np.uint8)  # all distinct
    out = interpolation_paths(model, train_codes, images, pairs=2, paths=3, steps=5, seed=0)
    assert out.shape == (2, 3, 7, 16, 16, 3) and out.dtype == np.uint8
    codes = torch.from_numpy(train_codes).long()
    sources = []
    for row in out:
        # the first and last frames are source images, the same for every path of the pair
        a = next(i for i in range(len(images)) if np.array_equal(row[0, 0], images[i]))
        b = next(i for i in range(len(images)) if np.array_equal(row[0, -1], images[i]))
        assert a != b
        sources += [a, b]
        assert (row[:, 0] == images[a]).all() and (row[:, -1] == images[b]).all()
        with torch.no_grad():  # the path's ends decode the two images' own code sets
            start = to_uint8(model.decode_indices(codes[a][None]), model.cfg.pixel_range)[0]
            end = to_uint8(model.decode_indices(codes[b][None]), model.cfg.pixel_range)[0]
        for path in row:
            assert np.abs(path[1].astype(int) - start).max() <= 1
            assert np.abs(path[-2].astype(int) - end).max() <= 1
    assert len(set(sources)) == 4  # two pairs of distinct images
    # reproducible from the seed
    again = interpolation_paths(model, train_codes, images, pairs=2, paths=3, steps=5, seed=0)
    assert np.array_equal(again, out)


@pytest.mark.parametrize("length", [1, 7, 64])
def test_batched_algorithm1_equals_the_per_sample_reference(length):
    """generate_shard's batched Algorithm 1 gives, row for row and in order, what interpolate() gives with the
    same generator: every overlap from disjoint to identical sets."""
    from pivq.sample import _interpolate_rows

    rng = np.random.default_rng(length)
    K, pairs = 3 * length, 40
    a = np.stack([rng.choice(K, length, replace=False) for _ in range(pairs)])
    b = np.stack([rng.choice(K, length, replace=False) for _ in range(pairs)])
    b[0], b[1] = a[0], a[1][::-1]  # identical sets, in any order
    batched = _interpolate_rows(a, b, [torch.Generator().manual_seed(i) for i in range(pairs)])
    for i in range(pairs):
        expected = interpolate(torch.from_numpy(a[i]), torch.from_numpy(b[i]), torch.Generator().manual_seed(i))
        assert batched[i].tolist() == expected.tolist(), i


# --- streaming shard reader ---------------------------------------------------------------------------------


def _shards(tmp_path, sizes, shape=(4, 6, 3), seed=0):
    """Shards as sample_shard writes them (images, pairs, sample_index), of ``sizes`` images each."""
    rng = np.random.default_rng(seed)
    paths, start = [], 0
    for k, m in enumerate(sizes):
        path = tmp_path / f"shard-{k}.npz"
        save_shard(path, {"images": rng.integers(0, 256, (m, *shape), dtype=np.uint8),
                          "pairs": rng.integers(0, 30, (m, 2)), "sample_index": np.arange(start, start + m)})
        paths.append(path)
        start += m
    return paths


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 7, 8, 15, 16, 100])
def test_shard_images_yield_load_sample_images_in_batches(batch_size, tmp_path):
    """Batches of ShardImages concatenate to load_sample_images's array; each holds batch_size rows but the last,
    across shard boundaries (sizes 5, 0, 7, 3: batch sizes that divide them and that do not)."""
    from pivq.sample import ShardImages

    paths = _shards(tmp_path, [5, 0, 7, 3])
    source = ShardImages(paths)
    assert len(source) == 15 and source.shape == (15, 4, 6, 3) and source.dtype == np.uint8 and source.ndim == 4
    batches = list(source.batches(batch_size))
    assert [len(b) for b in batches] == [min(batch_size, 15 - s) for s in range(0, 15, batch_size)]
    assert all(b.dtype == np.uint8 and b.flags.c_contiguous and b.flags.writeable for b in batches)
    assert np.array_equal(np.concatenate(batches), load_sample_images(paths))
    assert np.array_equal(np.concatenate(list(source.batches(batch_size))), load_sample_images(paths))  # again
    with pytest.raises(ValueError, match="batch_size"):
        next(source.batches(0))


def _flip(path, at=0.6):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_shard_images_refuse_damaged_or_foreign_shards_by_name(tmp_path):
    from pivq.sample import ShardImages

    good, flipped, cut = _shards(tmp_path, [64, 64, 64], shape=(16, 16, 3))  # 48 KiB of images each
    _flip(flipped)  # in its image data: found by zipfile's CRC-32 check as the member's last bytes are read
    source = ShardImages([good, flipped])  # the headers are intact: the count is known without reading images
    assert len(source) == 128
    read = []
    with pytest.raises(ValueError, match=rf"{flipped}: not a readable sample shard \(Bad CRC-32"):
        for batch in source.batches(10):
            read.append(len(batch))
    assert sum(read) >= 64  # the good shard went through; the flipped one was refused before it was done
    with pytest.raises(ValueError, match=str(flipped)):
        load_sample_images([flipped])  # as the whole-array reader refuses it

    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{cut}: not a readable sample shard .*delete it and rerun its job"):
        ShardImages([good, cut])  # refused on construction, before any image is read

    (tmp_path / "other").mkdir()
    other = _shards(tmp_path / "other", [3], shape=(8, 8, 3))
    with pytest.raises(ValueError, match=rf"{other[0]}: sample images of shape \(8, 8, 3\), but {good} holds"):
        ShardImages([good, other[0]])
    floats = tmp_path / "floats.npz"
    save_shard(floats, {"images": np.zeros((3, 8, 8, 3), np.float32)})
    with pytest.raises(ValueError, match=rf"{floats}: not a readable sample shard \(images.npy is float32"):
        ShardImages([floats])
    no_images = tmp_path / "no-images.npz"
    save_shard(no_images, {"pairs": np.zeros((3, 2), np.int64)})
    with pytest.raises(ValueError, match=rf"{no_images}: not a readable sample shard"):
        ShardImages([no_images])
    not_zip = tmp_path / "bad.npz"
    not_zip.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=rf"{not_zip}: not a readable sample shard"):
        ShardImages([good, not_zip])
    with pytest.raises(ValueError, match="no sample shards"):
        ShardImages([])
