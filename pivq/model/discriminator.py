"""The PatchGAN discriminator of the adversarial term (taming-transformers' NLayerDiscriminator, as used by
Unleashing Transformers): ``layers`` stride-2 4x4 convolutions from ``ndf`` channels (doubling, capped at
8 ndf), one stride-1 4x4 convolution, then a 1-channel 4x4 convolution: one logit per image patch.
BatchNorm after every convolution but the first and the last; LeakyReLU(0.2). Weights start as PyTorch
initialises them (``init="pytorch"``: Unleashing Transformers never re-initialises its Discriminator,
models/vqgan.py) or as in taming (``init="taming"``, ``weights_init``: conv N(0, 0.02), BatchNorm weight
N(1, 0.02), bias 0).

``build_discriminator`` constructs and initialises it inside a forked RNG seeded with ``seed``: building it
consumes none of the caller's global random numbers, so a run that never uses it trains exactly as before.
"""

from __future__ import annotations

import torch
from torch import nn


class NLayerDiscriminator(nn.Module):
    def __init__(self, ndf: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]  # one logit per patch
        self.main = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def weights_init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def patch_grid(resolution: int, layers: int) -> int:
    """Side of the discriminator's logit map for ``resolution`` x ``resolution`` inputs (< 1: too small)."""
    r = resolution
    for _ in range(layers):
        r = (r + 2 - 4) // 2 + 1
    return r - 2  # two stride-1 4x4 convolutions with padding 1


DISC_INITS = ("pytorch", "taming")


def build_discriminator(ndf: int, layers: int, resolution: int, seed: int, init: str = "pytorch"
                        ) -> NLayerDiscriminator:
    """A freshly initialised discriminator (``init``: one of DISC_INITS); the global RNG is left as it was."""
    if init not in DISC_INITS:
        raise ValueError(f"disc_init: {init!r} is not one of {list(DISC_INITS)}")
    if patch_grid(resolution, layers) < 1:
        raise ValueError(f"a {layers}-layer PatchGAN discriminator needs images larger than {resolution}px "
                         f"(its logit map would be {patch_grid(resolution, layers)}x{patch_grid(resolution, layers)});"
                         " lower disc_layers")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        disc = NLayerDiscriminator(ndf, layers)
        if init == "taming":
            disc.apply(weights_init)
    return disc
