"""OptVQ's Sinkhorn assignment (Zhang et al. 2024, "Preventing local pitfalls in vector quantization via
optimal transport"; reference implementation zbr17/OptVQ, ``VectorQuantizerSinkhorn``).

Vectors are softly transported to codes with uniform marginals over all B*L vectors of the batch and over
the K codes, and each vector takes its most likely code. Unlike matching quantization this is neither exact
(5 iterations of an entropy-regularised problem) nor one-to-one (two vectors may share a code; the balance
is over the whole batch, not per image): the paper's "future work" ablation, not eq. 3.
"""

from __future__ import annotations

import torch

N_ITERS = 5  # OptVQ: converged by the fifth iteration
INV_TEMPERATURE = 10.0  # OptVQ's epsilon: exp(-epsilon * normalised cost)


def sinkhorn_assign(dist: torch.Tensor, n_iters: int = N_ITERS,
                    inv_temperature: float = INV_TEMPERATURE) -> torch.Tensor:
    """Code indices (B, L) from distances (B, L, K), computed on the device of ``dist``.

    As OptVQ: the distances are standardised over the whole batch and shifted to a zero minimum (so the
    temperature does not depend on the latents' scale), then alternately each code's and each vector's total
    mass are normalised (uniform marginals 1/K and 1/(B L)). Two numerical changes, neither of which moves
    the iterates beyond rounding: the kernel is built in float64 and each vector's row is shifted to its own
    minimum before exp (a per-vector factor, absorbed by that vector's scaling), so no row underflows to zero.
    OptVQ samples the code from the plan by default; we take the argmax (deterministic).
    """
    batch, n_codes, codebook_size = dist.shape
    cost = dist.reshape(batch * n_codes, codebook_size).double()
    # standardise (the mean and the zero-minimum shift are constant factors of the kernel: dropped)
    scale = inv_temperature / (float(cost.std()) + 1e-6)
    kernel = torch.exp((cost.min(dim=1, keepdim=True).values - cost).mul_(scale))  # (B L, K)
    row = torch.ones(len(kernel), dtype=kernel.dtype, device=kernel.device)  # scaling of each vector
    for _ in range(n_iters):
        col = 1.0 / (codebook_size * (row @ kernel))  # each code's mass: 1/K
        row = 1.0 / (len(kernel) * (kernel @ col))  # each vector's mass: 1/(B L)
    # a vector's own scaling does not change its argmax
    return (kernel * col).argmax(dim=1).reshape(batch, n_codes)
