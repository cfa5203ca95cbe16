"""Exact batched assignment on the GPU: scipy's shortest augmenting path algorithm as one Triton kernel.

``optimal_matching`` (pivq.quantize.matching) sends the images that its batch-wide rules leave here when the
distances are on a CUDA device and this solver is usable (:func:`available`), so that the distances, the
reductions and the solve stay on the device and a training step reads back only the solved indices.

The kernel is the algorithm of ``scipy.optimize.linear_sum_assignment`` (Crouse 2016, "On implementing 2D
rectangular assignment algorithms"): for each unassigned row, Dijkstra's shortest path over the reduced costs
c_ij - u_i - v_j to an unassigned column, then the dual update and the augmentation along the path. One
program solves one problem (one image's core: :func:`solve_images`), with the per-column state (shortest path
costs, path, the scanned set, v) held in registers across the whole problem and the assignment in global
memory; only cost rows are read in the scans. Problems of a batch run on different streaming multiprocessors
at once. Two changes from scipy, neither of which changes the optimum:

- a warm start: u_i = min_j c_ij, v = 0, and every row whose nearest column no lower-numbered row also has
  as nearest starts assigned to it (reduced costs are >= 0 everywhere and 0 on those edges, which is all the
  algorithm needs), so only the remaining rows are augmented;
- a limit on the row scans per problem (``max_scans``); a problem that reaches it is reported unsolved.

Whatever the kernel returns is checked on the image's whole L x K problem before use (:func:`certified`): the
duals (u, v) must prove the assignment optimal by linear programming duality: reduced costs >= 0 everywhere, 0
on the assigned edges, v <= 0 and v = 0 on unused columns. These are the prices of the CPU solver's
certificate (pivq.quantize.matching, "the optimality argument"): p = -v, with the row's own edge the cheapest
at those prices; a core's duals become such prices with p = 0 off the core (:func:`_core`). An image whose core
fails the check is solved whole; one that fails again, or reaches the scan limit, goes to the CPU solver.

Under ``TRITON_INTERPRET=1`` Triton runs the same kernel on CPU tensors (numpy, slowly): the tests do that.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

MAX_COLUMNS = 8192  # per-column state lives in registers: wider problems go to the CPU solver
MIN_CAPABILITY = (8, 0)  # float64 reductions and the register file the kernel assumes (A100 and newer)
# cores with at most this many spare columns (beyond L; at least 16) are squared with dummy rows and
# column-reduced: that cuts the scans of near-collapsed cores about 4x, but every dummy row is one more row to
# augment, and with many of them the scans grow instead (clustered latents: 8x; docs/performance.md)
SQUARE_SPARE = 1 / 8
MAX_SCANS_PER_ROW = 64  # the scan limit is this many times the rows (typical runs: 1-30 per row)
# tests set this: CPU tensors take the device path, the kernel run by Triton's interpreter (TRITON_INTERPRET=1
# must be set before Triton is first imported)
ON_CPU_INTERPRETER = False


def interpreted() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1, set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(device: torch.device) -> bool:
    """Whether problems on ``device`` can be solved here: a CUDA device of compute capability >= 8.0 with
    Triton installed (torch's CUDA wheels bring it), or CPU tensors under Triton's interpreter where a test
    asks for it (ON_CPU_INTERPRETER)."""
    on_cpu = ON_CPU_INTERPRETER and interpreted()
    if not (device.type == "cuda" and not interpreted() or device.type == "cpu" and on_cpu):
        return False
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cpu" or torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


@functools.cache
def _kernel():
    from pivq.quantize.sap_kernel import sap_kernel  # (imports Triton)

    return sap_kernel


def solve_images(dist: torch.Tensor, rivals: torch.Tensor, crowded: torch.Tensor, extra: int, exposed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(columns (N, L) int64, solved (N,) bool, the kernel's row scans (N,)) of the optimal matching of each
    image's distances ``dist`` (N, L, K), on their device; ``rivals`` (N, L): the rows sharing each row's
    nearest code, ``crowded`` (N,): most rows share one (pivq.quantize.matching's steps 3 and 4).

    Each image is cut to a core first: the union U of every row's k nearest columns, k = L on crowded images
    (the exchange argument of step 3: that union holds an optimum), else rivals + ``extra`` for rows that share
    their nearest code and ``exposed`` for the others (step 4's candidates). A core with few spare columns
    (SQUARE_SPARE) is squared with zero-cost rows and column-reduced, as on the CPU; a wider one is solved as it
    is. Either way the core's duals are turned into prices over all K columns (zero off U) and checked on the
    whole problem (:func:`certified`); images whose check fails are solved whole."""
    n_img, n_rows, n_cols = dist.shape
    cols = torch.zeros(n_img, n_rows, dtype=torch.int64, device=dist.device)
    solved = torch.zeros(n_img, dtype=torch.bool, device=dist.device)
    scans = torch.zeros(n_img, dtype=torch.int64, device=dist.device)
    full = dist.double()
    k = torch.where(rivals > 1, rivals + extra, exposed)
    k = torch.where(crowded[:, None], n_rows, k).clamp(max=n_cols)
    top = torch.topk(dist, int(k.max()), dim=2, largest=False, sorted=True).indices
    member = torch.zeros(n_img, n_cols + 1, dtype=torch.bool, device=dist.device)  # (column K: the pruned)
    ranks = torch.arange(top.shape[2], device=dist.device)
    member.scatter_(1, torch.where(ranks < k[..., None], top, n_cols).flatten(1), True)
    width = member[:, :n_cols].sum(dim=1)
    # each image's core columns first (in column order), then the others
    order = torch.sort((~member[:, :n_cols]).to(torch.uint8), dim=1, stable=True).indices
    square = width - n_rows <= max(16, SQUARE_SPARE * n_rows)
    fits = width >= n_rows  # (candidate lists that overlap can leave fewer than L columns: solved whole)
    for group, squared in ((square & fits, True), (~square, False)):
        images = torch.nonzero(group).flatten()
        if len(images) == 0:
            continue
        core_cols = order[images, : int(width[images].max())]
        real = torch.arange(core_cols.shape[1], device=dist.device) < width[images, None]  # (others: padding)
        block = full[images].gather(2, core_cols[:, None, :].expand(-1, n_rows, -1))
        core_of, u, v, ok, core_scans = _core(block, real, squared)
        cols[images] = core_cols.gather(1, core_of.clamp(min=0))  # (-1: a row the kernel left unassigned)
        v_full = torch.zeros(len(images), n_cols, dtype=torch.float64, device=dist.device)
        v_full.scatter_(1, core_cols, torch.where(real, v, 0.0))
        solved[images] = ok & certified(full[images], cols[images], u, v_full)
        scans[images] = core_scans
    if not bool(solved.all()):  # a core that did not hold the optimum: the whole problem
        images = torch.nonzero(~solved).flatten()
        cols[images], solved[images], whole_scans = solve(full[images])
        scans[images] += whole_scans
    return cols, solved, scans


def _core(block: torch.Tensor, real: torch.Tensor, square: bool
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve cores (N, L, W) whose columns ``real`` (N, W) are U (the rest padding, which no row may take):
    (core column of each row (N, L), u (N, L) and v (N, W) for the original costs with v <= 0 and v = 0 on
    U's unused columns, kernel finished (N,), scans (N,))."""
    n_img, n_rows, width = block.shape
    # a padding cost no optimum pays: more than any whole assignment within U
    big = (n_rows + 1) * block.abs().flatten(1).amax(dim=1)[:, None, None] + 1
    if not square:
        cols, u, v, status, scans = _run_kernel(torch.where(real[:, None, :], block, big))
        return cols, u, v, status == 0, scans
    # W x W: dummy rows (cost 0) take the columns no real row uses; subtracting each column's minimum over the
    # real rows keeps the optimum (every column is used once) and spreads the warm start
    column_min = torch.where(real, block.amin(dim=1), 0.0)
    cost = torch.zeros(n_img, width, width, dtype=torch.float64, device=block.device)
    cost[:, :n_rows] = torch.where(real[:, None, :], block, big)
    cost -= column_min[:, None, :]
    cols, u, v, status, scans = _run_kernel(cost)
    # back to the original costs: v + column_min, shifted by V = its largest value on U so that v <= 0 there; V
    # is the dummy rows' -u (every U column a dummy row takes is unused by the real rows: v = 0 there)
    v = torch.where(real, v + column_min, -torch.inf)
    shift = v.amax(dim=1, keepdim=True)
    return cols[:, :n_rows], u[:, :n_rows] + shift, torch.where(real, v - shift, 0.0), status == 0, scans


def solve(cost: torch.Tensor, max_scans: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(columns (N, n) int64, solved (N,) bool, row scans (N,) int64) of the minimum-cost assignment of each
    (n, m) problem of ``cost`` (N, n, m), n <= m <= MAX_COLUMNS, finite, on a device where :func:`available`. A
    problem is marked solved only when its duals certify the columns optimal; the others' columns are
    meaningless."""
    cols, u, v, status, scans = _run_kernel(cost, max_scans)
    return cols, (status == 0) & certified(cost.double(), cols, u, v), scans


def _run_kernel(cost: torch.Tensor, max_scans: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel on each problem of ``cost`` (N, n, m) from the warm start: (columns (N, n), u (N, n),
    v (N, m), status (N,): 0 finished, scans (N,))."""
    n_prob, n_rows, n_cols = cost.shape
    if not n_rows <= n_cols <= MAX_COLUMNS:
        raise ValueError(f"the device solver takes n <= m <= {MAX_COLUMNS}, got n={n_rows}, m={n_cols}")
    cost = cost.double().contiguous()
    u, nearest = cost.min(dim=2)
    # warm start: a row is assigned to its nearest column when no lower-numbered row has the same nearest
    claimant = torch.full((n_prob * n_cols,), n_rows, device=cost.device, dtype=torch.int64)
    rows = torch.arange(n_rows, device=cost.device).expand(n_prob, -1)
    flat = (nearest + torch.arange(n_prob, device=cost.device)[:, None] * n_cols).flatten()
    claimant = claimant.scatter_reduce(0, flat, rows.flatten(), "amin").view(n_prob, n_cols)
    first = claimant.gather(1, nearest) == rows
    col4row = torch.where(first, nearest, -1).to(torch.int32).contiguous()
    row4col = torch.where(claimant < n_rows, claimant, -1).to(torch.int32).contiguous()
    v = torch.zeros(n_prob, n_cols, dtype=torch.float64, device=cost.device)
    status = torch.zeros(n_prob, dtype=torch.int32, device=cost.device)
    scans = torch.zeros(n_prob, dtype=torch.int32, device=cost.device)
    block_cols = 1 << (n_cols - 1).bit_length()  # Triton's blocks are powers of two
    _kernel()[(n_prob,)](
        cost, u, v, col4row, row4col, status, scans, n_rows, n_cols,
        max_scans or MAX_SCANS_PER_ROW * n_rows,
        BLOCK_ROWS=1 << (n_rows - 1).bit_length(), BLOCK_COLS=block_cols,
        num_warps=max(4, min(16, block_cols // 256)),  # 16 elements of each column vector per thread
    )
    return col4row.long(), u, v, status, scans.long()


def certified(cost: torch.Tensor, cols: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
              rtol: float = 1e-9) -> torch.Tensor:
    """(N,) bool: (u, v) prove ``cols`` (N, n) an optimal assignment of ``cost`` (N, n, m) (module docstring),
    up to ``rtol`` times the largest |cost| of the problem; also that ``cols`` is one-to-one."""
    n_prob, n_rows, n_cols = cost.shape
    tol = rtol * cost.abs().flatten(1).amax(dim=1).clamp_min(1.0)
    valid = ((cols >= 0) & (cols < n_cols)).all(dim=1)
    safe = cols.clamp(0, n_cols - 1)
    used = torch.zeros(n_prob, n_cols, dtype=torch.int64, device=cost.device).scatter_add_(
        1, safe, torch.ones_like(safe))
    one_to_one = (used <= 1).all(dim=1)
    reduced_min = (cost - u[:, :, None] - v[:, None, :]).flatten(1).amin(dim=1)
    own = cost.gather(2, safe[..., None])[..., 0] - u - v.gather(1, safe)
    tight = own.abs().amax(dim=1) <= tol
    prices_ok = (v <= tol[:, None]).all(dim=1) & ((used > 0) | (v.abs() <= tol[:, None])).all(dim=1)
    return valid & one_to_one & (reduced_min >= -tol) & tight & prices_ok


