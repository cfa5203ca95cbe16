"""Exact matching quantization (paper eq. 3): the minimum total Euclidean distance one-to-one assignment.

Per image, the L latent vectors (rows) get L distinct codebook entries (columns) out of K, minimising the
sum of distances. ``scipy.optimize.linear_sum_assignment`` on the dense L x K matrix is the reference; it
is slow (0.1-2 s per 512 x 4096 image) because it works on every column. Here, per image:

1. the nearest-neighbour assignment, if it repeats no code, is optimal (every row is at its minimum); small
   problems (L K <= SMALL_PROBLEM) with repeats go to the dense reference, which is faster there;
2. otherwise each row i keeps only a few candidate columns and a bound t_i <= every pruned distance;
3. the sparse problem is solved by ``min_weight_full_bipartite_matching`` (rows with identical latents
   that take disjoint sets of their own nearest columns need no solver at all);
4. dual prices prove the sparse optimum optimal over all K columns (``_certify``); where the proof fails,
   the rows responsible get more candidates and step 3 is repeated. Anything unexpected (no proof after a
   few rounds) falls back to the dense reference, so the result is always exact.

The optimality argument (``_certify``): take prices p_j >= 0 over all K columns with p_j = 0 on every
column left unused, and suppose every row i satisfies  c_ij + p_j >= c_{i,m(i)} + p_{m(i)} =: u_i  for
all j (row i prefers its code m(i) at these prices). Any other injective assignment s then costs
    sum_i c_{i,s(i)} >= sum_i u_i - sum_i p_{s(i)} >= sum_i u_i - sum_{j used by m} p_j = sum_i c_{i,m(i)},
since p >= 0 and p vanishes off m's columns. For a pruned column, c_ij >= t_i and p_j >= 0, so
u_i <= t_i suffices: the dense matrix is never scanned again. The largest such prices are the fixed point
of  p_{m(i)} = min(t_i, min_{j candidate of i} c_ij + p_j) - c_{i,m(i)}  (Bellman-Ford, prices start at
t_i - c_{i,m(i)} and only decrease); if some price goes negative, the path that drove it started at a
row i whose bound t_i was too tight, and that row is widened.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching, min_weight_full_bipartite_matching

MAX_ROUNDS = 12  # widening rounds before the dense fallback (typically 1-3 are used)
EXTRA_CANDIDATES = 8  # candidates per contested row beyond the number of rows sharing its nearest code
SMALL_PROBLEM = 65536  # L * K up to which scipy's dense solver beats this machinery's per-image overhead
DENSE_FRACTION = 0.3  # candidate graphs denser than this (within their columns) go to the dense solver


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
    out = nearest.clone()
    for b in range(len(dist)):
        counts = torch.bincount(nearest[b], minlength=codebook_size)
        if int(counts.max()) <= 1:  # no repeated code: nearest is optimal
            continue
        cols = _solve_image(dist[b], nearest[b], z[b], counts)
        out[b] = torch.from_numpy(cols).to(out.device)
    return out


def _solve_image(dist: torch.Tensor, nearest: torch.Tensor, z: torch.Tensor, counts: torch.Tensor) -> np.ndarray:
    """The optimal column of every row of one image (L, K)."""
    n_rows, n_cols = dist.shape
    if n_rows * n_cols <= SMALL_PROBLEM:
        return _dense_reference(dist)
    solver = _Candidates(dist)

    # Identical latents (e.g. a collapsed encoder): each group of n identical rows takes its n nearest
    # columns. If the groups' column sets do not overlap this is the optimum, as _certify then confirms.
    _, group, group_size = torch.unique(z, dim=0, return_inverse=True, return_counts=True)
    if len(group_size) < n_rows:
        guess = solver.group_guess(group, group_size)
        if guess is not None and _certify(*solver.csr(), solver.bound, guess, n_cols)[0]:
            return guess

    # Contested rows (sharing their nearest code) start with a few more candidates than rivals; the others
    # keep only their nearest code, with bound t_i = their minimum distance (valid, if loose).
    rivals = counts[nearest].cpu().numpy()
    contested = np.flatnonzero(rivals > 1)
    solver.fetch_nearest(np.flatnonzero(rivals <= 1), nearest)
    solver.fetch(contested, np.minimum(rivals[contested] + EXTRA_CANDIDATES, n_cols))
    for _ in range(MAX_ROUNDS):
        indptr, indices, cost = solver.csr()
        union = np.unique(indices)
        try:
            if len(union) >= n_rows and len(indices) >= DENSE_FRACTION * n_rows * len(union):
                # rows see most of the candidate columns (collapsed latents): the dense solver on those
                # columns is faster than the sparse one, and every (row, union column) becomes a candidate
                indptr, indices, cost = solver.dense_block(union)
                rows, cols = linear_sum_assignment(cost.reshape(n_rows, len(union)))
                cols = union[cols[np.argsort(rows)]]
            else:
                # explicit zeros count as missing edges there: make them the smallest positive double
                cost_nz = np.where(cost > 0, cost, np.finfo(np.float64).tiny)
                _, cols = min_weight_full_bipartite_matching(csr_matrix((cost_nz, indices, indptr), (n_rows, n_cols)))
        except ValueError:  # no full matching within the candidates: widen a Hall-violating set of rows
            rows, deficit = _hall_violator(indptr, indices, n_rows, n_cols)
            k = solver.k[rows]
            solver.fetch(rows, np.minimum(np.maximum(2 * k, k + deficit), n_cols))
            continue
        proved, blame = _certify(indptr, indices, cost, solver.bound, cols, n_cols)
        if proved:
            return cols
        if blame is None:  # no convergence or a price forced negative by a free column: numerics
            break
        k = solver.k[blame]
        solver.fetch(blame, np.minimum(np.maximum(2 * k, EXTRA_CANDIDATES), n_cols))
    return _dense_reference(dist)


def _dense_reference(dist: torch.Tensor) -> np.ndarray:
    """The fallback: scipy's dense solver on the whole L x K matrix (exact, always available)."""
    return linear_sum_assignment(dist.cpu().double().numpy())[1]


class _Candidates:
    """Per-row candidate columns, their distances and the bound t_i <= every pruned distance of row i."""

    def __init__(self, dist: torch.Tensor):
        self.dist = dist
        n_rows, self.n_cols = dist.shape
        self.cols: list[np.ndarray] = [np.empty(0, np.int64)] * n_rows
        self.cost: list[np.ndarray] = [np.empty(0)] * n_rows
        self.k = np.zeros(n_rows, np.int64)
        self.bound = np.zeros(n_rows)

    def fetch_nearest(self, rows: np.ndarray, nearest: torch.Tensor) -> None:
        """Only the nearest column; bound: the row minimum itself (no pruned column is closer)."""
        if len(rows) == 0:
            return
        rows_t = torch.from_numpy(rows).to(self.dist.device)
        cols = nearest[rows_t]
        values = self.dist[rows_t, cols].double().cpu().numpy()
        cols = cols.cpu().numpy()
        for r, c, v in zip(rows, cols, values):
            self.cols[r], self.cost[r], self.k[r], self.bound[r] = np.array([c]), np.array([v]), 1, v

    def fetch(self, rows: np.ndarray, k: np.ndarray) -> None:
        """The k[r] nearest columns of each row r; bound: the (k[r] + 1)-th smallest distance."""
        if len(rows) == 0:
            return
        top = min(int(k.max()) + 1, self.n_cols)
        rows_t = torch.from_numpy(rows).to(self.dist.device)
        values, cols = torch.topk(self.dist[rows_t], top, dim=1, largest=False, sorted=True)
        values, cols = values.double().cpu().numpy(), cols.cpu().numpy()
        for r, kr, v, c in zip(rows, k, values, cols):
            self.cols[r], self.cost[r], self.k[r] = c[:kr], v[:kr], kr
            self.bound[r] = v[kr] if kr < self.n_cols else np.inf

    def group_guess(self, group: torch.Tensor, size: torch.Tensor) -> np.ndarray | None:
        """Rows of group g take the size[g] nearest columns of their (shared) distance row, or None when
        two groups want the same column. Sets the candidates to exactly those columns."""
        n_rows = len(group)
        first = torch.full((len(size),), n_rows, device=group.device).scatter_reduce(
            0, group, torch.arange(n_rows, device=group.device), "amin"
        )
        top = min(int(size.max()) + 1, self.n_cols)
        values, cols = torch.topk(self.dist[first], top, dim=1, largest=False, sorted=True)
        values, cols, size, group = values.double().cpu().numpy(), cols.cpu().numpy(), size.cpu().numpy(), group.cpu().numpy()
        taken = np.concatenate([c[:n] for c, n in zip(cols, size)])
        if len(np.unique(taken)) < len(taken):
            return None
        guess, used = np.empty(n_rows, np.int64), np.zeros(len(size), np.int64)
        for r, g in enumerate(group):
            n = size[g]
            guess[r], used[g] = cols[g, used[g]], used[g] + 1
            self.cols[r], self.cost[r], self.k[r] = cols[g, :n], values[g, :n], n
            self.bound[r] = values[g, n] if n < self.n_cols else np.inf
        return guess

    def dense_block(self, union: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Make every column of ``union`` a candidate of every row (bounds stay valid: fewer columns are
        pruned); returns the CSR of the block."""
        block = self.dist[:, torch.from_numpy(union).to(self.dist.device)].double().cpu().numpy()
        for r, row in enumerate(block):
            self.cols[r], self.cost[r] = union, row
        n_rows, width = block.shape
        return np.arange(0, n_rows * width + 1, width), np.tile(union, n_rows), block.ravel()

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indptr = np.concatenate([[0], np.cumsum([len(c) for c in self.cols])])
        return indptr, np.concatenate(self.cols), np.concatenate(self.cost)


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
    for _ in range(n_rows + 2):
        value = cost + price[indices]
        best = np.minimum.reduceat(value, indptr[:-1])
        new = np.minimum(bound, best) - own_cost
        lower = new < price[assigned] - tol
        if not lower.any():
            break
        # where a row's price fell, it now follows the column achieving `best`: inherit that column's origin
        hit = np.flatnonzero(value == best[row_of_edge])
        first = hit[np.unique(row_of_edge[hit], return_index=True)[1]]
        via = np.full(n_rows, -1)
        via[row_of_edge[first]] = indices[first]
        origin_new = origin.copy()
        origin_new[assigned[lower]] = origin[via[lower]]
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
