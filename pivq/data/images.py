"""Decode raw image files (a folder or a zip) into fixed-size uint8 RGB arrays, in parallel, into the prepared format.

Every image goes through one function, ``decode_image``: PIL opens it, ``.load()`` forces the full decode
(PIL is lazy, and only a full decode notices a truncated file), it is converted to RGB, centre-cropped
(to a given square, or to the largest centred square) and resized with LANCZOS, the filter StyleGAN's
dataset tool uses (PIL's resize is antialiased: the kernel widens with the downscale factor). The result
depends on nothing but the file, so any number of workers gives identical bytes.

``prepare_images`` is the shared back end of celeba.py and ffhq.py: a multiprocessing pool decodes
chunks of files in order while at most ``2 * workers`` chunks are in flight (memory does not grow with
the number of images), and the chunks stream into ``write_prepared``. A corrupt file stops everything
with an error naming it, and no manifest is written. With ``skip_corrupt`` the decoded images go to a
hidden scratch file first (``.decoded.<random>.tmp`` in the output folder, so the final count is known),
then the survivors are streamed into the dataset. A split without an image (no "train" or no "test") is
refused before any image is decoded (``check_splits``), and again if skipped images emptied one. A scratch
file that a killed preparation left (no ``finally`` runs on SIGKILL) is removed, and logged, when a
preparation starts in the same folder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageFile
from tqdm import tqdm

from pivq.data.prepared import SPLITS, remove_leftovers, write_prepared, write_preview
from pivq.data.sources import some_names
from pivq.io import remove_stale_temporaries

log = logging.getLogger(__name__)

RESAMPLE = Image.Resampling.LANCZOS
RESAMPLE_NAME = "LANCZOS"  # recorded in the manifest's params
CHUNK_BYTES = 16 << 20  # decoded bytes per task: bounds memory at any resolution
MAX_CHUNK = 64  # images per task at most, so small sets still spread over the workers
IN_FLIGHT_PER_WORKER = 2  # chunks queued or decoded ahead of the writer, per worker
SCRATCH = "decoded"  # skip_corrupt's scratch file: .decoded.<8 random characters>.tmp (mkstemp's names)


class CorruptImageError(ValueError):
    """An image file PIL cannot fully decode (or cannot crop), named in the message."""


@dataclass(frozen=True)
class DecodeSpec:
    """How to turn one file into an array: read from ``zip_path`` if set, crop, resize to ``resolution``."""

    resolution: int
    crop: int | None = None  # centre crop of crop x crop pixels; None: the largest centred square
    zip_path: str | None = None  # refs are member names of this archive; None: refs are file paths

    def describe(self, ref: str) -> str:
        return f"{self.zip_path}:{ref}" if self.zip_path else ref


class EmptySplitError(ValueError):
    """A dataset whose split rule leaves no "train" or no "test" image: training or evaluation would fail late."""


def check_splits(split: Sequence[str], rule: str, found: str) -> None:
    """Refuse ``split`` if it has no image of some split, naming the split ``rule`` and what was ``found``.

    e.g. "FFHQ: index < 60000 -> train, >= 60000 -> test: no test images among the 5000 found in ... (indices
    0-4999)". Cheap: called on the annotations, before any image is decoded."""
    present = set(np.unique(np.asarray(split, dtype=str)).tolist())
    empty = [s for s in SPLITS if s not in present]
    if empty:
        raise EmptySplitError(f"{rule}: no {' and no '.join(empty)} images among {found}; both splits need at "
                              "least one image (training and evaluation would fail later)")


def check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"resolution must be an integer of at least 8, got {resolution!r}")
    return resolution


def decode_image(ref: str, spec: DecodeSpec) -> np.ndarray:
    """One image as uint8 (resolution, resolution, 3); CorruptImageError naming the file if it cannot be used."""
    try:
        with _strict_decoding(), Image.open(_open(ref, spec)) as image:
            image.load()  # PIL is lazy: without this a truncated file is noticed late or not at all
            rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even if RGB
            return crop_resize(rgb, spec)  # inside: some Pillow versions free a closed image's pixels
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, zlib/zipfile errors...
        raise CorruptImageError(f"{spec.describe(ref)}: cannot decode image ({type(err).__name__}: {err})") from None


def decode_images(
    refs: Sequence[str], spec: DecodeSpec, workers: int | None = None, skip_corrupt: bool = False, desc: str = "decode"
) -> Iterator[tuple[np.ndarray, list[tuple[int, str]]]]:
    """Decode ``refs`` in order, in chunks: yields (images of the chunk that decoded, [(position, error)]).

    Without ``skip_corrupt`` the first bad file raises CorruptImageError (from whichever worker met it).
    ``workers`` None means os.cpu_count(); 1 decodes in this process.
    """
    n = len(refs)
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    per_image = spec.resolution**2 * 3
    chunk = max(1, min(MAX_CHUNK, CHUNK_BYTES // per_image, -(-n // (4 * workers))))
    tasks = ((a, refs[a:a + chunk], spec, skip_corrupt) for a in range(0, n, chunk))
    bar = tqdm(total=n, desc=desc, unit="img", file=sys.stderr, mininterval=5)
    with bar, _results(tasks, workers) as results:
        for images, failures in results:
            bar.update(len(images) + len(failures))
            yield images, failures


def prepare_images(
    out_dir: str | os.PathLike,
    name: str,
    refs: Sequence[str],
    names: Sequence[str],
    spec: DecodeSpec,
    attributes: pd.DataFrame,
    split: Sequence[str],
    binary_attributes: list[str],
    source: dict[str, Any],
    params: dict[str, Any],
    workers: int | None = None,
    skip_corrupt: bool = False,
) -> Path:
    """Decode ``refs`` and write them with one ``attributes`` row and one ``split`` entry each; return the manifest.

    ``names`` (one per ref, relative to the dataset root) is how skipped files are listed in
    ``source["skipped_corrupt"]``. The preview (preview.png, first 64 images) is written after the manifest.
    """
    count = len(refs)
    if not (len(names) == len(attributes) == len(split) == count):
        raise ValueError(f"refs, names, attributes and split differ in length ({count}, {len(names)}, "
                         f"{len(attributes)}, {len(split)})")
    rule = f"{name}: {params.get('split_rule', 'the split rule')}"
    check_splits(split, rule, f"the {count} images")  # the callers check with their own words first
    out_dir = Path(out_dir)
    remove_stale_scratch(out_dir)  # before decoding, which can take hours: free their disk space first
    remove_leftovers(out_dir)
    common = dict(resolution=spec.resolution, binary_attributes=binary_attributes, categorical_attributes=[],
                  params={**params, "skip_corrupt": skip_corrupt})
    desc = f"{name} {spec.resolution}px"
    if not skip_corrupt:
        with contextlib.closing(decode_images(refs, spec, workers, False, desc)) as decoded:
            manifest = write_prepared(out_dir, name, (images for images, _ in decoded), count=count,
                                      attributes=attributes.reset_index(drop=True), split=list(split),
                                      source={**source, "skipped_corrupt": []}, **common)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        with _scratch_file(out_dir) as scratch:
            failed = _decode_to_file(scratch, refs, spec, workers, desc)
            keep = np.ones(count, bool)
            keep[[pos for pos, _ in failed]] = False
            skipped = [names[pos] for pos, _ in failed]
            for _, message in failed:
                log.warning("skipped (skip_corrupt): %s", message)
            if failed and not keep.any():
                raise CorruptImageError(f"{name}: none of the {count} images could be decoded; first: {failed[0][1]}")
            if failed:
                log.warning("%s: skipped %d corrupt image(s) of %d", name, len(failed), count)
                check_splits(np.asarray(split)[keep], rule, f"the {int(keep.sum())} images left after skipping "
                             f"{len(failed)} corrupt one(s) ({some_names(skipped)})")
            kept = attributes.reset_index(drop=True)[keep].reset_index(drop=True)
            manifest = write_prepared(out_dir, name, _read_back(scratch, int(keep.sum()), spec.resolution),
                                      count=int(keep.sum()), attributes=kept,
                                      split=np.asarray(split)[keep], source={**source, "skipped_corrupt": skipped},
                                      **common)
    preview = np.load(out_dir / "images.npy", mmap_mode="r")[:64]
    if len(preview):
        write_preview(out_dir / "preview.png", preview)
    return manifest


# ------------------------------------------------------------------------------------------------ decode


_ZIPS: dict[str, zipfile.ZipFile] = {}  # per process: each worker opens the archive itself


def _open(ref: str, spec: DecodeSpec) -> Any:
    if spec.zip_path is None:
        return ref
    archive = _ZIPS.get(spec.zip_path)
    if archive is None:
        archive = _ZIPS[spec.zip_path] = zipfile.ZipFile(spec.zip_path)
    return io.BytesIO(archive.read(ref))  # read() checks the member's CRC


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Truncated files must raise, whatever another library set (restored afterwards: it is global)."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def crop_resize(image: Image.Image, spec: DecodeSpec) -> np.ndarray:
    """The largest centred square (or spec.crop), resized to spec.resolution with LANCZOS: preparation's rule."""
    w, h = image.size
    side = spec.crop or min(w, h)
    if side > min(w, h):
        raise ValueError(f"image is {w}x{h}, smaller than the {side}x{side} centre crop")
    left, top = (w - side) // 2, (h - side) // 2  # 178x218 CelebA, 140 crop: (19, 39), as torchvision's CenterCrop
    if (side, side) != (w, h):
        image = image.crop((left, top, left + side, top + side))
    if side != spec.resolution:
        image = image.resize((spec.resolution, spec.resolution), RESAMPLE)
    return np.asarray(image, dtype=np.uint8)


def _decode_chunk(task: tuple[int, Sequence[str], DecodeSpec, bool]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    start, refs, spec, skip_corrupt = task
    r = spec.resolution
    images = np.empty((len(refs), r, r, 3), np.uint8)
    ok, failures = 0, []
    for k, ref in enumerate(refs):
        try:
            images[ok] = decode_image(ref, spec)
            ok += 1
        except CorruptImageError as err:
            if not skip_corrupt:
                raise
            failures.append((start + k, str(err)))
    return images[:ok], failures


# ---------------------------------------------------------------------------------------------- parallel


@contextlib.contextmanager
def _results(tasks: Iterable[Any], workers: int) -> Iterator[Iterator[tuple[np.ndarray, list[tuple[int, str]]]]]:
    """Chunk results in task order, computed here (workers == 1) or in a pool that is torn down on exit."""
    if workers == 1:
        try:
            yield map(_decode_chunk, tasks)
        finally:
            _close_zips()
        return
    # fork, not spawn: spawn re-runs the parent's main module in each worker, and Snakemake's script
    # files have no main guard. The workers only run PIL and numpy, no threads or locks of the parent.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = context.Pool(workers, initializer=_close_zips)
    try:
        yield _ordered(pool, tasks, IN_FLIGHT_PER_WORKER * workers)
        pool.close()
    finally:
        pool.terminate()  # on error too: no worker outlives the preparation
        pool.join()


def _ordered(pool: Any, tasks: Iterable[Any], window: int) -> Iterator[tuple[np.ndarray, list[tuple[int, str]]]]:
    """Pool results in task order with at most ``window`` tasks submitted ahead (Pool.imap has no bound)."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(_decode_chunk, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()  # re-raises a worker's exception here
    while pending:
        yield pending.popleft().get()


def _close_zips() -> None:
    """Drop archive handles: a forked worker must not share the parent's file offset."""
    for archive in _ZIPS.values():
        with contextlib.suppress(Exception):
            archive.close()
    _ZIPS.clear()


# ------------------------------------------------------------------------------------------ skip_corrupt


def remove_stale_scratch(out_dir: str | os.PathLike) -> list[Path]:
    """Delete the scratch files (``.decoded.<random>.tmp``) that a killed preparation left in ``out_dir``; log and
    return them. Only for a folder no live preparation writes to (one preparation per dataset at a time)."""
    removed = remove_stale_temporaries([Path(out_dir) / SCRATCH])  # mkstemp's names, as for the outputs
    for path in removed:
        log.info("removed %s, left by a killed earlier attempt", path)
    return removed


@contextlib.contextmanager
def _scratch_file(out_dir: Path) -> Iterator[Path]:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{SCRATCH}.", suffix=".tmp", dir=out_dir)
        os.close(fd)
    except OSError as err:
        raise OSError(err.errno, f"could not write in {out_dir}: {err.strerror or err}") from err
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _decode_to_file(path: Path, refs: Sequence[str], spec: DecodeSpec, workers: int | None,
                    desc: str) -> list[tuple[int, str]]:
    """Append every image that decodes to ``path`` (raw bytes, in order); return the failures."""
    failed: list[tuple[int, str]] = []
    with open(path, "wb") as f, contextlib.closing(decode_images(refs, spec, workers, True, desc)) as decoded:
        for images, failures in decoded:
            try:
                f.write(images.tobytes())
            except OSError as err:  # a full disk: name the file, not only the errno
                raise OSError(err.errno, f"could not write {path}: {err.strerror or err}") from err
            failed += failures
    return failed


def _read_back(path: Path, count: int, resolution: int, chunk: int = MAX_CHUNK) -> Iterator[np.ndarray]:
    """The scratch file's images in chunks, read (not memory-mapped) so resident memory stays one chunk."""
    shape = (resolution, resolution, 3)
    with open(path, "rb") as f:
        for a in range(0, count, chunk):
            n = min(chunk, count - a)
            yield np.frombuffer(f.read(n * int(np.prod(shape))), np.uint8).reshape(n, *shape)
