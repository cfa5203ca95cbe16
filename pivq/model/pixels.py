"""Conversions between stored images (uint8, N x H x W x 3) and model tensors (float, N x 3 x H x W).

A model's ``pixel_range`` (ModelConfig) says which floats it sees: ``"unit"``, [0, 1], as Unleashing
Transformers feeds its VQ-GAN (utils/data_utils.py line 71: ``ToTensor()`` without normalisation), or
``"symmetric"``, [-1, 1], as taming-transformers. The range is part of what a model learned (the L1 term,
DiffAugment's brightness shift and translation padding, and LPIPS all see it), so every caller passes the model's
own: there is no default. They live beside the model so that training, encoding and sampling share them without
importing each other.
"""

from __future__ import annotations

import numpy as np
import torch

# (offset, scale): float = uint8 / scale + offset; the span of the range is 255 / scale
_RANGES = {"unit": (0.0, 255.0), "symmetric": (-1.0, 127.5)}
PIXEL_RANGES = tuple(_RANGES)


def _range(pixel_range: str) -> tuple[float, float]:
    if pixel_range not in _RANGES:
        raise ValueError(f"pixel_range: {pixel_range!r} is not one of {list(_RANGES)}")
    return _RANGES[pixel_range]


def span(pixel_range: str) -> float:
    """Width of the float range: 1 for [0, 1], 2 for [-1, 1]."""
    return 255.0 / _range(pixel_range)[1]


def to_float(images: np.ndarray | torch.Tensor, device: torch.device, pixel_range: str) -> torch.Tensor:
    """uint8 (B, H, W, 3), an array or a tensor (on any device) -> float (B, 3, H, W) on ``device`` in
    ``pixel_range`` ([0, 1] for "unit", [-1, 1] for "symmetric")."""
    offset, scale = _range(pixel_range)
    if not isinstance(images, torch.Tensor):
        images = np.ascontiguousarray(images)
        if not images.flags.writeable:  # a read-only memmap slice: torch warns on sharing it; the copy is cheap
            images = images.copy()
        images = torch.from_numpy(images)
    x = images.to(device).permute(0, 3, 1, 2).float() / scale
    return x + offset if offset else x


def to_uint8(images: torch.Tensor, pixel_range: str) -> np.ndarray:
    """Model output (B, 3, H, W) in ``pixel_range`` (clamped to it) -> uint8 (B, H, W, 3)."""
    offset, scale = _range(pixel_range)
    out = ((images.clamp(offset, offset + 255.0 / scale) - offset) * scale).round()
    return out.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
