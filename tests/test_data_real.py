"""Tests of the real-dataset preparation (CelebA, CelebA-HQ, FFHQ) on tiny fixtures in each raw layout.

The fixtures are a few dozen small images made with PIL plus annotation files written in the exact
formats of the real ones (CelebA's runs of spaces, FFHQ-features' JSON copied from real files).
"""

from __future__ import annotations

import hashlib
import shutil
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
    lines = "".join(f"{i:05d}.json {hashlib.sha256((raw / 'ffhq' / 'json' / f'{i:05d}.json').read_bytes()).hexdigest()}\n"
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
    root = make_ffhq(tmp_path / "raw", [5, 7], folder="thumbnails128x128", nested=False)
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
        root = make_ffhq(tmp_path / "raw", [0, 1, 2], nested=False)
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
    root = make_ffhq(tmp_path / "raw", [0, 1, 2], nested=False)
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
