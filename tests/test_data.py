"""Tests of pivq.data: the prepared format, the FFHQ attribute rules and the toyfaces generator."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pivq.data import (
    BINARY_ATTRIBUTES,
    FACTORS,
    PreparedDataset,
    derive_binary,
    load_face_attributes,
    prepare_toyfaces,
    render_toyfaces,
    rules_markdown,
    write_prepared,
)
from pivq.data.toyfaces import _face_attributes, attribute_table, sample_factors

FIXTURES = Path(__file__).parent / "fixtures" / "ffhq-features"  # real FFHQ-features annotation files

# ------------------------------------------------------------------------------------------ toyfaces


def test_render_is_deterministic_and_independent_of_batching():
    images, table, faces = render_toyfaces(100, 32, seed=3)
    again, table_again, faces_again = render_toyfaces(100, 32, seed=3)
    assert images.dtype == np.uint8 and images.shape == (100, 32, 32, 3)
    assert images.tobytes() == again.tobytes()
    assert table.equals(table_again) and faces == faces_again
    # Image i depends only on (seed, i): a smaller batch or a later start gives the same bytes.
    assert render_toyfaces(10, 32, seed=3)[0].tobytes() == images[:10].tobytes()
    later, later_table, later_faces = render_toyfaces(5, 32, seed=3, start=40)
    assert later.tobytes() == images[40:45].tobytes()
    assert later_table.equals(table.iloc[40:45].reset_index(drop=True)) and later_faces == faces[40:45]
    assert not np.array_equal(render_toyfaces(10, 32, seed=4)[0], images[:10])


@pytest.mark.parametrize("resolution", [16, 24, 64, 256])
def test_render_any_resolution(resolution):
    images, _, _ = render_toyfaces(2, resolution, seed=0)
    assert images.shape == (2, resolution, resolution, 3)
    assert 40 < images.mean() < 220 and images.std() > 20  # a picture, not a blank frame


def test_no_two_images_are_equal():
    images = render_toyfaces(300, 16, seed=0)[0]
    assert len({im.tobytes() for im in images}) == 300


def test_factor_marginals_match_probabilities():
    n = 4000
    p = sample_factors(n, seed=0)
    for name, probs in FACTORS.items():
        observed = np.bincount(p[name], minlength=len(probs)) / n
        # 0.03 is over 4 standard errors for any probability at n = 4000.
        np.testing.assert_allclose(observed, list(probs.values()), atol=0.03, err_msg=name)
    # Independence spot check: smile rate the same for both genders.
    male = p["gender"] == 1
    assert abs(p["smile"][male].mean() - p["smile"][~male].mean()) < 0.05


def test_face_attributes_follow_the_factors():
    p = sample_factors(2000, seed=1)
    table, binary, categorical = attribute_table(p, _face_attributes(p))
    values = {name: np.array(list(FACTORS[name]))[p[name]] for name in FACTORS}
    assert binary[: len(BINARY_ATTRIBUTES)] == BINARY_ATTRIBUTES
    expected = {
        "gender_male": values["gender"] == "male",
        "age_young": values["age_group"] == "young",
        "age_middle": values["age_group"] == "middle",
        "age_senior": values["age_group"] == "senior",
        "is_happy": values["smile"] == "yes",
        "has_beard": values["beard"] == "yes",
        "has_moustache": values["moustache"] == "yes",
        "bald": values["hair_style"] == "bald",
        "eye_makeup": values["eye_makeup"] == "yes",
        "lip_makeup": values["lip_makeup"] == "yes",
        "glasses": values["glasses_type"] != "none",
        "sunglasses": values["glasses_type"] == "sunglasses",
        "head_pose_frontal": values["pose"] == "frontal",
        "hat": values["hat"] == "yes",
        "skin_dark": values["skin_tone"] == "dark",
        "bg_pink": values["background"] == "pink",
    }
    for colour in ("black", "brown", "blond", "gray", "red"):
        expected[f"hair_{colour}"] = (values["hair_color"] == colour) & (values["hair_style"] != "bald")
    for name, truth in expected.items():
        np.testing.assert_array_equal(table[name].to_numpy(), truth.astype(int), err_msg=name)
    assert categorical == [name for name in FACTORS if len(FACTORS[name]) > 2]
    assert (table["hair_style"] == values["hair_style"]).all()


def test_every_factor_value_is_visible():
    """Any two values of a factor give mean images that differ clearly somewhere.

    Pairwise rather than one-vs-rest: an ordinal middle value (age "middle") lies between its
    neighbours, so one-vs-rest would hide it. With random labels the same statistic stays near 12.
    """
    n = 3000
    p = sample_factors(n, seed=2)
    images = render_toyfaces(n, 32, seed=2)[0].astype(np.float32)
    for name, values in FACTORS.items():
        means = [images[p[name] == code].mean(axis=0) for code in range(len(values))]
        for a, b in itertools.combinations(range(len(values)), 2):
            gap = np.abs(means[a] - means[b]).max()
            pair = f"{name}: {list(values)[a]} vs {list(values)[b]}"
            assert gap > 18, f"{pair}: largest mean-image difference {gap:.1f} / 255"


def test_prepare_toyfaces(tmp_path):
    out = tmp_path / "toy"
    manifest_path = prepare_toyfaces(out, resolution=16, n_train=30, n_test=10, seed=5)
    assert manifest_path == out / "manifest.json"
    data = PreparedDataset(out)
    data.verify()
    assert len(data) == 40 and data.name == "toyfaces" and data.resolution == 16
    assert data.manifest["counts"] == {"train": 30, "test": 10}
    assert data.manifest["params"]["seed"] == 5
    np.testing.assert_array_equal(data.indices("train"), np.arange(30))
    np.testing.assert_array_equal(data.indices("test"), np.arange(30, 40))
    images, table, _ = render_toyfaces(40, 16, seed=5)
    assert np.array_equal(data.images, images)
    assert (data.attributes["hair_color"].to_numpy() == table["hair_color"].to_numpy()).all()
    assert set(BINARY_ATTRIBUTES) <= set(data.binary_attributes)
    preview = Image.open(out / "preview.png")
    assert min(preview.size) >= 256
    assert sorted(f.name for f in out.iterdir()) == [
        "attributes.csv", "images.npy", "manifest.json", "preview.png", "split.csv"]


# ---------------------------------------------------------------------------------- prepared format


def _small_dataset(n: int = 6, res: int = 8) -> dict:
    rng = np.random.default_rng(0)
    attributes = pd.DataFrame({
        "smiling": [1, 0, np.nan, 1, 0, 1][:n],
        "tall": [0, 0, 1, 1, 0, 1][:n],
        "colour": ["red", None, "NA", "blue", "red", "blue"][:n],
    })
    return dict(
        name="tiny", images=rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8), count=n, resolution=res,
        attributes=attributes, split=["train"] * (n - 2) + ["test"] * 2, binary_attributes=["smiling", "tall"],
        categorical_attributes=["colour"], source={"origin": "test"}, params={"k": 1},
    )


def test_prepared_round_trip(tmp_path):
    spec = _small_dataset()
    # Images may also come as an iterable of chunks.
    chunks = (spec["images"][a:a + 4] for a in range(0, 6, 4))
    manifest_path = write_prepared(tmp_path / "tiny", **{**spec, "images": chunks})
    for path in (tmp_path / "tiny", manifest_path):
        data = PreparedDataset(path)
        assert isinstance(data.images, np.memmap) and np.array_equal(data.images, spec["images"])
        assert len(data) == 6 and data.name == "tiny" and data.resolution == 8
        assert data.binary_attributes == ["smiling", "tall"] and data.categorical_attributes == ["colour"]
        assert list(data.attributes.index) == list(range(6))
        smiling = data.attributes["smiling"]
        assert smiling.dtype == float and smiling.isna().tolist() == [False, False, True, False, False, False]
        colour = data.attributes["colour"]  # only empty cells are unknown: "NA" is a category
        assert colour.iloc[0] == "red" and pd.isna(colour.iloc[1]) and colour.iloc[2] == "NA"
        np.testing.assert_array_equal(data.indices("train"), np.arange(4))
        assert data.indices("test").dtype == np.int64 and data.split.tolist()[-1] == "test"
        with pytest.raises(ValueError, match="split"):
            data.indices("val")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format"] == "pivq-prepared-v1" and manifest["counts"] == {"train": 4, "test": 2}
    assert set(manifest["files"]) == {"images.npy", "attributes.csv", "split.csv"}
    assert (tmp_path / "tiny" / "attributes.csv").read_text().splitlines()[1:4] == [
        "0,1,0,red", "1,0,0,", "2,,1,NA"]
    PreparedDataset(tmp_path / "tiny").verify()


@pytest.mark.parametrize("change, culprit", [
    ({"images": np.zeros((6, 8, 8, 3), np.float32)}, "images"),
    ({"images": np.zeros((6, 8, 9, 3), np.uint8)}, "images"),
    ({"images": np.zeros((5, 8, 8, 3), np.uint8)}, "images"),
    ({"split": ["train"] * 5 + ["val"]}, "split"),
    ({"split": ["train"] * 5}, "split"),
    ({"attributes": pd.DataFrame({"smiling": [1] * 5, "tall": [0] * 5, "colour": ["a"] * 5})}, "attributes"),
    ({"attributes": pd.DataFrame({"smiling": [1, 2, 0, 0, 0, 0], "tall": [0] * 6, "colour": ["a"] * 6})},
     "smiling"),
    ({"binary_attributes": ["smiling", "wide"]}, "wide"),
])
def test_write_prepared_names_the_culprit(tmp_path, change, culprit):
    with pytest.raises(ValueError, match=culprit):
        write_prepared(tmp_path / "bad", **{**_small_dataset(), **change})
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_missing_file_is_named(tmp_path):
    write_prepared(tmp_path / "tiny", **_small_dataset())
    (tmp_path / "tiny" / "split.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"split\.csv.*preparation"):
        PreparedDataset(tmp_path / "tiny")
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        PreparedDataset(tmp_path / "nowhere")


def test_verify_detects_a_modified_file(tmp_path):
    write_prepared(tmp_path / "tiny", **_small_dataset())
    data = PreparedDataset(tmp_path / "tiny")
    with open(tmp_path / "tiny" / "images.npy", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(ValueError, match=r"images\.npy"):
        data.verify()
    data.verify(("attributes.csv", "split.csv"))  # only the files asked for (the probe reads no pixels)
    with pytest.raises(ValueError, match=r"images\.npy"):
        data.verify(("images.npy",))


def test_failed_write_leaves_no_partial_files(tmp_path):
    spec = _small_dataset()

    def chunks():
        yield spec["images"][:3]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_prepared(tmp_path / "tiny", **{**spec, "images": chunks()})
    assert list((tmp_path / "tiny").iterdir()) == []
    # Rewriting over a complete dataset and failing leaves it marked incomplete, not silently mixed.
    write_prepared(tmp_path / "tiny", **spec)
    with pytest.raises(RuntimeError):
        write_prepared(tmp_path / "tiny", **{**spec, "images": chunks()})
    assert not list((tmp_path / "tiny").glob(".*tmp*"))
    with pytest.raises(FileNotFoundError, match="manifest"):
        PreparedDataset(tmp_path / "tiny")


# ------------------------------------------------------------------------------------ FFHQ attributes


def test_derive_binary_on_real_annotations():
    assert load_face_attributes(FIXTURES / "00036.json") is None  # no face detected

    baby = derive_binary(load_face_attributes(FIXTURES / "00000.json"))
    assert list(baby) == BINARY_ATTRIBUTES
    assert baby["gender_male"] == 0 and baby["age_young"] == 1 and baby["age_senior"] == 0
    assert baby["is_happy"] == 0 and baby["glasses"] == 0 and baby["bald"] == 0
    assert baby["hair_brown"] == 1 and baby["hair_blond"] == 0
    assert baby["head_pose_frontal"] == 0  # yaw 15.3

    # Two faces: the larger (75x75, age 52, reading glasses) wins over the 56x50 child in the background.
    face = load_face_attributes(FIXTURES / "03130.json")
    assert face["age"] == 52.0
    senior = derive_binary(face)
    assert senior["age_senior"] == 1 and senior["age_middle"] == 0
    assert senior["glasses"] == 1 and senior["sunglasses"] == 0
    assert senior["lip_makeup"] == 1 and senior["eye_makeup"] == 0 and senior["is_happy"] == 0
    # black and brown tie at 0.97: the first listed wins.
    assert senior["hair_black"] == 1 and senior["hair_brown"] == 0


def test_hair_rules_for_bald_hidden_and_other():
    face = load_face_attributes(FIXTURES / "00000.json")
    bald = {**face, "hair": {**face["hair"], "bald": 0.9}}
    assert derive_binary(bald)["bald"] == 1
    assert not any(derive_binary(bald)[f"hair_{c}"] for c in ("black", "brown", "blond", "gray", "red"))
    hidden = {**face, "hair": {**face["hair"], "invisible": True}}
    assert derive_binary(hidden)["hair_brown"] == 0
    other = {**face, "hair": {**face["hair"], "hairColor": [{"color": "other", "confidence": 0.99}]}}
    assert sum(derive_binary(other)[f"hair_{c}"] for c in ("black", "brown", "blond", "gray", "red")) == 0


def test_annotation_errors_name_the_culprit(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="broken.json"):
        load_face_attributes(broken)
    faceless = tmp_path / "faceless.json"
    faceless.write_text(json.dumps([{"faceRectangle": {"width": 1, "height": 1}}]))
    with pytest.raises(ValueError, match="faceless.json.*faceAttributes"):
        load_face_attributes(faceless)
    face = load_face_attributes(FIXTURES / "00000.json")
    del face["makeup"]
    with pytest.raises(ValueError, match="makeup.eyeMakeup"):
        derive_binary(face)


def test_rules_markdown_lists_every_attribute():
    text = rules_markdown()
    assert text.startswith("| attribute | rule |")
    assert all(f"`{name}`" in text for name in BINARY_ATTRIBUTES)


def test_the_docs_state_the_rules_the_code_applies():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    assert rules_markdown() in doc, "docs/datasets.md's attribute-rule table is stale: paste pivq.data.rules_markdown()"


def _mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split()[0] and len(line.split()) >= 5:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux's /proc/self/smaps")
def test_read_rows_keeps_a_memmaps_pages_out_of_the_resident_set(tmp_path):
    """Reading a whole prepared images.npy batch by batch (encode, fidelity's reference set, training's random
    batches) through read_rows leaves at most a batch's pages mapped; plain memmap slicing keeps every page read
    resident, so RSS, which some clusters count against a job's memory, grows to the dataset's size."""
    from pivq.data import ImageRows
    from pivq.data.prepared import read_rows

    images = np.random.default_rng(0).integers(0, 256, size=(2000, 64, 64, 3), dtype=np.uint8)  # 23.4 MiB
    path = tmp_path / "images.npy"
    np.save(path, images)
    mm = np.load(path, mmap_mode="r")
    for start in range(0, len(images), 100):
        assert np.array_equal(read_rows(mm, slice(start, start + 100)), images[start:start + 100])
    rows = np.sort(np.random.default_rng(1).choice(len(images), 700, replace=False))
    view = ImageRows(mm, rows)
    assert np.array_equal(np.concatenate(list(view.batches(64))), images[rows])
    assert np.array_equal(view[5], images[rows[5]]) and np.array_equal(read_rows(mm, 7), images[7])
    assert _mapped_kib(path) < 2048, _mapped_kib(path)  # of 23.4 MiB read
    for start in range(0, len(images), 100):  # the same reads without dropping the pages: the whole file stays
        np.array(mm[start:start + 100])
    assert _mapped_kib(path) > 20 * 1024


# ------------------------------------------------------------------- FFHQ-features read as JSON defines them


def _with(face: dict, dotted: str, value) -> dict:
    """A deep copy of ``face`` with field ``dotted`` ("a.b") set to ``value``."""
    face = json.loads(json.dumps(face))
    *parents, last = dotted.split(".")
    inner = face
    for key in parents:
        inner = inner[key]
    inner[last] = value
    return face


def test_a_null_field_is_unknown_not_true():
    """JSON null is a missing value: the attributes that depend on it are None (an empty cell), never 1."""
    face = load_face_attributes(FIXTURES / "00000.json")
    known = derive_binary(face)
    cases = {
        "glasses": ["glasses", "sunglasses"],
        "headPose": ["head_pose_frontal"],  # a null group: every field in it is unknown
        "headPose.yaw": ["head_pose_frontal"],
        "makeup.eyeMakeup": ["eye_makeup"],
        "gender": ["gender_male"],
        "smile": ["is_happy"],
        "hair.invisible": ["hair_black", "hair_brown", "hair_blond", "hair_gray", "hair_red"],
        "hair.hairColor": ["hair_black", "hair_brown", "hair_blond", "hair_gray", "hair_red"],
        "hair.bald": ["bald", "hair_black", "hair_brown", "hair_blond", "hair_gray", "hair_red"],
    }
    for field, unknown in cases.items():
        derived = derive_binary(_with(face, field, None))
        assert [name for name, v in derived.items() if v is None] == unknown, field
        assert {k: v for k, v in derived.items() if k not in unknown} == {k: known[k] for k in derived
                                                                          if k not in unknown}, field
    # what is known without the null field stays known: invisible hair or a bald head sets no colour at all
    bald = _with(_with(face, "hair.invisible", None), "hair.bald", 0.9)
    assert [derive_binary(bald)[f"hair_{c}"] for c in ("black", "brown")] == [0, 0]


@pytest.mark.parametrize("age", [float("nan"), None], ids=["NaN", "null"])
def test_nan_or_null_age_is_unknown_in_all_three_age_columns(age):
    derived = derive_binary(_with(load_face_attributes(FIXTURES / "00000.json"), "age", age))
    assert (derived["age_young"], derived["age_middle"], derived["age_senior"]) == (None, None, None)
    assert derived["hair_brown"] == 1 and derived["gender_male"] == 0  # the rest as read


@pytest.mark.parametrize("field, value, message", [
    ("makeup.eyeMakeup", "false", r"'makeup\.eyeMakeup' of faceAttributes is the string 'false', expected a JSON "
                                  r"boolean"),
    ("makeup.lipMakeup", 1, r"'makeup\.lipMakeup' .* the number 1, expected a JSON boolean"),
    ("hair.invisible", "true", r"'hair\.invisible' .* the string 'true'"),
    ("age", "52", r"'age' of faceAttributes is the string '52', expected a number"),
    ("smile", True, r"'smile' of faceAttributes is the boolean True, expected a number"),
    ("headPose.yaw", float("inf"), r"'headPose\.yaw' of faceAttributes is inf, expected a finite number"),
    ("gender", 1, r"'gender' of faceAttributes is the number 1, expected a string"),
    ("facialHair", [], r"faceAttributes lacks field 'facialHair\.beard'"),
    ("hair.hairColor", {"brown": 0.9}, r"'hair\.hairColor' of faceAttributes is the object .*expected an array"),
    ("hair.hairColor", [{"color": "brown", "confidence": "high"}],
     r"'hair\.hairColor\[0\]\.confidence' of faceAttributes is the string 'high', expected a number"),
    ("hair.hairColor", [{"confidence": 0.9}], r"faceAttributes lacks field 'hair\.hairColor\[0\]\.color'"),
    ("hair.hairColor", ["brown"], r"'hair\.hairColor\[0\]' of faceAttributes is the string 'brown'"),
], ids=["eyeMakeup-string", "lipMakeup-number", "invisible-string", "age-string", "smile-boolean", "yaw-inf",
        "gender-number", "facialHair-array", "hairColor-object", "confidence-string", "color-missing",
        "hairColor-entry-string"])
def test_a_field_of_the_wrong_type_is_named(field, value, message):
    """A string is not a boolean (nor a number): refused, naming the field, rather than read as true."""
    from pivq.data.ffhq_attributes import AnnotationError

    with pytest.raises(AnnotationError, match=message):
        derive_binary(_with(load_face_attributes(FIXTURES / "00000.json"), field, value))


# ----------------------------------------------------------------------------- prepared format: the manifest


@pytest.mark.parametrize("damage, message", [
    ("drop images.npy", r"\"files\" lacks the entry 'images\.npy'"),
    ("drop attributes.csv", r"\"files\" lacks the entry 'attributes\.csv'"),
    ("drop split.csv", r"\"files\" lacks the entry 'split\.csv'"),
    ("not a sha256", r"\"files\"\.images\.npy is 'abc', not a sha256"),
    ("no files", r"no \"files\" object"),
], ids=["no-images.npy", "no-attributes.csv", "no-split.csv", "not-a-sha256", "no-files"])
def test_a_manifest_lacking_a_files_entry_is_refused_on_open(tmp_path, damage, message):
    """Without its entry a file's hash check would be skipped: the manifest must vouch for all three."""
    manifest_path = write_prepared(tmp_path / "tiny", **_small_dataset())
    manifest = json.loads(manifest_path.read_text())
    if damage == "no files":
        del manifest["files"]
    elif damage == "not a sha256":
        manifest["files"]["images.npy"] = "abc"
    else:
        del manifest["files"][damage.split()[1]]
    manifest_path.write_text(json.dumps(manifest))
    for verify in (False, True):
        with pytest.raises(ValueError, match=re.escape(str(manifest_path)) + ": " + message):
            PreparedDataset(tmp_path / "tiny", verify=verify)


def test_preparation_removes_the_temporaries_a_killed_one_left(tmp_path, caplog):
    """write_prepared (every preparation, toyfaces too) first deletes its outputs' and the preview's leftover
    temporary files, logged; other hidden files stay."""
    out = tmp_path / "tiny"
    out.mkdir()
    stale = [out / ".images.npy.abcdefgh.tmp.npy", out / ".manifest.json.k3_x9q0z.tmp",
             out / ".preview.png.a_b_c_d_.tmp.png"]
    kept = [out / ".images.npy.short.tmp", out / ".notes.txt.abcdefgh.tmp"]
    for path in stale + kept:
        path.write_text("x")
    with caplog.at_level(logging.INFO, logger="pivq.data"):
        write_prepared(out, **_small_dataset())
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    assert all(f"removed {path}, left by a killed earlier attempt" in caplog.text for path in stale)
    PreparedDataset(out, verify=True)


def test_dvcignore_keeps_pivq_temporaries_out_of_dvc():
    """`dvc add data` must not version a killed job's hidden temporaries (DVC reads .dvcignore as gitignore)."""
    dvc_ignore = pytest.importorskip("dvc.ignore")  # DVC's own matcher, as `dvc add` and `dvc check-ignore` use it
    repo = Path(__file__).resolve().parents[1]
    lines = [line.strip() for line in (repo / ".dvcignore").read_text().splitlines()]
    patterns = dvc_ignore.DvcIgnorePatterns([line for line in lines if line and not line.startswith("#")],
                                            str(repo), os.sep)
    folder = str(repo / "data" / "ffhq256")
    ignored = [".images.npy.abcdefgh.tmp.npy", ".attributes.csv.k3_x9q0z.tmp", ".manifest.json.abcdefgh.tmp",
               ".preview.png.abcdefgh.tmp.png", ".decoded.abcdefgh.tmp", ".latest.pt.abcdefgh.tmp"]
    kept = ["images.npy", "attributes.csv", "split.csv", "manifest.json", "preview.png", "extractor.pt"]
    for name in ignored:
        assert patterns.matches(folder, name), name
    for name in kept:
        assert not patterns.matches(folder, name), name


@pytest.mark.parametrize("key", ["n_train", "n_test"])
def test_toyfaces_params_need_both_splits(params_copy, key):
    """toyfaces' split is n_train then n_test images: both must be at least 1, checked before any job."""
    from pivq.config import ParamsError, validate_params

    params_copy["datasets"]["toyfaces32"][key] = 0
    with pytest.raises(ParamsError, match=rf"datasets\.toyfaces32\.{key}: 0 "):
        validate_params(params_copy)


def test_toyfaces_called_with_an_empty_split_is_refused(tmp_path):
    """Outside params.yaml's schema too (a direct call): no test images is refused before anything is written."""
    from pivq.data.images import EmptySplitError

    with pytest.raises(EmptySplitError, match="n_test=0"):
        prepare_toyfaces(tmp_path, resolution=16, n_train=10, n_test=0, seed=0)
    assert not any(tmp_path.iterdir())
