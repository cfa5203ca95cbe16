"""pivq.metrics.prdc_chunked.compute_prdc: exact agreement with prdc.compute_prdc, chunked, linear memory."""

import contextlib
import io

import numpy as np
import pytest
import torch

from pivq.metrics.prdc_chunked import compute_prdc

KEYS = {"precision", "recall", "density", "coverage"}


def reference(real, fake, k):
    from prdc import compute_prdc as ref

    with contextlib.redirect_stdout(io.StringIO()):
        return {key: float(v) for key, v in ref(real_features=real, fake_features=fake, nearest_k=k).items()}


def assert_same(real, fake, k, **kw):
    ours = compute_prdc(real, fake, nearest_k=k, device="cpu", **kw)
    ref = reference(real, fake, k)
    assert set(ours) == KEYS == set(ref)
    for key in KEYS:
        assert isinstance(ours[key], float)
        assert abs(ours[key] - ref[key]) <= 1e-6, (key, ours, ref)
    return ours


@pytest.mark.parametrize(
    "n_real,n_fake,dim,k,chunk,col_chunk,dtype",
    [
        (200, 200, 16, 5, 64, 8192, np.float32),
        (300, 170, 8, 3, 37, 53, np.float32),
        (150, 420, 32, 5, 1000, 101, np.float64),
        (600, 500, 64, 7, 129, 4096, np.float32),
        (97, 131, 2, 1, 1, 8192, np.float64),
        (64, 80, 3, 10, 1, 7, np.float32),
    ],
)
def test_matches_prdc_random(n_real, n_fake, dim, k, chunk, col_chunk, dtype):
    rng = np.random.default_rng(n_real * 7 + dim)
    real = rng.normal(size=(n_real, dim)).astype(dtype)
    fake = (rng.normal(size=(n_fake, dim)) * 1.2 + 0.3).astype(dtype)
    out = assert_same(real, fake, k, chunk=chunk, col_chunk=col_chunk)
    assert 0 < out["precision"] < 1 or dim <= 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("chunk,col_chunk", [(1, 8192), (23, 31), (4096, 4096)])
def test_matches_prdc_with_ties_and_duplicates(dtype, chunk, col_chunk):
    rng = np.random.default_rng(1)
    # small integer lattice: many exactly equal distances, duplicate points, radii of 0
    real = rng.integers(-2, 3, size=(400, 4)).astype(dtype)
    fake = rng.integers(-2, 3, size=(257, 4)).astype(dtype)
    fake[:50] = real[:50]  # shared points
    assert_same(real, fake, 5, chunk=chunk, col_chunk=col_chunk)
    # heavy duplication: more than k+1 copies of a point, radius exactly 0
    real2 = np.repeat(rng.integers(0, 3, size=(40, 2)), 8, axis=0).astype(dtype)
    fake2 = rng.integers(0, 3, size=(90, 2)).astype(dtype)
    assert_same(real2, fake2, 5, chunk=chunk, col_chunk=col_chunk)


def test_mixed_dtypes_and_tensor_inputs():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(120, 10)).astype(np.float32)
    fake = rng.normal(size=(140, 10))
    assert_same(real, fake, 4, chunk=17)
    ours = compute_prdc(torch.from_numpy(real), torch.from_numpy(fake), nearest_k=4, device="cpu", chunk=17)
    assert ours == compute_prdc(real, fake, nearest_k=4, device="cpu", chunk=17)


def test_result_independent_of_chunking():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(333, 20)).astype(np.float32)
    fake = rng.normal(size=(222, 20)).astype(np.float32)
    outs = [compute_prdc(real, fake, 5, device="cpu", chunk=c, col_chunk=cc)
            for c, cc in [(1, 8192), (7, 11), (333, 222), (10_000, 10_000)]]
    assert all(o == outs[0] for o in outs)


def test_identical_sets():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 12)).astype(np.float32)
    out = assert_same(x, x.copy(), 5, chunk=50)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0


def test_invalid_inputs():
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError):
        compute_prdc(x, np.zeros((10, 4), np.float32), 3, device="cpu")
    with pytest.raises(ValueError):
        compute_prdc(x[:3], x, 5, device="cpu")
    with pytest.raises(ValueError):
        compute_prdc(x, x, 0, device="cpu")
    with pytest.raises(ValueError):
        compute_prdc(x[:, 0], x, 3, device="cpu")


def test_fidelity_prdc_uses_chunked_implementation():
    from pivq.metrics.fidelity import prdc

    rng = np.random.default_rng(5)
    real = rng.normal(size=(150, 8)).astype(np.float32)
    fake = rng.normal(size=(160, 8)).astype(np.float32)
    assert prdc(real, fake, nearest_k=5) == compute_prdc(real, fake, nearest_k=5)


def test_linear_memory_n4000():
    # prdc would hold ~13 bytes x N^2 (~200 MB at N=4000); a 64-row chunk holds 64 x 4000 distances
    rng = np.random.default_rng(6)
    real = rng.normal(size=(4000, 64)).astype(np.float32)
    fake = rng.normal(size=(4000, 64)).astype(np.float32)
    out = compute_prdc(real, fake, nearest_k=5, device="cpu", chunk=64)
    assert set(out) == KEYS
    assert all(0.0 <= out[key] <= 1.0 for key in ("precision", "recall", "coverage"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(7)
    real = rng.integers(-2, 3, size=(500, 6)).astype(np.float32)
    fake = rng.normal(size=(450, 6)).astype(np.float32)
    assert compute_prdc(real, fake, 5, device="cuda", chunk=100) == compute_prdc(real, fake, 5, device="cpu", chunk=100)
    assert_same(real, fake, 5, chunk=100)
