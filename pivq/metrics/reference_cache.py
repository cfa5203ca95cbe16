"""A cache of reference-set features keyed by the data itself, not by a name.

The metric jobs of several experiments share one reference set (celebahq256 and celebahq256_nearest), and a
killed, rerun job should not extract it again. torch-fidelity's own cache is keyed by a user-given name and
the extractor only, so a swapped reference set silently reuses old statistics; this one is keyed by content:

    key = sha256 of the canonical JSON (sorted keys, no spaces) of
          {"feature_code_version": FEATURE_CODE_VERSION,   # bumped when pivq's extraction code changes
           "images_sha256": images_sha256(images),         # the uint8 images actually used, shape included
           "layer": layer,                                 # the extractor's feature layer
           "weights_sha256": sha256 of the extractor's weights file}

Files, in ``cache_dir``: ``<extractor>-<layer>-<key[:16]>.npy`` (float32 (N, D) features; FID's mean and
covariance derive from them) and ``<same stem>.json``, the sidecar: the full key, what went into it, the
features' shape, dtype and sha256, and provenance (device, versions). Both are written atomically
(:func:`pivq.io.atomic_path`), features first. A cache entry is used only if the sidecar parses, names the
same key and the features file loads with the recorded shape, dtype and sha256; anything else (truncated,
unreadable, half-written) is reported with ``logging.warning`` naming the file and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pivq.io import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from pivq.metrics.fidelity import ImageSource

log = logging.getLogger(__name__)

# Bump whenever a change to pivq's feature extraction (pivq.metrics.fidelity._extract, the extractor
# adapters of pivq.metrics.registry, the attribute CNN's preprocessing) can change the features.
FEATURE_CODE_VERSION = "pivq-reference-features/1"
SIDECAR_FORMAT = "pivq-reference-features-sidecar/1"
HASH_CHUNK_BYTES = 64 << 20  # images hashed this many bytes at a time: a memmap is never read in whole


def images_sha256(images: np.ndarray | ImageSource, chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """sha256 of uint8 images (N, H, W, 3): their shape, then their bytes in C order, read in chunks of rows.

    ``images``: an array (a memmap is sliced, never read in whole) or a batch source (``batches(n)``, ``shape``,
    ``dtype``: pivq.data.ImageRows, pivq.sample.ShardImages), read ``chunk_bytes`` at a time. The digest depends
    on the bytes only, not on the chunks, so it is the same for an array and any source of the same images.
    """
    shape, dtype = tuple(int(s) for s in images.shape), np.dtype(images.dtype)
    if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {dtype} {shape}")
    digest = hashlib.sha256(f"uint8{shape}".encode())
    row_bytes = max(1, int(np.prod(shape[1:])))
    rows = max(1, chunk_bytes // row_bytes)
    if isinstance(images, np.ndarray):
        chunks = (images[start : start + rows] for start in range(0, shape[0], rows))
    else:
        chunks = images.batches(rows)
    hashed = 0
    for chunk in chunks:
        digest.update(np.ascontiguousarray(chunk, dtype=np.uint8).reshape(-1))
        hashed += len(chunk)
    if hashed != shape[0]:  # a source that yields other than it says would key other images
        raise ValueError(f"images declare {shape[0]} rows but yielded {hashed}")
    return digest.hexdigest()


def reference_key(images_digest: str, weights_sha256: str, layer: str) -> tuple[str, dict[str, str]]:
    """(the 64-hex-digit key, the dict it is the sha256 of)."""
    inputs = {
        "feature_code_version": FEATURE_CODE_VERSION,
        "images_sha256": images_digest,
        "layer": str(layer),
        "weights_sha256": weights_sha256,
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), inputs


def cache_paths(cache_dir: str | os.PathLike, extractor: str, layer: str, key: str) -> tuple[Path, Path]:
    """(features .npy, sidecar .json) of one cache entry."""
    stem = f"{extractor}-{layer}-{key[:16]}"
    folder = Path(cache_dir)
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def _array_sha256(features: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(features).reshape(-1)).hexdigest()


def _load(features_path: Path, sidecar_path: Path, key: str) -> np.ndarray | None:
    """The cached features if the entry is complete and intact; None (and a warning naming the file) if not."""
    if not features_path.exists() and not sidecar_path.exists():
        return None  # a plain miss
    try:
        sidecar = read_json(sidecar_path)
    except (FileNotFoundError, ValueError, OSError) as err:
        log.warning("reference feature cache: sidecar %s unreadable (%s); recomputing %s", sidecar_path, err,
                    features_path)
        return None
    if not isinstance(sidecar, dict) or sidecar.get("key") != key:
        log.warning("reference feature cache: sidecar %s does not record key %s; recomputing %s", sidecar_path,
                    key, features_path)
        return None
    try:
        features = np.load(features_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        log.warning("reference feature cache: %s unreadable (%s); recomputing", features_path, err)
        return None
    expected = (tuple(sidecar.get("shape", ())), sidecar.get("dtype"))
    if (features.shape, str(features.dtype)) != expected:
        log.warning("reference feature cache: %s holds %s %s, its sidecar %s records %s %s; recomputing",
                    features_path, features.dtype, features.shape, sidecar_path, expected[1], expected[0])
        return None
    if _array_sha256(features) != sidecar.get("features_sha256"):
        log.warning("reference feature cache: %s does not match the sha256 its sidecar %s records; recomputing",
                    features_path, sidecar_path)
        return None
    return features


def cached_reference_features(
    cache_dir: str | os.PathLike,
    images: np.ndarray | ImageSource,
    extractor: str,
    layer: str,
    weights_sha256: str,
    compute: Callable[[], np.ndarray],
    provenance: dict[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Features of ``images`` from the cache, or ``compute()``-d and stored.

    ``images``: an array or a batch source (as :func:`images_sha256` takes); it is read once here, for its key.
    Returns (float32 (N, D) features, {"status": "hit" | "miss", "key": 64 hex digits, "path": the .npy}).
    ``provenance`` (device, versions, ...) goes into the sidecar for the record; it is not part of the key.
    """
    key, inputs = reference_key(images_sha256(images), weights_sha256, layer)
    features_path, sidecar_path = cache_paths(cache_dir, extractor, layer, key)
    features = _load(features_path, sidecar_path, key)
    if features is not None and len(features) == len(images):
        log.info("reference feature cache hit: %s", features_path)
        return features, {"status": "hit", "key": key, "path": str(features_path)}
    if features is not None:  # same key, other N: cannot happen unless the file was swapped by hand
        log.warning("reference feature cache: %s holds %d rows for %d images; recomputing", features_path,
                    len(features), len(images))

    features = np.ascontiguousarray(compute(), dtype=np.float32)
    if features.ndim != 2 or len(features) != len(images):
        raise ValueError(f"computed reference features have shape {features.shape} for {len(images)} images")
    with atomic_path(features_path, suffix=".npy") as tmp:
        np.save(tmp, features, allow_pickle=False)
    write_json(sidecar_path, {
        "format": SIDECAR_FORMAT,
        "key": key,
        "key_inputs": inputs,
        "extractor": extractor,
        "n_images": int(len(images)),
        "image_shape": [int(s) for s in images.shape[1:]],
        "shape": [int(s) for s in features.shape],
        "dtype": str(features.dtype),
        "features_sha256": _array_sha256(features),
        "features_file": features_path.name,
        "provenance": provenance or {},
    })
    log.info("reference feature cache miss: wrote %s", features_path)
    return features, {"status": "miss", "key": key, "path": str(features_path)}
