"""Third-party weights files (torch-fidelity's Inception-v3, torchvision's VGG16 for LPIPS), verified before
anything unpickles them.

torch-fidelity and torchvision load these files with ``torch.load(weights_only=False)``, which runs whatever code a
pickle holds. Their sha256 (:func:`weights_sha256`) must begin with the prefix published in the file's name (torch
hub's convention: the hex digits after the last '-', ``6726825d`` for Inception, ``397923af`` for VGG16), whatever
the file is called or wherever it is; a file that does not is refused with :class:`WeightsFileError`, never
unpickled. A matching file is then loaded by pivq with ``torch.load(weights_only=True)``
(:func:`load_verified_state_dict`), so that no code runs even from a forged file (an 8-hex-digit prefix is only 32
bits, within a forger's reach), and only its tensors reach torch-fidelity or lpips. ``accept_unpublished_weights``
lets tests and benchmarks use files of their own (random weights); the pipeline never calls it.

Below both the metrics (pivq.metrics.registry) and training's LPIPS (pivq.train.losses), so that neither imports
the other: it needs torch, not torch-fidelity.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from pivq.errors import UserError
from pivq.io import sha256_file


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
