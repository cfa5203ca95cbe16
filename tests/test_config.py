"""params.yaml: it loads, and every kind of mistake is a ParamsError naming the dotted key path."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pivq.config import (
    ParamsError,
    StrictLoader,
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


SAMPLE_3 = {"n": 3, "shards": 1, "batch_size": 100, "seed": 1}  # three samples: no more than nearest_k = 3

# (description, mutation as (dotted key, value) or ("del", dotted key), substrings the message must contain)
CASES = [
    ("wrong type", ("schedules.toy.steps", "1600"), ["schedules.toy.steps"]),
    ("wrong type in a list", ("models.toy32.ch_mult", [1, "2", 2]), ["models.toy32.ch_mult.1"]),
    ("wrong type, float for an integer", ("experiments.toy_matching.sample.n", 2.5),
     ["experiments.toy_matching.sample.n"]),
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
    ("unknown dataset resources preset", ("datasets.ffhq256.resources", "huge"),
     ["datasets.ffhq256.resources", "huge"]),
    ("a GPU for a stage that runs no network", ("resources.celeba64.probe.gpu", 1), ["resources.celeba64.probe.gpu"]),
    ("two GPUs for one stage", ("resources.ffhq256.train.gpu", 2), ["resources.ffhq256.train.gpu"]),
    ("a GPU model without a GPU", ("resources.embedded.train.gpu_model", "h100"),
     ["resources.embedded.train.gpu_model"]),
    ("a stage missing from a preset", ("del", "resources.embedded.code_atlas"), ["resources.embedded", "code_atlas"]),
    ("more real images than toyfaces holds", ("experiments.toy_matching.metrics.n_real", 5001),
     ["experiments.toy_matching.metrics.n_real: 5001 real images", "holds 5000 (n_train + n_test)"]),
    ("nearest_k not below n_real", ("experiments.toy_nearest.metrics.n_real", 3),
     ["experiments.toy_nearest.metrics.nearest_k: k = 3 needs more real images than metrics.n_real = 3"]),
    ("nearest_k not below the sample count", ("experiments.toy_matching.sample", {**SAMPLE_3}),
     ["experiments.toy_matching.metrics.nearest_k: k = 3 needs more samples than sample.n = 3"]),
    ("unknown reference split", ("experiments.toy_matching.metrics.reference", "val"),
     ["experiments.toy_matching.metrics.reference"]),
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
    """Each key of params.yaml in turn: a mapping where a value belongs (a wrong type for every key), -1, NaN and
    inf for every number (below each number's range, not finite), and for every integer the same value as a float
    (16.0) and a typo of 10^9 (2^32 for seeds: 10^9 is one). Each is rejected with the key's dotted path."""
    keys = _keys(params, every)
    assert len(keys) > 60
    for path, value in keys:
        dotted = ".".join(path)
        assert dotted in _rejected(params, path, {"wrong_type": 1}), dotted
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for bad in (-1, math.nan, math.inf):
                assert dotted in _rejected(params, path, bad), (dotted, bad)
        if isinstance(value, int) and not isinstance(value, bool):
            assert f"{dotted}: {float(value)!r} is not of type 'integer'" in _rejected(params, path, float(value))
            assert dotted in _rejected(params, path, 2 ** 32 if path[-1] == "seed" else 10 ** 9), dotted


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


def test_every_table_format_the_writers_know_is_selectable(params):
    """report.tables.formats accepts exactly the table writers (csv, md, tex); another format names the key."""
    from pivq.report.tables import WRITERS

    ok = copy.deepcopy(params)
    ok["report"]["tables"]["formats"] = sorted(WRITERS)
    validate_params(ok)
    ok["report"]["tables"]["formats"] = ["html"]
    with pytest.raises(ParamsError, match="report.tables.formats"):
        validate_params(ok, source="test.yaml")


@pytest.mark.parametrize("reference,held,what", [("all", 5000, "n_train + n_test"), ("train", 4000, "n_train"),
                                                 ("test", 1000, "n_test")])
def test_toyfaces_n_real_is_checked_against_its_reference_split(params, reference, held, what):
    """toyfaces' split sizes are parameters: n_real up to what metrics.reference holds validates, one more is
    refused naming experiments.<exp>.metrics.n_real (the fidelity stage checks the other datasets' real counts)."""
    assert params["datasets"]["toyfaces32"]["n_train"] == 4000 and params["datasets"]["toyfaces32"]["n_test"] == 1000
    ok = copy.deepcopy(params)
    ok["experiments"]["toy_matching"]["metrics"].update(reference=reference, n_real=held)
    validate_params(ok)
    ok["experiments"]["toy_matching"]["metrics"]["n_real"] = held + 1
    with pytest.raises(ParamsError) as err:
        validate_params(ok, source="test.yaml")
    assert (f"test.yaml: experiments.toy_matching.metrics.n_real: {held + 1} real images, but metrics.reference "
            f"{reference} of datasets.toyfaces32 holds {held} ({what})") in str(err.value), str(err.value)
    # a real dataset's count is unknown until prepared: not checked here
    big = copy.deepcopy(params)
    big["experiments"]["celebahq256"]["metrics"]["n_real"] = 10 ** 6
    validate_params(big)


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


# --- params.yaml strict (issue 17, item 6): YAML itself, integers, finite numbers, seeds, sizes, names ----------

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def _write_with(params: dict, dotted: str, yaml_text: str, path: Path) -> Path:
    """params.yaml with ``dotted`` set to ``yaml_text`` as written in the file (``16.0``, ``.nan``, ...)."""
    broken = copy.deepcopy(params)
    _set(broken, dotted, "__VALUE__")
    text = yaml.safe_dump(broken, sort_keys=False)
    assert text.count("__VALUE__") == 1
    path.write_text(text.replace("__VALUE__", yaml_text))
    return path


def _load_error(path: Path) -> str:
    with pytest.raises(ParamsError) as err:
        load_params(path)
    return str(err.value)


def test_params_yaml_loads_exactly_as_before(params):
    """The strict loader gives what yaml.safe_load gives, types included (json tells 1 from 1.0), unchanged by
    validation; the loader is a SafeLoader."""
    plain = yaml.safe_load(PARAMS_FILE.read_text())
    strict = load_params(PARAMS_FILE)
    assert json.dumps(strict) == json.dumps(plain) == json.dumps(params)
    assert validate_params(strict) is strict and json.dumps(strict) == json.dumps(plain)
    assert issubclass(StrictLoader, yaml.SafeLoader)


# (key, the value as written in the YAML file, what the message must hold besides the key)
YAML_VALUE_CASES = [
    ("schedules.toy.batch_size", "16.0", "is not of type 'integer'"),
    ("resources.embedded.train.gpu", "1.0", "is not of type 'integer'"),
    ("schedules.toy.ema_beta", ".nan", "nan is not a finite number"),
    ("schedules.toy.lr_per_sample", ".inf", "inf is not a finite number"),
    ("datasets.toyfaces32.feature_extractor.lr", "-.inf", "-inf is not a finite number"),
    ("schedules.toy.adam_betas", "[0.9, .NaN]", "nan is not a finite number"),
    ("schedules.toy.seed", str(2 ** 70), "maximum of 4294967295"),
    ("experiments.toy_matching.sample.seed", str(2 ** 32), "maximum of 4294967295"),
    ("schedules.toy.batch_size", str(10 ** 9), "maximum of 65536"),
    ("datasets.toyfaces32.n_train", str(10 ** 12), "maximum of 10000000"),
    ("datasets.toyfaces32.resolution", str(10 ** 6), "maximum of 1024"),
    ("models.toy32.codebook_size", str(10 ** 9), "maximum of 262144"),
    ("experiments.toy_matching.sample.n", str(10 ** 9), "maximum of 10000000"),
]


@pytest.mark.parametrize("key, text, expected", YAML_VALUE_CASES, ids=[f"{k}={t}" for k, t, _ in YAML_VALUE_CASES])
def test_a_float_integer_a_non_finite_number_a_huge_seed_or_size_is_named(params, tmp_path, key, text, expected):
    path = _write_with(params, key, text, tmp_path / "params.yaml")
    message = _load_error(path)
    named = key + (".1" if key.endswith("adam_betas") else "")
    assert f"{path}: {named}: " in message and expected in message, message


def test_seed_bounds_are_what_every_consumer_takes(params):
    """0 and 2^32 - 1 are seeds (scikit-learn's random_state takes no more), -1 and 2^32 are not."""
    ok = copy.deepcopy(params)
    ok["schedules"]["toy"]["seed"], ok["experiments"]["toy_matching"]["probe"]["seed"] = 0, 2 ** 32 - 1
    validate_params(ok)
    for bad in (-1, 2 ** 32, 2 ** 64):
        assert "experiments.toy_matching.probe.seed" in _rejected(params, ("experiments", "toy_matching", "probe",
                                                                           "seed"), bad)


def test_an_integer_beyond_64_bits_is_refused_anywhere_a_number_goes(params):
    message = _rejected(params, ("schedules", "toy", "vq_beta"), 2 ** 70)
    assert "schedules.toy.vq_beta: an integer of 71 bits does not fit in 64" in message, message


def test_settings_well_beyond_the_papers_are_inside_the_bounds(params):
    """The bounds refuse typos, not big runs: 10x the paper's K, L, steps, images and samples validate."""
    big = copy.deepcopy(params)
    big["models"]["ut256"].update(codebook_size=40960, codes=5120, width=2560, ffn=10240, layers=40)
    big["schedules"]["paper256"].update(steps=14_000_000, batch_size=2560)
    big["datasets"]["toyfaces32"].update(n_train=700_000, n_test=700_000)
    big["experiments"]["ffhq256"]["sample"].update(n=500_000, shards=1000, batch_size=640)
    big["experiments"]["ffhq256"]["metrics"].update(n_real=500_000)
    big["resources"]["ffhq256"]["train"].update(cpus=256, mem_mb=2_000_000, runtime_min=100_000)
    validate_params(big)


def test_duplicate_keys_are_refused_naming_the_key_and_its_line(tmp_path):
    """YAML keeps the last of two equal keys silently; the strict loader names both lines."""
    text = PARAMS_FILE.read_text()
    lines = text.splitlines(keepends=True)
    # a second `quantizer:` in toy_matching, right after the first (which would otherwise lose silently)
    first = next(i for i, line in enumerate(lines) if line == "    quantizer: matching\n")
    lines.insert(first + 1, "    quantizer: nearest\n")
    lines.append("experiment_set: paper\n")  # and one at the top level
    path = tmp_path / "dup_params.yaml"
    path.write_text("".join(lines))
    message = _load_error(path)
    top = next(i for i, line in enumerate(lines) if line.startswith("experiment_set:")) + 1
    assert (f"{path}: line {first + 2}: experiments.toy_matching.quantizer: duplicate key (first at line "
            f"{first + 1}" in message), message
    assert f"{path}: line {len(lines)}: experiment_set: duplicate key (first at line {top}" in message, message


def test_equal_keys_written_differently_are_duplicates_and_merge_keys_are_not(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a:\n  seed: 1\n  'seed': 2\n")
    assert "line 3: a.seed: duplicate key (first at line 2" in _load_error(path)
    path.write_text("a:\n  0x10: x\n  16: y\n")
    assert "line 3: a.16: duplicate key" in _load_error(path)
    path.write_text("base: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n")  # YAML's merge: c's own x overrides, no error
    from pivq.config import read_params_yaml

    assert read_params_yaml(path) == {"base": {"x": 1, "y": 2}, "c": {"x": 3, "y": 2}}


def _bomb(levels: int, mapping: bool = False) -> str:
    """Billion laughs: level 0 is nine strings, level i nine aliases of level i - 1 (9^levels values)."""
    first = ("&l0 {" + ", ".join(f"k{j}: lol" for j in range(9)) + "}" if mapping
             else "&l0 [" + ", ".join(["lol"] * 9) + "]")
    layers = [first]
    for i in range(1, levels + 1):
        items = [f"k{j}: *l{i - 1}" for j in range(9)] if mapping else [f"*l{i - 1}"] * 9
        layers.append(f"&l{i} " + ("{" + ", ".join(items) + "}" if mapping else "[" + ", ".join(items) + "]"))
    return "[" + ", ".join(layers) + "]"


_LOAD_IN_A_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: an expanding bomb fails, it cannot swap
from pivq.config import ParamsError, load_params
try:
    load_params(sys.argv[1])
except ParamsError as e:
    print(e)
    sys.exit(3)
"""


@pytest.mark.parametrize("levels, mapping", [(7, False), (8, False), (9, False), (8, True)],
                         ids=["7-levels", "8-levels", "9-levels", "8-levels-of-mappings"])
def test_an_alias_bomb_is_refused_at_once_with_a_short_message(params, tmp_path, levels, mapping):
    """In the value of a real key (its schema error would quote the whole expansion: 80 MB at 7 levels, memory
    exhausted at 8). In a child with 1 GiB of address space and a timeout, so a regression fails, never hangs."""
    text = PARAMS_FILE.read_text()
    assert "    top_attributes: 15\n" in text
    path = tmp_path / "bomb_params.yaml"
    path.write_text(text.replace("    top_attributes: 15\n", f"    top_attributes: {_bomb(levels, mapping)}\n"))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _LOAD_IN_A_CHILD, str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])
    assert time.monotonic() - start < 30
    message = proc.stdout
    assert len(message) < 1000, message[:1000]
    assert f"{path}: line " in message and "report.figures.top_attributes" in message and "alias bomb" in message


def test_aliases_are_limited_in_number_and_may_not_recurse(params, tmp_path):
    """A few aliases are fine (safe_dump writes one for a shared preset); a 101st use or a self-reference is not."""
    shared = copy.deepcopy(params)
    shared["resources"]["celeba64"] = shared["resources"]["embedded"]  # safe_dump writes &id001 ... *id001
    path = tmp_path / "aliased.yaml"
    path.write_text(yaml.safe_dump(shared, sort_keys=False))
    assert "*id001" in path.read_text()
    assert load_params(path)["resources"]["celeba64"] == params["resources"]["embedded"]
    many = copy.deepcopy(params)
    many["experiment_sets"]["embedded"] = ["__MANY__"]
    text = yaml.safe_dump(many, sort_keys=False).replace("- __MANY__", "- &e toy_matching\n" + "  - *e\n" * 101)
    path.write_text(text)
    message = _load_error(path)
    assert "experiment_sets.embedded.101: alias *e: more than 100 alias uses" in message, message  # item 0: the anchor
    path.write_text("experiment_set: &a [1, *a]\n")
    assert "line 1: experiment_set.1: alias *a is inside the value it names" in _load_error(path)


@pytest.mark.parametrize("name", ["toyfaces32\n", "toy/faces", "..", "../data", "toy.faces", "32toy", "", "a" * 101,
                                  "toy faces", "_toy", "-toy"])
def test_a_name_must_be_safe_as_a_folder_name(params, tmp_path, name):
    """Experiment, dataset, model, schedule, preset and set names: letters, digits, _ and -, a letter first,
    matched in full (Python's `$` would let a trailing newline through: data/toyfaces32\\n/ was created)."""
    refused = "is too long" if len(name) > 100 else "does not match"
    path = _write_with(params, "experiments.toy_matching.dataset", json.dumps(name), tmp_path / "params.yaml")
    message = _load_error(path)
    assert f"{path}: experiments.toy_matching.dataset: {name!r} {refused}" in message, message
    renamed = copy.deepcopy(params)
    renamed["models"][name] = renamed["models"].pop("toy32")
    for exp in ("toy_matching", "toy_nearest"):
        renamed["experiments"][exp]["model"] = name
    with pytest.raises(ParamsError) as err:
        validate_params(renamed)
    assert f"models: {name!r} {refused}" in str(err.value)  # the map of names, and the name


def test_trailing_newline_from_a_literal_block_scalar_is_refused(params, tmp_path):
    """`dataset: |` keeps the line's newline: the realistic way to write "toyfaces32\\n"."""
    path = _write_with(params, "experiments.toy_nearest.dataset", "|\n      toyfaces32", tmp_path / "params.yaml")
    assert yaml.safe_load(path.read_text())["experiments"]["toy_nearest"]["dataset"] == "toyfaces32\n"
    assert "experiments.toy_nearest.dataset: 'toyfaces32\\n' does not match" in _load_error(path)


@pytest.mark.parametrize("section", ["datasets", "models", "schedules", "resources", "experiments",
                                     "experiment_sets"])
def test_names_with_dashes_are_valid_in_every_map(params, section):
    renamed = copy.deepcopy(params)
    old = next(iter(renamed[section]))
    new = "toy-" + old
    renamed[section][new] = renamed[section].pop(old)
    field = {"datasets": "dataset", "models": "model", "schedules": "schedule", "resources": "resources"}.get(section)
    for exp in renamed["experiments"].values():
        if field and exp[field] == old:
            exp[field] = new
    if section == "resources":
        for dataset in renamed["datasets"].values():
            dataset["resources"] = new if dataset["resources"] == old else dataset["resources"]
    if section == "experiments":
        renamed["experiment_sets"] = {k: [new if e == old else e for e in v]
                                      for k, v in renamed["experiment_sets"].items()}
    if section == "experiment_sets":
        renamed["experiment_set"] = new
    validate_params(renamed)


def test_a_tilde_in_a_dataset_root_or_weights_path_is_kept_as_written(params, tmp_path):
    """Expanding ~ is left to the code that opens the path; config neither refuses nor changes it (a bare ~ is
    YAML's null: the default weights)."""
    broken = copy.deepcopy(params)
    broken["datasets"]["celeba64"]["root"] = "~/raw/celeba"
    broken["datasets"]["ffhq256"]["feature_extractor"]["weights"] = "~/weights/pt_inception.pth"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False).replace("weights: null", "weights: ~", 1))
    loaded = load_params(path)
    assert loaded["datasets"]["celeba64"]["root"] == "~/raw/celeba"
    assert loaded["datasets"]["ffhq256"]["feature_extractor"]["weights"] == "~/weights/pt_inception.pth"
    assert loaded["datasets"]["toyfaces32"]["feature_extractor"]["weights"] is None


@pytest.mark.parametrize("text, expected", [
    ("a: [\n", "line 2: not valid YAML"),
    ("a: !!python/object/apply:os.system [echo]\n", "line 1: not valid YAML: could not determine a constructor"),
    ("a: 1\n---\nb: 2\n", "line 2: not valid YAML: expected a single document"),
    ("? [a]\n: 1\n", "line 1: <top level>: a key must be a plain value"),
    ("a: " + "1" * 5000 + "\n", "digits"),
])
def test_malformed_or_unsafe_yaml_is_a_params_error_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    message = _load_error(path)
    assert message.startswith(f"{path}: ") and expected in message, message
