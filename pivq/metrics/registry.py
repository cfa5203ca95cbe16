"""Which feature extractors the metrics can use, and where their weights come from (never a download).

- ``inception-v3-compat``: torch-fidelity's Inception-v3 (the paper's metrics, for real data). Its
  weights must already be in torch hub's cache or be given as a file.
- ``pivq-toyfaces-cnn``: the attribute CNN of :mod:`pivq.metrics.extractor`, registered with
  torch-fidelity here, for the embedded toyfaces default.

Inception-v3's weights file is verified before torch-fidelity sees it (pivq.weights: its sha256 against the
prefix published in its name, then a weights-only load).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from pivq.metrics.extractor import load_extractor
from pivq.weights import load_verified_state_dict, published_sha256_prefix, verify_weights_file

INCEPTION = "inception-v3-compat"
TOYFACES_CNN = "pivq-toyfaces-cnn"
EXTRACTORS = (INCEPTION, TOYFACES_CNN)

# torch-fidelity's URL_INCEPTION_V3 (a test checks they agree); torch hub caches a download of it as
# $TORCH_HOME/hub/checkpoints/<file name>. Kept here so the check costs no torch-fidelity import.
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_WEIGHTS_FILE = INCEPTION_WEIGHTS_URL.rsplit("/", 1)[1]
INCEPTION_SHA256_PREFIX = published_sha256_prefix(INCEPTION_WEIGHTS_FILE)  # "6726825d"

INCEPTION_REMEDY = (
    f"The right file is torch-fidelity's {INCEPTION_WEIGHTS_FILE} ({INCEPTION_WEIGHTS_URL}): put it in the "
    f"torch hub cache ($TORCH_HOME/hub/checkpoints) or at the path given in "
    f"datasets.<name>.feature_extractor.weights. pivq never downloads it."
)


def verify_inception_weights(path: str | os.PathLike) -> str:
    """The sha256 of the Inception-v3 weights file ``path``, checked against torch-fidelity's published prefix
    (``6726825d``) whatever the file's name; :class:`WeightsFileError` otherwise."""
    return verify_weights_file(path, INCEPTION_SHA256_PREFIX, "Inception-v3", INCEPTION_REMEDY)


def inception_weights_path(explicit: str | os.PathLike | None = None) -> Path:
    """Path of torch-fidelity's Inception-v3 weights: ``explicit`` if given, else torch hub's cache.

    Raises FileNotFoundError naming the exact file and folder when it is missing: nothing is
    downloaded. Call it before any heavy work.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception-v3 weights not found at the given path {path}; it should be "
                f"torch-fidelity's "
                f"{INCEPTION_WEIGHTS_FILE} ({INCEPTION_WEIGHTS_URL}). pivq never downloads it."
            )
        return path
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / INCEPTION_WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception-v3 weights for FID not found: {path}. Put the file {INCEPTION_WEIGHTS_FILE} "
            f"(from {INCEPTION_WEIGHTS_URL}) into the folder {folder} (set TORCH_HOME to move it), "
            f"or pass its path explicitly. pivq never downloads it."
        )
    return path


def resolve_extractor_weights(extractor: str, weights_path: str | os.PathLike | None) -> Path:
    """The weights file ``extractor`` will load, checked to exist and, for Inception-v3, its sha256 against the
    published prefix (:func:`verify_inception_weights`; about 0.1 s once per process): run it first."""
    if extractor == INCEPTION:
        path = inception_weights_path(weights_path)
        verify_inception_weights(path)
        return path
    if extractor == TOYFACES_CNN:
        if weights_path is None:
            raise ValueError(f"{TOYFACES_CNN} needs the checkpoint written by train_extractor")
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"feature extractor checkpoint not found: {path}")
        return path
    raise ValueError(f"unknown feature extractor {extractor!r}; choose one of {EXTRACTORS}")


class ToyfacesCNNFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity adapter for :class:`~pivq.metrics.extractor.AttributeCNN`.

    Provides "features" (penultimate layer; the default for FID, KID and precision/recall) and
    "logits" (all attribute heads concatenated). Weights come from ``feature_extractor_weights_path``.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(
                f"{name} needs feature_extractor_weights_path: the checkpoint written by train_extractor"
            )
        self.net = load_extractor(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list():
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric == "isc":
            raise ValueError("the Inception Score is undefined for a multi-attribute extractor")
        return "features"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8):
            raise ValueError("expecting images as a torch.uint8 tensor (N, 3, H, W)")
        features, logits = self.net(x)
        out = {"features": features, "logits": torch.cat(list(logits.values()), dim=1)}
        return tuple(out[name].float() for name in self.features_list)


def register() -> None:
    """Register ``pivq-toyfaces-cnn`` with torch-fidelity; safe to call any number of times."""
    current = FEATURE_EXTRACTORS_REGISTRY.get(TOYFACES_CNN)
    if current is ToyfacesCNNFeatureExtractor:
        return
    # A different class under our name can only be an earlier import of this module (a reload).
    FEATURE_EXTRACTORS_REGISTRY.pop(TOYFACES_CNN, None)
    register_feature_extractor(TOYFACES_CNN, ToyfacesCNNFeatureExtractor)


def create_feature_extractor(
    extractor: str, weights_path: str | os.PathLike, layers: list[str]
) -> FeatureExtractorBase:
    """Instantiate a registered torch-fidelity extractor exactly as ``calculate_metrics`` does.

    Inception-v3: the file is verified (:func:`verify_inception_weights`) and loaded here with
    ``weights_only=True``; torch-fidelity gets those tensors, re-serialised in memory, never the file (it would
    ``torch.load(weights_only=False)`` it). The network is the one torch-fidelity builds from the file itself.
    """
    register()
    cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
    if extractor == INCEPTION:
        path = Path(weights_path)
        state = load_verified_state_dict(path, INCEPTION_SHA256_PREFIX, "Inception-v3", INCEPTION_REMEDY)
        buffer = io.BytesIO()
        torch.save(state, buffer)  # our own pickle of tensors only: what torch-fidelity unpickles
        del state
        buffer.seek(0)
        net = cls(extractor, list(layers), feature_extractor_weights_path=buffer)
    else:
        net = cls(extractor, list(layers), feature_extractor_weights_path=str(weights_path))
    return net.eval().requires_grad_(False)


def default_layer(extractor: str, metric: str = "fid") -> str:
    """torch-fidelity's default feature layer of ``extractor`` for ``metric`` ("2048", "features")."""
    register()
    return FEATURE_EXTRACTORS_REGISTRY[extractor].get_default_feature_layer_for_metric(metric)
