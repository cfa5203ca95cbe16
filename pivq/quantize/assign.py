"""Code assignment: nearest neighbour (eq. 1), matching quantization (eq. 3) and OptVQ's Sinkhorn."""

from __future__ import annotations

import torch

from pivq.quantize.matching import optimal_matching
from pivq.quantize.sinkhorn import sinkhorn_assign

METHODS = ("nearest", "matching", "sinkhorn")


def pairwise_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (B, L, K) between latent vectors (B, L, d) and codebook entries (K, d)."""
    return torch.cdist(z, codebook.unsqueeze(0).expand(len(z), -1, -1))


def assign(z: torch.Tensor, codebook: torch.Tensor, method: str) -> torch.Tensor:
    """Codebook indices (B, L) (int64, on z's device) for latent vectors z (B, L, d).

    nearest: each vector's closest entry (codes may repeat).
    matching: per image, the one-to-one assignment of the L vectors to L distinct entries minimising the
        total Euclidean distance (the paper's Hungarian matching, eq. 3); exact, needs K >= L.
    sinkhorn: OptVQ's optimal-transport assignment over the whole batch (approximate, codes may repeat).
    """
    if method not in METHODS:
        raise ValueError(f"quantizer method {method!r} is not one of {list(METHODS)}")
    if z.ndim != 3 or codebook.ndim != 2 or z.shape[-1] != codebook.shape[-1]:
        raise ValueError(f"expected z (B, L, d) and codebook (K, d), got {tuple(z.shape)} and {tuple(codebook.shape)}")
    with torch.no_grad():
        z, codebook = z.detach(), codebook.detach()
        for what, tensor in (("latents z", z), ("codebook", codebook)):
            if not bool(torch.isfinite(tensor).all()):  # else: silent index 0 (nearest, sinkhorn) or a scipy error
                bad = int((~torch.isfinite(tensor)).sum())
                raise FloatingPointError(f"{method} assignment: the {what} hold {bad} NaN or inf value(s) of "
                                         f"{tensor.numel()}")
        dist = pairwise_distances(z, codebook)  # stays on z's device; the solvers move what they need
        if method == "sinkhorn":
            return sinkhorn_assign(dist)
        nearest = dist.argmin(dim=-1)
        if method == "nearest":
            return nearest
        return optimal_matching(dist, nearest, z)
