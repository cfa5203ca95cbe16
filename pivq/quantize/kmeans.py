"""Greedy k-means++ (Arthur & Vassilvitskii 2007) followed by Lloyd iterations, in torch.

Used for the delayed, data-dependent codebook initialisation of section 3.7: the centres are fit to the
encoder outputs of the last W training iterations.
"""

from __future__ import annotations

import math

import torch


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Centres (k, d) of the vectors x (n, d): greedy k-means++ seeding, then ``iters`` Lloyd steps.

    A centre that loses all its points keeps its position (it stays a valid, if unused, code).
    """
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} vectors, got {len(x)} (raise the window W)")
    x = x.float()
    centres = _kmeans_plus_plus(x, k, generator)
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


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Each new centre: the best of 2 + ln k candidates drawn with probability ~ D^2 (the "greedy" variant
    scikit-learn uses; a single candidate merges clusters far more often)."""
    n, trials = len(x), 2 + int(math.log(k))
    centres = x.new_empty(k, x.shape[1])
    centres[0] = x[torch.randint(n, (1,), generator=generator, device=x.device)]
    d2 = (torch.cdist(x, centres[:1]).squeeze(1)) ** 2
    for i in range(1, k):
        total = d2.sum()
        if total <= 0:  # every point already sits on a centre: pick uniformly
            candidates = torch.randint(n, (trials,), generator=generator, device=x.device)
        else:
            candidates = torch.multinomial(d2 / total, trials, replacement=True, generator=generator)
        d2_new = torch.minimum(d2.unsqueeze(0), torch.cdist(x[candidates], x) ** 2)  # (trials, n)
        best = d2_new.sum(dim=1).argmin()
        centres[i] = x[candidates[best]]
        d2 = d2_new[best]
    return centres
