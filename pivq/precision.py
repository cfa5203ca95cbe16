"""Arithmetic precision of a training step: a schedule's ``precision``.

* ``"fp32"``: everything in float32, TF32 off (the CPU default; the exact-resume guarantees are stated for it).
* ``"tf32"``: float32 tensors, with matmuls and convolutions on a GPU's TF32 tensor cores.
* ``"bf16"``: bf16 autocast over the forward passes (conv stacks, transformers, LPIPS, discriminator), float32
  weights, gradients and optimiser state (no loss scaling: bf16 has float32's exponent range).

Whatever the precision, the quantizer works in full float32 (:func:`full_fp32`, used by
pivq.quantize.module.Quantizer): its distances, assignment, VQ loss and codebook see float32 numbers with TF32
off, so matching solves the same costs in every precision. The L1 term is taken in float32 too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {list(PRECISIONS)}")


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and convolutions while the block runs (restored after)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@contextlib.contextmanager
def gpu_settings(precision: str, device: torch.device) -> Iterator[None]:
    """A training run's global settings on a GPU, restored after: TF32 for precision "tf32", and cuDNN's
    autotuner (the step's shapes are fixed, so it picks the fastest convolutions once). None on the CPU."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with tf32(precision == "tf32"):
            yield
    finally:
        torch.backends.cudnn.benchmark = before


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision`` "bf16"; a no-op context otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def full_fp32(device: torch.device) -> Iterator[None]:
    """No autocast and no TF32 inside the block, whatever the caller set: the quantizer's arithmetic."""
    with torch.autocast(device_type=device.type, enabled=False), tf32(False):
        yield
