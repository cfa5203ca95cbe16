"""Code assignment (eqs. 1 and 3), the quantizer layer and k-means++ against independent references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from pivq.quantize import Quantizer, assign, kmeans

pytestmark = pytest.mark.usefixtures("one_thread")

# --- nearest neighbour ----------------------------------------------------------------------------------


def test_nearest_equals_brute_force_argmin():
    rng = np.random.default_rng(0)
    for _ in range(20):
        b, n_codes, k, d = rng.integers(1, 4), rng.integers(1, 9), rng.integers(2, 20), rng.integers(1, 6)
        z = rng.normal(size=(b, n_codes, d))
        codebook = rng.normal(size=(k, d))
        got = assign(torch.tensor(z, dtype=torch.float32), torch.tensor(codebook, dtype=torch.float32), "nearest")
        assert got.shape == (b, n_codes) and got.dtype == torch.int64
        for i in range(b):
            for j in range(n_codes):
                dists = [np.sum((z[i, j] - c) ** 2) for c in codebook]
                best = int(np.argmin(dists))
                # equal index, or an exact float tie with the best one
                assert got[i, j].item() == best or np.isclose(dists[got[i, j].item()], dists[best], rtol=1e-6)


def test_nearest_allows_repeats():
    codebook = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    z = torch.tensor([[[0.1, 0.0], [0.0, 0.2], [9.0, 9.0]]])
    assert assign(z, codebook, "nearest").tolist() == [[0, 0, 1]]


# --- matching -------------------------------------------------------------------------------------------


def _cost(z: np.ndarray, codebook: np.ndarray, cols) -> float:
    return float(np.linalg.norm(z - codebook[np.asarray(cols)], axis=1).sum())


def _optimum(z: np.ndarray, codebook: np.ndarray) -> float:
    dist = np.linalg.norm(z[:, None, :] - codebook[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(dist)
    return float(dist[rows, cols].sum())


def _instance(kind: str, rng: np.random.Generator):
    n_codes, k, d = int(rng.integers(2, 9)), int(rng.integers(9, 24)), int(rng.integers(1, 5))
    if kind == "gaussian":
        return rng.normal(size=(n_codes, d)), rng.normal(size=(k, d))
    if kind == "clustered":  # every latent near one of 2 codes: nearest would repeat codes
        codebook = rng.normal(size=(k, d)) * 3
        centres = codebook[rng.choice(k, size=2, replace=False)]
        return centres[rng.integers(2, size=n_codes)] + rng.normal(size=(n_codes, d)) * 0.05, codebook
    if kind == "collapsed":  # all latents identical
        return np.repeat(rng.normal(size=(1, d)), n_codes, axis=0), rng.normal(size=(k, d))
    if kind == "near_distinct":  # each latent close to its own code
        codebook = rng.normal(size=(k, d)) * 5
        chosen = rng.choice(k, size=n_codes, replace=False)
        return codebook[chosen] + rng.normal(size=(n_codes, d)) * 0.01, codebook
    if kind == "ties":  # integer grid with duplicated codebook rows: many exactly equal distances
        codebook = rng.integers(-1, 2, size=(k, d)).astype(float)
        return rng.integers(-1, 2, size=(n_codes, d)).astype(float), codebook
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["gaussian", "clustered", "collapsed", "near_distinct", "ties"])
def test_matching_total_cost_is_the_optimum(kind):
    rng = np.random.default_rng(["gaussian", "clustered", "collapsed", "near_distinct", "ties"].index(kind))
    for _ in range(60):  # 60 batches of 1-3 images per kind: a few hundred instances in all
        z0, codebook = _instance(kind, rng)
        zs = [z0]
        while len(zs) < int(rng.integers(1, 4)):  # other images of the batch: same kind, same L and d
            zi, _ = _instance(kind, rng)
            if zi.shape == z0.shape:
                zs.append(zi)
        zs, b = np.stack(zs), len(zs)
        z_t = torch.tensor(zs, dtype=torch.float32)
        cb_t = torch.tensor(codebook, dtype=torch.float32)
        got = assign(z_t, cb_t, "matching").numpy()
        z32, cb32 = z_t.double().numpy(), cb_t.double().numpy()
        for i in range(b):
            assert len(set(got[i].tolist())) == len(got[i]), f"{kind}: repeated code in {got[i]}"
            assert ((0 <= got[i]) & (got[i] < len(codebook))).all()
            assert _cost(z32[i], cb32, got[i]) == pytest.approx(_optimum(z32[i], cb32), rel=1e-5, abs=1e-5), kind


def test_matching_against_exhaustive_search_on_tiny_instances():
    """Independent of scipy: enumerate every injective assignment (K!/(K-L)! of them)."""
    rng = np.random.default_rng(7)
    for _ in range(100):
        n_codes, k = int(rng.integers(1, 4)), int(rng.integers(3, 6))
        z = rng.normal(size=(n_codes, 2))
        if rng.random() < 0.5:
            z[:] = z[0]  # collapsed: nearest would give L copies of one code
        codebook = rng.normal(size=(k, 2))
        z_t, cb_t = torch.tensor(z[None], dtype=torch.float32), torch.tensor(codebook, dtype=torch.float32)
        got = assign(z_t, cb_t, "matching")[0].numpy()
        z64, cb64 = z_t[0].double().numpy(), cb_t.double().numpy()
        best = min(_cost(z64, cb64, p) for p in itertools.permutations(range(k), n_codes))
        assert _cost(z64, cb64, got) == pytest.approx(best, rel=1e-6, abs=1e-6)


def test_matching_beats_nearest_when_nearest_repeats():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    z = torch.zeros(1, 2, 2)  # both latents at code 0
    assert assign(z, codebook, "nearest").tolist() == [[0, 0]]
    assert sorted(assign(z, codebook, "matching")[0].tolist()) == [0, 1]


def test_matching_rows_distinct_on_batches_of_collapsed_latents():
    torch.manual_seed(0)
    z = torch.randn(16, 1, 8).expand(16, 12, 8).contiguous()
    got = assign(z, torch.randn(32, 8), "matching")
    for row in got:
        assert torch.unique(row).numel() == 12


def test_inputs_not_mutated():
    torch.manual_seed(0)
    z, codebook = torch.randn(3, 5, 4), torch.randn(10, 4)
    z[:, 1:] = z[:, :1]  # forces the solver path
    z0, c0 = z.clone(), codebook.clone()
    for method in ("nearest", "matching"):
        assign(z, codebook, method)
        assert torch.equal(z, z0) and torch.equal(codebook, c0)


def test_matching_needs_k_at_least_l():
    with pytest.raises(ValueError) as err:
        assign(torch.zeros(1, 5, 2), torch.randn(3, 2), "matching")
    assert "5" in str(err.value) and "3" in str(err.value)
    assign(torch.zeros(1, 5, 2), torch.randn(3, 2), "nearest")  # nearest does not care
    assign(torch.zeros(1, 3, 2), torch.randn(3, 2), "matching")  # K = L is enough


def test_unknown_method_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="hungarian"):
        assign(torch.zeros(1, 2, 2), torch.randn(4, 2), "hungarian")
    with pytest.raises(ValueError):
        assign(torch.zeros(2, 2), torch.randn(4, 2), "nearest")
    with pytest.raises(ValueError):
        assign(torch.zeros(1, 2, 3), torch.randn(4, 2), "nearest")


# --- the quantizer layer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["nearest", "matching"])
def test_quantizer_loss_and_straight_through(method):
    torch.manual_seed(0)
    q = Quantizer(16, 4, method, beta=0.3)
    with pytest.raises(RuntimeError, match="initialised"):
        q(torch.randn(2, 3, 4))
    q.set_codebook(torch.randn(16, 4))
    assert bool(q.initialized)
    z = torch.randn(2, 3, 4, requires_grad=True)
    quantized, indices, loss = q(z)
    e = q.codebook.detach()[indices]
    assert torch.allclose(quantized, e, atol=1e-6)  # forward value: the codebook vectors
    assert torch.equal(indices, assign(z.detach(), q.codebook.detach(), method))
    expected = F.mse_loss(e, z.detach()) + 0.3 * F.mse_loss(z.detach(), e)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    # loss gradients: the codebook gets only the codebook term, z only beta x the commitment term
    loss.backward()
    n = z.numel()
    assert torch.allclose(z.grad, 0.3 * 2 * (z.detach() - e) / n, atol=1e-6)
    expected_cb = torch.zeros_like(q.codebook).index_add_(0, indices.flatten(),
                                                          (2 * (e - z.detach()) / n).reshape(-1, 4))
    assert torch.allclose(q.codebook.grad, expected_cb, atol=1e-6)

    # straight through: d quantized / d z is the identity, and no gradient reaches the codebook from it
    z.grad, q.codebook.grad = None, None
    quantized, _, _ = q(z)
    w = torch.randn_like(quantized)
    (quantized * w).sum().backward()
    assert torch.allclose(z.grad, w)
    assert q.codebook.grad is None or not q.codebook.grad.any()


# --- k-means --------------------------------------------------------------------------------------------


def _inertia(x: np.ndarray, centres: np.ndarray) -> float:
    return float((((x[:, None] - centres[None]) ** 2).sum(-1)).min(1).sum())


def test_kmeans_matches_scikit_learn_inertia():
    """Plain k-means++ (one candidate per centre) lands in a merged-blobs local minimum in a good share of
    single runs, as does scikit-learn's with n_local_trials=1; so compare best-of-5 with n_init=5."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs

    ratios = []
    for data_seed in range(4):
        x, _ = make_blobs(n_samples=300, centers=6, n_features=3, cluster_std=0.7, random_state=data_seed)
        xt = torch.tensor(x, dtype=torch.float32)
        ours = []
        for seed in range(5):
            centres = kmeans(xt, 6, iters=20, generator=torch.Generator().manual_seed(seed))
            assert centres.shape == (6, 3) and torch.isfinite(centres).all()
            ours.append(_inertia(x, centres.double().numpy()))
        ref = KMeans(6, init="k-means++", n_init=5, random_state=data_seed).fit(x).inertia_
        ratios.append(min(ours) / ref)
    assert max(ratios) < 1.03, ratios
    # the Lloyd steps matter: no iterations leaves the k-means++ seeds, clearly worse
    x, _ = make_blobs(n_samples=300, centers=6, n_features=3, cluster_std=0.7, random_state=0)
    seeds_only = _inertia(x, kmeans(torch.tensor(x).float(), 6, 0, torch.Generator().manual_seed(1)).double().numpy())
    refined = _inertia(x, kmeans(torch.tensor(x).float(), 6, 20, torch.Generator().manual_seed(1)).double().numpy())
    assert refined < seeds_only


def test_kmeans_is_reproducible_and_seeded():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    a = kmeans(x, 8, 5, torch.Generator().manual_seed(1))
    b = kmeans(x, 8, 5, torch.Generator().manual_seed(1))
    c = kmeans(x, 8, 5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_kmeans_degenerate_inputs():
    # fewer distinct points than k: still k finite centres, all of them data points
    x = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5)
    centres = kmeans(x, 4, 3, torch.Generator().manual_seed(0))
    assert centres.shape == (4, 2) and torch.isfinite(centres).all()
    assert all(any(torch.equal(c, p) for p in x) for c in centres)
    with pytest.raises(ValueError, match="k=4"):
        kmeans(torch.randn(3, 2), 4, 3, torch.Generator().manual_seed(0))


def test_kmeans_assignment_in_chunks_equals_the_full_distance_matrix():
    from pivq.quantize.kmeans import nearest_centre

    gen = torch.Generator().manual_seed(0)
    x, centres = torch.randn(1000, 8, generator=gen), torch.randn(50, 8, generator=gen)
    full = torch.cdist(x, centres).argmin(dim=1)
    for chunk in (50, 500, 1 << 26):  # one row at a time, several rows, everything at once
        assert torch.equal(nearest_centre(x, centres, chunk_elements=chunk), full)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (benchmarks/gpu_check.py reports the same)")
def test_kmeans_on_the_gpu_agrees_with_the_cpu():
    """The codebook initialisation runs where the window of encoder outputs lives: from the same centres, Lloyd on
    the GPU lands where it does on the CPU (up to float rounding); seeded on the GPU's own generator, k-means++
    reaches the same quality."""
    from pivq.quantize.kmeans import lloyd, nearest_centre

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 32, generator=gen)
    start = x[torch.randperm(len(x), generator=gen)[:256]]
    assert torch.allclose(lloyd(x.cuda(), start.cuda(), 10).cpu(), lloyd(x, start, 10), atol=1e-3)

    def inertia(c):
        return float(((x - c[nearest_centre(x, c)]) ** 2).sum())

    on_gpu = kmeans(x.cuda(), 256, 10, torch.Generator(device="cuda").manual_seed(1)).cpu()
    on_cpu = kmeans(x, 256, 10, torch.Generator().manual_seed(1))
    assert abs(inertia(on_gpu) / inertia(on_cpu) - 1) < 0.03
