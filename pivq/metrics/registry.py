"""Which feature extractors the metrics can use, and where their weights come from (never a download).

- ``inception-v3-compat``: torch-fidelity's Inception-v3 (the paper's metrics, for real data). Its
  weights must already be in torch hub's cache or be given as a file.
- ``pivq-toyfaces-cnn``: the attribute CNN of :mod:`pivq.metrics.extractor`, registered with
  torch-fidelity here, for the embedded toyfaces default.

Third-party weights files (torch-fidelity's Inception-v3 here, torchvision's VGG16 for LPIPS in
:mod:`pivq.train.losses`) are verified before anything unpickles them: torch-fidelity and torchvision load them
with ``torch.load(weights_only=False)``, which runs whatever code a pickle holds. Their sha256
(:func:`weights_sha256`) must begin with the prefix published in the file's name (torch hub's convention: the hex
digits after the last '-', ``6726825d`` for Inception, ``397923af`` for VGG16), whatever the file is called or
wherever it is; a file that does not is refused with :class:`WeightsFileError`, never unpickled. A matching file
is then loaded by pivq with ``torch.load(weights_only=True)``, so that no code runs even from a forged file (an
8-hex-digit prefix is only 32 bits, within a forger's reach), and only its tensors reach torch-fidelity or
lpips. ``accept_unpublished_weights`` lets tests and benchmarks use files of their own (random weights); the
pipeline never calls it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from pivq.errors import UserError
from pivq.io import sha256_file
from pivq.metrics.extractor import load_extractor

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


class WeightsFileError(UserError, ValueError):
    """A third-party weights file that is not the published one (its sha256 prefix differs), or not a plain
    state dict of tensors. Raised before any of its code could run."""


def published_sha256_prefix(file_name: str) -> str:
    """The start of a file's sha256 published in its name, torch hub's convention: the hex digits after the last
    '-' of the stem (``vgg16-397923af.pth`` -> ``397923af``)."""
    match = re.fullmatch(r".*-([0-9a-f]{8,64})\.[A-Za-z0-9]+", file_name)
    if match is None:
        raise ValueError(f"{file_name!r} carries no sha256 prefix (name-<hex digits>.<ext>)")
    return match.group(1)


INCEPTION_SHA256_PREFIX = published_sha256_prefix(INCEPTION_WEIGHTS_FILE)  # "6726825d"

# sha256 of each file seen, by (path, size, mtime, ctime, inode, device): one hash per process per file version.
# Cost: sha256 ran at 0.10 s per 100 MB (about 950 MB/s, pivq.io.sha256_file on a page-cached 100 MB file, this
# 2-core build machine), so about 0.1 s for Inception's 91 MiB and 0.55 s for VGG16's 528 MiB, plus the read on a
# cold cache; without this a stage that resolves and then builds the extractor would pay it twice.
_SHA256: dict[tuple, str] = {}
# full sha256 of the files accept_unpublished_weights lets through (tests and benchmarks only), with a count
_ACCEPTED: Counter[str] = Counter()
_LOCK = threading.Lock()


def weights_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of the file ``path``, computed once per process per file version (cached by its resolved
    path, size, mtime, ctime and inode: a replaced or rewritten file is hashed again)."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    key = (str(resolved), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    with _LOCK:
        cached = _SHA256.get(key)
    if cached is None:
        cached = sha256_file(resolved)
        with _LOCK:
            _SHA256[key] = cached
    return cached


def verify_weights_file(path: str | os.PathLike, expected_prefix: str, what: str, remedy: str) -> str:
    """``path``'s sha256, if it begins with ``expected_prefix`` (or the file was accepted by
    :func:`accept_unpublished_weights`); else :class:`WeightsFileError` naming the file, both prefixes and
    ``remedy`` (where the right file comes from). The file is only read, never unpickled."""
    digest = weights_sha256(path)
    if digest.startswith(expected_prefix):
        return digest
    with _LOCK:
        if _ACCEPTED[digest] > 0:
            return digest
    raise WeightsFileError(
        f"{what} weights file {path} refused: its sha256 begins {digest[:len(expected_prefix)]}, expected "
        f"{expected_prefix} (the published file's, named in its file name). It is another, altered or truncated "
        f"file; it was not loaded, so nothing in it ran. {remedy}"
    )


def load_verified_state_dict(path: str | os.PathLike, expected_prefix: str, what: str,
                             remedy: str) -> dict[str, torch.Tensor]:
    """:func:`verify_weights_file`, then the file's state dict by ``torch.load(weights_only=True)`` (tensors and
    containers only: no code in the file can run, even one whose hash was accepted); anything else is a
    :class:`WeightsFileError` naming the file."""
    verify_weights_file(path, expected_prefix, what, remedy)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError (a pickled object), a truncated or foreign file, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsFileError(
            f"{what} weights file {path} refused: not a plain state dict of tensors "
            f"(torch.load(weights_only=True): {first}). {remedy}"
        ) from None
    if not (isinstance(state, Mapping)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise WeightsFileError(
            f"{what} weights file {path} refused: it holds a {type(state).__name__}, not a state dict of "
            f"tensors. {remedy}"
        )
    return dict(state)


@contextlib.contextmanager
def accept_unpublished_weights(*paths: str | os.PathLike) -> Iterator[list[str]]:
    """Tests and benchmarks only, never the pipeline (as ``perceptual_random_trunk``): while the block runs,
    this process accepts the files at ``paths`` (their own sha256, computed now: that content only, under any
    name) as Inception-v3 or VGG16 weights although their hashes are not the published ones.
    ``benchmarks/gpu_check.py`` uses it for its randomly initialised weights. They are still loaded with
    ``weights_only=True``. Yields the accepted sha256s."""
    digests = [weights_sha256(p) for p in paths]
    with _LOCK:
        _ACCEPTED.update(digests)
    try:
        yield digests
    finally:
        with _LOCK:
            _ACCEPTED.subtract(digests)
            for digest in digests:
                if _ACCEPTED[digest] <= 0:
                    del _ACCEPTED[digest]


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
