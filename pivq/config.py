"""params.yaml: loading, validation and resolution of one experiment.

Config flows one way: params.yaml -> validated dict -> resolved experiment dict -> dataclasses and
constructors. This module imports no torch: the Snakefile uses it at parse time.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "params.schema.yaml"

# The rules whose jobs params.yaml sizes (resources.<preset>.<rule>), and which of them run no network.
DATASET_STAGES = ("prepare_dataset", "train_extractor")
EXPERIMENT_STAGES = ("train", "encode", "sample_shard", "interpolation_paths", "fidelity", "rate", "probe",
                     "code_atlas", "attributes")
CPU_STAGES = ("prepare_dataset", "rate", "probe")


class ParamsError(ValueError):
    """An invalid params.yaml; the message names the offending key."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


# --- reading params.yaml strictly --------------------------------------------------------------------------------
# YAML lets a mapping repeat a key (the last value silently wins) and lets aliases (*name) repeat an anchored
# value (&name) without limit: nested aliases turn a few kilobytes into billions of values ("billion laughs"),
# which the schema check, an error message or Snakemake's config merge would then expand. The strict loader
# refuses both before anything is constructed, on the composed node graph, where an alias is one shared node.
MAX_ALIASES = 100  # alias uses (*name) in one document; params.yaml uses none
MAX_ALIAS_EXPANSION = 10  # the document with its aliases expanded: at most this many times the values written
_MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses what params.yaml must not hold, before constructing anything.

    - a key twice in one mapping (named with its dotted path and both lines);
    - a key that is a sequence or a mapping;
    - aliases beyond a simple budget: more than MAX_ALIASES uses of ``*name``, or an expansion to more than
      MAX_ALIAS_EXPANSION times the values (nodes) written, an alias counting as one (so what is built stays
      linear in the file's size), or an alias inside the value it names (a recursive document). The error names
      the alias use (its key and line): the one over the count, or the one standing for the most values.

    The checks walk the composed node graph once, each distinct node once (an alias is its anchor's node, shared),
    so they take time linear in the file's size whatever the aliases would expand to. ``source`` names the file
    in errors; use :func:`read_params_yaml`.
    """

    source = "params.yaml"

    def __init__(self, stream):
        super().__init__(stream)
        self._alias_events: list[tuple[str, Any]] = []  # (anchor, mark) of each *name, in document order

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self._alias_events.append((event.anchor, event.start_mark))
        return super().compose_node(parent, index)

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        self.check_node_graph(node)
        return self.construct_document(node)

    def _alias_use(self, index: int, path: tuple) -> str:
        """``<file>: line <n>: <dotted key>: alias *<anchor>`` of the index-th alias use (document order: the
        walk below visits nodes in the order the composer read them)."""
        anchor, mark = self._alias_events[index] if index < len(self._alias_events) else ("?", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        return f"{self.source}: {line}{_key(path)}: alias *{anchor}"

    def check_node_graph(self, root) -> None:
        expanded: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
        open_nodes: set[int] = set()  # being walked: an alias to one of them is a cycle
        uses: list[tuple[tuple, int]] = []  # (path, values it stands for) of each alias use
        written = 0
        duplicates: list[str] = []

        def walk(node, path: tuple) -> int:
            nonlocal written
            written += 1
            if id(node) in expanded:  # the composer hands an alias back as its anchor's (finished) node
                uses.append((path, expanded[id(node)]))
                return expanded[id(node)]
            if id(node) in open_nodes:
                raise ParamsError(f"{self._alias_use(len(uses), path)} is inside the value it names "
                                  "(a recursive document)")
            open_nodes.add(id(node))
            size = 1
            if isinstance(node, yaml.SequenceNode):
                for i, child in enumerate(node.value):
                    size += walk(child, (*path, i))
            elif isinstance(node, yaml.MappingNode):
                first_line: dict[Any, int] = {}
                for key_node, value_node in node.value:
                    if key_node.tag == _MERGE_TAG:  # `<<: *base`: YAML's merge; the mapping's own keys override it
                        name = "<<"
                    elif not isinstance(key_node, yaml.ScalarNode):
                        raise ParamsError(f"{self.source}: line {key_node.start_mark.line + 1}: {_key(path)}: a key "
                                          "must be a plain value, not a sequence or a mapping")
                    else:
                        name = self.construct_object(key_node)
                        line = key_node.start_mark.line + 1
                        if name in first_line:
                            duplicates.append(f"{self.source}: line {line}: {_key((*path, name))}: duplicate key "
                                              f"(first at line {first_line[name]}; YAML would keep the last "
                                              "value silently)")
                        else:
                            first_line[name] = line
                    size += walk(key_node, (*path, name)) + walk(value_node, (*path, name))
            open_nodes.discard(id(node))
            expanded[id(node)] = size
            return size

        total = walk(root, ())
        if duplicates:
            raise ParamsError("invalid parameters:\n  " + "\n  ".join(duplicates[:10]))
        if len(uses) > MAX_ALIASES:
            raise ParamsError(f"{self._alias_use(MAX_ALIASES, uses[MAX_ALIASES][0])}: more than {MAX_ALIASES} alias "
                              f"uses (*name) in the document ({len(uses)}; a YAML alias bomb?)")
        if total > MAX_ALIAS_EXPANSION * written:
            index = max(range(len(uses)), key=lambda i: uses[i][1])
            raise ParamsError(f"{self._alias_use(index, uses[index][0])} stands for {uses[index][1]} values: the "
                              f"document's {len(uses)} aliases expand its {written} written values to {total}, more "
                              f"than {MAX_ALIAS_EXPANSION} times as many (a YAML alias bomb?)")


def read_params_yaml(path: str | os.PathLike) -> Any:
    """The YAML document of ``path`` read with :class:`StrictLoader`; every YAML error is a ParamsError naming
    the file and the line. No schema check (see :func:`load_params`): the Snakefile calls this on params.yaml
    before Snakemake's own, plain, YAML load of it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing parameter file: {path}")
    with open(path, "rb") as f:
        loader = StrictLoader(f)
        loader.source = str(path)
        try:
            return loader.get_single_data()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"line {mark.line + 1}: " if mark is not None else ""
            what = " ".join(str(part) for part in (e.context, e.problem) if part)
            raise ParamsError(f"{path}: {where}not valid YAML: {what}") from None
        except yaml.YAMLError as e:
            raise ParamsError(f"{path}: not valid YAML: {e}") from None
        except RecursionError:
            raise ParamsError(f"{path}: nested too deeply") from None
        except ValueError as e:  # ParamsError passes; e.g. an integer of more than 4300 digits
            if isinstance(e, ParamsError):
                raise
            raise ParamsError(f"{path}: {e}") from None
        finally:
            loader.dispose()


# Every integer and number in params must be a 64-bit integer or a finite float (torch and numpy take no more).
INT64 = (-2 ** 63, 2 ** 63 - 1)


def _bad_numbers(obj, path: tuple = ()):
    """(dotted path, problem) of every NaN or infinite float and every integer beyond 64 bits in ``obj``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _bad_numbers(value, (*path, key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _bad_numbers(value, (*path, i))
    elif isinstance(obj, float) and not math.isfinite(obj):
        yield _key(path), f"{obj!r} is not a finite number"
    elif isinstance(obj, int) and not isinstance(obj, bool) and not INT64[0] <= obj <= INT64[1]:
        yield _key(path), f"an integer of {obj.bit_length()} bits does not fit in 64"


def _short(message: str, limit: int = 400) -> str:
    """A schema message cut to ``limit`` characters (jsonschema quotes the whole offending value)."""
    return message if len(message) <= limit else message[:limit] + f"... ({len(message)} characters)"


@functools.lru_cache(maxsize=8)
def _validator(schema_path: str, mtime_ns: int):
    """The schema's validator, parsed once per file version (parsing the YAML schema dominates a validation)."""
    import jsonschema  # here, not at the top: resolving an experiment needs no schema

    base = jsonschema.Draft202012Validator
    # JSON Schema counts 16.0 as an integer; pivq hands integers to torch and range(): only Python ints (not
    # bool, which Python counts as an int but the schema already refuses) are integers here
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
    strict = jsonschema.validators.extend(base, type_checker=checker)
    return strict(yaml.safe_load(Path(schema_path).read_text()))


def validate_params(params: dict, source: str = "params.yaml", schema_path: str | os.PathLike = SCHEMA) -> dict:
    """Check ``params`` against the JSON schema and the cross-references; return it unchanged.

    Raises ParamsError naming the key, e.g. ``params.yaml: experiments.toy.quantizer: 'x' is not one of ...``.
    Integers are Python ints (16.0 is not one), every number is finite (no NaN or inf anywhere) and fits in
    64 bits. ``schema_path`` defaults to this checkout's schema; the Snakefile passes its own workflow's.
    """
    validator = _validator(str(Path(schema_path).resolve()), Path(schema_path).stat().st_mtime_ns)
    errors = sorted([(_key(e.absolute_path), e.message) for e in validator.iter_errors(params)]
                    + list(_bad_numbers(params)))
    if errors:
        lines = [f"{source}: {key}: {_short(message)}" for key, message in errors[:10]]
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(lines))

    problems = []
    sets = params["experiment_sets"]
    if params["experiment_set"] not in sets:
        problems.append(f"experiment_set: {params['experiment_set']!r} is not one of {sorted(sets)}")
    for set_name, names in sets.items():
        for name in names:
            if name not in params["experiments"]:
                problems.append(f"experiment_sets.{set_name}: unknown experiment {name!r}")
    for name, dataset in params["datasets"].items():
        if dataset["resources"] not in params["resources"]:
            problems.append(f"datasets.{name}.resources: {dataset['resources']!r} is not one of "
                            f"{sorted(params['resources'])}")
    for preset, stages in params["resources"].items():
        for stage, job in stages.items():
            if stage in CPU_STAGES and job["gpu"]:
                problems.append(f"resources.{preset}.{stage}.gpu: {stage} runs no network; a GPU would idle (use 0)")
            if job.get("gpu_model") and not job["gpu"]:
                problems.append(f"resources.{preset}.{stage}.gpu_model: set, but gpu is 0")
    for name, exp in params["experiments"].items():
        dangling = [(field, table) for field, table in (("dataset", "datasets"), ("model", "models"),
                                                        ("schedule", "schedules"), ("resources", "resources"))
                    if exp[field] not in params[table]]
        for field, table in dangling:
            problems.append(f"experiments.{name}.{field}: {exp[field]!r} is not one of {sorted(params[table])}")
        if dangling:
            continue
        model, dataset = params["models"][exp["model"]], params["datasets"][exp["dataset"]]
        if exp["quantizer"] == "matching" and model["codes"] > model["codebook_size"]:
            problems.append(
                f"experiments.{name}.quantizer: matching needs L <= K, but models.{exp['model']} has "
                f"codes (L) = {model['codes']} > codebook_size (K) = {model['codebook_size']}"
            )
        if model["resolution"] != dataset["resolution"]:
            problems.append(
                f"experiments.{name}: models.{exp['model']}.resolution = {model['resolution']} differs from "
                f"datasets.{exp['dataset']}.resolution = {dataset['resolution']}"
            )
        if exp["sample"]["shards"] > exp["sample"]["n"]:
            problems.append(f"experiments.{name}.sample.shards: more shards than samples")
        metrics = exp["metrics"]
        if metrics["nearest_k"] >= metrics["n_real"]:
            problems.append(f"experiments.{name}.metrics.nearest_k: k = {metrics['nearest_k']} needs more real "
                            f"images than metrics.n_real = {metrics['n_real']}")
        if metrics["nearest_k"] >= exp["sample"]["n"]:
            problems.append(f"experiments.{name}.metrics.nearest_k: k = {metrics['nearest_k']} needs more samples "
                            f"than sample.n = {exp['sample']['n']}")
        if dataset["kind"] == "toyfaces":  # its split sizes are parameters: the reference set is checked here
            held = {"all": dataset["n_train"] + dataset["n_test"], "train": dataset["n_train"],
                    "test": dataset["n_test"]}[metrics["reference"]]
            if metrics["n_real"] > held:
                what = {"all": "n_train + n_test", "train": "n_train", "test": "n_test"}[metrics["reference"]]
                problems.append(f"experiments.{name}.metrics.n_real: {metrics['n_real']} real images, but "
                                f"metrics.reference {metrics['reference']} of datasets.{exp['dataset']} holds "
                                f"{held} ({what}); the real set is never cut short")
        if exp["atlas"]["codes"] > model["codes"]:
            problems.append(f"experiments.{name}.atlas.codes: {exp['atlas']['codes']} codes cannot be swapped into "
                            f"a set of L = {model['codes']} (models.{exp['model']}.codes)")
    for name, model in params["models"].items():
        if model["resolution"] % 2 ** (len(model["ch_mult"]) - 1):
            problems.append(f"models.{name}.resolution: {model['resolution']} is not divisible by 2^(len(ch_mult)-1)")
        if model["width"] % model["heads"]:
            problems.append(f"models.{name}.heads: width {model['width']} is not divisible by {model['heads']} heads")
    for name, sched in params["schedules"].items():
        if sched["quantize_start"] >= sched["steps"]:
            problems.append(f"schedules.{name}.quantize_start: T_q = {sched['quantize_start']} >= steps")
        if sched["quantize_start"] < sched["init_window"]:
            problems.append(f"schedules.{name}.init_window: W = {sched['init_window']} exceeds T_q")
        if sched["adversarial_start"] is not None and sched["adversarial_start"] >= sched["steps"]:
            problems.append(f"schedules.{name}.adversarial_start: {sched['adversarial_start']} >= steps = "
                            f"{sched['steps']}, so the adversarial term never starts (use null for none)")
    if problems:
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(f"{source}: {p}" for p in problems))
    return params


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    """params.yaml read strictly (:func:`read_params_yaml`: no duplicate key, no alias bomb) and validated."""
    path = Path(path)
    params = read_params_yaml(path)
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return validate_params(params, source=str(path))


def experiments_to_build(params: dict) -> list[str]:
    return list(params["experiment_sets"][params["experiment_set"]])


def resolve_experiment(params: dict, name: str) -> dict[str, Any]:
    """One experiment with its dataset, model and schedule presets inlined (what a run records)."""
    if name not in params["experiments"]:
        raise ParamsError(f"unknown experiment {name!r}; known: {sorted(params['experiments'])}")
    exp = dict(params["experiments"][name])
    return {
        "name": name,
        **exp,
        "dataset_name": exp["dataset"],
        "dataset": params["datasets"][exp["dataset"]],
        "model_name": exp["model"],
        "model": params["models"][exp["model"]],
        "schedule_name": exp["schedule"],
        "schedule": params["schedules"][exp["schedule"]],
    }


# What training reads of a resolved experiment: every key that changes the weights (the dataset's content enters
# through its manifest's hashes). Snakemake's train rule and `pivq train` both hand training this, so a run's
# recorded options and identity do not depend on how it was started, and other settings (sampling, metrics)
# do not re-run training.
TRAINING_KEYS = ("name", "dataset_name", "model_name", "model", "schedule_name", "schedule", "quantizer")


def training_spec(experiment: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved experiment (resolve_experiment) that training reads."""
    return {k: experiment[k] for k in TRAINING_KEYS}


def stage_resources(params: dict, stage: str, *, experiment: str | None = None,
                    dataset: str | None = None) -> dict[str, Any]:
    """What the job of ``stage`` (a rule name) asks for, for an experiment or a dataset: the entry
    ``resources.<preset>.<stage>`` of the preset it names, with ``gpu_model`` "" where unset."""
    if (experiment is None) == (dataset is None):
        raise ValueError("stage_resources: name an experiment or a dataset")
    stages = EXPERIMENT_STAGES if experiment is not None else DATASET_STAGES
    if stage not in stages:
        raise ValueError(f"stage_resources: {stage!r} is not one of {list(stages)}")
    owner = params["experiments"][experiment] if experiment is not None else params["datasets"][dataset]
    return {"gpu_model": "", **params["resources"][owner["resources"]][stage]}


def report_experiments(params: dict) -> dict[str, dict]:
    """What the tables and figures need to know of each experiment in the active set."""
    out = {}
    for name in experiments_to_build(params):
        exp = resolve_experiment(params, name)
        out[name] = {
            "dataset": exp["dataset_name"],
            "quantizer": exp["quantizer"],
            "paper_dataset": exp["paper_dataset"],
            "codebook_size": exp["model"]["codebook_size"],
            "codes": exp["model"]["codes"],
        }
    return out
