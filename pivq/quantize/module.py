"""The quantizer layer: codebook, VQ loss and straight-through estimator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pivq.quantize.assign import assign


class Quantizer(nn.Module):
    """Maps latent vectors (B, L, d) to codebook entries; returns (quantized, indices, loss).

    loss = ||sg(z) - e||^2 + beta ||z - sg(e)||^2 (VQ-VAE); gradients reach z straight through.
    ``initialized`` records whether the codebook has been set from data (delayed initialisation,
    section 3.7): a model saved before T_q cannot produce codes.
    """

    def __init__(self, codebook_size: int, dim: int, method: str, beta: float = 0.25):
        super().__init__()
        self.method, self.beta = method, beta
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim) / dim**0.5)
        self.register_buffer("initialized", torch.tensor(False))

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            raise RuntimeError("the codebook was never initialised from data (training stopped before T_q?)")
        return assign(z, self.codebook, self.method)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices = self.assign(z)
        e = self.lookup(indices)
        loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())
        return z + (e - z).detach(), indices, loss

    @torch.no_grad()
    def set_codebook(self, centres: torch.Tensor) -> None:
        self.codebook.copy_(centres)
        self.initialized.fill_(True)
