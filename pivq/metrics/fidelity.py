"""Sample quality of generated images against real ones: FID, precision, recall, density, coverage.

One k for every k-NN metric, as Unleashing Transformers computes them (experiments/calc_PRDC.py line 86:
``prdc.compute_prdc(real_features, fake_features, nearest_k=3)``): "precision", "recall", "density" and
"coverage" are prdc's (Naeem et al. 2020) at ``nearest_k``, by an exact chunked implementation with memory linear
in N (``prdc_chunked``; tests compare it with prdc). torch-fidelity's k-NN precision/recall (Kynkaenniemi et al.
2019) at the same k are kept beside them as "precision_torch_fidelity"/"recall_torch_fidelity" (``prc_chunked``:
torch-fidelity's numbers bit for bit; tests compare both with ``calculate_metrics``). FID is torch-fidelity's own
functions. Features are extracted once per image set with the torch-fidelity extractor class that
``torch_fidelity.calculate_metrics`` would instantiate (same weights, same layer), and all metrics are computed on
those features: extracting once instead of letting ``calculate_metrics`` and prdc each extract halves the
Inception work on 50k images.

Memory: images come from batch sources (:class:`ImageSource`: the prepared memmap's rows, the sample shards, or
an array) and only one batch of them is in memory at a time, so host memory does not grow with the number of
images (50k fake + 50k real images at 256x256 would be 20 GB). What does grow with N is what the metrics need
whole: the features, N x D float32 per set (8 KiB an image at Inception's D = 2048, against 192 KiB for a
256x256 image). torch-fidelity's precision/recall (``prc_chunked``) hold one min(N, ``PRC_BATCH_SIZE``)^2 tile
of float32 distances at a time, on the features' device: at most 381 MiB whatever N, where torch-fidelity's
``prc_features_to_metric`` held a min(N, 10,000) x N block on the host, with its parts and kthvalue's copy (about
19 bytes x min(N, 10,000) x N: some 9.5 GB at N = 50,000, by that arithmetic). In the stage at 8,000 + 8,000
images the step added 244 MiB of anonymous memory against torch-fidelity's 1,221 MiB, with the same numbers
(``benchmarks/bench_fidelity_memory.py --counts 1000 4000 8000`` and ``--prc torch-fidelity``; docs/performance.md).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import (
    KEY_METRIC_FID,
    fid_features_to_statistics,
    fid_statistics_to_metric,
)

import pivq
from pivq.data.prepared import ImageRows
from pivq.metrics.extractor import images_to_tensor
from pivq.metrics.prc_chunked import precision_recall
from pivq.metrics.prdc_chunked import compute_prdc as compute_prdc_chunked
from pivq.metrics.reference_cache import cached_reference_features
from pivq.metrics.registry import create_feature_extractor, default_layer, resolve_extractor_weights
from pivq.weights import weights_sha256 as weights_sha256_of

NEAREST_K = 3  # k of P, R, D and C: UT experiments/calc_PRDC.py line 86 (also torch-fidelity's default k)
PRC_BATCH_SIZE = 10_000  # torch-fidelity's prc_batch_size: the side of the distance tiles (the same tiles, bit-exact)


class ImageSource(Protocol):
    """Images read a batch at a time, with their count, shape and dtype known before any is read (so sizes are
    checked before heavy work): :class:`pivq.data.ImageRows` (rows of an array or of the prepared memmap),
    :class:`pivq.sample.ShardImages`."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive in-memory batches, in order, of ``batch_size`` rows but the last."""
        ...


def image_source(images: np.ndarray | ImageSource) -> ImageSource:
    """``images`` itself if it reads in batches, else the array as an :class:`pivq.data.ImageRows` of all its rows."""
    return images if hasattr(images, "batches") else ImageRows(np.asarray(images))


def _check_images(images: ImageSource) -> None:
    """images_to_tensor's check (uint8 (N, H, W, 3)) on a source's declared shape, before reading any image."""
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3 or np.dtype(images.dtype) != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {shape}")


class ImageArrayDataset(Dataset):
    """uint8 (N, H, W, 3) images as a Dataset of uint8 (3, H, W) tensors, as torch-fidelity takes."""

    def __init__(self, images: np.ndarray) -> None:
        images_to_tensor(images[:1])  # validates dtype and shape
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.images[i].transpose(2, 0, 1)))


@torch.no_grad()
def _extract(net: torch.nn.Module, images: np.ndarray | ImageSource, batch_size: int, device: str) -> torch.Tensor:
    """Features of uint8 (N, H, W, 3) images as a float32 (N, D) CPU tensor, in order.

    The source is read ``batch_size`` images at a time and each batch goes through the network alone, so one batch
    of images (and its activations) is in memory, never the set; the features of all N are (N x D float32, written
    into one preallocated tensor). The batches are the set's consecutive slices, the same network inputs as
    slicing one array of all the images, so the features are bit for bit those of the whole-array extraction.
    """
    source = image_source(images)
    out, filled = None, 0
    for batch in source.batches(batch_size):
        features = net(images_to_tensor(batch).to(device))[0].float().cpu()
        if out is None:
            out = torch.empty((len(source), *features.shape[1:]), dtype=features.dtype)
        out[filled : filled + len(features)] = features
        filled += len(features)
    if out is None or filled != len(source):
        raise ValueError(f"the image source of {len(source)} images yielded {filled}")
    return out


def compute_features(
    images: np.ndarray | ImageSource,
    extractor: str,
    weights_path: str | os.PathLike | None,
    batch_size: int = 256,
    device: str = "cpu",
    layer: str | None = None,
) -> np.ndarray:
    """Features (N, D) float32 of uint8 images (N, H, W, 3), an array or a batch source read ``batch_size`` at a
    time; ``layer`` defaults to the FID layer."""
    weights = resolve_extractor_weights(extractor, weights_path)
    layer = layer or default_layer(extractor, "fid")
    net = create_feature_extractor(extractor, weights, [layer]).to(device)
    return _extract(net, images, batch_size, device).numpy()


def prdc(real_features: np.ndarray, fake_features: np.ndarray, nearest_k: int = NEAREST_K,
         device: str | torch.device = "cpu") -> dict[str, float]:
    """Precision, recall, density and coverage of Naeem et al. (2020): ``prdc.compute_prdc``'s dict.

    The one entry point the pipeline uses: ``prdc_chunked.compute_prdc``, exact and linear in memory
    (``prdc.compute_prdc`` holds about 13 bytes x N^2: 31 GiB at 50k + 50k).
    """
    for name, f in (("real", real_features), ("fake", fake_features)):
        if f.ndim != 2 or len(f) <= nearest_k:
            raise ValueError(
                f"{name} features must be (N, D) with N > nearest_k={nearest_k}, got {f.shape}"
            )
    # exact chunked equivalent of prdc.compute_prdc, memory linear in N, on the stage's device
    out = compute_prdc_chunked(real_features, fake_features, nearest_k=nearest_k, device=device)
    return {key: float(value) for key, value in out.items()}


def compute_fidelity(
    real_images: np.ndarray | ImageSource,
    fake_images: np.ndarray | ImageSource,
    extractor: str,
    weights_path: str | os.PathLike | None,
    nearest_k: int = NEAREST_K,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
    reference_cache: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """FID, precision, recall, density and coverage of ``fake_images`` against ``real_images``.

    Both are uint8 (N, H, W, 3): arrays, or batch sources (:class:`ImageSource`: ``pivq.data.ImageRows`` of the
    prepared memmap, ``pivq.sample.ShardImages`` of the sample shards) read ``batch_size`` images at a time, so
    host memory holds one batch of images and the features (module docstring); their counts and shapes are
    checked before any image is read. ``extractor`` is "inception-v3-compat" (weights from torch hub's
    cache or ``weights_path``; never downloaded) or "pivq-toyfaces-cnn" (``weights_path`` = the
    checkpoint of ``train_extractor``). All metrics use the extractor's FID layer.

    One ``nearest_k`` for all four k-NN metrics (UT experiments/calc_PRDC.py line 86): "precision", "recall",
    "density", "coverage" are ``prdc.compute_prdc(real, fake, nearest_k)``'s (Naeem et al. 2020);
    "precision_torch_fidelity"/"recall_torch_fidelity" are torch-fidelity's k-NN precision/recall (Kynkaenniemi
    et al. 2019) at the same k. Both sets need more than ``nearest_k`` images (checked before any is read).
    Nothing here is random; ``seed`` is recorded (and seeds torch) for provenance only. All metrics run on
    ``device`` (on a GPU a k-NN ball may flip for a sample or two against the CPU's numbers).

    ``reference_cache``: a folder; the real images' features are read from it when an intact entry of the
    same content key exists, else extracted and stored there (:mod:`pivq.metrics.reference_cache`: the key
    covers the image bytes, the extractor weights, the layer and pivq's feature code version). The result
    then records "reference_features_cache" ("hit" or "miss") and "reference_features_key"; without a
    cache folder, "reference_features_cache" is "off".
    """
    weights = resolve_extractor_weights(extractor, weights_path)  # fail before any heavy work
    k = nearest_k
    if k < 1:
        raise ValueError(f"nearest_k must be >= 1, got {k}")
    real_images, fake_images = image_source(real_images), image_source(fake_images)
    for name, images in (("real", real_images), ("fake", fake_images)):
        _check_images(images)  # declared dtype and shape: nothing is read yet
        if len(images) <= k:
            raise ValueError(f"need more than {k} {name} images (nearest_k = {k} neighbours), got {len(images)}")

    torch.manual_seed(seed)
    layer = default_layer(extractor, "fid")
    net = create_feature_extractor(extractor, weights, [layer]).to(device)
    weights_sha256 = weights_sha256_of(weights)  # hashed once per process: resolving the weights did it
    cache_info = {"status": "off", "key": None}
    if reference_cache is None:
        real = _extract(net, real_images, batch_size, device)
    else:
        features, cache_info = cached_reference_features(
            reference_cache, real_images, extractor, layer, weights_sha256,
            compute=lambda: _extract(net, real_images, batch_size, device).numpy(),
            provenance={"device": device, "batch_size": batch_size, "weights_file": weights.name,
                        "versions": {"torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__,
                                     "pivq": pivq.__version__}},
        )
        real = torch.from_numpy(features)
    fake = _extract(net, fake_images, batch_size, device)

    # torch-fidelity's convention: features_1 = generated (input1), features_2 = real (input2).
    fid = fid_statistics_to_metric(
        fid_features_to_statistics(fake), fid_features_to_statistics(real), verbose=False
    )[KEY_METRIC_FID]
    # torch-fidelity's prc_features_to_metric(save_cpu_ram=True), bit for bit, one tile of distances at a time, on
    # the stage's device (on the CPU, .to() returns the very tensors FID used)
    tf_precision, tf_recall = precision_recall(fake.to(device), real.to(device), neighborhood=nearest_k,
                                               batch_size=PRC_BATCH_SIZE)
    naeem = prdc(real.numpy(), fake.numpy(), nearest_k=nearest_k, device=device)

    return {
        "feature_extractor": extractor,
        "feature_layer": layer,
        "feature_extractor_weights_file": weights.name,
        "feature_extractor_weights_sha256": weights_sha256,
        "n_real": len(real_images),
        "n_fake": len(fake_images),
        "nearest_k": nearest_k,  # of precision, recall, density, coverage and the torch-fidelity pair
        "fid": float(fid),
        "precision": naeem["precision"],
        "recall": naeem["recall"],
        "density": naeem["density"],
        "coverage": naeem["coverage"],
        "precision_torch_fidelity": tf_precision,
        "recall_torch_fidelity": tf_recall,
        "seed": seed,
        "reference_features_cache": cache_info["status"],
        "reference_features_key": cache_info["key"],
        "versions": {
            "torch": torch.__version__,
            "torch_fidelity": torch_fidelity.__version__,
            "prdc": importlib.metadata.version("prdc"),
            "pivq": pivq.__version__,
        },
    }
