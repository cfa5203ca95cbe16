"""Exact matching quantization (pivq.quantize.matching) and OptVQ's Sinkhorn assignment, against scipy's
dense linear_sum_assignment on thousands of small instances of five latent kinds."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from pivq.quantize import METHODS, assign

pytestmark = pytest.mark.usefixtures("one_thread")
MATCHING = importlib.import_module("pivq.quantize.matching")


@pytest.fixture(params=["lapx", "scipy"])
def no_fallback(request, monkeypatch):
    """The fast solver must prove its own answers: its dense fallback would hide a broken certificate. Run with
    each dense solver of the cores: lapx (a declared dependency) and scipy (what runs without it)."""

    def fail(dist):
        raise AssertionError("dense fallback used")

    monkeypatch.setattr(MATCHING, "_dense_reference", fail)
    monkeypatch.setattr(MATCHING, "SMALL_PROBLEM", 0)  # small problems would go straight to the dense solver
    if request.param == "scipy":
        monkeypatch.setattr(MATCHING, "_lapx", None)
    else:
        assert MATCHING._lapx is not None, "lapx is a dependency of pivq (pyproject.toml)"
    return request.param

KINDS = ["gaussian", "clustered", "collapsed", "near_collapsed", "near_distinct", "ties"]


def _instance(kind: str, rng: np.random.Generator, n_codes: int, k: int, d: int):
    if kind == "gaussian":
        return rng.normal(size=(n_codes, d)), rng.normal(size=(k, d))
    if kind == "clustered":  # every latent near one of a few codes: nearest repeats codes
        codebook = rng.normal(size=(k, d)) * 3
        centres = codebook[rng.choice(k, size=int(rng.integers(1, 4)), replace=False)]
        return centres[rng.integers(len(centres), size=n_codes)] + rng.normal(size=(n_codes, d)) * 0.05, codebook
    if kind == "collapsed":  # all latents identical
        return np.repeat(rng.normal(size=(1, d)), n_codes, axis=0), rng.normal(size=(k, d))
    if kind == "near_collapsed":  # one point plus tiny noise: most rows share a nearest code (crowded path)
        return rng.normal(size=(1, d)) + rng.normal(size=(n_codes, d)) * 0.01, rng.normal(size=(k, d))
    if kind == "near_distinct":  # each latent close to its own code
        codebook = rng.normal(size=(k, d)) * 5
        return codebook[rng.choice(k, size=n_codes, replace=False)] + rng.normal(size=(n_codes, d)) * 0.01, codebook
    if kind == "ties":  # integer grid, duplicated rows and codes: many exactly equal distances
        return rng.integers(-1, 2, size=(n_codes, d)).astype(float), rng.integers(-1, 2, size=(k, d)).astype(float)
    raise AssertionError(kind)


def _batch(kind: str, rng: np.random.Generator, n_codes: int, k: int, d: int, images: int):
    """(z (images, L, d), codebook (K, d)): ``images`` latent sets of one kind against the first one's codebook."""
    pairs = [_instance(kind, rng, n_codes, k, d) for _ in range(images)]
    return np.stack([z for z, _ in pairs]), pairs[0][1]


def _check(z: np.ndarray, codebook: np.ndarray, kind: str) -> None:
    """One batch (B, L, d): distinct codes per image, total distance equal to scipy's optimum, inputs kept."""
    z_t, cb_t = torch.tensor(z, dtype=torch.float32), torch.tensor(codebook, dtype=torch.float32)
    z0, cb0 = z_t.clone(), cb_t.clone()
    got = assign(z_t, cb_t, "matching")
    assert torch.equal(z_t, z0) and torch.equal(cb_t, cb0), "inputs mutated"
    assert got.shape == z.shape[:2] and got.dtype == torch.int64
    z64, cb64 = z_t.double().numpy(), cb_t.double().numpy()
    for zi, cols in zip(z64, got.numpy()):
        assert len(set(cols.tolist())) == len(cols), f"{kind}: repeated code"
        dist = np.linalg.norm(zi[:, None] - cb64[None], axis=-1)
        rows, best = linear_sum_assignment(dist)
        optimum = dist[rows, best].sum()
        assert dist[np.arange(len(cols)), cols].sum() == pytest.approx(optimum, rel=1e-6, abs=1e-6), kind


@pytest.mark.parametrize("kind", KINDS)
def test_matching_is_exact_on_many_small_instances(kind, no_fallback):
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(250):  # batches of 1-3 images: ~500 instances per kind
        n_codes, d = int(rng.integers(2, 13)), int(rng.integers(1, 5))
        k = int(rng.integers(n_codes, 41))
        _check(*_batch(kind, rng, n_codes, k, d, int(rng.integers(1, 4))), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_matching_is_exact_on_larger_instances(kind, no_fallback):
    rng = np.random.default_rng(10 + KINDS.index(kind))
    for _ in range(3):
        z, codebook = _instance(kind, rng, 64, 512, 8)
        _check(z[None], codebook, kind)


def test_matching_k_equal_l_and_mixed_duplicate_groups(no_fallback):
    rng = np.random.default_rng(3)
    for _ in range(50):
        n_codes = int(rng.integers(2, 10))
        points = rng.normal(size=(3, 2))
        z = points[rng.integers(3, size=n_codes)]  # a few groups of identical latents
        _check(z[None], rng.normal(size=(n_codes + int(rng.integers(0, 3)), 2)), "groups")


@pytest.mark.parametrize("kind", ["collapsed", "near_collapsed"])
def test_matching_crowded_with_k_equal_l_and_k_near_l(kind, no_fallback):
    """The crowded path (most rows share one nearest code) when K leaves few or no spare columns."""
    rng = np.random.default_rng(20 + ["collapsed", "near_collapsed"].index(kind))
    for spare in (0, 1, 3, 40):
        z, codebook = _instance(kind, rng, 48, 48 + spare, 6)
        _check(z[None], codebook, kind)


def test_matching_identical_groups_rule_on_a_mixed_batch(monkeypatch, no_fallback):
    """Step 2 runs on the whole batch at once: in one batch, images where it applies (collapsed, disjoint
    groups of identical latents) and images where it must not (two identical groups wanting the same
    column; distinct latents sharing a code) are each solved exactly, and the rule answers only the former."""
    rng = np.random.default_rng(60)
    codebook = rng.normal(size=(40, 3))
    codebook[4] = codebook[3] + 0.01  # codes 3 and 4 are each other's nearest
    images = {
        "collapsed": np.repeat(rng.normal(size=(1, 3)), 10, axis=0),
        "disjoint groups": np.concatenate([np.repeat(codebook[[3]], 5, axis=0),
                                           np.repeat(codebook[[30]] * 3, 5, axis=0)]),
        "colliding groups": np.repeat(codebook[[3, 4]], 5, axis=0),  # both groups' 5 nearest hold codes 3 and 4
        "one code, two latents": np.repeat(codebook[[7]] + [[1e-3], [-1e-3]], 5, axis=0),
        "gaussian": rng.normal(size=(10, 3)),
    }
    answered = []
    original = MATCHING._identical_groups

    def spy(*args):
        applies, cols = original(*args)
        answered.append(applies.tolist())
        return applies, cols

    monkeypatch.setattr(MATCHING, "_identical_groups", spy)
    _check(np.stack(list(images.values())), codebook, "mixed")
    # the rule saw the images with a repeated code, in batch order, and answered exactly the two it covers
    assert answered == [[True, True, False, False, False]]


def test_matching_each_path_is_taken(monkeypatch):
    """The instances above reach every step of the solver (a guard against tests that skip a path)."""
    monkeypatch.setattr(MATCHING, "SMALL_PROBLEM", 0)
    used = set()
    for name in ("_identical_groups", "_crowded", "_pruned"):
        original = getattr(MATCHING, name)

        def spy(*args, _name=name, _original=original):
            result = _original(*args)
            # (_identical_groups answers for a batch: (applies per image, columns))
            if result is not None and (_name != "_identical_groups" or bool(result[0].any())):
                used.add(_name)
            return result

        monkeypatch.setattr(MATCHING, name, spy)
    rng = np.random.default_rng(7)
    for kind in ("collapsed", "near_collapsed", "clustered"):
        z, codebook = _instance(kind, rng, 64, 512, 8)
        _check(z[None], codebook, kind)
    assert used == {"_identical_groups", "_crowded", "_pruned"}, used


def test_matching_error_names_l_and_k():
    with pytest.raises(ValueError, match="L=6.*K=4"):
        assign(torch.zeros(2, 6, 3), torch.randn(4, 3), "matching")


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_latents_or_codebook_are_named(method):
    """NaN or inf gave index 0 (nearest, sinkhorn: the whole batch) or scipy's 'invalid numeric entries'."""
    z, codebook = torch.randn(2, 6, 3), torch.randn(20, 3)
    bad_z, bad_codebook = z.clone(), codebook.clone()
    bad_z[1, 2, 0], bad_codebook[7, 1] = float("nan"), float("inf")
    with pytest.raises(FloatingPointError, match=f"{method} assignment: the latents z hold 1 NaN or inf value"):
        assign(bad_z, codebook, method)
    with pytest.raises(FloatingPointError, match="the codebook hold 1 NaN or inf value.* of 60"):
        assign(z, bad_codebook, method)


def test_sinkhorn_shape_valid_and_deterministic():
    assert "sinkhorn" in METHODS
    g = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(3, 10, 4, generator=g), torch.randn(40, 4, generator=g)
    z0 = z.clone()
    a, b = assign(z, codebook, "sinkhorn"), assign(z, codebook, "sinkhorn")
    assert a.shape == (3, 10) and a.dtype == torch.int64 and torch.equal(a, b) and torch.equal(z, z0)
    assert ((a >= 0) & (a < 40)).all()


def test_sinkhorn_spreads_a_collapsed_batch_more_than_nearest():
    g = torch.Generator().manual_seed(1)
    codebook = torch.randn(64, 8, generator=g)
    z = (torch.randn(4, 1, 8, generator=g) + 0.05 * torch.randn(4, 16, 8, generator=g)).contiguous()
    used = {m: len(torch.unique(assign(z, codebook, m))) for m in ("nearest", "sinkhorn")}
    assert used["sinkhorn"] > used["nearest"], used


def _check_pruned_kinds(rng: np.random.Generator) -> None:
    """Four 48 x 256 instances of each kind that reaches the pruned path (step 4, with the no_fallback fixture),
    each checked against scipy."""
    for kind in ("gaussian", "clustered", "ties"):
        for _ in range(4):
            z, codebook = _instance(kind, rng, 48, 256, 4)
            _check(z[None], codebook, kind)


@pytest.mark.parametrize("square_edges", [-1.0, 1e9])
def test_matching_sparse_components_plain_and_squared(monkeypatch, no_fallback, square_edges):
    """Every multi-row component through the sparse solver, as given (square_edges < 0) or squared with
    dummy rows and column-reduced (square_edges huge); the spy checks which graph the solver saw."""
    monkeypatch.setattr(MATCHING, "SPARSE_COMPONENT", 0)
    monkeypatch.setattr(MATCHING, "DENSE_FRACTION", 2.0)
    monkeypatch.setattr(MATCHING, "SQUARE_EDGES", square_edges)
    shapes = []
    original = MATCHING.min_weight_full_bipartite_matching

    def spy(graph):
        shapes.append(graph.shape)
        return original(graph)

    monkeypatch.setattr(MATCHING, "min_weight_full_bipartite_matching", spy)
    _check_pruned_kinds(np.random.default_rng(30))
    assert shapes, "sparse solver never used"
    squared = [rows == cols for rows, cols in shapes]
    assert all(squared) if square_edges > 0 else not any(squared), shapes


@pytest.mark.parametrize("passes", [0, 1000])
def test_matching_candidate_selection_by_argmin_and_by_threshold(monkeypatch, no_fallback, passes):
    """Candidates found only through chunk-minima thresholds (passes 0) or only by repeated argmin (passes 1000)."""
    monkeypatch.setattr(MATCHING, "ARGMIN_PASSES", passes)
    _check_pruned_kinds(np.random.default_rng(40))


@pytest.mark.parametrize("depth", [0, 4])
def test_matching_with_no_exposed_rows_and_deep_exposure(monkeypatch, no_fallback, depth):
    """Exactness does not rest on the exposed rows' early widening: none (0) or four levels of it."""
    monkeypatch.setattr(MATCHING, "EXPOSURE_DEPTH", depth)
    _check_pruned_kinds(np.random.default_rng(42))


@pytest.mark.parametrize("passes", [0, 1000])
def test_smallest_matches_a_full_sort(monkeypatch, passes):
    monkeypatch.setattr(MATCHING, "ARGMIN_PASSES", passes)
    rng = np.random.default_rng(41)
    rows = np.array([3, 0, 7, 7, 19])
    # many ties; 30 and 37 columns: chunks of one column, and a remainder chunk (37 = 2 x 16 + 5)
    for dist in (rng.integers(0, 5, size=(20, 30)), rng.integers(0, 5, size=(20, 37)), rng.normal(size=(20, 300))):
        dist = torch.tensor(dist, dtype=torch.float32)
        dist0 = dist.clone()
        for top in (1, 2, 5, 9, 16, dist.shape[1]):
            cols, values = MATCHING._smallest(dist, rows, top)
            want = np.sort(dist.numpy()[rows], axis=1)[:, :top]
            assert values.dtype == np.float64 and np.array_equal(values, want)
            assert np.array_equal(np.take_along_axis(dist.numpy()[rows], cols, axis=1), want)
            assert all(len(set(r)) == top for r in cols.tolist())
        assert torch.equal(dist, dist0)


def test_matching_images_solved_on_threads(monkeypatch):
    """WORKERS > 1 solves the images on a thread pool, with the same exact answers."""
    rng = np.random.default_rng(50)
    z = np.stack([_instance(kind, rng, 64, 512, 8)[0] for kind in ("gaussian", "near_collapsed", "collapsed")])
    codebook = rng.normal(size=(512, 8))
    threads = set()
    original = MATCHING._solve_image

    def spy(*args):
        threads.add(threading.current_thread().name)
        return original(*args)

    monkeypatch.setattr(MATCHING, "_solve_image", spy)
    default_small = MATCHING.SMALL_PROBLEM
    monkeypatch.setattr(MATCHING, "SMALL_PROBLEM", 0)  # (small uncrowded images are solved in one batch call)
    monkeypatch.setattr(MATCHING, "WORKERS", 3)
    _check(z, codebook, "threads")
    assert any(name.startswith("pivq-matching") for name in threads), threads
    monkeypatch.setattr(MATCHING, "WORKERS", 1)
    threads.clear()
    _check(z, codebook, "serial")
    assert not any(name.startswith("pivq-matching") for name in threads), threads
    # the default (WORKERS None): one thread for small images (64 x 512 <= SMALL_PROBLEM), else the pool
    monkeypatch.setattr(MATCHING, "WORKERS", None)
    monkeypatch.setattr(MATCHING, "_auto_workers", lambda: 3)
    for small_problem, pooled in ((default_small, False), (0, True)):
        monkeypatch.setattr(MATCHING, "SMALL_PROBLEM", small_problem)
        threads.clear()
        _check(z, codebook, "default")
        assert any(name.startswith("pivq-matching") for name in threads) == pooled, (small_problem, threads)


@pytest.mark.parametrize("solver", ["lapx", "scipy"])
def test_dense_solve_is_scipys_optimum_and_refuses_what_scipy_refuses(monkeypatch, solver):
    """_dense_solve (lapx's lapjvh, or scipy without it) on rectangular, square, tied and forbidden (inf)
    problems: scipy's optimal cost, distinct columns, rows in order; an infeasible problem raises ValueError."""
    if solver == "scipy":
        monkeypatch.setattr(MATCHING, "_lapx", None)
    rng = np.random.default_rng(70)
    for trial in range(600):
        n = int(rng.integers(1, 30))
        m = n + int(rng.integers(0, 3 if trial % 2 else 60))
        cost = rng.integers(0, 4, size=(n, m)).astype(float) if trial % 3 == 0 else rng.random((n, m))
        if trial % 5 == 0:  # some forbidden pairs, leaving a full matching (the diagonal)
            cost[rng.random((n, m)) < 0.3] = np.inf
            cost[np.arange(n), np.arange(n)] = 1.0
        rows, cols = MATCHING._dense_solve(cost)
        ref_rows, ref_cols = linear_sum_assignment(cost)
        assert np.array_equal(rows, np.arange(n)) and len(set(cols.tolist())) == n
        assert cost[rows, cols].sum() == pytest.approx(cost[ref_rows, ref_cols].sum(), rel=1e-12, abs=1e-12)
    infeasible = np.full((3, 4), np.inf)
    infeasible[:, 0] = 1.0
    with pytest.raises(ValueError):
        MATCHING._dense_solve(infeasible)


@pytest.mark.parametrize("kind", ["collapsed", "near_collapsed"])
def test_small_crowded_problems_skip_the_dense_reference(monkeypatch, kind):
    """Below SMALL_PROBLEM, crowded images still take steps 2-3 (cheaper there than the dense solver)."""

    def fail(dist):
        raise AssertionError("dense reference used")

    monkeypatch.setattr(MATCHING, "_dense_reference", fail)
    rng = np.random.default_rng(60)
    for _ in range(20):
        z, codebook = _instance(kind, rng, 32, 512, 16)
        assert 32 * 512 <= MATCHING.SMALL_PROBLEM
        _check(z[None], codebook, kind)


@pytest.mark.parametrize("solver", ["lapx", "scipy"])
@pytest.mark.parametrize("kind", KINDS)
def test_small_uncrowded_images_solved_whole_in_one_call_are_exact(monkeypatch, solver, kind):
    """Below SMALL_PROBLEM, the images that no batch-wide rule answers and that are not crowded go to one
    _dense_batch call (lapx's lapjvr_batch, or scipy per image): scipy's optimum on ~500 instances per kind,
    mixed in batches with images the other paths answer."""
    if solver == "scipy":
        monkeypatch.setattr(MATCHING, "_lapx", None)
    batched = []
    original = MATCHING._dense_batch

    def spy(dist):
        batched.append(len(dist))
        return original(dist)

    monkeypatch.setattr(MATCHING, "_dense_batch", spy)
    rng = np.random.default_rng(70 + KINDS.index(kind))
    for _ in range(200):
        n_codes, d = int(rng.integers(2, 13)), int(rng.integers(1, 5))
        k = int(rng.integers(n_codes, 41))
        _check(*_batch(kind, rng, n_codes, k, d, int(rng.integers(1, 5))), kind)
    if kind in ("gaussian", "clustered", "ties"):
        assert sum(batched) > 30, batched  # (clustered images are often crowded: 1-3 centres)


def test_batched_small_solves_use_the_jobs_threads_not_the_nodes(monkeypatch):
    """lapx's batch solver would take os.cpu_count() threads by default (a GPU node's 100+); ours passes the
    job's: torch's thread count (pivq.device.Job sets it to the CPUs the job asked for), or WORKERS."""
    assert MATCHING._lapx is not None, "lapx is a dependency of pivq (pyproject.toml)"
    seen = []
    original = MATCHING._lapx.lapjvr_batch

    def spy(*args, n_threads=None, **kwargs):
        seen.append(n_threads)
        return original(*args, n_threads=n_threads, **kwargs)

    monkeypatch.setattr(MATCHING._lapx, "lapjvr_batch", spy)
    rng = np.random.default_rng(80)
    z = np.stack([_instance("gaussian", rng, 12, 40, 3)[0] for _ in range(4)])
    codebook = rng.normal(size=(40, 3))
    _check(z, codebook, "gaussian")  # (one_thread: torch runs on 1 thread)
    monkeypatch.setattr(MATCHING, "WORKERS", 3)
    _check(z, codebook, "gaussian")
    assert seen == [1, 3], seen
