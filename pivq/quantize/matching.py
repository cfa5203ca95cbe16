"""Exact matching quantization (paper eq. 3): the minimum total Euclidean distance one-to-one assignment.

Per image, the L latent vectors (rows) get L distinct codebook entries (columns) out of K, minimising the
sum of distances. ``scipy.optimize.linear_sum_assignment`` on the dense L x K matrix is the reference; it
is slow (0.1-5 s per 512 x 4096 image) because it works on every column. Steps 1 and 2 below run on the
whole batch at once, on the device of the distances. On a GPU (pivq.quantize.device_solver.available), the
images they leave are solved there too, by a Triton kernel of scipy's algorithm on each image's core (the
union of steps 3 and 4's candidate columns), each answer proved optimal over all K columns by its dual prices;
only images whose proof fails come to the CPU steps below. On the CPU, small images (L K <= SMALL_PROBLEM)
that are not crowded (step 3's condition) are solved whole, all in one call to lapx's batched solver
(``_dense_batch``): cheaper there than any of the per-image steps. The images left are solved concurrently on
up to WORKERS threads (the heavy calls, torch, numpy's selection and scipy's dense solver, release the GIL;
scipy's sparse solver does not); by default one for small images (L K <= SMALL_PROBLEM: mostly interpreter
work), else torch's intra-op thread count, which every stage sets to the CPUs its job asked for
(pivq.device.Job): never more threads than the job holds, wherever the distances are.
Per image, the first rule that applies gives the answer:

1. no repeated nearest code: the nearest-neighbour assignment is optimal (every row is at its minimum).
2. identical latents (``_identical_groups``): when every set of rows sharing a nearest code consists of
   identical latents, each such group of n rows takes the n nearest columns of its (shared) distance row.
   If the groups' column sets are disjoint this is optimal: it reaches, for every group at once, the
   lower bound "sum of its n smallest distances" that any injective assignment must pay. (Below
   SMALL_PROBLEM the rule is tried on crowded images only: the others are solved whole anyway.)
3. crowded images (most rows share one nearest code: (near-)collapsed encoders; ``_crowded``): every
   optimal row column can be taken among that row's L nearest columns R_i (exchange argument: if row i
   sits outside R_i, the other L - 1 rows leave a column of R_i free that costs row i no more; moving
   there never increases the total, and repeating ends). So the problem restricted to the union of the
   R_i, a few more than L columns here, has the global optimum. Those columns are found without sorting
   every row: the m columns with the smallest column minima contain R_i whenever row i has L distances
   <= s, the (m + 1)-th smallest column minimum (a lower bound on every other column). The restricted
   problem is made square with zero-cost dummy rows, where subtracting each column's minimum changes no
   optimum but removes the shared "distance to the collapse point" that makes every row want the same
   columns; a dense solver is several times faster on the result.
4. otherwise (``_pruned``) each row keeps its k nearest columns as candidates and the bound t_i = its
   (k + 1)-th smallest distance (<= every pruned distance): contested rows a few more than the rows
   sharing their nearest code, uncontested rows whose nearest code is some contested row's candidate a
   few (EXPOSED_CANDIDATES), and so on for EXPOSURE_DEPTH levels (rows whose nearest code is such an
   exposed row's candidate), the others their nearest code only. On the CPU the k nearest are found by k
   argmin passes when k is small, else through a threshold from chunk minima (``_smallest``; torch.topk
   and numpy's introselect are slower there). The candidate graph splits into connected components, each
   solved exactly: a dense solver (``_lsa``), or for large sparse components
   ``min_weight_full_bipartite_matching``, squared and column-reduced like ``_lsa`` when the dummy rows
   (joined to every column) add at most SQUARE_EDGES times the component's edges (clustered latents:
   several rows want the same columns).
   Dual prices then prove the result optimal over all K columns (``_certify``), and where the proof fails
   the rows responsible get more candidates and the step repeats. Anything unexpected (no proof after a
   few rounds) falls back to the dense reference, so the result is always exact.

The dense solves of steps 3 and 4 (``_dense_solve``) use lapx's Jonker-Volgenant ``lapjvh``, and whole small
images its batched ``lapjvr`` (both exact; docs/performance.md: the timings) when lapx is installed, scipy's
``linear_sum_assignment`` otherwise; the fallback, ``_dense_reference``, is always scipy's. lapx overlaps on
threads in part (four squared 535-row cores: 15.9 ms one after another, 12.1 ms on two threads).

The optimality argument of step 4 (``_certify``): take prices p_j >= 0 over all K columns with p_j = 0 on
every column left unused, and suppose every row i satisfies  c_ij + p_j >= c_{i,m(i)} + p_{m(i)} =: u_i
for all j (row i prefers its code m(i) at these prices). Any other injective assignment s then costs
    sum_i c_{i,s(i)} >= sum_i u_i - sum_i p_{s(i)} >= sum_i u_i - sum_{j used by m} p_j = sum_i c_{i,m(i)},
since p >= 0 and p vanishes off m's columns. For a pruned column, c_ij >= t_i and p_j >= 0, so
u_i <= t_i suffices: the dense matrix is never scanned again. The largest such prices are the fixed point
of  p_{m(i)} = min(t_i, min_{j candidate of i} c_ij + p_j) - c_{i,m(i)}  (Bellman-Ford, prices start at
t_i - c_{i,m(i)} and only decrease); if some price goes negative, the path that drove it started at a
row i whose bound t_i was too tight, and that row is widened. Prices of different components never
interact, and a component with a single row is proved by its row taking its cheapest candidate, so only
the multi-row components are checked.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from pivq.quantize import device_solver

try:  # lapx's Jonker-Volgenant solver (MIT): exact like scipy's, several times faster on pivq's dense problems
    import lap as _lapx
except ImportError:  # scipy then solves them all (the reference, always available)
    _lapx = None
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, maximum_bipartite_matching, min_weight_full_bipartite_matching

MAX_ROUNDS = 12  # widening rounds before the dense fallback (typically 1-3 are used)
EXTRA_CANDIDATES = 8  # candidates per contested row beyond the number of rows sharing its nearest code
EXPOSED_CANDIDATES = 4  # candidates of uncontested rows whose nearest code is a contested row's candidate
SMALL_PROBLEM = 65536  # L * K up to which a whole dense solve beats this machinery's per-image overhead
CROWDED = 0.5  # step 3 is tried when this fraction of the rows share one nearest code
SPARSE_COMPONENT = 1 << 18  # components with more (rows x columns) cells than this and ...
DENSE_FRACTION = 0.3  # ... a smaller fraction of them as candidates go to the sparse solver
SQUARE_EDGES = 8.0  # sparse components are squared and column-reduced when that adds <= this many times their edges
SQUARE_SLACK = 1.0  # dense problems with at most (1 + this) L columns are squared and column-reduced
EXPOSURE_DEPTH = 2  # levels of exposed rows: rows whose nearest code an exposed row of the level above may take
ARGMIN_PASSES = 8  # on the CPU, up to this many nearest columns are found by repeated argmin (see _smallest)
# threads solving the images of a batch concurrently; None: 1 for small images (L K <= SMALL_PROBLEM), else
# torch's intra-op thread count: the CPUs of the job (a GPU node has many more cores than the job holds)
WORKERS: int | None = None

# images solved by each path since the last take_paths() (the training log prints them at every log row)
PATHS: Counter[str] = Counter()
_T = TypeVar("_T")
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (its thread count, the pool), made on first use
_pool_lock = threading.Lock()


def optimal_matching(dist: torch.Tensor, nearest: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Indices (B, L) of the exact minimum-total-distance one-to-one assignment, per image.

    dist (B, L, K) Euclidean distances, nearest (B, L) their row argmins, z (B, L, d) the latents (only used
    to spot identical rows). Nothing is mutated; only the rows and candidates the solver needs leave the
    device of ``dist``.
    """
    n_codes, codebook_size = dist.shape[1], dist.shape[2]
    if codebook_size < n_codes:
        raise ValueError(
            f"matching quantization needs at least L={n_codes} usable codebook entries, got K={codebook_size}"
        )
    # repeated nearest codes per image, all images at once (offset each image's codes by b K)
    offset = torch.arange(len(dist), device=nearest.device)[:, None] * codebook_size
    counts = torch.bincount((nearest + offset).flatten(), minlength=len(dist) * codebook_size)
    counts = counts.view(len(dist), codebook_size)
    largest = counts.amax(dim=1)  # the most rows sharing one nearest code, per image
    todo, crowded = largest > 1, largest >= CROWDED * n_codes  # others: nearest is optimal
    small = n_codes * codebook_size <= SMALL_PROBLEM
    out = nearest.clone()
    paths = Counter()
    rule = todo & crowded if small else todo  # (small uncrowded images: cheaper solved whole, below)
    if bool(rule.any()):
        applies, cols = _identical_groups(dist, nearest, z, counts, rule)
        out[applies] = cols[applies]
        todo &= ~applies
        paths["identical"] = int(applies.sum())
    todo = torch.nonzero(todo).flatten()
    paths["nearest"] = len(dist) - len(todo) - paths["identical"]
    crowded = crowded[todo]
    if len(todo) and codebook_size <= device_solver.MAX_COLUMNS and device_solver.available(dist.device):
        sub = nearest[todo]
        cols, solved, _ = device_solver.solve_images(dist[todo], counts[todo].gather(1, sub), crowded,
                                                     EXTRA_CANDIDATES, EXPOSED_CANDIDATES)
        out[todo[solved]] = cols[solved]
        paths["device"] = int(solved.sum())
        todo, crowded = todo[~solved], crowded[~solved]  # (only where the proof fails: the CPU solver below)
    if small and not bool(crowded.all()):  # small images solved whole, in one call (none of step 4's overhead)
        plain = todo[~crowded]
        whole = dist if len(plain) == len(dist) else dist[plain]  # (a copy only when some image is not plain)
        out[plain] = torch.from_numpy(_dense_batch(whole)).to(out.device)
        paths["dense"] = len(plain)
        todo = todo[crowded]
    todo = todo.tolist()
    # small images are mostly interpreter work, which holds the GIL: threads only add overhead there
    workers = WORKERS or (1 if small else _auto_workers())
    solved = _map(lambda b: _solve_image(dist[b], nearest[b], counts[b]), todo, workers)
    for b, (cols, path) in zip(todo, solved):
        out[b] = torch.from_numpy(cols).to(out.device)
        paths[path] += 1
    PATHS.update(+paths)
    return out


def take_paths() -> dict[str, int]:
    """The images each path has solved since the last call (nearest, identical, device, and on the CPU
    dense, crowded, pruned, fallback), and a fresh count from now on."""
    taken = dict(sorted(PATHS.items()))
    PATHS.clear()
    return taken


def _auto_workers() -> int:
    """WORKERS' default for large images: torch's intra-op thread count, i.e. the job's CPUs."""
    return torch.get_num_threads()


def _map(fn: Callable[[int], _T], items: list[int], workers: int) -> list[_T]:
    """[fn(item) for item in items], on up to ``workers`` threads (a pool kept between calls)."""
    global _pool
    workers = min(workers, len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    with _pool_lock:
        if _pool is None or _pool[0] < workers:
            if _pool is not None:
                _pool[1].shutdown(wait=False)
            _pool = workers, ThreadPoolExecutor(workers, thread_name_prefix="pivq-matching")
        pool = _pool[1]
    return list(pool.map(fn, items))


def _solve_image(dist: torch.Tensor, nearest: torch.Tensor, counts: torch.Tensor) -> tuple[np.ndarray, str]:
    """The optimal column of every row of one image (L, K), and the path that found it."""
    n_rows, n_cols = dist.shape
    rivals = counts[nearest]  # rows sharing each row's nearest code (itself included)
    crowded = int(rivals.max()) >= CROWDED * n_rows
    small = n_rows * n_cols <= SMALL_PROBLEM
    if small and not crowded:
        return _dense_small(dist), "dense"
    cols = _crowded(dist) if crowded else None
    if cols is not None:
        return cols, "crowded"
    if small:
        return _dense_small(dist), "dense"
    return _pruned(dist, nearest.cpu().numpy(), rivals.cpu().numpy())


def _dense_reference(dist: torch.Tensor) -> np.ndarray:
    """The fallback: scipy's dense solver on the whole L x K matrix (exact, always available)."""
    return linear_sum_assignment(dist.cpu().double().numpy())[1]


def _dense_batch(dist: torch.Tensor) -> np.ndarray:
    """The optimal columns (n, L) of n >= 1 whole small problems (n, L, K): one call to lapx's batched
    ``lapjvr`` (the fastest of its exact solvers on these: docs/performance.md) on the job's threads, in float64 like
    scipy, or scipy per image."""
    cost = dist.detach().cpu().double().numpy()
    if _lapx is None:
        return np.stack([linear_sum_assignment(c)[1] for c in cost])
    _, cols = _lapx.lapjvr_batch(cost, extend_cost=cost.shape[1] != cost.shape[2], return_cost=False,
                                 n_threads=WORKERS or _auto_workers())
    return np.stack(cols)  # (every row is matched, and lapx lists them in row order)


def _dense_small(dist: torch.Tensor) -> np.ndarray:
    """A small image's whole L x K problem, by the fastest exact dense solver (:func:`_dense_solve`)."""
    rows, cols = _dense_solve(dist.cpu().double().numpy())
    return cols[np.argsort(rows)]


def _dense_solve(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of an optimal assignment of a dense (n, m) cost, n <= m, as scipy's linear_sum_assignment
    returns them (inf: forbidden; ValueError when no full matching exists): lapx's ``lapjvh`` when installed
    (it takes rectangular problems directly), else scipy. Both are exact; on ties they may pick different
    optima of the same cost."""
    if _lapx is None:
        return linear_sum_assignment(cost)
    return _lapx.lapjvh(cost, extend_cost=cost.shape[0] != cost.shape[1], return_cost=False)


def _lsa(cost: np.ndarray) -> np.ndarray:
    """The optimal column of each row of a dense (n, m) problem, n <= m (inf: forbidden; ValueError when
    no full matching exists). Nearly square problems are squared with zero-cost dummy rows, which keeps
    the optimum, and then every column's minimum is subtracted, which keeps it too (every column is used
    once) and spares the solver the long searches that a column-dominated cost causes."""
    n_rows, n_cols = cost.shape
    if n_cols > (1 + SQUARE_SLACK) * n_rows:
        rows, cols = _dense_solve(cost)
        return cols[np.argsort(rows)]
    square = np.zeros((n_cols, n_cols))
    square[:n_rows] = cost
    square -= cost.min(axis=0)  # the real rows' minimum (every column has a finite candidate there)
    rows, cols = _dense_solve(square)
    return cols[np.argsort(rows)][:n_rows]


def _identical_groups(
    dist: torch.Tensor, nearest: torch.Tensor, z: torch.Tensor, counts: torch.Tensor, todo: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 of the module docstring for the images ``todo`` (B,) of a batch (B, L, K) at once (per-image
    calls cost more than the rule itself at small L; nothing of size B L K is copied): (applies (B,) bool,
    columns (B, L), valid where it applies). It does not apply where some code is shared by rows that are
    not identical, or where two groups want the same column."""
    n_images, n_rows, n_cols = dist.shape
    device = dist.device
    rows = torch.arange(n_rows, device=device).expand(n_images, -1)
    image = torch.arange(n_images, device=device)[:, None]
    first = torch.full((n_images * n_cols,), n_rows, device=device).scatter_reduce(
        0, (nearest + image * n_cols).flatten(), rows.flatten(), "amin"
    )
    rep = first.view(n_images, n_cols).gather(1, nearest)  # first row of each row's group
    own = dist.gather(2, nearest[..., None])[..., 0]
    applies = todo & (own == own.gather(1, rep)).all(dim=1)  # (a cheap rejection before comparing latents)
    cols = nearest.clone()
    if not bool(applies.any()):
        return applies, cols
    applies &= (z == z.gather(1, rep[..., None].expand_as(z))).flatten(1).all(dim=1)
    if not bool(applies.any()):
        return applies, cols
    head_image, head_row = torch.nonzero((rep == rows) & applies[:, None], as_tuple=True)
    size = counts[head_image, nearest[head_image, head_row]]
    top = torch.topk(dist[head_image, head_row], int(size.max()), dim=1, largest=False, sorted=True)[1]
    # two groups of one image taking the same column: the rule does not apply there
    taken = (head_image[:, None] * n_cols + top)[torch.arange(top.shape[1], device=device) < size[:, None]]
    taken = torch.sort(taken).values
    applies[taken[1:][taken[1:] == taken[:-1]] // n_cols] = False
    # each row takes its group's column at its rank within the group (rows in index order)
    head = torch.full((n_images, n_rows), -1, dtype=torch.int64, device=device)
    head[head_image, head_row] = torch.arange(len(head_row), device=device)
    key = (image * n_rows + rep).flatten()
    order = torch.sort(key, stable=True).indices
    rank = torch.empty_like(key)
    rank[order] = torch.arange(len(key), device=device) - torch.searchsorted(key[order], key[order])
    group = head.gather(1, rep)
    solved = applies[:, None].expand(-1, n_rows)
    cols[solved] = top[group[solved], rank.view(n_images, n_rows)[solved]]
    return applies, cols


def _crowded(dist: torch.Tensor, tries: int = 3) -> np.ndarray | None:
    """Step 3 of the module docstring, or None when the columns with the smallest minima do not contain
    every row's L nearest columns after ``tries`` widenings."""
    n_rows, n_cols = dist.shape
    column_min = dist.amin(dim=0)  # (amin: several times faster than min, which also finds indices)
    width = n_rows + max(16, n_rows // 4)
    for _ in range(tries):
        if width >= n_cols:
            block, cols = dist, np.arange(n_cols)
            break
        values, top = torch.topk(column_min, width + 1, largest=False, sorted=True)
        block = dist.index_select(1, top[:width])  # (index_select: much faster than fancy indexing here)
        if bool(((block <= values[width]).sum(dim=1) >= n_rows).all()):
            cols = top[:width].cpu().numpy()
            break
        width += width // 2
    else:
        return None
    # keep the union of every row's L nearest columns (with ties); numpy's partition beats torch.kthvalue
    block = block.double().cpu().numpy()
    kth = np.partition(block, n_rows - 1, axis=1)[:, n_rows - 1]
    keep = np.flatnonzero((block <= kth[:, None]).any(axis=0))
    return cols[keep][_lsa(block[:, keep])]


class _Candidates:
    """Per-row candidate columns (sorted by distance, padded to a common width), their distances and the
    bound t_i <= every pruned distance of row i."""

    def __init__(self, dist: torch.Tensor, nearest: np.ndarray):
        self.dist = dist
        n_rows, self.n_cols = dist.shape
        self.cols = nearest[:, None].copy()
        rows = torch.arange(n_rows, device=dist.device)
        self.cost = dist[rows, torch.from_numpy(nearest).to(dist.device)].double().cpu().numpy()[:, None]
        self.k = np.ones(n_rows, np.int64)
        self.bound = self.cost[:, 0].copy()  # only the nearest column: no pruned column is closer

    def fetch(self, rows: np.ndarray, k: np.ndarray) -> None:
        """The k[r] nearest columns of each row r; bound: the (k[r] + 1)-th smallest distance."""
        if len(rows) == 0:
            return
        top = min(int(k.max()) + 1, self.n_cols)
        if top > self.cols.shape[1]:
            pad = ((0, 0), (0, top - self.cols.shape[1]))
            self.cols, self.cost = np.pad(self.cols, pad), np.pad(self.cost, pad, constant_values=np.inf)
        self.cols[rows, :top], self.cost[rows, :top] = _smallest(self.dist, rows, top)
        self.k[rows] = k
        bound = self.cost[rows, np.minimum(k, top - 1)]
        self.bound[rows] = np.where(k < self.n_cols, bound, np.inf)

    def csr(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, column indices, distances) of the candidates of ``rows`` (default: all)."""
        cols, cost, k = ((self.cols, self.cost, self.k) if rows is None
                         else (self.cols[rows], self.cost[rows], self.k[rows]))
        mask = np.arange(cols.shape[1]) < k[:, None]
        return np.concatenate([[0], np.cumsum(k)]), cols[mask], cost[mask]


def _smallest(dist: torch.Tensor, rows: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns and distances (float64) of the ``top`` smallest distances of each of ``rows``, ascending.

    On the CPU this avoids torch.topk and numpy's introselect, which partition each whole row: a few
    smallest are taken one argmin pass at a time (a vectorised scan each); more through a threshold. The
    row is cut into at least ``top`` chunks, and the ``top``-th smallest chunk minimum tau has ``top``
    distances <= it (one per chunk), so the ``top`` smallest are among the few distances <= tau, found by
    one vectorised comparison; only those are sorted (benchmarks/bench_matching_ab.py measures the solver)."""
    if dist.device.type != "cpu" or dist.dtype not in (torch.float32, torch.float64):
        values, cols = torch.topk(dist[torch.from_numpy(rows).to(dist.device)], top, dim=1, largest=False)
        return cols.cpu().numpy(), values.double().cpu().numpy()
    block = dist.detach().index_select(0, torch.from_numpy(rows))  # a copy: the input is never written
    n_rows, n_cols = block.shape
    if top <= ARGMIN_PASSES:
        array, index = block.numpy(), np.arange(n_rows)
        cols = np.empty((n_rows, top), np.int64)
        values = np.empty((n_rows, top))
        for step in range(top):
            cols[:, step] = array.argmin(axis=1)
            values[:, step] = array[index, cols[:, step]]
            array[index, cols[:, step]] = np.inf
        return cols, values
    chunks = min(1 << (2 * top - 1).bit_length(), n_cols)  # a power of two >= 2 top: few ties with tau
    width = n_cols // chunks
    chunk_min = block[:, : chunks * width].view(n_rows, chunks, width).amin(dim=2)
    if chunks * width < n_cols:  # the remainder is one more chunk
        chunk_min = torch.cat([chunk_min, block[:, chunks * width :].amin(dim=1, keepdim=True)], dim=1)
    tau = np.partition(chunk_min.numpy(), top - 1, axis=1)[:, top - 1 : top]
    flat = np.flatnonzero(block.numpy() <= tau)  # (flatnonzero: far cheaper than a 2-d nonzero)
    row, col = np.divmod(flat, n_cols)
    count = np.bincount(row, minlength=n_rows)
    slot = np.arange(len(flat)) - np.repeat(np.cumsum(count) - count, count)  # position within its row
    kept = np.full((n_rows, int(count.max())), np.inf)
    kept_cols = np.zeros(kept.shape, np.int64)
    kept[row, slot], kept_cols[row, slot] = block.numpy().ravel()[flat], col
    order = np.argsort(kept, axis=1, kind="stable")[:, :top]
    return np.take_along_axis(kept_cols, order, axis=1), np.take_along_axis(kept, order, axis=1)


def _pruned(dist: torch.Tensor, nearest: np.ndarray, rivals: np.ndarray) -> tuple[np.ndarray, str]:
    """Step 4 of the module docstring, and "pruned" (or "fallback" where the dense reference answered)."""
    n_rows, n_cols = dist.shape
    cand = _Candidates(dist, nearest)
    contested = np.flatnonzero(rivals > 1)
    cand.fetch(contested, np.minimum(rivals[contested] + EXTRA_CANDIDATES, n_cols))
    # uncontested rows whose nearest code a contested (or, a level down, an exposed) row may take are often
    # displaced: widen them now rather than after a failed proof (fewer proof rounds on gaussian latents)
    wanted = np.zeros(n_cols, bool)
    fetched = np.zeros(n_rows, bool)
    fetched[contested] = True
    new = contested
    for _ in range(EXPOSURE_DEPTH):
        wanted[cand.csr(new)[1]] = True
        new = np.flatnonzero(~fetched & wanted[nearest])
        fetched[new] = True
        cand.fetch(new, np.full(len(new), min(EXPOSED_CANDIDATES, n_cols)))
    for _ in range(MAX_ROUNDS):
        indptr, indices, cost = cand.csr()
        n_comp, label = connected_components(
            coo_matrix((np.ones(len(indices)), (np.repeat(np.arange(n_rows), cand.k), n_rows + indices)),
                       (n_rows + n_cols, n_rows + n_cols)),
            directed=False,
        )
        row_label = label[:n_rows]
        comp_rows = np.bincount(row_label, minlength=n_comp)
        # single-row components: the row takes its cheapest candidate (proved optimal without prices)
        assigned = cand.cols[:, 0].copy()
        shared = np.flatnonzero(comp_rows[row_label] > 1)
        try:
            for rows in np.split(shared[np.argsort(row_label[shared], kind="stable")],
                                 np.cumsum(comp_rows[comp_rows > 1])[:-1]):
                assigned[rows] = _solve_component(*cand.csr(rows), n_cols)
        except ValueError:  # no full matching within the candidates: widen a Hall-violating set of rows
            rows, deficit = _hall_violator(indptr, indices, n_rows, n_cols)
            k = cand.k[rows]
            cand.fetch(rows, np.minimum(np.maximum(2 * k, k + deficit), n_cols))
            continue
        if len(shared) == 0:
            return assigned, "pruned"
        proved, blame = _certify(*cand.csr(shared), cand.bound[shared], assigned[shared], n_cols)
        if proved:
            return assigned, "pruned"
        if blame is None:  # no convergence or a price forced negative by a free column: numerics
            break
        blame = shared[blame]
        k = cand.k[blame]
        cand.fetch(blame, np.minimum(np.maximum(2 * k, EXTRA_CANDIDATES), n_cols))
    return _dense_reference(dist), "fallback"


def _solve_component(indptr: np.ndarray, indices: np.ndarray, cost: np.ndarray, n_cols: int) -> np.ndarray:
    """Optimal candidate column of each row of one connected component (ValueError: no full matching)."""
    n_rows = len(indptr) - 1
    cols, local = np.unique(indices, return_inverse=True)
    if n_rows * len(cols) > SPARSE_COMPONENT and len(indices) < DENSE_FRACTION * n_rows * len(cols):
        spare = len(cols) - n_rows
        if 0 <= spare and spare * len(cols) <= SQUARE_EDGES * len(indices):  # (spare < 0: no full matching)
            # as in _lsa: square with zero-cost dummy rows (joined to every column), subtract column minima
            column_min = np.full(len(cols), np.inf)
            np.minimum.at(column_min, local, cost)
            indptr = np.concatenate([indptr, indptr[-1] + len(cols) * np.arange(1, spare + 1)])
            local = np.concatenate([local, np.tile(np.arange(len(cols)), spare)])
            cost = np.concatenate([cost - column_min[local[: len(cost)]], np.tile(-column_min, spare)])
            cost -= cost.min()  # a common shift: every full matching has len(cols) edges
        # explicit zeros count as missing edges there: make them the smallest positive double
        cost_nz = np.where(cost > 0, cost, np.finfo(np.float64).tiny)
        graph = csr_matrix((cost_nz, local, indptr), (len(indptr) - 1, len(cols)))
        return cols[min_weight_full_bipartite_matching(graph)[1][:n_rows]]
    if len(cols) < n_rows:
        raise ValueError("fewer candidate columns than rows")
    block = np.full((n_rows, len(cols)), np.inf)
    block[np.repeat(np.arange(n_rows), np.diff(indptr)), local] = cost
    return cols[_lsa(block)]
def _certify(
    indptr: np.ndarray, indices: np.ndarray, cost: np.ndarray, bound: np.ndarray, assigned: np.ndarray, n_cols: int
) -> tuple[bool, np.ndarray | None]:
    """(True, None) if the prices of the module docstring prove ``assigned`` optimal over all columns; else
    (False, rows whose bound t_i must grow), or (False, None) when the prices do not settle (numerics)."""
    n_rows = len(assigned)
    lengths = np.diff(indptr)
    row_of_edge = np.repeat(np.arange(n_rows), lengths)
    own = np.flatnonzero(indices == assigned[row_of_edge])  # the assigned edge of each row
    if len(own) != n_rows:
        return False, None
    own_cost = cost[own]
    tol = 1e-12 * max(1.0, float(np.max(np.abs(cost[np.isfinite(cost)]), initial=0.0)))
    price = np.zeros(n_cols)  # free columns keep price 0
    price[assigned] = bound - own_cost
    origin = np.full(n_cols, -1)  # the row whose bound started the path that set a price; -1: a free column
    origin[assigned] = np.arange(n_rows)
    edge = np.arange(len(indices))
    for _ in range(n_rows + 2):
        value = cost + price[indices]
        best = np.minimum.reduceat(value, indptr[:-1])
        new = np.minimum(bound, best) - own_cost
        lower = new < price[assigned] - tol
        if not lower.any():
            break
        # where a row's price fell, it now follows the (first) column achieving `best`: inherit its origin
        first = np.minimum.reduceat(np.where(value == best[row_of_edge], edge, len(edge)), indptr[:-1])
        origin_new = origin.copy()
        origin_new[assigned[lower]] = origin[indices[first[lower]]]
        price[assigned[lower]] = new[lower]
        origin = origin_new
    else:
        return False, None
    # prices >= -tol: the total is optimal up to L * tol, far below float32 distance rounding
    negative = price[assigned] < -tol
    if not negative.any():
        return True, None
    blame = origin[assigned[negative]]
    if (blame < 0).any():  # a cheaper alternating path from a free column: the sparse optimum was not optimal
        return False, None
    return False, np.unique(blame)


def _hall_violator(indptr: np.ndarray, indices: np.ndarray, n_rows: int, n_cols: int) -> tuple[np.ndarray, int]:
    """Rows reachable by alternating paths from the rows a maximum matching leaves unmatched (they see too
    few columns between them: Hall's condition fails), and by how many columns they fall short."""
    graph = csr_matrix((np.ones(len(indices)), indices, indptr), (n_rows, n_cols))
    col_of_row = maximum_bipartite_matching(graph, perm_type="column")
    row_of_col = np.full(n_cols, -1)
    row_of_col[col_of_row[col_of_row >= 0]] = np.flatnonzero(col_of_row >= 0)
    seen = col_of_row < 0
    frontier = np.flatnonzero(seen)
    seen_cols = np.zeros(n_cols, bool)
    while len(frontier):
        cols = np.unique(np.concatenate([indices[indptr[r] : indptr[r + 1]] for r in frontier]))
        cols = cols[~seen_cols[cols]]
        seen_cols[cols] = True
        rows = row_of_col[cols]
        rows = rows[(rows >= 0) & ~seen[rows]]
        seen[rows] = True
        frontier = rows
    rows = np.flatnonzero(seen)
    return rows, max(1, len(rows) - int(seen_cols.sum()))
