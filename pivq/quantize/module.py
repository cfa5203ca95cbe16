"""The quantizer layer: codebook, VQ loss and straight-through estimator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pivq.precision import full_fp32
from pivq.quantize.assign import assign

VQ_LOSSES = ("unleashing", "vqvae")


class Quantizer(nn.Module):
    """Maps latent vectors (B, L, d) to codebook entries; returns (quantized, indices, loss).

    The VQ loss, with sg the stop-gradient, z the encoder's output and e its codebook entry:

    * ``vq_loss="unleashing"``: ||sg(e) - z||^2 + beta ||e - sg(z)||^2, Unleashing Transformers' form
      (models/vqgan.py line 46): the encoder is pulled to its code with weight 1, the codebook moves with beta.
    * ``vq_loss="vqvae"``: ||e - sg(z)||^2 + beta ||z - sg(e)||^2, VQ-VAE's (van den Oord et al. 2017): the
      codebook moves with weight 1, the encoder commits with beta.

    Each term is a mean over all elements, as ``torch.mean`` in UT. Gradients reach z straight through. The
    assignment and the loss run in full float32 (pivq.precision.full_fp32) whatever the training precision:
    matching sees the same costs under bf16 autocast as in float32.
    ``initialized`` records whether the codebook has been set from data (delayed initialisation, section 3.7):
    a model saved before T_q cannot produce codes.
    """

    def __init__(self, codebook_size: int, dim: int, method: str, beta: float = 0.25, vq_loss: str = "vqvae"):
        super().__init__()
        if vq_loss not in VQ_LOSSES:
            raise ValueError(f"vq_loss: {vq_loss!r} is not one of {list(VQ_LOSSES)}")
        self.method, self.beta, self.vq_loss = method, beta, vq_loss
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim) / dim**0.5)
        self.register_buffer("initialized", torch.tensor(False))

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            raise RuntimeError("the codebook was never initialised from data (training stopped before T_q?)")
        return assign(z, self.codebook, self.method)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with full_fp32(z.device):
            z = z.float()
            indices = self.assign(z)
            e = self.lookup(indices)
            codebook_term, commitment_term = F.mse_loss(e, z.detach()), F.mse_loss(z, e.detach())
            if self.vq_loss == "unleashing":
                loss = commitment_term + self.beta * codebook_term
            else:
                loss = codebook_term + self.beta * commitment_term
            return z + (e - z).detach(), indices, loss

    @torch.no_grad()
    def set_codebook(self, centres: torch.Tensor) -> None:
        self.codebook.copy_(centres)
        self.initialized.fill_(True)
