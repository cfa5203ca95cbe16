"""Sample-quality metrics: FID (torch-fidelity); precision, recall, density, coverage (prdc, one k).

Modules: ``extractor`` (the attribute CNN trained offline as the toyfaces feature extractor),
``registry`` (extractor names, torch-fidelity registration, Inception weights lookup without
download), ``fidelity`` (features and metrics). Importing this package imports torch.
"""

from pivq.metrics.extractor import AttributeCNN, load_extractor, train_extractor
from pivq.metrics.fidelity import ImageArrayDataset, compute_features, compute_fidelity, prdc
from pivq.metrics.registry import (
    EXTRACTORS,
    INCEPTION,
    TOYFACES_CNN,
    inception_weights_path,
    register,
    resolve_extractor_weights,
)

__all__ = [
    "AttributeCNN",
    "EXTRACTORS",
    "INCEPTION",
    "ImageArrayDataset",
    "TOYFACES_CNN",
    "compute_features",
    "compute_fidelity",
    "inception_weights_path",
    "load_extractor",
    "prdc",
    "register",
    "resolve_extractor_weights",
    "train_extractor",
]
