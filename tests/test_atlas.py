"""The code atlas: which codes are swapped for which, the images chosen, the decodes, the npz and its figure."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from pivq.analysis.atlas import (
    DIRECTIONS,
    AtlasPlan,
    code_association,
    decode_atlas,
    known_labels,
    plan_atlas,
    swap_codes,
)

K, L = 20, 4


def _dataset(n: int = 240, seed: int = 0):
    """Matching-style sets of L distinct codes; ``wide`` holds when code 3 or 4 is present, ``narrow`` when code 7
    is; the first 3/4 of the images are train, the rest test."""
    rng = np.random.default_rng(seed)
    codes = np.stack([np.sort(rng.permutation(K)[:L]) for _ in range(n)])
    attributes = pd.DataFrame({"wide": np.isin(codes, [3, 4]).any(axis=1).astype(float),
                               "narrow": np.isin(codes, [7]).any(axis=1).astype(float)})
    split = np.array(["train"] * (3 * n // 4) + ["test"] * (n - 3 * n // 4))
    return codes, split, attributes


def _entry(name, accuracy, baseline, positive, negative):
    return {"name": name, "accuracy_mean": accuracy, "accuracy_std": 0.01, "baseline": baseline,
            "top_positive_codes": [{"code": c, "weight": w} for c, w in positive],
            "top_negative_codes": [{"code": c, "weight": w} for c, w in negative]}


PROBE = {"folds": 5, "attributes": [
    _entry("narrow", 0.95, 0.80, [(7, 2.0), (11, 0.5)], [(1, -0.7), (2, -0.6)]),  # gain 0.15
    _entry("wide", 0.90, 0.60, [(3, 2.5), (4, 2.4), (9, 0.1)], [(12, -0.9), (13, -0.8), (14, -0.5)]),  # 0.30
]}


def _plan(probe: dict = PROBE, **overrides) -> AtlasPlan:
    codes, split, attributes = _dataset()
    settings = {"n_attributes": 2, "n_images": 3, "n_codes": 1, "seed": 0, **overrides}
    return plan_atlas(codes, split, attributes, probe, K, **settings)


# --- the relation of codes to an attribute, and one swap ---------------------------------------------------------


def test_code_association_by_hand():
    codes = np.array([[0, 1], [0, 2], [1, 1], [2, 3]])  # row 2 repeats code 1: counts once
    labels = np.array([1, 1, 0, -1])  # row 3 unknown: left out
    assoc = code_association(codes, labels, 5)
    # P(present | 1): 0 -> 1, 1 -> 1/2, 2 -> 1/2; P(present | 0): 1 -> 1
    np.testing.assert_allclose(assoc, [1.0, -0.5, 0.5, 0.0, 0.0])


def test_known_labels_marks_unknown_and_refuses_non_binary():
    labels = known_labels(pd.Series([1.0, np.nan, 0.0, 1.0], name="smiling"))
    assert labels.tolist() == [1, -1, 0, 1]
    with pytest.raises(ValueError, match="'age' is not binary"):
        known_labels(pd.Series([0, 1, 2], name="age"))


def test_swap_replaces_the_least_related_entry_with_the_first_absent_code():
    relation = np.array([0.9, 0.1, 0.5, 0.1, 0.8, 0.0, 0.0, 0.0])
    new, came, went = swap_codes(np.array([0, 1, 3, 4]), incoming=[4, 6, 7], relation=relation, count=1)
    # 4 is already in the set (skipped); 1 and 3 tie on relation 0.1: the lower code leaves
    assert came.tolist() == [6] and went.tolist() == [1]
    assert new.tolist() == [0, 6, 3, 4]
    new, came, went = swap_codes(np.array([0, 1, 3, 4]), incoming=[6, 6, 7], relation=relation, count=2)
    assert came.tolist() == [6, 7] and sorted(went.tolist()) == [1, 3] and sorted(new.tolist()) == [0, 4, 6, 7]


def test_swap_into_a_multiset_replaces_entries():
    """A nearest-neighbour set may repeat a code: one entry goes, the code may stay through its other copies."""
    relation = np.zeros(8)
    new, came, went = swap_codes(np.array([2, 2, 2, 5]), incoming=[2, 6], relation=relation, count=1)
    assert came.tolist() == [6] and went.tolist() == [2]
    assert sorted(new.tolist()) == [2, 2, 5, 6]


def test_swap_needs_enough_absent_codes():
    with pytest.raises(ValueError, match="only 1 of the incoming codes"):
        swap_codes(np.array([0, 1, 2, 3]), incoming=[1, 5], relation=np.zeros(8), count=2)


# --- the plan -----------------------------------------------------------------------------------------------------


def test_plan_picks_by_gain_and_swaps_the_top_codes_in():
    codes, split, attributes = _dataset()
    plan = _plan()
    assert plan.attributes == ["wide", "narrow"]  # the larger gain over the baseline first
    assert plan.image_index.shape == (2, 2, 3) and plan.swapped_codes.shape == (2, 2, 3, L)
    test = set(np.flatnonzero(split == "test"))
    for a, name in enumerate(plan.attributes):
        entry = next(e for e in PROBE["attributes"] if e["name"] == name)
        for d, direction in enumerate(DIRECTIONS):
            ranked = [e["code"] for e in entry["top_positive_codes" if direction == "add" else "top_negative_codes"]]
            for i in range(3):
                index = int(plan.image_index[a, d, i])
                assert index in test
                assert attributes[name][index] == (0 if direction == "add" else 1)  # add edits label-0 images
                original, swapped = plan.original_codes[a, d, i], plan.swapped_codes[a, d, i]
                assert original.tolist() == codes[index].tolist()
                came, went = int(plan.swapped_in[a, d, i, 0]), int(plan.swapped_out[a, d, i, 0])
                assert came == next(c for c in ranked if c not in original)  # the best code not already there
                assert came in swapped and came not in original and went in original
                assert len(set(swapped.tolist())) == L  # still a set
                assert sorted(set(original.tolist()) - {went} | {came}) == sorted(swapped.tolist())


def test_plan_removes_the_entry_least_related_to_the_attribute():
    codes, split, attributes = _dataset()
    plan = _plan(n_codes=2)
    train = split == "train"
    for a, name in enumerate(plan.attributes):
        labels = attributes[name].to_numpy().astype(int)
        relation = np.abs(code_association(codes[train], labels[train], K))
        for d in range(2):
            for i in range(3):
                original = plan.original_codes[a, d, i]
                went = plan.swapped_out[a, d, i]
                kept = np.setdiff1d(original, went)
                assert relation[went].max() <= relation[kept].min()


def test_plan_is_deterministic_and_follows_the_seed():
    first, again = _plan(), _plan()
    for key in ("image_index", "swapped_codes", "swapped_in", "swapped_out"):
        np.testing.assert_array_equal(getattr(first, key), getattr(again, key))
    other = _plan(seed=1)
    assert not np.array_equal(first.image_index, other.image_index)


def test_plan_passes_over_an_attribute_without_enough_test_images():
    codes, split, attributes = _dataset()
    attributes = attributes.copy()
    test = np.flatnonzero(split == "test")
    attributes.loc[test, "wide"] = 0.0  # no test image has it: nothing to remove it from
    plan = plan_atlas(codes, split, attributes, PROBE, K, n_attributes=2, n_images=3, n_codes=1, seed=0)
    assert plan.attributes == ["narrow"]
    attributes.loc[test, "narrow"] = np.nan  # unknown labels are no candidates either
    with pytest.raises(ValueError, match=r"no attribute has 3 eligible test images.*wide \(remove: 0"):
        plan_atlas(codes, split, attributes, PROBE, K, n_attributes=2, n_images=3, n_codes=1, seed=0)


def test_plan_rejects_an_unknown_attribute_by_name():
    probe = copy.deepcopy(PROBE)
    probe["attributes"][1]["name"] = "wings"
    with pytest.raises(KeyError, match="'wings'"):
        _plan(probe=probe)


@pytest.mark.parametrize("code", [K, -1])
def test_plan_rejects_a_code_outside_the_codebook(code):
    probe = copy.deepcopy(PROBE)
    probe["attributes"][0]["top_negative_codes"][1]["code"] = code
    with pytest.raises(ValueError, match=rf"'narrow'.*top_negative_codes holds code {code}.*0\.\.{K - 1}"):
        _plan(probe=probe)


def test_plan_rejects_more_codes_than_a_set_holds():
    with pytest.raises(ValueError, match="exceeds the set size"):
        _plan(n_codes=L + 1)


# --- decoding, the stage and the figure --------------------------------------------------------------------------


def test_decode_gives_the_reconstruction_and_a_different_swapped_image(make_model, one_thread):
    model = make_model(codebook_size=K, codes=L)
    plan = _plan(n_codes=2)
    atlas = decode_atlas(model, plan, batch_size=5)  # batches cut across originals and swaps
    assert atlas["original"].dtype == np.uint8 and atlas["original"].shape == (2, 2, 3, 16, 16, 3)
    with torch.no_grad():
        direct = model.decode_indices(torch.from_numpy(plan.original_codes[1, 0]))
    expected = (direct.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # a [0, 1] model
    np.testing.assert_array_equal(atlas["original"][1, 0], expected)
    change = np.abs(atlas["original"].astype(int) - atlas["swapped"].astype(int)).reshape(12, -1).max(axis=1)
    assert (change > 0).all()  # every swap changes the decoded image
    assert atlas["attributes"].tolist() == ["wide", "narrow"]
    np.testing.assert_array_equal(atlas["swapped_in"], plan.swapped_in)


@pytest.fixture
def stage_inputs(toyfaces16, tmp_path, make_model):
    """A tiny model file, the codes of every toyfaces16 image and their probe.json."""
    from pivq.analysis.probe import probe_attributes
    from pivq.data import PreparedDataset
    from pivq.encode import encode_images, save_codes
    from pivq.io import write_json
    from pivq.model.checkpoint import save_model

    root = tmp_path / "inputs"
    model = make_model(pixel_range="symmetric")  # untrained: [-1, 1] inputs spread its code sets wider than [0, 1]
    save_model(root / "model.pt", model, model, meta={})
    data = PreparedDataset(toyfaces16)
    codes = encode_images(model, np.array(data.images), progress=False)
    K = model.cfg.codebook_size
    save_codes(root / "codes.npz", codes, data.split, K)
    write_json(root / "probe.json", probe_attributes(codes, K, data.attributes, list(data.binary_attributes), folds=2))
    return root


def test_stage_writes_the_atlas_npz(stage_inputs, toyfaces16, tmp_path, one_thread):
    from pivq.report import code_atlas as read_atlas
    from pivq.stages import code_atlas

    out = tmp_path / "metrics" / "toy" / "code_atlas.npz"
    settings = {"attributes": 2, "images": 2, "codes": 2, "seed": 0}
    code_atlas(stage_inputs / "model.pt", stage_inputs / "codes.npz", toyfaces16, stage_inputs / "probe.json",
               settings, out)
    assert [p.name for p in out.parent.iterdir()] == ["code_atlas.npz"]  # no temporary file left
    atlas = read_atlas(tmp_path / "metrics", "toy")
    assert atlas["original"].shape[:3] == (2, 2, 2) and atlas["swapped_in"].shape == (2, 2, 2, 2)
    assert atlas["directions"].tolist() == list(DIRECTIONS)
    code_atlas(stage_inputs / "model.pt", stage_inputs / "codes.npz", toyfaces16, stage_inputs / "probe.json",
               settings, tmp_path / "again.npz")
    with np.load(out) as a, np.load(tmp_path / "again.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def _synthetic_atlas(n_attr=2, n_img=2, m=3, res=16) -> dict:
    rng = np.random.default_rng(0)
    shape = (n_attr, 2, n_img)
    return {
        "original": rng.integers(0, 256, size=(*shape, res, res, 3), dtype=np.uint8),
        "swapped": rng.integers(0, 256, size=(*shape, res, res, 3), dtype=np.uint8),
        "attributes": np.array([f"attr_{a}" for a in range(n_attr)]),
        "directions": np.array(DIRECTIONS),
        "accuracy": np.linspace(0.9, 0.8, n_attr), "accuracy_std": np.full(n_attr, 0.01),
        "baseline": np.full(n_attr, 0.6),
        "image_index": rng.integers(0, 1000, size=shape),
        "original_codes": rng.integers(0, 4096, size=(*shape, 8)),
        "swapped_codes": rng.integers(0, 4096, size=(*shape, 8)),
        "swapped_in": rng.integers(0, 4096, size=(*shape, m)),
        "swapped_out": rng.integers(0, 4096, size=(*shape, m)),
        "weights_in": rng.normal(size=(*shape, m)),
    }


def test_figure_builds_from_a_synthetic_npz(tmp_path):
    from pivq.report.figures import build_figures

    (tmp_path / "metrics" / "toy").mkdir(parents=True)
    np.savez(tmp_path / "metrics" / "toy" / "code_atlas.npz", **_synthetic_atlas())
    written = build_figures({"toy": {}}, tmp_path / "metrics", tmp_path / "out", dpi=60)
    names = sorted(p.name for p in written)
    assert names == ["code_atlas_toy.pdf", "code_atlas_toy.png", "figure4_capacity.pdf", "figure4_capacity.png"]
    again = build_figures({"toy": {}}, tmp_path / "metrics", tmp_path / "again", dpi=60)
    assert len(again) == len(written)
    for name in ("code_atlas_toy.png", "code_atlas_toy.pdf"):  # byte-deterministic, as every figure
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


@pytest.mark.parametrize("broken,message", [
    ({"swapped_in": None}, r"missing arrays \['swapped_in'\]"),
    ({"original": np.zeros((2, 2, 2, 16, 16, 3), dtype=np.float32)}, "'original' must be uint8"),
    ({"accuracy": np.zeros(3)}, "'accuracy' has shape"),
])
def test_malformed_atlas_npz_names_the_path(tmp_path, broken, message):
    from pivq.report.figures import build_figures

    arrays = {k: v for k, v in {**_synthetic_atlas(), **broken}.items() if v is not None}
    path = tmp_path / "metrics" / "toy" / "code_atlas.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as err:
        build_figures({"toy": {}}, tmp_path / "metrics", tmp_path / "out")
    assert str(path) in str(err.value)


# --- parameters ---------------------------------------------------------------------------------------------------


def test_params_check_the_atlas_settings(params_copy):
    from pivq.config import ParamsError, validate_params

    params_copy["experiments"]["toy_matching"]["atlas"]["codes"] = 6  # the probe records 5 codes per sign
    with pytest.raises(ParamsError, match="experiments.toy_matching.atlas.codes"):
        validate_params(params_copy)
    params_copy["experiments"]["toy_matching"]["atlas"]["codes"] = 3
    del params_copy["experiments"]["toy_matching"]["atlas"]["seed"]
    with pytest.raises(ParamsError, match="'seed' is a required property"):
        validate_params(params_copy)


def test_params_reject_more_atlas_codes_than_the_set_holds(params_copy):
    from pivq.config import ParamsError, validate_params

    params_copy["models"]["toy32"]["codes"] = 2
    params_copy["experiments"]["toy_nearest"]["atlas"]["codes"] = 3
    with pytest.raises(ParamsError, match=r"toy_nearest.atlas.codes: 3 codes cannot be swapped into a set of L = 2"):
        validate_params(params_copy)
