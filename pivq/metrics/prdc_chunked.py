"""Exact, memory-linear precision / recall / density / coverage (Naeem et al. 2020).

Drop-in for ``prdc.compute_prdc`` (prdc 0.2): same dict, same numbers. ``prdc`` materialises three
full N x N distance matrices plus an int64 ``argpartition`` array (about 13 bytes x N^2, 31 GiB at
50k real + 50k fake). Here the distance matrices are computed in tiles of ``chunk`` rows x
``col_chunk`` columns and never stored; per row only the running k+1 smallest distances (for the
radii), the running minimum and "any" flag (coverage, recall) and per fake column the running count
of real balls containing it (precision, density) are kept. Memory is O(N*(k+1) + chunk*col_chunk)
on top of the inputs.

Numerical agreement with prdc. prdc calls ``sklearn.metrics.pairwise_distances(metric="euclidean")``,
which promotes the pair to float32 only if both arrays are float32 (else float64) and computes
``d2 = -2 x.y + |x|^2 + |y|^2``:

* float32 pair: in float64 on upcast chunks, then cast to float32, clamped at 0, ``sqrt`` in float32.
* float64 pair: in float64, clamped at 0, ``sqrt`` in float64.

This module does the same arithmetic (float64 products and norms, then the same cast/clamp/sqrt in
the pair's dtype), so every comparison (``<``, strict, as in prdc) is made between the same values up
to float64 rounding-order differences in the dot products (~1e-16 relative), which matters only for
non-integer near-exact ties. Integer-valued features (exact ties, duplicate points) are computed
exactly by both, so ties compare identically. prdc runs sklearn with ``n_jobs=8``, which slices the
second array, so it never zeroes the self-distance diagonal; neither do we (the self-distance is
the expansion's value, exactly 0 for integer data, ~0 otherwise). Radii are the (nearest_k+1)-th
smallest value of the row including self, exactly prdc's ``get_kth_value(k=nearest_k+1)``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["compute_prdc"]

DEFAULT_CHUNK = 1024
DEFAULT_COL_CHUNK = 8192


def _as_tensor(x, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach()
    if t.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float64)  # sklearn: any non-float32 pair is computed in float64
    return t.to(device)


def _sq_norms(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Squared row norms in float64, upcasting ``chunk`` rows at a time (sklearn's row_norms)."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], chunk):
        xb = x[s : s + chunk].to(torch.float64)
        out[s : s + chunk] = torch.einsum("ij,ij->i", xb, xb)
    return out


def _tiles(x: torch.Tensor, y: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor, chunk: int, col_chunk: int):
    """Yield (row_slice, col_slice, distances) tiles, distances as sklearn's euclidean would give them."""
    out_dtype = torch.float32 if (x.dtype == torch.float32 and y.dtype == torch.float32) else torch.float64
    for r in range(0, x.shape[0], chunk):
        xb = x[r : r + chunk].to(torch.float64)
        xxb = xx[r : r + chunk, None]
        for c in range(0, y.shape[0], col_chunk):
            yb = y[c : c + col_chunk].to(torch.float64)
            d = torch.mm(xb, yb.T).mul_(-2.0)
            d += xxb
            d += yy[None, c : c + col_chunk]
            d = d.to(out_dtype).clamp_(min=0.0).sqrt_()
            yield slice(r, r + xb.shape[0]), slice(c, c + yb.shape[0]), d


def _radii(x: torch.Tensor, xx: torch.Tensor, nearest_k: int, chunk: int, col_chunk: int) -> torch.Tensor:
    """(nearest_k+1)-th smallest distance of each row to the set itself (self included), like prdc."""
    k1 = nearest_k + 1
    n = x.shape[0]
    if n < k1:
        raise ValueError(f"need more than nearest_k={nearest_k} samples, got {n}")
    best = None  # (rows, <=k1) running smallest values of the current row block
    radii = None
    for rows, cols, d in _tiles(x, x, xx, xx, chunk, col_chunk):
        if radii is None:
            radii = torch.empty(n, dtype=d.dtype, device=d.device)
        cand = d if cols.start == 0 else torch.cat([best, d], dim=1)
        best = torch.topk(cand, min(k1, cand.shape[1]), dim=1, largest=False, sorted=False).values
        if cols.stop == n:
            radii[rows] = best.max(dim=1).values
    return radii


@torch.no_grad()
def compute_prdc(
    real_features,
    fake_features,
    nearest_k: int = 5,
    device: str | torch.device | None = None,
    chunk: int = DEFAULT_CHUNK,
    col_chunk: int = DEFAULT_COL_CHUNK,
) -> dict[str, float]:
    """Precision, recall, density and coverage; equals ``prdc.compute_prdc`` (without its print).

    ``real_features`` (N_real, D) and ``fake_features`` (N_fake, D): numpy arrays or tensors.
    ``device``: where to compute (default: the CPU; the pipeline passes its stage's device). ``chunk`` rows x
    ``col_chunk`` columns of a distance matrix are held at a time. Returns python floats.
    """
    if nearest_k < 1:
        raise ValueError(f"nearest_k must be >= 1, got {nearest_k}")
    if chunk < 1 or col_chunk < 1:
        raise ValueError("chunk and col_chunk must be >= 1")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    real = _as_tensor(real_features, dev)
    fake = _as_tensor(fake_features, dev)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: {real.shape[1]} vs {fake.shape[1]}")
    n_real, n_fake = real.shape[0], fake.shape[0]

    rr = _sq_norms(real, chunk)
    ff = _sq_norms(fake, chunk)
    real_radii = _radii(real, rr, nearest_k, chunk, col_chunk)
    fake_radii = _radii(fake, ff, nearest_k, chunk, col_chunk)

    # one pass over distance_real_fake (real rows x fake columns)
    counts = torch.zeros(n_fake, dtype=torch.int64, device=dev)  # real balls containing each fake
    recall_hit = torch.zeros(n_real, dtype=torch.bool, device=dev)
    min_dist = None
    for rows, cols, d in _tiles(real, fake, rr, ff, chunk, col_chunk):
        if min_dist is None:
            min_dist = torch.full((n_real,), float("inf"), dtype=d.dtype, device=dev)
        cmp_dtype = torch.promote_types(d.dtype, real_radii.dtype)  # numpy's promotion for `<`
        d_c = d.to(cmp_dtype)
        inside_real = d_c < real_radii[rows, None].to(cmp_dtype)
        counts[cols] += inside_real.sum(dim=0)
        inside_fake = d.to(torch.promote_types(d.dtype, fake_radii.dtype)) < fake_radii[None, cols].to(
            torch.promote_types(d.dtype, fake_radii.dtype)
        )
        recall_hit[rows] |= inside_fake.any(dim=1)
        min_dist[rows] = torch.minimum(min_dist[rows], d.min(dim=1).values)

    cov_dtype = torch.promote_types(min_dist.dtype, real_radii.dtype)
    covered = min_dist.to(cov_dtype) < real_radii.to(cov_dtype)

    counts_np = counts.cpu().numpy()
    precision = (counts_np > 0).mean()
    recall = recall_hit.cpu().numpy().mean()
    density = (1.0 / float(nearest_k)) * counts_np.mean()
    coverage = covered.cpu().numpy().mean()
    return dict(precision=float(precision), recall=float(recall), density=float(density), coverage=float(coverage))
