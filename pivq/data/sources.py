"""Raw dataset layouts: where each real dataset's images and annotation files live, checked cheaply.

The Snakefile calls ``check_source`` at parse time, so a dry run already stops with an error naming the
missing file and what belongs there. Nothing here decodes an image, reads an annotation or imports torch;
the only listing is ``os.scandir`` of an image folder until its first image (is it non-empty?). The
``*_layout`` functions return the paths that the preparation modules (celeba.py, ffhq.py) then read and
validate in full.

Accepted layouts (docs/datasets.md):

    celeba     root/img_align_celeba/000001.jpg ...  or  root/img_align_celeba.zip
               root/list_attr_celeba.txt, root/list_eval_partition.txt
    celebahq   root/CelebA-HQ-img/0.jpg ..., root/CelebAMask-HQ-attribute-anno.txt,
               optional root/CelebA-HQ-to-CelebA-mapping.txt  ("celebamask-hq")
               or *.jpg / *.png directly in root, no attributes  ("folder")
    ffhq       root/images1024x1024/ (PNGs, possibly in subfolders 00000/ ...), else root/thumbnails128x128/,
               else 5-digit-indexed PNGs directly in root; root/json/00000.json ... (FFHQ-features)

Image extensions are matched in any case (.jpg, .JPG, .Jpeg, .PNG), here and in the preparation alike.
A root may start with ``~`` (``~/data/ffhq``): it is expanded (``expand_root``) wherever a root is read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

KINDS = ("celeba", "celebahq", "ffhq")
SEE = "(see docs/datasets.md)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # compared with the lower-cased name: .JPG and .Png count too
FFHQ_PNG = re.compile(r"([0-9]{5})\.png", re.IGNORECASE)  # FFHQ's images (fullmatch): 00000.png, 00000.PNG

CELEBA_IMAGES = "img_align_celeba"
CELEBA_ZIP = "img_align_celeba.zip"
CELEBA_ATTRIBUTES = "list_attr_celeba.txt"
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBAHQ_IMAGES = "CelebA-HQ-img"
CELEBAHQ_ATTRIBUTES = "CelebAMask-HQ-attribute-anno.txt"
CELEBAHQ_MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
FFHQ_IMAGE_DIRS = ("images1024x1024", "thumbnails128x128")  # in order of preference
FFHQ_JSON = "json"


@dataclass(frozen=True)
class CelebALayout:
    layout: str  # "folder" or "zip"
    images: Path  # the folder, or the zip file
    attributes: Path
    partition: Path


@dataclass(frozen=True)
class CelebAHQLayout:
    layout: str  # "celebamask-hq" or "folder"
    images: Path
    attributes: Path | None  # None in the plain-folder layout
    mapping: Path | None  # CelebA-HQ-to-CelebA-mapping.txt when present


@dataclass(frozen=True)
class FFHQLayout:
    layout: str  # "images1024x1024", "thumbnails128x128" or "folder"
    images: Path
    json: Path


def check_source(kind: str, root: str | os.PathLike) -> None:
    """Raise FileNotFoundError naming the first missing path of dataset ``kind``'s raw layout under ``root``."""
    layouts = {"celeba": celeba_layout, "celebahq": celebahq_layout, "ffhq": ffhq_layout}
    if kind not in layouts:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {list(KINDS)}")
    layouts[kind](root)


def celeba_layout(root: str | os.PathLike) -> CelebALayout:
    root = _root(root, "the CelebA folder (img_align_celeba/ or img_align_celeba.zip, list_attr_celeba.txt, "
                       "list_eval_partition.txt)")
    folder, archive = root / CELEBA_IMAGES, root / CELEBA_ZIP
    if folder.is_dir():
        _require_nonempty(folder, "the aligned CelebA images 000001.jpg ...", _is_image_file)
        layout, images = "folder", folder
    elif archive.is_file():
        layout, images = "zip", archive
    else:
        raise FileNotFoundError(f"{folder} is missing: the aligned CelebA images 000001.jpg ... (or the official "
                                f"{CELEBA_ZIP} beside it) {SEE}")
    attributes = _require_file(root / CELEBA_ATTRIBUTES, "CelebA's attribute file")
    partition = _require_file(root / CELEBA_PARTITION, "CelebA's train/val/test partition file")
    return CelebALayout(layout, images, attributes, partition)


def celebahq_layout(root: str | os.PathLike) -> CelebAHQLayout:
    root = _root(root, "the CelebA-HQ folder (CelebAMask-HQ's CelebA-HQ-img/ and CelebAMask-HQ-attribute-anno.txt, "
                       "or a folder of images)")
    folder = root / CELEBAHQ_IMAGES
    if folder.is_dir():
        _require_nonempty(folder, "the CelebA-HQ images 0.jpg ... 29999.jpg", _is_image_file)
        attributes = _require_file(
            root / CELEBAHQ_ATTRIBUTES,
            f"CelebAMask-HQ's attribute file (required with {CELEBAHQ_IMAGES}/; to prepare the images without "
            f"attributes, point root at {folder} itself)",
        )
        mapping = root / CELEBAHQ_MAPPING
        return CelebAHQLayout("celebamask-hq", folder, attributes, mapping if mapping.is_file() else None)
    if not _has_entry(root, _is_image_file):
        raise FileNotFoundError(f"{folder} is missing: the CelebA-HQ images (CelebAMask-HQ layout, with "
                                f"{CELEBAHQ_ATTRIBUTES} beside it), and {root} holds no *.jpg/*.png either {SEE}")
    return CelebAHQLayout("folder", root, None, None)


def ffhq_layout(root: str | os.PathLike) -> FFHQLayout:
    root = _root(root, "the FFHQ folder (images1024x1024/ or thumbnails128x128/, json/)")
    for name in FFHQ_IMAGE_DIRS:
        if (root / name).is_dir():
            _require_nonempty(root / name, "FFHQ's PNGs (00000.png ... or subfolders 00000/ ...)", _is_ffhq_entry)
            layout, images = name, root / name
            break
    else:
        if not _has_entry(root, _is_ffhq_entry):
            raise FileNotFoundError(f"{root / FFHQ_IMAGE_DIRS[0]} is missing: FFHQ's images "
                                    f"({' or '.join(FFHQ_IMAGE_DIRS)}, or PNGs named by 5-digit index directly in "
                                    f"{root}) {SEE}")
        layout, images = "folder", root
    json_dir = root / FFHQ_JSON
    if not json_dir.is_dir():
        raise FileNotFoundError(f"{json_dir} is missing: the FFHQ-features annotations 00000.json ... {SEE}")
    _require_nonempty(json_dir, "the FFHQ-features annotations 00000.json ...", lambda e: e.name.endswith(".json"))
    return FFHQLayout(layout, images, json_dir)


# ----------------------------------------------------------------------------------------------- helpers


def expand_root(root: str | os.PathLike) -> str:
    """``root`` with a leading ``~`` or ``~user`` expanded, otherwise as given (the string the manifest records)."""
    return os.path.expanduser(os.fspath(root))


def _root(root: str | os.PathLike, what: str) -> Path:
    root = Path(expand_root(root))
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is missing: {what} {SEE}")
    return root


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {what} {SEE}")
    return path


def _require_nonempty(folder: Path, what: str, accept) -> None:
    if not _has_entry(folder, accept):
        raise FileNotFoundError(f"{folder} is empty: expected {what} {SEE}")


def _has_entry(folder: Path, accept) -> bool:
    """Whether ``folder`` has an entry ``accept`` takes; stops at the first one (a 200k-file folder stays cheap)."""
    with os.scandir(folder) as entries:
        return any(accept(e) for e in entries)


def _is_image_file(entry: os.DirEntry) -> bool:
    return entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file()


def _is_ffhq_entry(entry: os.DirEntry) -> bool:
    """A PNG named by 5-digit index (what the preparation takes), or a subfolder named by digits (the official
    layout's 00000/, 01000/ ...)."""
    if entry.name.isdigit():
        return entry.is_dir()
    return bool(FFHQ_PNG.fullmatch(entry.name)) and entry.is_file()


SHOWN = 5  # culprits an error names before "..."


def some_names(files: list[str]) -> str:
    """The first few of ``files`` for an error message: "a, b, c, d, e, ..."."""
    return ", ".join(files[:SHOWN]) + (", ..." if len(files) > SHOWN else "")
