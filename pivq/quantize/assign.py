"""Code assignment: nearest neighbour (eq. 1) and matching quantization (eq. 3)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

METHODS = ("nearest", "matching")


def pairwise_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (B, L, K) between latent vectors (B, L, d) and codebook entries (K, d)."""
    return torch.cdist(z, codebook.unsqueeze(0).expand(len(z), -1, -1))


def assign(z: torch.Tensor, codebook: torch.Tensor, method: str) -> torch.Tensor:
    """Codebook indices (B, L) for latent vectors z (B, L, d); ``method`` is "nearest" or "matching".

    matching: per image, the one-to-one assignment of the L vectors to L distinct codebook entries
    minimising the total Euclidean distance (the paper's Hungarian matching, eq. 3).
    """
    if method not in METHODS:
        raise ValueError(f"quantizer method {method!r} is not one of {list(METHODS)}")
    if z.ndim != 3 or codebook.ndim != 2 or z.shape[-1] != codebook.shape[-1]:
        raise ValueError(f"expected z (B, L, d) and codebook (K, d), got {tuple(z.shape)} and {tuple(codebook.shape)}")
    with torch.no_grad():
        dist = pairwise_distances(z.detach(), codebook.detach())
        nearest = dist.argmin(dim=-1)
        if method == "nearest":
            return nearest
        return _matching(dist, nearest)


def _matching(dist: torch.Tensor, nearest: torch.Tensor) -> torch.Tensor:
    n_codes, codebook_size = dist.shape[1], dist.shape[2]
    if codebook_size < n_codes:
        raise ValueError(
            f"matching quantization needs at least L={n_codes} usable codebook entries, got K={codebook_size}"
        )
    out = nearest.clone()
    for b in range(len(dist)):
        # Every row at its own minimum with no repeated code is optimal: skip the solver.
        if torch.unique(nearest[b]).numel() == n_codes:
            continue
        cost = dist[b].cpu().double().numpy()
        rows, cols = linear_sum_assignment(cost)
        out[b, torch.from_numpy(rows)] = torch.from_numpy(cols.astype(np.int64)).to(out.device)
    return out
