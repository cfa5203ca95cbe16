"""params.yaml: loading, validation and resolution of one experiment.

Config flows one way: params.yaml -> validated dict -> resolved experiment dict -> dataclasses and
constructors. This module imports no torch: the Snakefile uses it at parse time.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "params.schema.yaml"

# The rules whose jobs params.yaml sizes (resources.<preset>.<rule>), and which of them run no network.
DATASET_STAGES = ("prepare_dataset", "train_extractor")
EXPERIMENT_STAGES = ("train", "encode", "sample_shard", "interpolation_paths", "fidelity", "rate", "probe",
                     "code_atlas")
CPU_STAGES = ("prepare_dataset", "rate", "probe")


class ParamsError(ValueError):
    """An invalid params.yaml; the message names the offending key."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


@functools.lru_cache(maxsize=8)
def _validator(schema_path: str, mtime_ns: int):
    """The schema's validator, parsed once per file version (parsing the YAML schema dominates a validation)."""
    import jsonschema  # here, not at the top: resolving an experiment needs no schema

    return jsonschema.Draft202012Validator(yaml.safe_load(Path(schema_path).read_text()))


def validate_params(params: dict, source: str = "params.yaml", schema_path: str | os.PathLike = SCHEMA) -> dict:
    """Check ``params`` against the JSON schema and the cross-references; return it unchanged.

    Raises ParamsError naming the key, e.g. ``params.yaml: experiments.toy.quantizer: 'x' is not one of ...``.
    ``schema_path`` defaults to this checkout's schema; the Snakefile passes its own workflow's.
    """
    validator = _validator(str(Path(schema_path).resolve()), Path(schema_path).stat().st_mtime_ns)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"{source}: {_key(e.absolute_path)}: {e.message}" for e in errors[:10]]
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing parameter file: {path}")
    with open(path) as f:
        params = yaml.safe_load(f)
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
