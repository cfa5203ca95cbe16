"""Greedy k-means++ (Arthur & Vassilvitskii 2007) followed by Lloyd iterations, in torch.

Used for the delayed, data-dependent codebook initialisation of section 3.7: the centres are fit to the
encoder outputs of the last W training iterations (about 1M vectors into 4096 centres at the paper's scale,
so everything works on the device the vectors are on, in chunks where a full distance matrix would not fit).
scikit-learn's KMeans is the reference (tests/test_quantize.py, benchmarks/bench_kmeans.py).
"""

from __future__ import annotations

import math

import torch


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Centres (k, d) of the vectors x (n, d): greedy k-means++ seeding, then ``iters`` Lloyd steps."""
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} vectors, got {len(x)} (raise the window W)")
    x = x.float()
    return lloyd(x, kmeans_plus_plus(x, k, generator), iters)


def lloyd(x: torch.Tensor, centres: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` Lloyd steps from ``centres``. A centre that loses all its points keeps its position (it stays
    a valid, if unused, code)."""
    k = len(centres)
    for _ in range(iters):
        labels = nearest_centre(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres


def nearest_centre(x: torch.Tensor, centres: torch.Tensor, chunk_elements: int = 1 << 26) -> torch.Tensor:
    """argmin_j ||x_i - c_j|| for every row, in row chunks: at paper scale (about 2M vectors x 4096 centres)
    the full distance matrix would take 32 GB."""
    rows = max(1, chunk_elements // len(centres))
    return torch.cat([torch.cdist(part, centres).argmin(dim=1) for part in x.split(rows)])


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k centres drawn from x: each new one the best of 2 + ln k candidates drawn with probability ~ D^2 (the
    "greedy" variant scikit-learn uses; a single candidate merges clusters far more often)."""
    n, trials = len(x), 2 + int(math.log(k))
    norms = (x * x).sum(dim=1)

    def squared_distances(rows: torch.Tensor) -> torch.Tensor:
        # |a|^2 - 2 a.b + |b|^2 with the norms computed once: one matrix product per step (scikit-learn's
        # trick), instead of cdist recomputing every norm and a square root; clamped, as rounding can go below 0
        return (norms[rows, None] - 2 * (x[rows] @ x.T) + norms[None]).clamp_(min=0)

    centres = x.new_empty(k, x.shape[1])
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centres[0] = x[first[0]]
    d2 = squared_distances(first)[0]
    for i in range(1, k):
        total = d2.sum()
        if total <= 0:  # every point already sits on a centre: pick uniformly
            candidates = torch.randint(n, (trials,), generator=generator, device=x.device)
        else:
            candidates = torch.multinomial(d2 / total, trials, replacement=True, generator=generator)
        d2_new = torch.minimum(d2.unsqueeze(0), squared_distances(candidates))  # (trials, n)
        best = d2_new.sum(dim=1).argmin()
        centres[i] = x[candidates[best]]
        d2 = d2_new[best]
    return centres
