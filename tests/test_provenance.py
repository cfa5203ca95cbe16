"""Every stage checks that what it reads belongs to the experiment it runs for (the rules pass each stage its
experiment's training spec): a model of another preset, experiment or dataset, codes of another run or of another
L or K, shards of another experiment or sample set, a metrics file copied from another experiment's folder are
refused, naming the file and what differs. And outputs honour the umask."""

from __future__ import annotations

import copy
import json
import os
import stat

import numpy as np
import pytest
from tiny_model import TINY_MODEL

from pivq import stages
from pivq.model.checkpoint import save_model

SAMPLE = {"n": 12, "shards": 2, "seed": 3, "batch_size": 6}
SPEC = {"name": "toy_matching", "model": dict(TINY_MODEL), "quantizer": "matching",
        "schedule": {"vq_beta": 0.25, "vq_loss": "unleashing"}}


@pytest.fixture
def spec():
    return copy.deepcopy(SPEC)


@pytest.fixture
def model_of(make_model, toyfaces16, tmp_path):
    """model_of(run, experiment="toy_matching", **model overrides) -> a model.pt as training writes it: its meta
    names the experiment, the run and the dataset files it was trained on."""
    from pivq.data import PreparedDataset

    files = PreparedDataset(toyfaces16).manifest["files"]

    def write(run: str, experiment: str = "toy_matching", **overrides):
        path = tmp_path / f"model-{run}.pt"
        model = make_model(**overrides)
        save_model(path, model, model, meta={"experiment": experiment, "run": run,
                                             "identity": {"dataset_files": files}})
        return path

    return write


def test_encode_refuses_a_model_of_another_preset_experiment_or_dataset(model_of, spec, toyfaces16, tmp_path):
    other_preset = model_of("a", codes=4)
    with pytest.raises(ValueError, match=rf"{other_preset} was trained with another model configuration .*codes 4"):
        stages.encode_dataset(other_preset, toyfaces16, tmp_path / "codes.npz", spec=spec)
    other_experiment = model_of("b", experiment="toy_nearest")
    with pytest.raises(ValueError, match=rf"{other_experiment} was trained for experiment 'toy_nearest', not "
                                         "'toy_matching'"):
        stages.encode_dataset(other_experiment, toyfaces16, tmp_path / "codes.npz", spec=spec)
    from pivq.data import prepare_toyfaces

    other_data = tmp_path / "other_data"
    prepare_toyfaces(other_data, resolution=16, n_train=20, n_test=10, seed=1)
    with pytest.raises(ValueError, match=rf"{model_of('c')} was trained on other data than {other_data}"):
        stages.encode_dataset(model_of("c"), other_data, tmp_path / "codes.npz", spec=spec)
    assert not (tmp_path / "codes.npz").exists()


def test_codes_of_another_run_or_shape_are_refused_naming_both_files(model_of, spec, toyfaces16, tmp_path):
    model_a, model_b = model_of("run-a"), model_of("run-b")
    codes = tmp_path / "codes.npz"
    stages.encode_dataset(model_a, toyfaces16, codes, spec=spec)
    stages.sample_shard(model_a, codes, SAMPLE, 0, tmp_path / "shard-0.npz", spec=spec)  # its own run: fine
    with pytest.raises(ValueError, match=rf"{codes} does not belong here \(run 'run-a' there, 'run-b' expected, "
                                         rf"from {model_b}\)"):
        stages.sample_shard(model_b, codes, SAMPLE, 0, tmp_path / "shard-x.npz", spec=spec)
    with pytest.raises(ValueError, match=rf"{codes} does not belong here"):
        stages.interpolation_figure_data(model_b, codes, toyfaces16, {"pairs": 1, "paths": 1, "steps": 3, "seed": 0},
                                         tmp_path / "paths.npz", spec=spec)
    bigger = {**spec, "model": {**spec["model"], "codebook_size": 64}}
    for stage in (lambda: stages.capacity("toy_matching", "toyfaces16", "matching", codes, tmp_path / "c.json",
                                          spec=bigger),
                  lambda: stages.rate("toy_matching", "toyfaces16", codes, tmp_path / "r.json", spec=bigger)):
        with pytest.raises(ValueError, match=r"codebook_size 32 there, 64 expected, from experiments.toy_matching"):
            stage()
    other = {**spec, "name": "toy_nearest"}
    with pytest.raises(ValueError, match=r"experiment 'toy_matching' there, 'toy_nearest' expected"):
        stages.probe("toy_nearest", "toyfaces16", {"folds": 2, "seed": 0}, codes, toyfaces16, tmp_path / "p.json",
                     spec=other)
    assert not any((tmp_path / f).exists() for f in ("shard-x.npz", "paths.npz", "c.json", "r.json", "p.json"))


def test_fidelity_refuses_shards_of_another_experiment_run_or_sample_set(model_of, spec, toyfaces16, tmp_path,
                                                                         params):
    from pivq.sample import check_shards

    model_a, model_b = model_of("run-a"), model_of("run-b")
    codes = tmp_path / "codes.npz"
    stages.encode_dataset(model_a, toyfaces16, codes)
    shards = [tmp_path / f"shard-{k}.npz" for k in range(2)]
    for k, shard in enumerate(shards):
        stages.sample_shard(model_a, codes, SAMPLE, k, shard)
    assert check_shards(shards, experiment="toy_matching") == "run-a"
    kwargs = dict(name="toy_nearest", dataset_name="toyfaces16", metrics={"n_real": 20, "reference": "all",
                  "reference_rows": "first", "nearest_k": 3, "batch_size": 10, "seed": 0},
                  extractor=params["datasets"]["toyfaces32"]["feature_extractor"],
                  dataset_dir=toyfaces16, extractor_weights=tmp_path / "no-extractor.pt",
                  out_path=tmp_path / "fidelity.json", spec={**spec, "name": "toy_nearest"})
    with pytest.raises(ValueError, match=rf"{shards[0]} holds samples of experiment 'toy_matching', not 'toy_nearest'"):
        stages.fidelity(shard_paths=shards, **kwargs)
    with pytest.raises(ValueError, match=r"not the set's 12 once each"):
        check_shards(shards[:1])  # a shard missing
    with pytest.raises(ValueError, match=r"not the set's 12 once each"):
        check_shards([shards[0], shards[0], shards[1]])  # one twice
    other_run = tmp_path / "other" / "shard-1.npz"
    stages.sample_shard(model_b, codes, SAMPLE, 1, other_run)
    with pytest.raises(ValueError, match=rf"{other_run} is not of the same sample set as {shards[0]} \(run 'run-b' "
                                         rf"there, 'run-a' in {shards[0]}\)"):
        check_shards([shards[0], other_run])
    assert not (tmp_path / "fidelity.json").exists()


def test_the_report_refuses_a_metrics_file_of_another_experiment(tmp_path):
    from pivq.report import metrics_json

    folder = tmp_path / "toy_matching"
    folder.mkdir()
    (folder / "training.json").write_text(json.dumps({"experiment": "toy_nearest", "steps": 10}))
    with pytest.raises(ValueError, match=rf"{folder / 'training.json'} holds the metrics of experiment "
                                         r"'toy_nearest', not 'toy_matching'"):
        metrics_json(tmp_path, "toy_matching", "training.json")
    (folder / "training.json").write_text(json.dumps({"experiment": "toy_matching", "steps": 10}))
    assert metrics_json(tmp_path, "toy_matching", "training.json")["steps"] == 10


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_honour_the_umask(umask, tmp_path):
    """Every output goes through atomic_path: its mode is what a plain open would give, not mkstemp's 0600."""
    from pivq.io import atomic_path, write_json

    previous = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_path(tmp_path / "b.npy", suffix=".npy") as tmp:
            np.save(tmp, np.zeros(3))
    finally:
        os.umask(previous)
    for name in ("a.json", "b.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_stages_that_need_a_split_refuse_an_empty_one(model_of, make_experiment, toyfaces16, tmp_path, monkeypatch):
    """Training refuses a set without test images before its first step (its test-L1 evaluation would fail
    after hours), and the measured rate codes without a test split (it used to write NaN bits, roundtrip_ok)."""
    from pivq.data import PreparedDataset
    from pivq.encode import load_codes, save_codes

    codes = tmp_path / "codes.npz"
    stages.encode_dataset(model_of("a"), toyfaces16, codes)
    all_codes, split, K = load_codes(codes)
    train_only = tmp_path / "train-only.npz"
    save_codes(train_only, all_codes, np.full(len(split), "train"), K)
    with pytest.raises(ValueError, match=rf"{train_only} holds no test code sets"):
        stages.rate("toy_matching", "toyfaces16", train_only, tmp_path / "rate.json")

    indices = PreparedDataset.indices
    monkeypatch.setattr(PreparedDataset, "indices",
                        lambda self, s: indices(self, s)[:0] if s == "test" else indices(self, s))
    with pytest.raises(ValueError, match=r"has 0 test images; the test-L1 evaluation after training needs"):
        stages.train_model(make_experiment(), toyfaces16, tmp_path / "run", tmp_path / "t.json", tmp_path / "t.csv")
    assert not (tmp_path / "rate.json").exists() and not (tmp_path / "run" / "options.json").exists()
