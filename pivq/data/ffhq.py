"""FFHQ (PNGs named by 5-digit index, with FFHQ-features annotations) into the prepared format.

Images come from root/images1024x1024/ (the official layout nests them in 00000/, 01000/ ...), else
root/thumbnails128x128/, else root itself; each is centre-cropped to a square (they are square) and
resized with LANCZOS. Every image needs root/json/<index>.json (FFHQ-features, one Azure Face API
result per image). The binary attributes are ffhq_attributes.RULES applied to the largest detected face.
An image whose JSON is an empty array (no face detected) is kept with every attribute empty (NaN), so
the probe leaves it out; their number is logged and recorded in the manifest. A null field (or a NaN
number) leaves only the attributes that depend on it empty (logged). A malformed file is an error naming it
(and the face or field). Image names are matched case-insensitively (00001.png, 00001.PNG).

Split: index < FFHQ_TRAIN_BELOW (60000) is "train", the rest "test": the train/validation split that
taming-transformers uses for FFHQ. A set with no image on one side of it is refused before any image is
decoded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pivq.data.ffhq_attributes import BINARY_ATTRIBUTES, AnnotationError, derive_binary, load_face_attributes
from pivq.data.images import DecodeSpec, RESAMPLE_NAME, check_resolution, check_splits, prepare_images
from pivq.data.sources import FFHQ_PNG, expand_root, ffhq_layout, some_names

log = logging.getLogger(__name__)

FFHQ_TRAIN_BELOW = 60000  # images 0..59999 train, 60000..69999 test
FFHQ_SPLIT_RULE = f"FFHQ: index < {FFHQ_TRAIN_BELOW} -> train, >= {FFHQ_TRAIN_BELOW} -> test"
PNG_NAME = FFHQ_PNG  # 00000.png ... (any case of the extension: 00000.PNG)


def prepare_ffhq(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    resolution: int = 256,
    name: str = "ffhq256",
    workers: int | None = None,
    skip_corrupt: bool = False,
) -> Path:
    """FFHQ images + FFHQ-features JSON -> a prepared dataset in ``out_dir``; returns the manifest path."""
    check_resolution(resolution)
    root = Path(expand_root(root))
    layout = ffhq_layout(root)
    images = list_ffhq_images(layout.images)
    if not images:
        raise FileNotFoundError(f"{layout.images} holds no PNG named by 5-digit index (00000.png ...)")
    indices = sorted(images)
    index = np.array(indices)
    split = np.where(index < FFHQ_TRAIN_BELOW, "train", "test")
    check_splits(split, FFHQ_SPLIT_RULE,
                 f"the {len(indices)} found in {layout.images} (indices {indices[0]}-{indices[-1]})")
    if layout.layout == "thumbnails128x128" and resolution > 128:
        log.warning("%s: upscaling 128px thumbnails to %dpx", name, resolution)
    attributes, no_face, digest = read_annotations(layout.json, indices, images)
    if no_face:
        log.info("%s: %d of %d images have no detected face (empty JSON): their attributes are left empty",
                 name, no_face, len(indices))
    unknown = attributes.isna().sum()[lambda n: n > no_face] - no_face  # null fields of images with a face
    if len(unknown):
        log.info("%s: attributes left empty where a field is null or NaN (images with a face): %s", name,
                 ", ".join(f"{column} {n}" for column, n in unknown.items()))

    source = {
        "kind": "ffhq",
        "root": str(root),
        "layout": layout.layout,
        "images": os.path.relpath(layout.images, root),
        "annotations": {"json": {"files": len(indices), "sha256": digest,
                                 "digest_of": "lines '<file> <sha256 of the file>\\n' in index order"}},
        "counts": {"listed": len(indices), "first_index": indices[0], "last_index": indices[-1]},
        "no_face_annotation": no_face,
    }
    params = {
        "resolution": resolution,
        "crop": {"kind": "centre", "size": "largest square"},
        "resample": RESAMPLE_NAME,
        "split_rule": f"index < {FFHQ_TRAIN_BELOW} -> train, else test (taming-transformers' FFHQ split)",
        "seed": None,
        "face": "largest faceRectangle when several faces are detected",
    }
    return prepare_images(
        out_dir, name, [str(images[i]) for i in indices], [os.path.relpath(images[i], root) for i in indices],
        DecodeSpec(resolution), attributes=attributes, split=list(split), binary_attributes=list(BINARY_ATTRIBUTES),
        source=source, params=params, workers=workers, skip_corrupt=skip_corrupt,
    )


def list_ffhq_images(folder: Path) -> dict[int, Path]:
    """{index: path} of the 5-digit PNGs in ``folder`` and in its digit-named subfolders (00000/ ...); the
    extension in any case (00000.png, 00000.PNG)."""
    found: dict[int, Path] = {}
    with os.scandir(folder) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    for entry in entries:
        if entry.name.isdigit() and entry.is_dir():
            with os.scandir(entry.path) as inner:
                files = sorted((Path(e.path) for e in inner if PNG_NAME.fullmatch(e.name) and e.is_file()),
                               key=lambda path: path.name)
        elif PNG_NAME.fullmatch(entry.name) and entry.is_file():
            files = [Path(entry.path)]
        else:
            continue
        for path in files:
            index = int(path.stem)
            if index in found:
                raise ValueError(f"image {path.name} appears twice: {found[index]} and {path}")
            found[index] = path
    return found


def read_annotations(json_dir: Path, indices: list[int], images: dict[int, Path]) -> tuple[pd.DataFrame, int, str]:
    """Binary attributes per image (NaN rows where no face was detected), the no-face count and a digest.

    The digest is the sha256 of one line '<file> <sha256>' per JSON file, in index order: one hash for
    70000 small files instead of 70000 manifest entries.
    """
    with os.scandir(json_dir) as entries:
        present = {e.name for e in entries}
    missing = [i for i in indices if f"{i:05d}.json" not in present]
    if missing:
        raise FileNotFoundError(
            f"{json_dir / f'{missing[0]:05d}.json'} is missing: the FFHQ-features annotation of {images[missing[0]]}"
            f" ({len(missing)} image(s) lack one: {some_names([f'{i:05d}.json' for i in missing])})"
        )
    rows, digest, no_face = [], hashlib.sha256(), 0
    for i in tqdm(indices, desc="FFHQ-features", unit="file", mininterval=5):
        path = json_dir / f"{i:05d}.json"
        raw = path.read_bytes()  # read once: parsed and hashed
        face = load_face_attributes(path, raw)  # a malformed file: a ValueError naming it
        if face is None:
            no_face += 1
            rows.append(dict.fromkeys(BINARY_ATTRIBUTES, np.nan))
        else:
            try:
                rows.append(derive_binary(face))  # None (an empty cell) where a field is null
            except AnnotationError as err:  # a field missing or of the wrong type, named
                raise ValueError(f"{path}: {err}") from None
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}: malformed faceAttributes ({type(err).__name__}: {err})") from None
        digest.update(f"{path.name} {hashlib.sha256(raw).hexdigest()}\n".encode())
    return pd.DataFrame(rows, columns=BINARY_ATTRIBUTES, dtype=float), no_face, digest.hexdigest()
