"""Differentiable Augmentation (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training", reference DiffAugment_pytorch.py), applied to the discriminator's inputs only, real and fake
images alike (each draw independent, as in the reference and Unleashing Transformers).

Policies: ``color`` (random brightness, saturation, contrast), ``translation`` (shift by up to 1/8 of the
side, zero padding), ``cutout`` (zero a random half-size square). Images are (B, C, H, W) in the model's
pixel range: on UT's [0, 1] the brightness shift of +-0.5 is half the range and padding is black, on [-1, 1] a
quarter and mid-grey.

Unlike the reference, every random number comes from an explicit CPU ``torch.Generator`` (saved in the
training state, so a resumed run draws the same augmentations) and is then moved to the images' device:
the same seed gives the same augmentations on CPU and GPU, and the global RNG is never touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _rand(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=gen).to(device=like.device, dtype=like.dtype)


def rand_brightness(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + (_rand(x.size(0), gen, x) - 0.5)


def rand_saturation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x.size(0), gen, x) * 2) + mean


def rand_contrast(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x.size(0), gen, x) + 0.5) + mean


def rand_translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sx, sx + 1, (b, 1, 1), generator=gen).to(x.device)
    ty = torch.randint(-sy, sy + 1, (b, 1, 1), generator=gen).to(x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=gen).to(x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=gen).to(x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


_FNS = {"color": (rand_brightness, rand_saturation, rand_contrast), "translation": (rand_translation,),
        "cutout": (rand_cutout,)}


def diff_augment(x: torch.Tensor, policy, gen: torch.Generator) -> torch.Tensor:
    """Apply the policies in order (e.g. ``["color", "translation"]``); differentiable in ``x``."""
    for name in policy:
        if name not in _FNS:
            raise ValueError(f"unknown DiffAugment policy {name!r}; known: {list(POLICIES)}")
        for fn in _FNS[name]:
            x = fn(x, gen)
    return x.contiguous()
