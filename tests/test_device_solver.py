"""The device solver (pivq.quantize.device_solver): its Triton kernel run by Triton's CPU interpreter on CPU
tensors, against scipy's optimum; its certificate; its place in optimal_matching, fall-back included; and the
kernel compiled for a real GPU target (an H100/H200's sm_90), which needs no GPU."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from test_matching import KINDS, _batch, _check, _instance

from pivq.quantize import assign, device_solver

pytestmark = pytest.mark.usefixtures("one_thread")
MATCHING = importlib.import_module("pivq.quantize.matching")
triton = pytest.importorskip("triton", reason="the device solver is a Triton kernel (torch's CUDA wheels bring it)")


@pytest.fixture
def interpreter(monkeypatch):
    """CPU tensors take the device path, the kernel run by Triton's interpreter (conftest.py turns it on)."""
    if not device_solver.interpreted():
        pytest.skip("Triton was imported before conftest.py could set TRITON_INTERPRET=1")
    monkeypatch.setattr(device_solver, "ON_CPU_INTERPRETER", True)
    MATCHING.take_paths()


def _problems(kind: str, rng: np.random.Generator, n_prob: int, n: int, m: int) -> np.ndarray:
    if kind == "uniform":
        return rng.random((n_prob, n, m))
    if kind == "ties":  # few distinct values: many equal costs and equal optima
        return rng.integers(0, 3, size=(n_prob, n, m)).astype(float)
    if kind == "rank_one":  # every row wants the same columns (a collapsed image's core)
        return rng.normal(size=(n_prob, 1, m)) + 1e-3 * rng.random((n_prob, n, m))
    raise AssertionError(kind)


def _kernel_matches_scipy(kind: str, batches: int, seed: int) -> None:
    """``batches`` batches of 1-4 problems (2.5 per batch on average), each equal to scipy's optimum."""
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        n = int(rng.integers(1, 13))
        m = n + int(rng.integers(0, 12))
        cost = _problems(kind, rng, int(rng.integers(1, 5)), n, m)
        before = cost.copy()
        cols, solved, scans = device_solver.solve(torch.from_numpy(cost))
        assert bool((scans >= 0).all())
        assert np.array_equal(cost, before), "cost mutated"
        assert bool(solved.all()), (kind, n, m)
        for c, got in zip(cost, cols.numpy()):
            assert len(set(got.tolist())) == n
            rows, best = linear_sum_assignment(c)
            assert c[np.arange(n), got].sum() == pytest.approx(c[rows, best].sum(), abs=1e-12)


# rank-one problems need the most scans (every row wants the same columns): fewer of them by default
@pytest.mark.parametrize("kind, batches", [("uniform", 120), ("ties", 120), ("rank_one", 30)])
def test_kernel_reaches_scipys_optimum_with_a_certificate(interpreter, kind, batches):
    _kernel_matches_scipy(kind, batches, seed=["uniform", "ties", "rank_one"].index(kind))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uniform", "ties", "rank_one"])
def test_kernel_reaches_scipys_optimum_on_thousands_of_instances(interpreter, kind):
    _kernel_matches_scipy(kind, 1200, seed=100 + ["uniform", "ties", "rank_one"].index(kind))  # ~3000 each


def test_certificate_rejects_what_is_not_proved_optimal(interpreter):
    cost = torch.from_numpy(np.random.default_rng(5).random((1, 6, 9)))
    u, nearest = cost.min(dim=2)
    cols, solved, _ = device_solver.solve(cost)
    assert bool(solved.all())
    # the kernel's own duals prove its answer, and only it: not a permutation of it, not a spoiled price
    n_prob, n, m = cost.shape
    k_cols, k_u, k_v, status, _ = device_solver._run_kernel(cost)
    assert bool((status == 0).all()) and torch.equal(k_cols, cols)
    assert bool(device_solver.certified(cost, cols, k_u, k_v).all())
    assert not bool(device_solver.certified(cost, cols[:, [1, 0, 2, 3, 4, 5]], k_u, k_v).all())
    assert not bool(device_solver.certified(cost, cols, k_u, k_v + 0.5).all())  # positive prices: infeasible
    assert not bool(device_solver.certified(cost, cols[:, [1, 0, 2, 3, 4, 5]], u, torch.zeros(1, m)).all())
    assert not bool(device_solver.certified(cost, torch.zeros_like(cols), u, torch.zeros(1, m)).all())
    # row minima with v = 0 prove exactly the nearest assignment when it is one-to-one
    distinct = torch.tensor([[[1.0, 5.0, 5.0], [5.0, 1.0, 5.0]]], dtype=torch.float64)
    u2 = distinct.min(dim=2).values
    assert bool(device_solver.certified(distinct, torch.tensor([[0, 1]]), u2, torch.zeros(1, 3)).all())
    assert not bool(device_solver.certified(distinct, torch.tensor([[0, 2]]), u2, torch.zeros(1, 3)).all())
    # an unused column with a negative price breaks the rectangular optimality condition
    v = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)
    assert not bool(device_solver.certified(distinct, torch.tensor([[0, 1]]), u2, v).all())


def test_cores_with_fewer_columns_than_rows_are_solved_whole(interpreter):
    """Candidate lists that overlap can leave a core narrower than L (here: one candidate per row, where rows
    share nearest columns): such an image skips the core and is solved whole, exactly."""
    rng = np.random.default_rng(11)
    z, codebook = _batch("clustered", rng, 12, 30, 3, 2)
    dist = torch.cdist(torch.tensor(z), torch.tensor(codebook)[None])
    ones = torch.ones(dist.shape[:2], dtype=torch.int64)
    cols, solved, _ = device_solver.solve_images(dist, ones, torch.zeros(2, dtype=torch.bool), extra=0, exposed=1)
    assert bool(solved.all())
    for d, got in zip(dist.numpy(), cols.numpy()):
        assert len(set(got.tolist())) == 12
        rows, best = linear_sum_assignment(d)
        assert d[np.arange(12), got].sum() == pytest.approx(d[rows, best].sum(), abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_matching_on_the_device_path_is_exact(interpreter, monkeypatch, kind):
    """optimal_matching on CPU tensors under the interpreter: every image the batch-wide rules leave is solved
    by the kernel (crowded ones on their squared core) and proved; the CPU solver is never called."""

    def fail(*args):
        raise AssertionError("the CPU solver was used")

    monkeypatch.setattr(MATCHING, "_solve_image", fail)
    rng = np.random.default_rng(30 + KINDS.index(kind))
    for _ in range(6):
        n_codes, d = int(rng.integers(2, 25)), int(rng.integers(1, 5))
        k = int(rng.integers(n_codes, 3 * n_codes + 40))
        _check(*_batch(kind, rng, n_codes, k, d, int(rng.integers(1, 4))), kind)
    paths = MATCHING.take_paths()
    assert set(paths) <= {"nearest", "identical", "device"}, paths
    if kind not in ("near_distinct", "collapsed"):
        assert paths.get("device", 0) > 0, paths


def test_cores_squared_or_rectangular_and_the_whole_problem_when_a_core_fails(interpreter, monkeypatch):
    """A crowded image's core (the union of every row's L nearest columns) is squared; a gaussian image with
    many candidates is solved on its rectangular core; when a core's answer fails the check on the whole
    problem (here: cores forced to a wrong answer), the whole L x K problem is solved, still exactly."""
    problems = []
    original = device_solver._run_kernel

    def spy(cost, max_scans=None):
        problems.append(tuple(cost.shape[1:]))
        return original(cost, max_scans)

    monkeypatch.setattr(device_solver, "_run_kernel", spy)
    rng = np.random.default_rng(8)
    z, codebook = _instance("near_collapsed", rng, 20, 200, 4)
    _check(z[None], codebook, "near_collapsed")
    ((n, m),) = problems
    assert n == m and 20 <= m < 200, problems  # squared (with dummy rows for any spare columns)
    problems.clear()
    monkeypatch.setattr(MATCHING, "EXPOSED_CANDIDATES", 3)  # 20 rows x 3: a core of more than 2 L columns
    z, codebook = _instance("gaussian", rng, 20, 200, 4)
    _check(z[None], codebook, "gaussian")
    ((n, m),) = problems
    assert n == 20 and 40 < m < 200, problems
    problems.clear()

    def wrong(block, real, square):
        cols, u, v, finished, scans = core(block, real, square)
        return cols.flip(1), u, v, finished, scans  # (a permutation: no longer optimal)

    core = device_solver._core
    monkeypatch.setattr(device_solver, "_core", wrong)
    _check(z[None], codebook, "gaussian")
    assert problems[-1] == (20, 200), problems
    assert MATCHING.take_paths().get("device") == 3


def test_unproved_images_fall_back_to_the_cpu_solver(interpreter, monkeypatch):
    monkeypatch.setattr(device_solver, "MAX_SCANS_PER_ROW", 0)  # every kernel run stops at its first scan
    rng = np.random.default_rng(9)
    z = np.stack([_instance("gaussian", rng, 16, 40, 3)[0] for _ in range(3)])
    _check(z, rng.normal(size=(40, 3)), "gaussian")
    paths = MATCHING.take_paths()
    assert "device" not in paths and paths.get("dense", 0) + paths.get("pruned", 0) > 0, paths


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (bench_quantize.py reports the same)")
def test_matching_on_the_gpu_is_exact_and_takes_the_device_path():
    rng = np.random.default_rng(40)
    MATCHING.take_paths()
    for kind in KINDS:
        for n_codes, k in ((32, 512), (512, 4096)):
            z, codebook = _instance(kind, rng, n_codes, k, 16)
            z_t, cb_t = torch.tensor(z[None], dtype=torch.float32), torch.tensor(codebook, dtype=torch.float32)
            got = assign(z_t.cuda(), cb_t.cuda(), "matching").cpu()
            dist = torch.cdist(z_t, cb_t[None]).double()[0].numpy()
            rows, best = linear_sum_assignment(dist)
            assert len(set(got[0].tolist())) == n_codes
            assert dist[np.arange(n_codes), got[0].numpy()].sum() == pytest.approx(dist[rows, best].sum(), rel=1e-6)
    paths = MATCHING.take_paths()
    assert paths.get("device", 0) > 0 and set(paths) <= {"nearest", "identical", "device"}, paths


def test_available_only_where_the_kernel_can_run(monkeypatch):
    assert not device_solver.available(torch.device("cpu"))  # (not asked for: the CPU solver serves CPU tensors)
    monkeypatch.setattr(device_solver, "ON_CPU_INTERPRETER", True)
    assert not device_solver.available(torch.device("meta"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert device_solver.available(torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not device_solver.available(torch.device("cpu"))
    with pytest.raises(ValueError, match="n <= m"):
        device_solver.solve(torch.zeros(1, 3, 2))


COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from pivq.quantize.sap_kernel import sap_kernel
signature = {"cost_ptr": "*fp64", "u_ptr": "*fp64", "v_ptr": "*fp64", "col4row_ptr": "*i32", "row4col_ptr": "*i32",
             "status_ptr": "*i32", "scans_ptr": "*i32", "n_rows": "i32", "n_cols": "i32", "max_scans": "i32",
             "BLOCK_ROWS": "constexpr", "BLOCK_COLS": "constexpr"}
source = ASTSource(fn=sap_kernel, signature=signature, constexprs={"BLOCK_ROWS": 512, "BLOCK_COLS": 4096})
kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 16})
assert kernel.asm["cubin"] and "ld.local" not in kernel.asm["ptx"]
print("compiled")
"""


def test_kernel_compiles_for_an_h200():
    """The interpreter is lenient about types and loops: compile the kernel for sm_90 as on a GPU node (Triton
    ships ptxas; no GPU needed), at the paper's shape and the launch's 16 warps, with nothing spilled to local
    memory. In a fresh interpreter without TRITON_INTERPRET (the compiler does not run under it)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]
