"""Sample quality of generated images against real ones: FID, precision, recall, density, coverage.

Features are extracted once per image set with the torch-fidelity extractor class that
``torch_fidelity.calculate_metrics`` would instantiate (same weights, same layer), and all metrics
are computed on those features: FID and precision/recall by torch-fidelity's own functions (a test
checks they equal ``calculate_metrics``), density/coverage as prdc defines them (Naeem et al. 2020), by an
exact chunked implementation with memory linear in N (``prdc_chunked``; tests compare it with prdc). Extracting
once instead of letting ``calculate_metrics`` and prdc each extract halves the Inception work on
50k images.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import (
    KEY_METRIC_FID,
    fid_features_to_statistics,
    fid_statistics_to_metric,
)
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

import pivq
from pivq.io import sha256_file
from pivq.metrics.extractor import images_to_tensor
from pivq.metrics.prdc_chunked import compute_prdc as compute_prdc_chunked
from pivq.metrics.reference_cache import cached_reference_features
from pivq.metrics.registry import create_feature_extractor, default_layer, resolve_extractor_weights

PRC_NEIGHBORHOOD = 3  # torch-fidelity's default k, as in Kynkaenniemi et al. 2019
PRC_BATCH_SIZE = 10_000  # rows of the distance matrix held at once by torch-fidelity's chunked P/R


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
def _extract(net: torch.nn.Module, images: np.ndarray, batch_size: int, device: str) -> torch.Tensor:
    """Features of uint8 (N, H, W, 3) images as a float32 CPU tensor, in order."""
    x = images_to_tensor(images)
    out = [net(x[i : i + batch_size].to(device))[0].float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def compute_features(
    images: np.ndarray,
    extractor: str,
    weights_path: str | os.PathLike | None,
    batch_size: int = 256,
    device: str = "cpu",
    layer: str | None = None,
) -> np.ndarray:
    """Features (N, D) float32 of uint8 images (N, H, W, 3); ``layer`` defaults to the FID layer."""
    weights = resolve_extractor_weights(extractor, weights_path)
    layer = layer or default_layer(extractor, "fid")
    net = create_feature_extractor(extractor, weights, [layer]).to(device)
    return _extract(net, images, batch_size, device).numpy()


def prdc(real_features: np.ndarray, fake_features: np.ndarray, nearest_k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of Naeem et al. (2020): ``prdc.compute_prdc``'s dict.

    The one entry point the pipeline uses: ``prdc_chunked.compute_prdc``, exact and linear in memory
    (``prdc.compute_prdc`` holds about 13 bytes x N^2: 31 GiB at 50k + 50k).
    """
    for name, f in (("real", real_features), ("fake", fake_features)):
        if f.ndim != 2 or len(f) <= nearest_k:
            raise ValueError(
                f"{name} features must be (N, D) with N > nearest_k={nearest_k}, got {f.shape}"
            )
    # exact chunked equivalent of prdc.compute_prdc, memory linear in N (cuda if available)
    out = compute_prdc_chunked(real_features, fake_features, nearest_k=nearest_k)
    return {key: float(value) for key, value in out.items()}


def compute_fidelity(
    real_images: np.ndarray,
    fake_images: np.ndarray,
    extractor: str,
    weights_path: str | os.PathLike | None,
    nearest_k: int = 5,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
    prc_neighborhood: int = PRC_NEIGHBORHOOD,
    reference_cache: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """FID, precision, recall, density and coverage of ``fake_images`` against ``real_images``.

    Both are uint8 (N, H, W, 3). ``extractor`` is "inception-v3-compat" (weights from torch hub's
    cache or ``weights_path``; never downloaded) or "pivq-toyfaces-cnn" (``weights_path`` = the
    checkpoint of ``train_extractor``). All metrics use the extractor's FID layer.

    Which precision and recall: "precision"/"recall" are torch-fidelity's k-NN precision/recall
    (Kynkaenniemi et al. 2019, k = ``prc_neighborhood``; the paper cites Sajjadi et al. 2018 and
    computes P/R with torch-fidelity), repeated as "precision_torch_fidelity"/"recall_torch_fidelity". Naeem et al.'s precision/recall, computed
    alongside density and coverage (k = ``nearest_k``), are kept as "precision_prdc"/"recall_prdc".
    Nothing here is random; ``seed`` is recorded (and seeds torch) for provenance only.

    ``reference_cache``: a folder; the real images' features are read from it when an intact entry of the
    same content key exists, else extracted and stored there (:mod:`pivq.metrics.reference_cache`: the key
    covers the image bytes, the extractor weights, the layer and pivq's feature code version). The result
    then records "reference_features_cache" ("hit" or "miss") and "reference_features_key"; without a
    cache folder, "reference_features_cache" is "off".
    """
    weights = resolve_extractor_weights(extractor, weights_path)  # fail before any heavy work
    k = max(nearest_k, prc_neighborhood)
    for name, images in (("real", real_images), ("fake", fake_images)):
        images_to_tensor(images[:1])  # validates dtype and shape
        if len(images) <= k:
            raise ValueError(f"need more than {k} {name} images (k neighbours), got {len(images)}")

    torch.manual_seed(seed)
    layer = default_layer(extractor, "fid")
    net = create_feature_extractor(extractor, weights, [layer]).to(device)
    weights_sha256 = sha256_file(weights)
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
    prc = prc_features_to_metric(
        fake, real, prc_neighborhood=prc_neighborhood, prc_batch_size=PRC_BATCH_SIZE,
        save_cpu_ram=True, verbose=False,  # save_cpu_ram: chunked distances, never N x N at once
    )
    naeem = prdc(real.numpy(), fake.numpy(), nearest_k=nearest_k)

    return {
        "feature_extractor": extractor,
        "feature_layer": layer,
        "feature_extractor_weights_file": weights.name,
        "feature_extractor_weights_sha256": weights_sha256,
        "n_real": len(real_images),
        "n_fake": len(fake_images),
        "nearest_k": nearest_k,
        "prc_neighborhood": prc_neighborhood,
        "fid": float(fid),
        "precision": prc[KEY_METRIC_PRECISION],
        "recall": prc[KEY_METRIC_RECALL],
        "density": naeem["density"],
        "coverage": naeem["coverage"],
        "precision_torch_fidelity": prc[KEY_METRIC_PRECISION],
        "recall_torch_fidelity": prc[KEY_METRIC_RECALL],
        "precision_prdc": naeem["precision"],
        "recall_prdc": naeem["recall"],
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
