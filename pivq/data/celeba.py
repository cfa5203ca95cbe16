"""CelebA (aligned, 178x218) and CelebA-HQ (CelebAMask-HQ, 1024x1024) into the prepared format.

CelebA 64: the centre CELEBA_CROP x CELEBA_CROP square of each aligned image (the crop most GAN and VAE
code uses on aligned CelebA), resized with LANCZOS. Partition 0 of list_eval_partition.txt is "train";
1 (val) and 2 (test) are both "test", since the prepared format has only those two splits.

CelebA-HQ 256: the largest centred square (the whole image: they are square), resized. The split is a
seeded random permutation of all listed images: the first ``n_test`` go to "test", the rest "train".

Attributes are CelebA's 40 binary columns under CelebA's names, -1 -> 0 and 1 -> 1; no categorical
columns. CelebA-HQ given as a plain folder of images has no attribute columns at all.

Every annotation file is parsed and checked against the image listing before any image is decoded; each
error names the file, and the line where there is one. The text files may start with a byte-order mark
(UTF-8, or UTF-16 as Windows editors write it). An image whose name differs from the listed one only in
the case of its extension (000001.JPG listed as 000001.jpg) is taken for it. A split left without an image
(a partition file of only 0s, an n_test of 0 or of the whole set) is refused before any image is decoded.
"""

from __future__ import annotations

import codecs
import os
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pivq.data.images import DecodeSpec, EmptySplitError, RESAMPLE_NAME, check_resolution, check_splits, prepare_images
from pivq.data.sources import IMAGE_SUFFIXES, celeba_layout, celebahq_layout, expand_root, some_names
from pivq.io import sha256_file

CELEBA_CROP = 140  # centre square of the 178x218 aligned images, pixels
CELEBA_N_ATTRIBUTES = 40
CELEBA_VALUES = {"-1": 0, "1": 1}  # list_attr_celeba.txt's values -> the prepared 0/1
CELEBA_SPLITS = {"0": "train", "1": "test", "2": "test"}  # list_eval_partition.txt: train, val, test
CELEBA_SPLIT_RULE = "list_eval_partition.txt: 0 -> train; 1 (val) and 2 (test) -> test"


def prepare_celeba(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    resolution: int = 64,
    name: str = "celeba64",
    workers: int | None = None,
    skip_corrupt: bool = False,
) -> Path:
    """Aligned CelebA (folder or zip) -> a prepared dataset in ``out_dir``; returns the manifest path."""
    check_resolution(resolution)
    root = expand_root(root)
    layout = celeba_layout(root)
    columns, files, values = read_attribute_file(layout.attributes)
    partition = read_partition_file(layout.partition)
    _same_files(files, partition, f"{layout.attributes}", f"{layout.partition}", fold_extensions=False)

    if layout.layout == "zip":
        members = list_zip_images(layout.images)  # {file name: member name}
        zip_path = str(layout.images)
    else:
        members = {f: str(layout.images / f) for f in list_image_folder(layout.images)}
        zip_path = None
    found = _same_files(files, members, f"{layout.attributes}", f"{layout.images}")  # {listed: present name}
    refs = [members[found[f]] for f in files]

    codes = [partition[f] for f in files]
    counts = {c: codes.count(c) for c in sorted(CELEBA_SPLITS)}
    shares = ", ".join(f"{c}: {n}" for c, n in counts.items())
    check_splits([CELEBA_SPLITS[c] for c in codes], f"CelebA: {CELEBA_SPLIT_RULE}",
                 f"the {len(files)} listed in {layout.partition} (partition {shares})")
    source = {
        "kind": "celeba",
        "root": root,
        "layout": layout.layout,
        "images": layout.images.name,
        "annotations": {p.name: sha256_file(p) for p in (layout.attributes, layout.partition)},
        "counts": {"listed": len(files), "partition": counts},
    }
    params = {
        "resolution": resolution,
        "crop": {"kind": "centre", "size": CELEBA_CROP},
        "resample": RESAMPLE_NAME,
        "split_rule": CELEBA_SPLIT_RULE,
        "seed": None,
    }
    return prepare_images(
        out_dir, name, refs, [found[f] for f in files], DecodeSpec(resolution, CELEBA_CROP, zip_path),
        attributes=pd.DataFrame(values, columns=columns), split=[CELEBA_SPLITS[c] for c in codes],
        binary_attributes=columns, source=source, params=params, workers=workers, skip_corrupt=skip_corrupt,
    )


def prepare_celebahq(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    resolution: int = 256,
    name: str = "celebahq256",
    seed: int = 0,
    n_test: int = 3000,
    workers: int | None = None,
    skip_corrupt: bool = False,
) -> Path:
    """CelebA-HQ (CelebAMask-HQ layout or a plain folder) -> a prepared dataset; returns the manifest path."""
    check_resolution(resolution)
    root = expand_root(root)
    layout = celebahq_layout(root)
    present = list_image_folder(layout.images)
    annotations = {}
    if layout.attributes is not None:
        columns, files, values = read_attribute_file(layout.attributes)
        found = _same_files(files, set(present), f"{layout.attributes}", f"{layout.images}")  # {listed: present}
        annotations[layout.attributes.name] = sha256_file(layout.attributes)
    else:
        files, columns = sorted(present, key=_natural), []
        found = {f: f for f in files}
        values = np.zeros((len(files), 0), np.int8)
    if layout.mapping is not None:
        annotations[layout.mapping.name] = sha256_file(layout.mapping)
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)):
        raise ValueError(f"n_test must be an integer, got {n_test!r}")
    if not 1 <= n_test < len(files):
        side = "test" if n_test < 1 else "train"
        raise EmptySplitError(
            f"CelebA-HQ: seeded random permutation, the first n_test -> test, the rest -> train: n_test={n_test!r} "
            f"leaves no {side} images among the {len(files)} found in {layout.images}; n_test must be at least 1 and "
            f"less than {len(files)}")

    # The permutation covers every listed image, so a skipped corrupt image does not move the others.
    split = np.full(len(files), "train", dtype=object)
    split[np.random.default_rng(seed).permutation(len(files))[:n_test]] = "test"
    source = {
        "kind": "celebahq",
        "root": root,
        "layout": layout.layout,
        "images": layout.images.name,
        "annotations": annotations,
        "mapping": layout.mapping.name if layout.mapping is not None else None,
        "counts": {"listed": len(files)},
    }
    params = {
        "resolution": resolution,
        "crop": {"kind": "centre", "size": "largest square"},
        "resample": RESAMPLE_NAME,
        "split_rule": f"seeded random permutation (numpy default_rng(seed)): first n_test={n_test} -> test, "
                      "rest -> train",
        "seed": seed,
        "n_test": n_test,
    }
    return prepare_images(
        out_dir, name, [str(layout.images / found[f]) for f in files], [found[f] for f in files],
        DecodeSpec(resolution),
        attributes=pd.DataFrame(values, columns=columns), split=list(split), binary_attributes=columns,
        source=source, params=params, workers=workers, skip_corrupt=skip_corrupt,
    )


# ----------------------------------------------------------------------------------------- annotations


def read_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """CelebA's attribute format -> (40 attribute names, file names in file order, int8 (n, 40) of 0/1).

    Line 1 is the image count, line 2 the names, then one line per image: its file name and 40 values in
    {-1, 1}, separated by runs of spaces. Blank lines are ignored.
    """
    lines = _read_lines(path)
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a line of attribute names, the file has {len(lines)} "
                         "line(s)")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(f"{path}, line 1: expected the number of images, got {lines[0].strip()[:60]!r}") from None
    columns = lines[1].split()
    if len(columns) != CELEBA_N_ATTRIBUTES or len(set(columns)) != len(columns) or "index" in columns:
        raise ValueError(f"{path}, line 2: expected {CELEBA_N_ATTRIBUTES} distinct attribute names, got "
                         f"{len(columns)} ({len(set(columns))} distinct)")

    files, rows = [], []
    for lineno, text in enumerate(lines[2:], start=3):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != CELEBA_N_ATTRIBUTES + 1:
            raise ValueError(f"{path}, line {lineno}: expected a file name and {CELEBA_N_ATTRIBUTES} values, got "
                             f"{len(parts) - 1} values")
        if not set(parts[1:]) <= CELEBA_VALUES.keys():
            k, bad = next((k, v) for k, v in enumerate(parts[1:]) if v not in CELEBA_VALUES)
            raise ValueError(f"{path}, line {lineno}: value {bad!r} of {columns[k]} is not -1 or 1")
        files.append(parts[0])
        rows.append(parts[1:])
    if count != len(files):
        raise ValueError(f"{path}: line 1 says {count} images, but the file has {len(files)} image lines")
    _no_duplicates(files, path)
    values = (np.array(rows, dtype=str).reshape(len(files), CELEBA_N_ATTRIBUTES) == "1").astype(np.int8)
    return columns, files, values


def read_partition_file(path: Path) -> dict[str, str]:
    """list_eval_partition.txt -> {file name: "0", "1" or "2"}."""
    partition: dict[str, str] = {}
    for lineno, text in enumerate(_read_lines(path), start=1):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in CELEBA_SPLITS:
            raise ValueError(f"{path}, line {lineno}: expected '<file> <0|1|2>', got {text.strip()[:60]!r}")
        if parts[0] in partition:
            raise ValueError(f"{path}, line {lineno}: {parts[0]} is listed twice")
        partition[parts[0]] = parts[1]
    return partition


def _read_lines(path: Path) -> list[str]:
    """The file's lines: UTF-8, its byte-order mark (if any) dropped; UTF-16 when it starts with that BOM."""
    raw = path.read_bytes()
    encoding = "utf-16" if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return raw.decode(encoding).splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a text file ({encoding}: {err})") from None


# -------------------------------------------------------------------------------------------- listings


def list_image_folder(folder: Path) -> list[str]:
    """Names of the image files (*.jpg, *.jpeg, *.png) directly in ``folder``, hidden files left out."""
    with os.scandir(folder) as entries:
        return [e.name for e in entries
                if e.name.lower().endswith(IMAGE_SUFFIXES) and not e.name.startswith(".") and e.is_file()]


def list_zip_images(path: Path) -> dict[str, str]:
    """{base name: member name} of the images in a zip (macOS's __MACOSX/ and ._ entries left out)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is not a readable zip file ({err})") from None
    members: dict[str, str] = {}
    for member in names:
        base = member.rsplit("/", 1)[-1]
        if member.startswith("__MACOSX/") or base.startswith(".") or not base.lower().endswith(IMAGE_SUFFIXES):
            continue
        if base in members:
            raise ValueError(f"{path}: two members are named {base} ({members[base]} and {member})")
        members[base] = member
    return members


def _same_files(listed: list[str], present, listed_in: str, present_in: str,
                fold_extensions: bool = True) -> dict[str, str]:
    """Every listed file is present and every present file is listed; otherwise name the first few culprits.

    Returns {listed name: present name}. With ``fold_extensions`` (image files) a listed name not present as such
    matches the one present name that differs from it only in the case of its extension (000001.JPG)."""
    found = {f: f for f in listed if f in present}
    if fold_extensions and len(found) < len(listed):
        known = set(listed)
        folded: dict[str, list[str]] = {}
        for name in present:
            if name not in known:
                folded.setdefault(_fold_extension(name), []).append(name)
        for f in listed:
            if f not in found and len(folded.get(_fold_extension(f), ())) == 1:
                found[f] = folded[_fold_extension(f)][0]
    missing = [f for f in listed if f not in found]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) listed in {listed_in} are missing from {present_in}: "
                                f"{some_names(missing)}")
    taken = set(found.values())
    extra = sorted((f for f in present if f not in taken), key=_natural)
    if extra:
        raise ValueError(f"{present_in} has {len(extra)} file(s) that {listed_in} does not list: {some_names(extra)}")
    return found


def _fold_extension(name: str) -> str:
    """The name with its extension lower-cased: 000001.JPG -> 000001.jpg."""
    stem, dot, extension = name.rpartition(".")
    return f"{stem}.{extension.lower()}" if dot else name


def _no_duplicates(files: list[str], path: Path) -> None:
    if len(set(files)) != len(files):
        twice = [f for f, n in Counter(files).items() if n > 1]
        raise ValueError(f"{path} lists {len(twice)} file(s) more than once: {some_names(twice)}")


def _natural(name: str) -> tuple:
    """0.jpg, 1.jpg, ..., 10.jpg: numeric stems in numeric order, then the rest by name."""
    stem = name.rsplit(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)
