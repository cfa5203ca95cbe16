"""params.yaml: it loads, and every kind of mistake is a ParamsError naming the dotted key path."""

from __future__ import annotations

import copy

import pytest
import yaml

from pivq.config import (
    ParamsError,
    experiments_to_build,
    load_params,
    report_experiments,
    resolve_experiment,
    validate_params,
)
from pivq.model import ModelConfig
from pivq.train import Schedule


def test_params_yaml_loads_and_resolves(params):
    assert experiments_to_build(params) == ["toy_matching", "toy_nearest"]
    for name in params["experiments"]:
        exp = resolve_experiment(params, name)
        assert exp["name"] == name
        assert exp["dataset"] == params["datasets"][exp["dataset_name"]]
        assert exp["model"] == params["models"][exp["model_name"]]
        assert exp["schedule"] == params["schedules"][exp["schedule_name"]]
        # the resolved dicts build the dataclasses the package runs on
        cfg = ModelConfig.from_dict(exp["model"], quantizer=exp["quantizer"])
        assert cfg.quantizer == exp["quantizer"] and cfg.grid * 2 ** (len(cfg.ch_mult) - 1) == cfg.resolution
        sched = Schedule.from_dict(exp["schedule"])
        assert sched.init_steps[0] == sched.quantize_start < sched.steps
    assert set(report_experiments(params)) == {"toy_matching", "toy_nearest"}
    with pytest.raises(ParamsError, match="nonexistent"):
        resolve_experiment(params, "nonexistent")


def test_load_params_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        load_params(tmp_path / "nothing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="list.yaml"):
        load_params(listing)


def test_the_file_path_is_named(params_copy, tmp_path):
    params_copy["schedules"]["toy"]["steps"] = "many"
    path = tmp_path / "broken_params.yaml"
    path.write_text(yaml.safe_dump(params_copy))
    with pytest.raises(ParamsError, match="broken_params.yaml: schedules.toy.steps"):
        load_params(path)


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    d[last] = value


def _delete(d: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    del d[last]


# (description, mutation as (dotted key, value) or ("del", dotted key), substrings the message must contain)
CASES = [
    ("wrong type", ("schedules.toy.steps", "1600"), ["schedules.toy.steps"]),
    ("wrong type in a list", ("models.toy32.ch_mult", [1, "2", 2]), ["models.toy32.ch_mult.1"]),
    ("wrong type, float for an integer", ("experiments.toy_matching.sample.n", 2.5), ["experiments.toy_matching.sample.n"]),
    ("out of range", ("schedules.toy.ema_beta", 1.0), ["schedules.toy.ema_beta"]),
    ("out of range, negative", ("experiments.toy_nearest.metrics.seed", -1), ["experiments.toy_nearest.metrics.seed"]),
    ("out of range, zero", ("models.toy32.codes", 0), ["models.toy32.codes"]),
    ("unknown key", ("models.toy32.depth", 3), ["models.toy32", "depth"]),
    ("unknown top-level key", ("experiment_sett", "embedded"), ["experiment_sett"]),
    ("unknown quantizer", ("experiments.toy_matching.quantizer", "lattice"), ["experiments.toy_matching.quantizer"]),
    ("missing required key", ("del", "schedules.toy.seed"), ["schedules.toy", "seed"]),
    ("missing dataset root", ("del", "datasets.celeba64.root"), ["datasets.celeba64", "root"]),
    ("L > K with matching", ("models.toy32.codes", 200), ["experiments.toy_matching.quantizer", "200"]),
    ("unknown dataset", ("experiments.toy_nearest.dataset", "mnist"), ["experiments.toy_nearest.dataset", "mnist"]),
    ("unknown model", ("experiments.toy_matching.model", "huge"), ["experiments.toy_matching.model", "huge"]),
    ("unknown schedule", ("experiments.celeba64.schedule", "fast"), ["experiments.celeba64.schedule", "fast"]),
    ("unknown experiment in a set", ("experiment_sets.paper", ["celeba64", "ffhq1024"]),
     ["experiment_sets.paper", "ffhq1024"]),
    ("unknown experiment set", ("experiment_set", "everything"), ["experiment_set", "everything"]),
    ("quantize_start >= steps", ("schedules.celeba64.quantize_start", 400000), ["schedules.celeba64.quantize_start"]),
    ("window longer than T_q", ("schedules.toy.init_window", 801), ["schedules.toy.init_window"]),
    ("model and dataset resolutions differ", ("models.toy32.resolution", 64), ["experiments.toy_matching",
                                                                               "models.toy32.resolution"]),
    ("heads do not divide width", ("models.toy32.heads", 5), ["models.toy32.heads"]),
    ("more shards than samples", ("experiments.toy_matching.sample.shards", 3000),
     ["experiments.toy_matching.sample.shards"]),
    ("unknown resources preset", ("experiments.toy_matching.resources", "huge"),
     ["experiments.toy_matching.resources", "huge"]),
    ("unknown dataset resources preset", ("datasets.ffhq256.resources", "huge"), ["datasets.ffhq256.resources", "huge"]),
    ("a GPU for a stage that runs no network", ("resources.celeba64.probe.gpu", 1), ["resources.celeba64.probe.gpu"]),
    ("two GPUs for one stage", ("resources.ffhq256.train.gpu", 2), ["resources.ffhq256.train.gpu"]),
    ("a GPU model without a GPU", ("resources.embedded.train.gpu_model", "h100"),
     ["resources.embedded.train.gpu_model"]),
    ("a stage missing from a preset", ("del", "resources.embedded.code_atlas"), ["resources.embedded", "code_atlas"]),
]


@pytest.mark.parametrize("description,mutation,expected", CASES, ids=[c[0] for c in CASES])
def test_invalid_params_name_the_key(params, description, mutation, expected):
    broken = copy.deepcopy(params)
    if mutation[0] == "del":
        _delete(broken, mutation[1])
    else:
        _set(broken, *mutation)
    with pytest.raises(ParamsError) as err:
        validate_params(broken, source="test.yaml")
    message = str(err.value)
    for part in expected:
        assert part in message, (description, part, message)
    assert "test.yaml" in message


def _leaves(obj, prefix: tuple = ()):
    """(dotted path as a tuple, value) of every non-mapping value; lists count as one value."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix, obj


# The named maps (experiments, models, schedules, datasets) repeat one schema per entry: the default suite tries
# one entry of each (both dataset kinds: toyfaces and the real ones differ), `-m slow` tries every key.
REPRESENTATIVE = {"experiments": "toy_matching", "models": "toy32", "schedules": "toy",
                  "datasets": ("toyfaces32", "celeba64"), "resources": "embedded"}


def _keys(params: dict, every: bool) -> list[tuple[tuple, object]]:
    keys = []
    for path, value in _leaves(params):
        chosen = REPRESENTATIVE.get(path[0])
        if every or chosen is None or len(path) < 2 or path[1] in (chosen if isinstance(chosen, tuple) else (chosen,)):
            keys.append((path, value))
    return keys


def _rejected(params: dict, path: tuple, value) -> str:
    broken = copy.deepcopy(params)
    _set(broken, ".".join(path), value)
    with pytest.raises(ParamsError) as err:
        validate_params(broken, source="test.yaml")
    return str(err.value)


@pytest.mark.parametrize("every", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["representative", "every"])
def test_every_key_with_a_wrong_type_or_out_of_range_is_named(params, every):
    """Each key of params.yaml in turn: a mapping where a value belongs (a wrong type for every key), and -1 for
    every number (below each number's range). Each is rejected with the key's dotted path in the message."""
    keys = _keys(params, every)
    assert len(keys) > 60
    for path, value in keys:
        dotted = ".".join(path)
        assert dotted in _rejected(params, path, {"wrong_type": 1}), dotted
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert dotted in _rejected(params, path, -1), dotted


def test_stage_resources_are_the_named_presets_entries(params):
    """What a job asks for comes from its experiment's (or dataset's) preset; gpu_model defaults to "" (no typed
    request), and a stage of the other kind is refused."""
    from pivq.config import stage_resources

    train = stage_resources(params, "train", experiment="celebahq256")
    assert train == {"gpu_model": "", **params["resources"]["celebahq256"]["train"]} and train["gpu"] == 1
    assert stage_resources(params, "prepare_dataset", dataset="ffhq256")["cpus"] == \
        params["resources"]["ffhq256"]["prepare_dataset"]["cpus"]
    assert all(stage_resources(params, s, experiment="toy_matching")["gpu"] == 0
               for s in ("train", "encode", "sample_shard", "interpolation_paths", "fidelity", "code_atlas"))
    with pytest.raises(ValueError, match="prepare_dataset"):
        stage_resources(params, "prepare_dataset", experiment="toy_matching")
    with pytest.raises(ValueError, match="an experiment or a dataset"):
        stage_resources(params, "train")


@pytest.mark.parametrize("section", ["experiments.toy_matching", "models.toy32", "schedules.toy",
                                     "datasets.toyfaces32", "datasets.toyfaces32.feature_extractor",
                                     "experiments.toy_matching.sample", "report.figures", "resources.embedded",
                                     "resources.embedded.train"])
def test_an_unknown_key_is_named_in_every_section(params, section):
    message = _rejected(params, (*section.split("."), "no_such_key"), 1)
    assert section in message and "no_such_key" in message, message


@pytest.mark.parametrize("key, value", [
    ("datasets.toyfaces32.feature_extractor.name", "inception-v4"),
    ("datasets.toyfaces32.kind", "imagenet"),
    ("experiments.toy_nearest.quantizer", "lattice"),
])
def test_unknown_names_of_extractor_dataset_kind_and_quantizer(params, key, value):
    message = _rejected(params, tuple(key.split(".")), value)
    assert key in message and value in message, message


def test_the_unmodified_copy_is_valid(params):
    """The cases above fail because of their mutation, not because the base is invalid."""
    base = copy.deepcopy(params)
    assert validate_params(base) is base
    assert base == params  # validation does not modify


def test_l_equal_k_and_nearest_with_l_above_k_are_fine(params):
    ok = copy.deepcopy(params)
    ok["models"]["toy32"]["codes"] = ok["models"]["toy32"]["codebook_size"]
    validate_params(ok)
    nearest_only = copy.deepcopy(params)
    nearest_only["models"]["toy32"]["codes"] = 200
    nearest_only["experiments"]["toy_matching"]["quantizer"] = "nearest"
    validate_params(nearest_only)


def test_all_errors_listed_not_only_the_first(params):
    broken = copy.deepcopy(params)
    broken["schedules"]["toy"]["steps"] = "x"
    broken["models"]["celeba64"]["nf"] = -4
    with pytest.raises(ParamsError) as err:
        validate_params(broken)
    assert "schedules.toy.steps" in str(err.value) and "models.celeba64.nf" in str(err.value)
