"""Tables and figures from the metrics files under ``results/metrics/<experiment>/``.

This module holds the one thing tables and figures share: reading those files. Every input is
optional (an experiment may not have reached a stage), so a missing file reads as ``None``; a file
that exists but is malformed raises an error naming its path, because silently skipping it would
publish a table with a hole nobody notices.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pivq.io import read_json

# File name -> keys a reader relies on.
REQUIRED_KEYS = {
    "capacity.json": ("quantizer", "K", "L", "k_data", "k_img_max", "bits", "equation", "conventional_vq_bits"),
    "probe.json": ("folds", "attributes"),
    "attributes.json": ("reconstruction",),
    "fidelity.json": ("feature_extractor", "n_fake", "fid", "precision", "recall", "density", "coverage"),
    "training.json": ("steps",),
    "rate.json": ("bits_mean", "bits_max", "eq4_bits", "roundtrip_ok"),
}
PROBE_ATTRIBUTE_KEYS = ("name", "accuracy_mean", "accuracy_std", "baseline")


def metrics_json(metrics_dir: Path, experiment: str, name: str) -> dict[str, Any] | None:
    """``<metrics_dir>/<experiment>/<name>`` as a dict, or None if absent; ValueError if malformed."""
    path = Path(metrics_dir) / experiment / name
    if not path.exists():
        return None
    data = read_json(path)  # names the path on invalid JSON
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS.get(name, ()) if k not in data]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    if name == "probe.json":
        for i, row in enumerate(data["attributes"]):
            lacking = [k for k in PROBE_ATTRIBUTE_KEYS if k not in row]
            if lacking:
                raise ValueError(f"{path}: attributes[{i}] is missing keys {lacking}")
    if data.get("experiment") != experiment:  # a file copied from another experiment's folder
        raise ValueError(f"{path} holds the metrics of experiment {data.get('experiment')!r}, not {experiment!r} "
                         f"(the folder it is in): rerun its stage for {experiment}")
    return data


def training_log(metrics_dir: Path, experiment: str) -> pd.DataFrame | None:
    """The experiment's ``training_log.csv``, or None if absent; ValueError if unreadable or step-less."""
    path = Path(metrics_dir) / experiment / "training_log.csv"
    if not path.exists():
        return None
    try:
        log = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV: {err}") from None
    if "step" not in log.columns:
        raise ValueError(f"{path}: no 'step' column (columns: {list(log.columns)})")
    return log


def _npz_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays ``names`` of the archive at ``path``, or None if absent; ValueError naming the path if the
    archive is unreadable or lacks one of them."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in names if k not in archive.files]
            arrays = {k: archive[k] for k in names if k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz archive: {err}") from None
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    return arrays


def interpolation_paths(metrics_dir: Path, experiment: str) -> np.ndarray | None:
    """``images`` of ``interpolation_paths.npz``, uint8 (pairs, paths, steps, H, W, 3), or None if absent."""
    path = Path(metrics_dir) / experiment / "interpolation_paths.npz"
    arrays = _npz_arrays(path, ("images",))
    if arrays is None:
        return None
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 6 or images.shape[-1] != 3 or images.shape[2] < 2:
        raise ValueError(
            f"{path}: 'images' must be uint8 (pairs, paths, steps>=2, H, W, 3), "
            f"got {images.dtype} {images.shape}"
        )
    return images


def reconstructions(metrics_dir: Path, experiment: str) -> dict[str, np.ndarray] | None:
    """The arrays of ``reconstructions.npz`` (uint8 originals and decodes (n, H, W, 3), their test image
    indices), or None if absent; ValueError naming the path if malformed."""
    path = Path(metrics_dir) / experiment / "reconstructions.npz"
    arrays = _npz_arrays(path, ("original", "reconstruction", "image_index"))
    if arrays is None:
        return None
    original = arrays["original"]
    if original.dtype != np.uint8 or original.ndim != 4 or original.shape[-1] != 3 or not len(original):
        raise ValueError(f"{path}: 'original' must be uint8 (n >= 1, H, W, 3), got {original.dtype} {original.shape}")
    if arrays["reconstruction"].shape != original.shape or arrays["reconstruction"].dtype != np.uint8:
        raise ValueError(f"{path}: 'reconstruction' must match 'original' ({original.shape}), got "
                         f"{arrays['reconstruction'].dtype} {arrays['reconstruction'].shape}")
    if arrays["image_index"].shape != original.shape[:1]:
        raise ValueError(f"{path}: 'image_index' must hold one index per image, got {arrays['image_index'].shape}")
    return arrays


# code_atlas.npz (pivq.analysis.atlas): array name -> number of leading (A, 2, n) axes it must share.
ATLAS_ARRAYS = {"original": 3, "swapped": 3, "attributes": 1, "directions": 0, "accuracy": 1, "accuracy_std": 1,
                "baseline": 1, "image_index": 3, "swapped_in": 3, "swapped_out": 3, "weights_in": 3}


def code_atlas(metrics_dir: Path, experiment: str) -> dict[str, np.ndarray] | None:
    """The arrays of ``code_atlas.npz``, or None if absent; ValueError naming the path if malformed."""
    path = Path(metrics_dir) / experiment / "code_atlas.npz"
    atlas = _npz_arrays(path, tuple(ATLAS_ARRAYS))
    if atlas is None:
        return None
    images = atlas["original"]
    if images.dtype != np.uint8 or images.ndim != 6 or images.shape[1] != 2 or images.shape[-1] != 3:
        raise ValueError(f"{path}: 'original' must be uint8 (attributes, 2, images, H, W, 3), got {images.dtype} "
                         f"{images.shape}")
    lead = images.shape[:3]
    for key, axes in ATLAS_ARRAYS.items():
        if atlas[key].shape[:axes] != lead[:axes]:
            raise ValueError(f"{path}: '{key}' has shape {atlas[key].shape}, expected leading axes {lead[:axes]}")
    if atlas["swapped"].shape != images.shape or atlas["swapped"].dtype != np.uint8:
        raise ValueError(f"{path}: 'swapped' must match 'original' ({images.dtype} {images.shape}), got "
                         f"{atlas['swapped'].dtype} {atlas['swapped'].shape}")
    return atlas
