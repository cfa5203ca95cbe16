"""Tests of the real-dataset preparation (CelebA, CelebA-HQ, FFHQ) on tiny fixtures in each raw layout.

The fixtures are a few dozen small images made with PIL plus annotation files written in the exact
formats of the real ones (CelebA's runs of spaces, FFHQ-features' JSON copied from real files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pivq.data import BINARY_ATTRIBUTES, PreparedDataset, check_source, prepare_celeba, prepare_celebahq, prepare_ffhq
from pivq.data.celeba import CELEBA_CROP
from pivq.data.images import CorruptImageError, DecodeSpec, decode_image
from pivq.io import read_json

FIXTURES = Path(__file__).parent / "fixtures" / "ffhq-features"  # real FFHQ-features annotation files
CELEBA_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
N_CELEBA = 24  # 16 train (partition 0), 4 val, 4 test
FFHQ_INDICES = [0, 1, 2, 36, 999, 3130, 60000, 69999]  # 0, 36, 3130 get the real FFHQ-features files


# ------------------------------------------------------------------------------------------ fixtures


def _picture(seed: int, width: int, height: int) -> Image.Image:
    """A gradient with noise: smooth enough to compress small, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y + 40 * seed) % 256], axis=-1)
    return Image.fromarray(np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8))


def _celeba_values(k: int) -> list[int]:
    return [1 if (k + j) % 3 == 0 else -1 for j in range(40)]


def make_celeba(root: Path, n: int = N_CELEBA, zipped: bool = False) -> Path:
    """CelebA's layout: 178x218 JPEGs, list_attr_celeba.txt (runs of spaces as in the real file), partitions."""
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    files = [f"{k:06d}.jpg" for k in range(1, n + 1)]
    for k, f in enumerate(files):
        _picture(k, 178, 218).save(folder / f, quality=90)
    lines = [str(n), " ".join(CELEBA_NAMES) + " "]
    lines += [f + "".join(f" {v:2d}" for v in _celeba_values(k)) for k, f in enumerate(files)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = [0 if k < n - 8 else 1 if k < n - 4 else 2 for k in range(n)]
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, parts)))
    if zipped:  # the official archive: members under img_align_celeba/
        with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as archive:
            for f in files:
                archive.write(folder / f, f"img_align_celeba/{f}")
        shutil.rmtree(folder)
    return root


def make_celebahq(root: Path, n: int = 20, mapping: bool = True) -> Path:
    """CelebAMask-HQ's layout: CelebA-HQ-img/0.jpg ..., the attribute file named 0.jpg ..., the mapping."""
    folder = root / "CelebA-HQ-img"
    folder.mkdir(parents=True)
    for k in range(n):
        _picture(100 + k, 96, 96).save(folder / f"{k}.jpg", quality=90)
    lines = [str(n), " ".join(CELEBA_NAMES)]
    lines += [f"{k}.jpg" + "".join(f" {v:2d}" for v in _celeba_values(k)) for k in range(n)]
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(lines) + "\n")
    if mapping:
        rows = "".join(f"{k:<7d}{k * 7:<11d}{k * 7 + 1:06d}.jpg\n" for k in range(n))
        (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("idx    orig_idx   orig_file\n" + rows)
    return root


def make_ffhq(root: Path, indices: list[int] = FFHQ_INDICES, folder: str = "images1024x1024",
              nested: bool = True) -> Path:
    """FFHQ's layout: <folder>/<thousands>/<index>.png and json/<index>.json (real files for 0, 36, 3130)."""
    (root / "json").mkdir(parents=True)
    for i in indices:
        sub = root / folder / (f"{i // 1000 * 1000:05d}" if nested else "")
        sub.mkdir(parents=True, exist_ok=True)
        _picture(200 + i % 97, 64, 64).save(sub / f"{i:05d}.png")
        real = FIXTURES / f"{i:05d}.json"
        shutil.copy(real if real.exists() else FIXTURES / "00000.json", root / "json" / f"{i:05d}.json")
    return root


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """One copy of each raw layout, shared by the tests that only read it."""
    base = tmp_path_factory.mktemp("raw")
    make_celeba(base / "celeba")
    make_celeba(base / "celeba_zip", zipped=True)
    make_celebahq(base / "celebahq")
    make_ffhq(base / "ffhq")
    return base


@pytest.fixture(scope="module")
def celeba(raw, tmp_path_factory) -> PreparedDataset:
    out = tmp_path_factory.mktemp("celeba32")
    prepare_celeba(raw / "celeba", out, resolution=32, name="celeba32", workers=1)
    return PreparedDataset(out)


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"this is not an image" * 20 if how == "garbage" else data[: len(data) // 2])


def _rewrite_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- CelebA


def test_celeba_shapes_attributes_and_split(celeba):
    assert celeba.images.shape == (N_CELEBA, 32, 32, 3) and celeba.images.dtype == np.uint8
    assert celeba.binary_attributes == CELEBA_NAMES and celeba.categorical_attributes == []
    expected = (np.array([_celeba_values(k) for k in range(N_CELEBA)]) == 1).astype(float)
    assert np.array_equal(celeba.attributes[CELEBA_NAMES].to_numpy(), expected)
    assert celeba.manifest["counts"] == {"train": 16, "test": 8}  # val (1) and test (2) both go to test
    assert list(celeba.indices("test")) == list(range(16, 24))
    source, params = celeba.manifest["source"], celeba.manifest["params"]
    assert source["layout"] == "folder" and source["skipped_corrupt"] == []
    assert set(source["annotations"]) == {"list_attr_celeba.txt", "list_eval_partition.txt"}
    assert source["counts"]["partition"] == {"0": 16, "1": 4, "2": 4}
    assert params["crop"] == {"kind": "centre", "size": CELEBA_CROP} and params["resample"] == "LANCZOS"
    assert len({im.tobytes() for im in np.asarray(celeba.images)}) == N_CELEBA


def test_celeba_crop_is_the_centre_square(tmp_path):
    # Inside the centre 140x140 square green, outside red: the prepared image must be all green.
    image = np.zeros((218, 178, 3), np.uint8)
    image[..., 0] = 255
    top, left = (218 - CELEBA_CROP) // 2, (178 - CELEBA_CROP) // 2
    image[top:top + CELEBA_CROP, left:left + CELEBA_CROP] = (0, 255, 0)
    Image.fromarray(image).save(tmp_path / "x.png")
    out = decode_image(str(tmp_path / "x.png"), DecodeSpec(64, CELEBA_CROP))
    assert out.shape == (64, 64, 3)
    assert np.abs(out.astype(int) - (0, 255, 0)).max() <= 1


def test_celeba_zip_equals_folder(raw, celeba, tmp_path):
    manifest = read_json(prepare_celeba(raw / "celeba_zip", tmp_path, resolution=32, name="celeba32", workers=1))
    assert manifest["source"]["layout"] == "zip"
    assert manifest["files"] == celeba.manifest["files"]  # images.npy, attributes.csv, split.csv byte for byte


def test_workers_give_identical_bytes(raw, celeba, tmp_path):
    manifest = read_json(prepare_celeba(raw / "celeba", tmp_path, resolution=32, name="celeba32", workers=2))
    assert manifest["files"] == celeba.manifest["files"]


# ------------------------------------------------------------------------------------------- CelebA-HQ


def test_celebahq_attributes_and_seeded_split(raw, tmp_path):
    data = PreparedDataset(prepare_celebahq(raw / "celebahq", tmp_path / "a", resolution=32, seed=3, n_test=5,
                                            workers=1))
    assert data.images.shape == (20, 32, 32, 3)
    assert data.binary_attributes == CELEBA_NAMES
    assert data.attributes["5_o_Clock_Shadow"].tolist() == [1.0 if k % 3 == 0 else 0.0 for k in range(20)]
    assert data.manifest["counts"] == {"train": 15, "test": 5}
    assert data.manifest["source"]["mapping"] == "CelebA-HQ-to-CelebA-mapping.txt"
    assert set(data.manifest["source"]["annotations"]) == {"CelebAMask-HQ-attribute-anno.txt",
                                                           "CelebA-HQ-to-CelebA-mapping.txt"}
    assert data.manifest["params"]["seed"] == 3
    same = PreparedDataset(prepare_celebahq(raw / "celebahq", tmp_path / "b", resolution=32, seed=3, n_test=5,
                                            workers=1))
    other = PreparedDataset(prepare_celebahq(raw / "celebahq", tmp_path / "c", resolution=32, seed=4, n_test=5,
                                             workers=1))
    assert np.array_equal(same.split, data.split) and not np.array_equal(other.split, data.split)


def test_celebahq_plain_folder_has_no_attributes(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    for k in (10, 2, 0):  # natural order 0, 2, 10; one non-square image is centre-cropped
        _picture(k, 120 if k == 2 else 96, 96).save(root / f"{k}.png")
    data = PreparedDataset(prepare_celebahq(root, tmp_path / "out", resolution=16, n_test=1, workers=1))
    assert data.images.shape == (3, 16, 16, 3) and data.binary_attributes == []
    assert data.manifest["source"]["layout"] == "folder"
    expected = decode_image(str(root / "2.png"), DecodeSpec(16))
    assert np.array_equal(data.images[1], expected)


def test_celebahq_n_test_must_leave_a_train_split(raw, tmp_path):
    with pytest.raises(ValueError, match="n_test=3000"):
        prepare_celebahq(raw / "celebahq", tmp_path, resolution=32, workers=1)  # default n_test on 20 images


# ------------------------------------------------------------------------------------------------ FFHQ


def test_ffhq_attributes_no_face_and_split(raw, tmp_path):
    data = PreparedDataset(prepare_ffhq(raw / "ffhq", tmp_path, resolution=32, workers=1))
    assert data.images.shape == (len(FFHQ_INDICES), 32, 32, 3)
    assert data.binary_attributes == BINARY_ATTRIBUTES
    assert data.manifest["counts"] == {"train": 6, "test": 2}  # 60000 and 69999
    assert data.manifest["source"]["no_face_annotation"] == 1
    assert data.manifest["source"]["layout"] == "images1024x1024"
    # the annotations' digest (each JSON read once, parsed and hashed), recomputed here from the files
    lines = "".join(f"{i:05d}.json "
                    f"{hashlib.sha256((raw / 'ffhq' / 'json' / f'{i:05d}.json').read_bytes()).hexdigest()}\n"
                    for i in FFHQ_INDICES)
    assert data.manifest["source"]["annotations"]["json"]["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    rows = {i: data.attributes.iloc[k] for k, i in enumerate(FFHQ_INDICES)}
    assert rows[36].isna().all()  # 00036.json is []: kept, every attribute empty
    assert rows[0].notna().all() and rows[0]["age_young"] == 1 and rows[0]["hair_brown"] == 1
    assert rows[0]["head_pose_frontal"] == 0  # yaw 15.3
    # 03130.json: two faces; the larger (75x75: 52 years, reading glasses, lipstick) wins over the 56x50 child.
    face = rows[3130]
    assert (face["age_senior"], face["glasses"], face["lip_makeup"], face["is_happy"], face["age_young"]) == (
        1, 1, 1, 0, 0)
    csv = (tmp_path / "attributes.csv").read_text().splitlines()
    assert csv[1 + FFHQ_INDICES.index(36)] == "3" + "," * len(BINARY_ATTRIBUTES)  # empty cells, not 0


def test_ffhq_flat_thumbnails_folder(tmp_path):
    root = make_ffhq(tmp_path / "raw", [5, 60007], folder="thumbnails128x128", nested=False)
    data = PreparedDataset(prepare_ffhq(root, tmp_path / "out", resolution=16, workers=1))
    assert data.images.shape == (2, 16, 16, 3) and data.manifest["source"]["layout"] == "thumbnails128x128"


def test_probe_leaves_out_images_without_a_face():
    # The no-face rows are NaN in every binary column; probe_attributes must fit each attribute without them.
    import pandas as pd

    from pivq.analysis.probe import probe_attributes

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, (40, 4))
    labels = pd.DataFrame({"a": [np.nan] * 10 + [0, 1] * 15})
    result = probe_attributes(codes, 8, labels, ["a"], folds=2)
    assert result["attributes"][0]["n"] == 30


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("how", ["garbage", "truncated"])
@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_corrupt_image_names_the_file_and_writes_no_manifest(tmp_path, how, kind):
    out = tmp_path / "out"
    if kind == "jpeg":
        root = make_celeba(tmp_path / "raw", n=10)
        prepare_celeba(root, out, resolution=16, workers=1)  # a finished dataset, then a failed re-run
        _corrupt(root / "img_align_celeba" / "000005.jpg", how)
        run, culprit = (lambda: prepare_celeba(root, out, resolution=16, workers=1)), "000005.jpg"
    else:
        root = make_ffhq(tmp_path / "raw", [0, 1, 60002], nested=False)
        prepare_ffhq(root, out, resolution=16, workers=1)
        _corrupt(root / "images1024x1024" / "00001.png", how)
        run, culprit = (lambda: prepare_ffhq(root, out, resolution=16, workers=1)), "00001.png"
    with pytest.raises(CorruptImageError, match=culprit):
        run()
    assert not (out / "manifest.json").exists()
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind


def test_worker_error_propagates(tmp_path):
    root = make_celeba(tmp_path / "raw", n=12)
    _corrupt(root / "img_align_celeba" / "000011.jpg", "truncated")
    with pytest.raises(CorruptImageError, match="000011.jpg"):
        prepare_celeba(root, tmp_path / "out", resolution=16, workers=2)
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_skip_corrupt_drops_the_image_and_its_rows(tmp_path, workers):
    root = make_celeba(tmp_path / "raw", n=12)
    _corrupt(root / "img_align_celeba" / "000002.jpg", "truncated")
    clean = make_celeba(tmp_path / "clean", n=12)
    reference = PreparedDataset(prepare_celeba(clean, tmp_path / "ref", resolution=16, workers=1))
    data = PreparedDataset(prepare_celeba(root, tmp_path / "out", resolution=16, workers=workers, skip_corrupt=True))
    assert len(data) == 11 and data.manifest["source"]["skipped_corrupt"] == ["000002.jpg"]
    keep = [k for k in range(12) if k != 1]
    assert np.array_equal(data.images, reference.images[keep])
    assert np.array_equal(data.attributes.to_numpy(), reference.attributes.to_numpy()[keep])
    assert np.array_equal(data.split, reference.split[keep])
    assert data.manifest["params"]["skip_corrupt"] is True
    assert not list((tmp_path / "out").glob(".decoded*"))


def test_missing_root(tmp_path):
    for kind, prepare in [("celeba", prepare_celeba), ("celebahq", prepare_celebahq), ("ffhq", prepare_ffhq)]:
        with pytest.raises(FileNotFoundError, match="nowhere is missing"):
            check_source(kind, tmp_path / "nowhere")
        with pytest.raises(FileNotFoundError, match="nowhere is missing"):
            prepare(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown dataset kind"):
        check_source("mnist", tmp_path)


def test_check_source_celeba(tmp_path):
    root = make_celeba(tmp_path / "raw", n=4)
    check_source("celeba", root)
    (root / "list_attr_celeba.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.txt is missing: CelebA's attribute file"):
        check_source("celeba", root)
    (root / "list_eval_partition.txt").unlink()
    for f in (root / "img_align_celeba").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="img_align_celeba is empty"):
        check_source("celeba", root)
    with pytest.raises(FileNotFoundError, match="img_align_celeba is empty"):
        prepare_celeba(root, tmp_path / "out")
    (root / "img_align_celeba").rmdir()
    with pytest.raises(FileNotFoundError, match="img_align_celeba is missing"):
        check_source("celeba", root)


def test_check_source_celebahq(tmp_path):
    root = make_celebahq(tmp_path / "raw", n=3, mapping=False)
    check_source("celebahq", root)
    (root / "CelebAMask-HQ-attribute-anno.txt").unlink()
    with pytest.raises(FileNotFoundError, match="CelebAMask-HQ-attribute-anno.txt is missing"):
        check_source("celebahq", root)
    check_source("celebahq", root / "CelebA-HQ-img")  # a plain folder of images needs no attribute file
    shutil.rmtree(root / "CelebA-HQ-img")
    with pytest.raises(FileNotFoundError, match="CelebA-HQ-img is missing"):
        check_source("celebahq", root)


def test_check_source_ffhq(tmp_path):
    root = make_ffhq(tmp_path / "raw", [0, 1])
    check_source("ffhq", root)
    for f in (root / "json").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="json is empty"):
        check_source("ffhq", root)
    (root / "json").rmdir()
    with pytest.raises(FileNotFoundError, match="json is missing: the FFHQ-features"):
        check_source("ffhq", root)
    shutil.rmtree(root / "images1024x1024")
    with pytest.raises(FileNotFoundError, match="images1024x1024 is missing: FFHQ's images"):
        check_source("ffhq", root)


def test_ffhq_missing_json_names_it(tmp_path):
    root = make_ffhq(tmp_path / "raw", [0, 1, 60002], nested=False)
    (root / "json" / "00001.json").unlink()
    with pytest.raises(FileNotFoundError,
                       match=r"00001\.json is missing: the FFHQ-features annotation of .*00001\.png"):
        prepare_ffhq(root, tmp_path / "out", workers=1)


@pytest.mark.parametrize("lineno, text, message", [
    (1, "25", r"list_attr_celeba.txt: line 1 says 25 images, but the file has 24"),
    (1, "many", r"list_attr_celeba.txt, line 1: expected the number of images"),
    (2, " ".join(CELEBA_NAMES[:39]), r"list_attr_celeba.txt, line 2: expected 40 distinct attribute names, got 39"),
    (5, "000003.jpg" + " -1" * 39, r"list_attr_celeba.txt, line 5: expected a file name and 40 values, got 39"),
    (5, "000003.jpg" + "  1" * 39 + "  0", r"list_attr_celeba.txt, line 5: value '0' of Young is not -1 or 1"),
    (5, "000099.jpg" + "  1" * 40, r"list_attr_celeba.txt are missing from .*list_eval_partition.txt: 000099.jpg"),
])
def test_bad_attribute_file_names_file_and_line(tmp_path, lineno, text, message):
    root = make_celeba(tmp_path / "raw")
    _rewrite_line(root / "list_attr_celeba.txt", lineno, text)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare_celeba(root, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()  # validated before anything is written


def test_images_and_annotations_must_match(tmp_path):
    root = make_celeba(tmp_path / "raw", n=6)
    shutil.copy(root / "img_align_celeba" / "000001.jpg", root / "img_align_celeba" / "000007.jpg")
    with pytest.raises(ValueError, match="img_align_celeba has 1 file.* does not list: 000007.jpg"):
        prepare_celeba(root, tmp_path / "out", workers=1)
    (root / "img_align_celeba" / "000007.jpg").unlink()
    (root / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="missing from .*img_align_celeba: 000003.jpg"):
        prepare_celeba(root, tmp_path / "out", workers=1)


def test_bad_partition_file(tmp_path):
    root = make_celeba(tmp_path / "raw", n=6)
    _rewrite_line(root / "list_eval_partition.txt", 3, "000003.jpg 7")
    with pytest.raises(ValueError, match=r"list_eval_partition.txt, line 3: expected '<file> <0\|1\|2>'"):
        prepare_celeba(root, tmp_path / "out", workers=1)
    _rewrite_line(root / "list_eval_partition.txt", 3, "000099.jpg 0")
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.txt are missing from .*list_eval_partition.txt: "
                                                "000003.jpg"):
        prepare_celeba(root, tmp_path / "out", workers=1)


# ------------------------------------------------------------------------------- the pipeline's stage


@pytest.mark.parametrize("kind, params", [
    ("celeba", {"resolution": 16, "seed": 0, "skip_corrupt": False}),
    ("celebahq", {"resolution": 16, "seed": 3, "n_test": 5, "skip_corrupt": False}),
    ("ffhq", {"resolution": 16, "seed": 0, "skip_corrupt": False}),
])
def test_stage_prepares_each_kind_from_its_params(raw, tmp_path, kind, params):
    """pivq.stages.prepare_dataset (what the prepare_dataset rule runs) reads a params.yaml datasets entry."""
    from pivq.stages import prepare_dataset

    entry = {"kind": kind, "root": str(raw / kind), **params}
    data = PreparedDataset(prepare_dataset(f"my_{kind}", entry, tmp_path / "out", workers=2))
    assert data.name == f"my_{kind}" and data.resolution == 16
    assert data.manifest["params"]["resolution"] == 16
    if kind == "celebahq":
        assert len(data.indices("test")) == 5


# -------------------------------------------------------------- annotations read as their formats define them


def _write_face(root: Path, index: int, change) -> Path:
    """json/<index>.json: the real 00000.json with ``change(face_list)`` applied (or raw bytes written)."""
    path = root / "json" / f"{index:05d}.json"
    if isinstance(change, bytes):
        path.write_bytes(change)
    else:
        faces = json.loads((FIXTURES / "00000.json").read_text())
        path.write_text(json.dumps(change(faces)))  # NaN is written as the bare NaN Python's json reads back
    return path


def _set_field(dotted: str, value):
    def change(faces):
        inner = faces[0]["faceAttributes"]
        *parents, last = dotted.split(".")
        for key in parents:
            inner = inner[key]
        inner[last] = value
        return faces
    return change


def test_ffhq_null_and_nan_fields_are_empty_cells(tmp_path, caplog):
    """glasses: null, age: NaN or null: those attributes are unknown (empty cells), the rest of the row as read."""
    root = make_ffhq(tmp_path / "raw", [0, 1, 2, 3, 60000], nested=False)  # all copies of the real 00000.json
    _write_face(root, 1, _set_field("glasses", None))
    _write_face(root, 2, _set_field("age", float("nan")))
    _write_face(root, 3, _set_field("age", None))
    with caplog.at_level(logging.INFO, logger="pivq.data"):
        data = PreparedDataset(prepare_ffhq(root, tmp_path / "out", resolution=16, workers=1))
    table = data.attributes
    reference = table.iloc[0]
    assert reference.notna().all() and reference["glasses"] == 0 and reference["age_young"] == 1
    for row, unknown in [(1, ["glasses", "sunglasses"]), (2, ["age_young", "age_middle", "age_senior"]),
                         (3, ["age_young", "age_middle", "age_senior"])]:
        assert table.columns[table.iloc[row].isna()].tolist() == unknown, row
        assert table.iloc[row].drop(unknown).equals(reference.drop(unknown)), row
    csv = (tmp_path / "out" / "attributes.csv").read_text().splitlines()
    cells = dict(zip(csv[0].split(","), csv[2].split(",")))
    assert cells["glasses"] == "" and cells["sunglasses"] == "" and cells["gender_male"] == "0"
    assert data.manifest["source"]["no_face_annotation"] == 0  # a null field is not "no face"
    assert "age_young 2" in caplog.text and "glasses 1" in caplog.text


def test_ffhq_string_boolean_is_refused_naming_file_and_field(tmp_path):
    root = make_ffhq(tmp_path / "raw", [0, 1, 60000], nested=False)
    path = _write_face(root, 1, _set_field("makeup.eyeMakeup", "false"))
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": field 'makeup\.eyeMakeup' of faceAttributes is "
                                                                r"the string 'false', expected a JSON boolean"):
        prepare_ffhq(root, tmp_path / "out", resolution=16, workers=1)
    assert not (tmp_path / "out").exists()  # refused before anything is written


REAL_FACE = json.loads((FIXTURES / "00000.json").read_text())[0]


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r" is not JSON text \(not valid UTF-8"),  # an image saved as .json
    (b"age,gender\n30,male\n", r" is not valid JSON: Expecting value: line 1 column 1"),
    (json.dumps([REAL_FACE])[:-30].encode(), r" is not valid JSON: .*line 1 column"),  # truncated
    (json.dumps(REAL_FACE).encode(), r": expected a JSON array of faces, got a JSON object"),
    (b"[1]", r": face 0 is the number 1, expected an object"),
    (json.dumps([{"faceRectangle": REAL_FACE["faceRectangle"]}]).encode(), r": face 0 lacks field 'faceAttributes'"),
    (json.dumps([{"faceAttributes": REAL_FACE["faceAttributes"]}]).encode(), r": face 0 lacks field 'faceRectangle'"),
    (json.dumps([{**REAL_FACE, "faceAttributes": "smiling"}]).encode(),
     r": face 0 field 'faceAttributes' is the string 'smiling', expected an object"),
    (json.dumps([REAL_FACE, {**REAL_FACE, "faceRectangle": {"width": "63", "height": 63}}]).encode(),
     r": face 1: field 'faceRectangle\.width' is the string '63', expected a number"),
    (b"[" * 100_000 + b"]" * 100_000, r": JSON nested too deeply"),
    (json.dumps([{**REAL_FACE, "faceAttributes": {**REAL_FACE["faceAttributes"], "age": "52"}}]).encode(),
     r": field 'age' of faceAttributes is the string '52', expected a number"),
], ids=["binary", "csv", "truncated", "object", "not-a-face", "no-faceAttributes", "no-faceRectangle",
        "faceAttributes-string", "width-string", "nested", "age-string"])
def test_ffhq_malformed_annotation_file_is_named(tmp_path, content, message):
    root = make_ffhq(tmp_path / "raw", [0, 1, 60000], nested=False)
    path = _write_face(root, 1, content)
    with pytest.raises(ValueError, match=re.escape(str(path)) + message):
        prepare_ffhq(root, tmp_path / "out", resolution=16, workers=1)
    assert not (tmp_path / "out").exists()


def test_byte_order_marks_are_tolerated(raw, celeba, tmp_path):
    """A BOM (UTF-8, or UTF-16 as Windows editors save) at the start of CelebA's text files or an FFHQ-features
    JSON changes nothing; the manifest still records the sha256 of the file as it is."""
    root = tmp_path / "celeba"
    shutil.copytree(raw / "celeba", root)
    for name, encoding in [("list_eval_partition.txt", "utf-8-sig"), ("list_attr_celeba.txt", "utf-16")]:
        (root / name).write_bytes((raw / "celeba" / name).read_text().encode(encoding))
    manifest = read_json(prepare_celeba(root, tmp_path / "out", resolution=32, name="celeba32", workers=1))
    assert manifest["files"] == celeba.manifest["files"]
    assert manifest["source"]["annotations"]["list_attr_celeba.txt"] == hashlib.sha256(
        (root / "list_attr_celeba.txt").read_bytes()).hexdigest()

    hq = tmp_path / "celebahq"
    shutil.copytree(raw / "celebahq", hq)
    anno = hq / "CelebAMask-HQ-attribute-anno.txt"
    anno.write_bytes(b"\xef\xbb\xbf" + anno.read_bytes())
    plain = prepare_celebahq(raw / "celebahq", tmp_path / "hq0", resolution=16, n_test=5, workers=1)
    marked = prepare_celebahq(hq, tmp_path / "hq1", resolution=16, n_test=5, workers=1)
    assert read_json(marked)["files"] == read_json(plain)["files"]

    ffhq = make_ffhq(tmp_path / "ffhq", [0, 60000], nested=False)
    (ffhq / "json" / "00000.json").write_bytes(b"\xef\xbb\xbf" + (FIXTURES / "00000.json").read_bytes())
    data = PreparedDataset(prepare_ffhq(ffhq, tmp_path / "ffhq_out", resolution=16, workers=1))
    assert data.attributes.iloc[0].equals(data.attributes.iloc[1])  # the same face, with and without the BOM


def test_upper_case_image_extensions_are_found(raw, celeba, tmp_path):
    """.PNG, .JPG, .Jpeg are images wherever .png/.jpg are: in check_source and in the preparation alike."""
    ffhq = make_ffhq(tmp_path / "ffhq", [5, 60007], folder="thumbnails128x128", nested=False)
    (ffhq / "thumbnails128x128" / "00005.png").rename(ffhq / "thumbnails128x128" / "00005.PNG")
    (ffhq / "thumbnails128x128" / "60007.png").rename(ffhq / "thumbnails128x128" / "60007.Png")
    check_source("ffhq", ffhq)
    data = PreparedDataset(prepare_ffhq(ffhq, tmp_path / "ffhq_out", resolution=16, workers=1))
    assert len(data) == 2 and data.manifest["counts"] == {"train": 1, "test": 1}
    flat = make_ffhq(tmp_path / "flat", [0, 60000], folder="", nested=False)  # PNGs directly in root
    for path in flat.glob("*.png"):
        path.rename(path.with_suffix(".PNG"))
    check_source("ffhq", flat)
    assert len(PreparedDataset(prepare_ffhq(flat, tmp_path / "flat_out", resolution=16, workers=1))) == 2
    shutil.copy(flat / "00000.PNG", flat / "00000.png")  # the same index twice, in two cases
    with pytest.raises(ValueError, match="image 00000.png appears twice"):
        prepare_ffhq(flat, tmp_path / "flat_out", resolution=16, workers=1)

    root = tmp_path / "celeba"
    shutil.copytree(raw / "celeba", root)
    (root / "img_align_celeba" / "000003.jpg").rename(root / "img_align_celeba" / "000003.JPG")
    check_source("celeba", root)
    manifest = read_json(prepare_celeba(root, tmp_path / "celeba_out", resolution=32, name="celeba32", workers=1))
    assert manifest["files"] == celeba.manifest["files"]  # 000003.JPG is the listed 000003.jpg

    hq = tmp_path / "plain"
    hq.mkdir()
    for k, name in enumerate(["0.JPG", "1.jpeg", "2.PNG"]):
        _picture(k, 32, 32).save(hq / name, format="PNG" if name.endswith("PNG") else "JPEG")
    check_source("celebahq", hq)
    data = PreparedDataset(prepare_celebahq(hq, tmp_path / "plain_out", resolution=16, n_test=1, workers=1))
    assert len(data) == 3


# ------------------------------------------------------------------------------------ a split without images


def _no_decoding(monkeypatch) -> None:
    """Any decode fails the test: the refusal must come first (workers=1 decodes in this process)."""
    def decode(*args, **kwargs):
        raise AssertionError("an image was decoded")
    monkeypatch.setattr("pivq.data.images.decode_image", decode)


@pytest.mark.parametrize("case, message", [
    ("ffhq below 60000", r"FFHQ: index < 60000 -> train, >= 60000 -> test: no test images among the 5 found in "
                         r".*images1024x1024 \(indices 0-4\)"),
    ("ffhq from 60000", r"FFHQ: index < 60000 -> train, >= 60000 -> test: no train images among the 2 found "
                        r".*\(indices 60000-60001\)"),
    ("celeba only 0s", r"CelebA: list_eval_partition.txt: 0 -> train; 1 \(val\) and 2 \(test\) -> test: no test "
                       r"images among the 10 listed in .*list_eval_partition.txt \(partition 0: 10, 1: 0, 2: 0\)"),
    ("celeba no 0s", r"CelebA: .*: no train images among the 10 listed .*\(partition 0: 0, 1: 5, 2: 5\)"),
    ("celebahq n_test = count", r"CelebA-HQ: seeded random permutation, .*n_test=6 leaves no train images among the "
                                r"6 found in .*CelebA-HQ-img"),
    ("celebahq n_test = 0", r"CelebA-HQ: .*n_test=0 leaves no test images among the 6 found"),
], ids=["ffhq-below-60000", "ffhq-from-60000", "celeba-only-0s", "celeba-no-0s", "celebahq-n_test-all",
        "celebahq-n_test-0"])
def test_an_empty_split_is_refused_before_decoding(tmp_path, monkeypatch, case, message):
    """Training or evaluation would fail late (ZeroDivisionError) on a set without train or test images."""
    from pivq.data.images import EmptySplitError

    if case.startswith("ffhq"):
        root = make_ffhq(tmp_path / "raw", list(range(5)) if "below" in case else [60000, 60001])
        run = lambda: prepare_ffhq(root, tmp_path / "out", resolution=16, workers=1)  # noqa: E731
    elif case.startswith("celeba "):
        root = make_celeba(tmp_path / "raw", n=10)
        lines = (root / "list_eval_partition.txt").read_text().splitlines()
        codes = ["0"] * 10 if "only" in case else ["1", "2"] * 5
        rows = [f"{line.split()[0]} {c}\n" for line, c in zip(lines, codes)]
        (root / "list_eval_partition.txt").write_text("".join(rows))
        run = lambda: prepare_celeba(root, tmp_path / "out", resolution=16, workers=1)  # noqa: E731
    else:
        root = make_celebahq(tmp_path / "raw", n=6)
        n_test = 6 if "count" in case else 0
        run = lambda: prepare_celebahq(root, tmp_path / "out", resolution=16, n_test=n_test, workers=1)  # noqa: E731
    _no_decoding(monkeypatch)
    with pytest.raises(EmptySplitError, match=message):
        run()
    assert not (tmp_path / "out").exists()


def test_skip_corrupt_that_empties_a_split_is_refused(tmp_path):
    root = make_celeba(tmp_path / "raw", n=10)  # 000001.jpg and 000002.jpg are the train split
    for name in ("000001.jpg", "000002.jpg"):
        _corrupt(root / "img_align_celeba" / name, "truncated")
    with pytest.raises(ValueError, match=r"no train images among the 8 images left after skipping 2 corrupt one\(s\) "
                                         r"\(000001.jpg, 000002.jpg\)"):
        prepare_celeba(root, tmp_path / "out", resolution=16, workers=1, skip_corrupt=True)
    assert not (tmp_path / "out" / "manifest.json").exists() and not list((tmp_path / "out").glob(".*"))


# ------------------------------------------------------------------------- a killed preparation's leftovers

# Runs pivq.data.<call>(**kwargs) and SIGKILLs itself as it renames a file matching kill_at onto its final name
# (the approach of tests/test_faults.py's _killed_during): nothing after that point runs, no `finally` either.
_KILLED_CHILD = r"""
import fnmatch, importlib, json, os, signal, sys
spec = json.loads(sys.argv[1])
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if fnmatch.fnmatch(os.path.basename(dst), spec["kill_at"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
getattr(importlib.import_module("pivq.data"), spec["call"])(**spec["kwargs"])
"""


def _killed_during(call: str, kill_at: str, **kwargs) -> None:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    spec = json.dumps({"call": call, "kill_at": kill_at, "kwargs": kwargs}, default=str)
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, spec], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"exited {proc.returncode}, not killed:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("rerun_skips", [True, False], ids=["rerun-skip_corrupt", "rerun-strict"])
def test_a_killed_skip_corrupt_preparation_leaves_a_scratch_file_its_rerun_removes(tmp_path, caplog, rerun_skips):
    """SIGKILLed as it renames images.npy, a skip_corrupt preparation leaves its decoding scratch file (it grows
    toward the whole decoded set) and images.npy's temporary; the rerun deletes both (logged), DVC ignores them."""
    dvc_ignore = pytest.importorskip("dvc.ignore")
    root = make_celeba(tmp_path / "raw", n=12)
    out = tmp_path / "out"
    kwargs = {"root": root, "out_dir": out, "resolution": 16, "workers": 1, "skip_corrupt": True}
    _killed_during("prepare_celeba", "images.npy", **kwargs)
    left = sorted(p.name for p in out.iterdir())
    assert [name.split(".")[1] for name in left] == ["decoded", "images"], left  # .decoded.*.tmp, .images.npy.*.tmp.npy
    assert (out / left[0]).stat().st_size == 12 * 16 * 16 * 3  # every decoded image
    repo = Path(__file__).resolve().parents[1]
    patterns = dvc_ignore.DvcIgnorePatterns(
        [line for line in (repo / ".dvcignore").read_text().splitlines() if line and not line.startswith("#")],
        str(out), os.sep)
    assert all(patterns.matches(str(out), name) for name in left)  # `dvc add data` would not version them
    with pytest.raises(FileNotFoundError, match="interrupted preparation"):
        PreparedDataset(out)

    with caplog.at_level(logging.INFO, logger="pivq.data"):
        data = PreparedDataset(prepare_celeba(**{**kwargs, "skip_corrupt": rerun_skips}), verify=True)
    assert all(f"removed {out / name}, left by a killed earlier attempt" in caplog.text for name in left)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    reference = read_json(prepare_celeba(root, tmp_path / "ref", resolution=16, workers=1))
    assert data.manifest["files"] == reference["files"]


# -------------------------------------------------------------------------------------------- ~ in a root


def test_a_root_under_home_is_expanded(tmp_path, monkeypatch):
    """datasets.<name>.root: ~/raw/... is expanded by check_source and every preparation, and recorded expanded."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    make_celeba(home / "celeba", n=10)
    (home / "celebahq").mkdir(parents=True)
    for k in range(3):
        _picture(k, 32, 32).save(home / "celebahq" / f"{k}.png")
    make_ffhq(home / "ffhq", [0, 60000])
    prepares = {"celeba": prepare_celeba, "celebahq": lambda r, o, **kw: prepare_celebahq(r, o, n_test=1, **kw),
                "ffhq": prepare_ffhq}
    for kind, prepare in prepares.items():
        check_source(kind, f"~/{kind}")
        manifest = read_json(prepare(f"~/{kind}", tmp_path / kind, resolution=16, workers=1))
        assert manifest["source"]["root"] == str(home / kind), kind
    with pytest.raises(FileNotFoundError, match=re.escape(str(home / "nowhere")) + " is missing"):
        check_source("ffhq", "~/nowhere")
