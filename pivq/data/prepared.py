"""The prepared-dataset format: one folder per dataset, the same for toyfaces, CelebA, CelebA-HQ and FFHQ.

    <dir>/images.npy       uint8 (N, H, W, 3), memory-mapped on read (FFHQ 256 is 14 GB)
    <dir>/attributes.csv   index, binary columns (0/1, empty = unknown), categorical columns (strings)
    <dir>/split.csv        index, split ("train" or "test")
    <dir>/manifest.json    names, counts, column lists, sha256 of the three files, source and params

The manifest is written last: a folder without one is an interrupted preparation, never a dataset. Its
"files" must give the sha256 of each of the three data files: a manifest that lacks one is refused on open.
A preparation first removes the hidden temporary files (``.<name>.<random>.tmp*``) that a killed earlier
one left beside these files (logged): ``.dvcignore`` keeps them out of DVC meanwhile.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

import pivq
from pivq.io import atomic_path, read_json, remove_stale_temporaries, sha256_file, write_json

log = logging.getLogger(__name__)

FORMAT = "pivq-prepared-v1"
SPLITS = ("train", "test")
DATA_FILES = ("images.npy", "attributes.csv", "split.csv")
TABLE_FILES = DATA_FILES[1:]  # all that readers of labels only (probe, code atlas) need verified
MANIFEST = "manifest.json"
PREVIEW = "preview.png"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def remove_leftovers(out_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that a killed preparation left beside the prepared files (and the preview) in
    ``out_dir``; log and return them. Only for a folder that no live preparation writes to."""
    out_dir = Path(out_dir)
    removed = remove_stale_temporaries([out_dir / f for f in (*DATA_FILES, MANIFEST, PREVIEW)])
    for path in removed:
        log.info("removed %s, left by a killed earlier attempt", path)
    return removed


def write_prepared(
    out_dir: str | os.PathLike,
    name: str,
    images: np.ndarray | Iterable[np.ndarray],
    count: int,
    resolution: int,
    attributes: pd.DataFrame,
    split: Sequence[str],
    binary_attributes: list[str],
    categorical_attributes: list[str],
    source: dict[str, Any],
    params: dict[str, Any],
) -> Path:
    """Write a prepared dataset into ``out_dir`` and return the path of its manifest.

    ``images`` is one (N, H, W, 3) uint8 array or an iterable of such chunks, streamed into a memmap so a
    large set never sits in memory. ``attributes`` holds one row per image in order, with at least the
    named binary (0/1/NaN) and categorical columns. Everything cheap is validated before any file is made.
    """
    out_dir = Path(out_dir)
    table = _attribute_table(attributes, count, binary_attributes, categorical_attributes)
    split = _split_array(split, count)

    remove_leftovers(out_dir)  # a killed earlier attempt's temporaries (up to the size of images.npy)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A stale manifest would vouch for files we are about to replace.
    (out_dir / MANIFEST).unlink(missing_ok=True)

    with atomic_path(out_dir / "images.npy", suffix=".npy") as tmp:
        _write_images(tmp, images, count, resolution)
    with atomic_path(out_dir / "attributes.csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    with atomic_path(out_dir / "split.csv") as tmp:
        pd.DataFrame({"index": np.arange(count), "split": split}).to_csv(tmp, index=False, lineterminator="\n")

    manifest = {
        "format": FORMAT,
        "dataset": name,
        "resolution": resolution,
        "count": count,
        "counts": {s: int((split == s).sum()) for s in SPLITS},
        "binary_attributes": list(binary_attributes),
        "categorical_attributes": list(categorical_attributes),
        "files": {f: sha256_file(out_dir / f) for f in DATA_FILES},
        "source": source,
        "params": params,
        "pivq_version": pivq.__version__,
    }
    write_json(out_dir / MANIFEST, manifest)
    return out_dir / MANIFEST


def _attribute_table(
    attributes: pd.DataFrame, count: int, binary: list[str], categorical: list[str]
) -> pd.DataFrame:
    """The CSV's columns in order: index, binary as nullable ints (so 1, not 1.0), categorical as strings."""
    if len(attributes) != count:
        raise ValueError(f"attributes has {len(attributes)} rows, expected count={count}")
    names = list(binary) + list(categorical)
    if "index" in names or len(set(names)) != len(names):
        raise ValueError(f"attribute names must be unique and not 'index': {names}")
    missing = [c for c in names if c not in attributes.columns]
    if missing:
        raise ValueError(f"attributes lacks columns {missing}")

    table = {"index": np.arange(count)}
    for col in binary:
        values = pd.to_numeric(attributes[col], errors="coerce")  # anything non-numeric becomes NaN...
        if not (values.isin([0, 1]) | attributes[col].isna()).all():  # ...and is caught here
            raise ValueError(f"binary attribute {col!r} must hold only 0, 1 or NaN")
        table[col] = values.astype("Int8").array  # nullable: written as 0, 1 or an empty cell
    for col in categorical:
        table[col] = attributes[col].to_numpy(dtype=object)
    return pd.DataFrame(table)


def _split_array(split: Sequence[str], count: int) -> np.ndarray:
    split = np.asarray(split, dtype=str)
    if split.shape != (count,):
        raise ValueError(f"split has shape {split.shape}, expected ({count},)")
    unknown = sorted(set(np.unique(split)) - set(SPLITS))
    if unknown:
        raise ValueError(f"split holds values {unknown}; allowed: {list(SPLITS)}")
    return split


def _check_files_entry(manifest: dict[str, Any], path: Path) -> None:
    """The manifest's "files" gives a sha256 for each of DATA_FILES; else a ValueError naming the manifest and the
    entry (without it, verify() would skip that file's hash check)."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{path}: no \"files\" object (the sha256 of {', '.join(DATA_FILES)}); prepare the "
                         "dataset again")
    for file in DATA_FILES:
        if file not in files:
            raise ValueError(f"{path}: \"files\" lacks the entry {file!r} (its sha256); every file of the prepared "
                             f"format ({', '.join(DATA_FILES)}) needs one; prepare the dataset again")
        if not isinstance(files[file], str) or not SHA256.match(files[file]):
            raise ValueError(f"{path}: \"files\".{file} is {files[file]!r}, not a sha256 (64 hexadecimal digits); "
                             "prepare the dataset again")


def _write_images(path: Path, images: np.ndarray | Iterable[np.ndarray], count: int, resolution: int) -> None:
    """Stream the chunks into a .npy file with plain writes: a writable memmap would keep every written page
    in this process's resident memory, which would grow with the dataset (14 GB for FFHQ 256)."""
    shape = (count, resolution, resolution, 3)
    chunks = [images] if isinstance(images, np.ndarray) else images
    filled = 0
    with open(path, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        for chunk in chunks:
            if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[1:] != shape[1:]:
                raise ValueError(f"images chunk is {chunk.dtype} {chunk.shape}, expected uint8 (n, {resolution}, "
                                 f"{resolution}, 3)")
            if filled + len(chunk) > count:
                raise ValueError(f"images yields more than count={count} images")
            f.write(np.ascontiguousarray(chunk).data)
            filled += len(chunk)
    if filled != count:
        raise ValueError(f"images yielded {filled} images, expected count={count}")


def write_preview(path: str | os.PathLike, images: np.ndarray, columns: int = 8, min_tile: int = 64) -> None:
    """Save up to columns**2 images as a grid PNG, each tile upscaled (nearest) to at least ``min_tile`` px."""
    images = np.asarray(images[: columns * columns])
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for k, image in enumerate(images):
        grid[k // columns * h:(k // columns + 1) * h, k % columns * w:(k % columns + 1) * w] = image
    factor = -(-min_tile // min(h, w))
    grid = grid.repeat(factor, axis=0).repeat(factor, axis=1)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


FAULT_AROUND = 1 << 16  # Linux maps up to this many bytes of cached pages around a page fault (fault_around_bytes)


def read_rows(images: np.ndarray, rows) -> np.ndarray:
    """``images[rows]`` as an in-memory array. On a memory map, the pages just read are then dropped from this
    process's resident set (madvise MADV_DONTNEED; they stay in the kernel's page cache, so a reread costs no
    disk access): a job's RSS follows its batch instead of growing with the share of the dataset it has read
    (FFHQ's images.npy is 13.8 GB), which a cluster counting RSS against the job's memory would hold against it.
    """
    out = np.array(images[rows])
    mm = getattr(images, "_mmap", None)
    if mm is not None and len(out) and images.strides[1:] == out.strides[1:]:  # rows of contiguous pixels
        _drop_pages(mm, images, _row_numbers(rows, len(images)))
    return out


def _row_numbers(rows, n: int) -> np.ndarray:
    """The sorted, distinct row numbers an index (an int, a slice or an index array) of ``n`` rows selects; no
    array of all ``n`` rows is made (this runs once per training step)."""
    if isinstance(rows, slice):
        return np.arange(*rows.indices(n))
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    return np.unique(np.where(rows < 0, rows + n, rows))


def _drop_pages(mm: mmap.mmap, images: np.ndarray, rows: np.ndarray) -> None:
    """MADV_DONTNEED over the pages holding ``rows`` of ``images`` (a view into ``mm``), one call per run of
    consecutive rows, widened to the FAULT_AROUND windows the kernel maps around each fault. Pages shared with
    neighbouring rows go too; they are faulted back in if read again."""
    base = images.ctypes.data - np.frombuffer(mm, dtype=np.uint8).ctypes.data  # first row's offset in the map
    row_bytes = images.strides[0]
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for run in np.split(rows, breaks):
        start = base + int(run[0]) * row_bytes
        end = min(len(mm), -(-(start + len(run) * row_bytes) // FAULT_AROUND) * FAULT_AROUND)
        start -= start % FAULT_AROUND
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)


class ImageRows:
    """Some rows of an image array, read batch by batch: ``ImageRows(data.images, data.indices("test"))``.

    Indexing a memmap with an index array copies every row at once (FFHQ's 10,000 test images are 2 GB); this
    view reads only what is asked for (through :func:`read_rows`), so a stage's memory is set by its batch size,
    not by the dataset.
    """

    def __init__(self, images: np.ndarray, rows: np.ndarray | None = None):
        self.images = images
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *images.shape[1:])
        self.dtype, self.ndim = images.dtype, images.ndim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        """Rows ``key`` (an int, a slice or an index array, positions in this view) as an in-memory array."""
        return read_rows(self.images, self.rows[key])

    def batches(self, batch_size: int):
        """Consecutive in-memory batches of at most ``batch_size`` rows, in order."""
        for start in range(0, len(self), batch_size):
            yield self[start:start + batch_size]


class PreparedDataset:
    """Read-only view of a prepared dataset: images stay on disk (memmap), tables are loaded on open.

    Opening checks what is cheap: every file present, the manifest's format, images.npy's exact size, shape and
    dtype, the tables' columns and index. ``verify=True`` also recomputes each file's sha256 against the
    manifest (one more read of the whole set), which catches a same-size corruption; the pipeline's stages open
    datasets this way, once per job: minutes at most for FFHQ's 14 GB, next to jobs that run for hours.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = False):
        path = Path(path)
        self.root = path.parent if path.name == MANIFEST else path
        for file in (MANIFEST, *DATA_FILES):
            if not (self.root / file).is_file():
                raise FileNotFoundError(
                    f"prepared dataset {self.root} lacks {file}; run the data preparation rule for it first "
                    f"(a folder without {MANIFEST} is an interrupted preparation)"
                )
        self.manifest: dict[str, Any] = read_json(self.root / MANIFEST)
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            found = self.manifest.get("format") if isinstance(self.manifest, dict) else self.manifest
            raise ValueError(f"{self.root / MANIFEST}: format {found!r}, expected {FORMAT!r}")
        _check_files_entry(self.manifest, self.root / MANIFEST)
        if verify:
            self.verify()
        self.images = self._open_images()
        self.attributes = self._read_attributes()
        self.split = self._read_split()

    @property
    def name(self) -> str:
        return self.manifest["dataset"]

    @property
    def resolution(self) -> int:
        return self.manifest["resolution"]

    @property
    def binary_attributes(self) -> list[str]:
        return self.manifest["binary_attributes"]

    @property
    def categorical_attributes(self) -> list[str]:
        return self.manifest["categorical_attributes"]

    def __len__(self) -> int:
        return self.manifest["count"]

    def indices(self, split: str) -> np.ndarray:
        """Image indices (int64, ascending) of one split."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        return np.flatnonzero(self.split == split).astype(np.int64)

    def verify(self, files: tuple[str, ...] | None = None) -> None:
        """Recompute the sha256 of ``files`` (default: all three) against the manifest (a full read of each: done
        on open only if asked)."""
        unknown = sorted(set(files or ()) - set(DATA_FILES))
        if unknown:
            raise ValueError(f"cannot verify {unknown}: a prepared dataset's files are {list(DATA_FILES)}")
        for file in DATA_FILES:
            if files is not None and file not in files:
                continue
            expected = self.manifest["files"][file]  # every one is there: checked on open
            actual = sha256_file(self.root / file)
            if actual != expected:
                raise ValueError(f"{self.root / file} does not match the sha256 in {self.root / MANIFEST} "
                                 f"(sha256 {actual[:12]}..., manifest {expected[:12]}...): the file is corrupt or "
                                 f"was changed after preparation; prepare the dataset again")

    # The memmap is reopened rather than pickled, so spawned DataLoader workers never copy the images.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "images"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.images = self._open_images()

    def _open_images(self) -> np.ndarray:
        path = self.root / "images.npy"
        try:
            images = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:  # a truncated file: "mmap length is greater than file size"
            raise ValueError(f"{path} is not a readable .npy file ({err}); prepare the dataset again") from None
        expected = (len(self), self.resolution, self.resolution, 3)
        if images.shape != expected or images.dtype != np.uint8:
            raise ValueError(f"{path} is {images.dtype} {images.shape}, manifest says uint8 {expected}")
        size = path.stat().st_size
        if size != images.offset + images.nbytes:  # trailing bytes: not the file the manifest describes
            raise ValueError(f"{path} has {size} bytes, expected {images.offset + images.nbytes} for {expected}")
        return images

    def _read_attributes(self) -> pd.DataFrame:
        path = self.root / "attributes.csv"
        dtypes = {c: float for c in self.binary_attributes} | {c: str for c in self.categorical_attributes}
        # Only empty cells are unknown: a category literally named "NA" or "None" stays a string.
        table = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
        expected = ["index", *self.binary_attributes, *self.categorical_attributes]
        if list(table.columns) != expected or not np.array_equal(table["index"], np.arange(len(self))):
            raise ValueError(f"{path} does not match its manifest (columns {expected}, index 0..{len(self) - 1})")
        return table.set_index("index")

    def _read_split(self) -> np.ndarray:
        path = self.root / "split.csv"
        table = pd.read_csv(path, dtype={"split": str}, keep_default_na=False)
        if list(table.columns) != ["index", "split"] or not np.array_equal(table["index"], np.arange(len(self))):
            raise ValueError(f"{path} does not match its manifest (columns index,split; index 0..{len(self) - 1})")
        return _split_array(table["split"].to_numpy(), len(self))
