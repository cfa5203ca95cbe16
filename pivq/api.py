"""pivq's Python API: a trained PI-VQ model, loaded from a run folder or a model file, used on images of any size.

    from pivq.api import load

    model = load("runs/toy_matching")                  # or ".../model.pt"; device="cuda" for a GPU
    codes = model.encode(images)                       # uint8 (N, H, W, 3), one (H, W, 3), or PIL images -> (N, L)
    decoded = model.decode(codes)                      # code sets -> uint8 (N, R, R, 3)
    samples = model.sample(codes[0], codes[1], n=8, seed=0)   # Algorithm 1: 8 recombinations of two sets
    frames = model.path(codes[0], codes[1], seed=0)           # the smooth path from one set to the other

Images of another size are cut to their largest centred square and resized to the model's resolution with
LANCZOS, as dataset preparation does (pivq.data.images.crop_resize). Code sets are sorted codebook indices
(int32), the form of the pipeline's codes.npz. Everything here calls the pipeline's own functions (encode,
Algorithm 1, the smooth path); samples are drawn as the sampling stage draws them (pivq.sample.sample_generator).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pivq.data.images import DecodeSpec, crop_resize
from pivq.encode import encode_images
from pivq.model import PIVQ
from pivq.model.checkpoint import load_model
from pivq.model.pixels import to_uint8
from pivq.sample import interpolate, sample_generator, smooth_path

ImagesLike = np.ndarray | Image.Image | Sequence[np.ndarray | Image.Image]


def load(path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True) -> Model:
    """The model of a run folder (its ``model.pt``) or of a model file, on ``device`` (EMA weights unless
    ``ema=False``)."""
    path = Path(path)
    file = path / "model.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no model file (a run folder holds model.pt once training has finished)")
    return Model(load_model(file, ema=ema, device=device))


class Model:
    """A loaded PI-VQ model: encode images to code sets, decode code sets, sample and interpolate."""

    def __init__(self, net: PIVQ):
        self.net = net.eval()
        self.resolution, self.codes, self.codebook_size = net.cfg.resolution, net.cfg.codes, net.cfg.codebook_size

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def prepare(self, images: ImagesLike) -> np.ndarray:
        """uint8 (N, R, R, 3) at the model's resolution R from uint8 arrays or PIL images of any size."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            if _checked_uint8(images).shape[1:3] == (self.resolution, self.resolution):
                return images
            items = list(images)
        elif isinstance(images, (np.ndarray, Image.Image)):
            items = [images]
        else:
            items = list(images)
        spec = DecodeSpec(resolution=self.resolution)
        out = []
        for item in items:
            image = item if isinstance(item, Image.Image) else Image.fromarray(_checked_uint8(item))
            out.append(crop_resize(image.convert("RGB"), spec))
        return np.stack(out)

    def encode(self, images: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """Code sets (N, L), sorted codebook indices, int32."""
        return encode_images(self.net, self.prepare(images), batch_size=batch_size, progress=False)

    @torch.no_grad()
    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 images (N, R, R, 3) of code sets (N, L) (or one set (L,)), in any order within a set."""
        indices = torch.as_tensor(np.asarray(codes), dtype=torch.int64, device=self.device)
        indices = indices[None] if indices.ndim == 1 else indices
        if indices.ndim != 2 or indices.shape[1] != self.codes:
            raise ValueError(f"code sets must be (N, {self.codes}) or ({self.codes},), got {tuple(indices.shape)}")
        if bool(((indices < 0) | (indices >= self.codebook_size)).any()):
            raise ValueError(f"codebook indices must lie in [0, {self.codebook_size})")
        return to_uint8(self.net.decode_indices(indices), self.net.cfg.pixel_range)

    def reconstruct(self, images: ImagesLike) -> np.ndarray:
        """The decodes of the images' own code sets (uint8, at the model's resolution)."""
        return self.decode(self.encode(images))

    def sample(self, codes_a: np.ndarray, codes_b: np.ndarray, n: int = 1, seed: int = 0) -> np.ndarray:
        """``n`` Algorithm 1 samples of two code sets (the shared codes kept, the rest drawn from either), decoded:
        uint8 (n, R, R, 3); sample i depends only on (seed, i), as in the sampling stage."""
        a, b = _as_set(codes_a), _as_set(codes_b)
        drawn = [interpolate(a, b, sample_generator(seed, i)) for i in range(n)]
        return self.decode(torch.stack(drawn))

    def path(self, codes_a: np.ndarray, codes_b: np.ndarray, seed: int = 0) -> np.ndarray:
        """The smooth path (section 3.5) from one code set to the other, one code swapped per frame, decoded:
        uint8 (frames, R, R, 3), from C_a's decode to C_b's."""
        return self.decode(torch.stack(smooth_path(_as_set(codes_a), _as_set(codes_b), sample_generator(seed, 0))))


def _as_set(codes: np.ndarray | torch.Tensor) -> torch.Tensor:
    codes = torch.as_tensor(np.asarray(codes), dtype=torch.int64)
    if codes.ndim != 1 or len(torch.unique(codes)) != len(codes):
        raise ValueError("Algorithm 1 and the smooth path take one code set (L distinct indices) per image: "
                         f"got shape {tuple(codes.shape)} with {len(torch.unique(codes))} distinct")
    return codes


def _checked_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 RGB (..., H, W, 3), got {images.dtype} {images.shape}")
    return images
