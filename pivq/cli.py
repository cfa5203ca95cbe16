"""``pivq <command>``: every stage callable from a shell, with the pipeline's file layout as defaults.

The Snakemake rules (workflow/rules) and the DVC stages (dvc.yaml) run the same stage functions
(pivq.stages); this is the way in for a person, a debugger, or a one-off run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pivq import __version__


def _params(args) -> dict:
    from pivq.config import load_params

    return load_params(args.params)


def _experiment(args) -> dict:
    from pivq.config import resolve_experiment

    return resolve_experiment(_params(args), args.experiment)


def _job(args, stage: str):
    """The stage's job as params.yaml sizes it (its GPU: the device rule), ``--threads`` overriding its CPUs."""
    from pivq.config import stage_resources
    from pivq.device import Job

    request = stage_resources(_params(args), stage, experiment=args.experiment)
    return Job(owner=f"experiment {args.experiment}", stage=stage, gpu=request["gpu"],
               cpus=args.threads or request["cpus"])


def cmd_validate(args) -> None:
    from pivq.config import experiments_to_build

    params = _params(args)
    print(f"{args.params}: valid; `all` builds {experiments_to_build(params)} "
          f"(experiment_set={params['experiment_set']})")


def cmd_prepare(args) -> None:
    from pivq.config import stage_resources
    from pivq.stages import prepare_dataset

    params = _params(args)
    if args.dataset not in params["datasets"]:
        raise SystemExit(f"pivq prepare: unknown dataset {args.dataset!r}; known: {sorted(params['datasets'])}")
    workers = args.workers or stage_resources(params, "prepare_dataset", dataset=args.dataset)["cpus"]
    print(prepare_dataset(args.dataset, params["datasets"][args.dataset], args.out or f"data/{args.dataset}",
                          workers=workers))


# The pipeline's file layout (workflow/rules): each stage command's path options default to these, filled in with
# the experiment's name ({exp}) and dataset ({dataset}); any of them can point elsewhere.
LAYOUT = {"data": "data/{dataset}", "run": "runs/{exp}", "model": "runs/{exp}/model.pt",
          "codes": "runs/{exp}/codes.npz", "shards": "runs/{exp}/samples/shard-{{i}}.npz",
          "metrics": "results/metrics/{exp}", "extractor": "data/{dataset}/extractor.pt"}


def _path(args, exp: dict, key: str) -> str:
    """The path option ``key`` as given, or the pipeline's layout for ``exp``."""
    given = getattr(args, key.replace("-", "_"), None)
    return given or LAYOUT[key].format(exp=exp["name"], dataset=exp["dataset_name"])


def _shards(args, exp: dict) -> list[str]:
    return args.shards or [_path(args, exp, "shards").format(i=i) for i in range(exp["sample"]["shards"])]


def _extractor_weights(args, exp: dict) -> str | None:
    """The feature extractor's weights: --extractor, else the file params.yaml names, else the pipeline's trained
    one (toyfaces' CNN) or None (Inception: torch hub's cache)."""
    extractor = exp["dataset"]["feature_extractor"]
    if args.extractor or extractor["weights"]:
        return args.extractor or extractor["weights"]
    return _path(args, exp, "extractor") if extractor["name"] == "pivq-toyfaces-cnn" else None


def cmd_extractor(args) -> None:
    from pivq.stages import train_feature_extractor

    params = _params(args)
    if args.dataset not in params["datasets"]:
        raise SystemExit(f"pivq extractor: unknown dataset {args.dataset!r}; known: {sorted(params['datasets'])}")
    data = args.data or f"data/{args.dataset}"
    summary = train_feature_extractor(data, params["datasets"][args.dataset]["feature_extractor"],
                                      args.out or f"{data}/extractor.pt",
                                      args.summary or f"results/metrics/extractor_{args.dataset}.json")
    print(json.dumps(summary, indent=2))


def cmd_train(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import train_model

    exp = _experiment(args)
    metrics = _path(args, exp, "metrics")
    # what the Snakemake rule passes too: the run's options and identity do not depend on the entry point
    print(json.dumps(train_model(training_spec(exp), _path(args, exp, "data"), _path(args, exp, "run"),
                                 f"{metrics}/training.json", f"{metrics}/training_log.csv", job=_job(args, "train"),
                                 eval_batch_size=exp["encode"]["batch_size"]), indent=2))


def cmd_encode(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import encode_dataset

    exp = _experiment(args)
    encode_dataset(_path(args, exp, "model"), _path(args, exp, "data"), args.out or _path(args, exp, "codes"),
                   batch_size=exp["encode"]["batch_size"], job=_job(args, "encode"), spec=training_spec(exp))


def cmd_sample(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import sample_shard

    exp = _experiment(args)
    shards = exp["sample"]["shards"]
    if not 0 <= args.shard < shards:  # before any file is read
        raise SystemExit(f"pivq sample: --shard {args.shard} is outside 0..{shards - 1} "
                         f"(experiments.{exp['name']}.sample.shards = {shards})")
    sample_shard(_path(args, exp, "model"), _path(args, exp, "codes"), exp["sample"], args.shard,
                 args.out or _path(args, exp, "shards").format(i=args.shard), job=_job(args, "sample_shard"),
                 spec=training_spec(exp))


def cmd_paths(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import interpolation_figure_data

    exp = _experiment(args)
    interpolation_figure_data(_path(args, exp, "model"), _path(args, exp, "codes"), _path(args, exp, "data"),
                              exp["figure1"], args.out or f"{_path(args, exp, 'metrics')}/interpolation_paths.npz",
                              job=_job(args, "interpolation_paths"), spec=training_spec(exp))


def cmd_fidelity(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import fidelity

    exp = _experiment(args)
    print(json.dumps(fidelity(exp["name"], exp["dataset_name"], exp["metrics"], exp["dataset"]["feature_extractor"],
                              _shards(args, exp), _path(args, exp, "data"), _extractor_weights(args, exp),
                              args.out or f"{_path(args, exp, 'metrics')}/fidelity.json", job=_job(args, "fidelity"),
                              reference_cache=f"{_path(args, exp, 'data')}/reference_features",
                              spec=training_spec(exp)), indent=2))


def cmd_usage(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import capacity

    exp = _experiment(args)
    print(json.dumps(capacity(exp["name"], exp["dataset_name"], exp["quantizer"], _path(args, exp, "codes"),
                              args.out or f"{_path(args, exp, 'metrics')}/capacity.json", spec=training_spec(exp)),
                     indent=2))


def cmd_rate(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import rate

    exp = _experiment(args)
    print(json.dumps(rate(exp["name"], exp["dataset_name"], _path(args, exp, "codes"),
                          args.out or f"{_path(args, exp, 'metrics')}/rate.json", spec=training_spec(exp)), indent=2))


def cmd_probe(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import probe

    exp = _experiment(args)
    probe(exp["name"], exp["dataset_name"], exp["probe"], _path(args, exp, "codes"), _path(args, exp, "data"),
          args.out or f"{_path(args, exp, 'metrics')}/probe.json", cpus=_job(args, "probe").cpus,
          spec=training_spec(exp))


def cmd_atlas(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import code_atlas

    exp = _experiment(args)
    metrics = _path(args, exp, "metrics")
    code_atlas(_path(args, exp, "model"), _path(args, exp, "codes"), _path(args, exp, "data"),
               args.probe or f"{metrics}/probe.json", exp["atlas"], args.out or f"{metrics}/code_atlas.npz",
               job=_job(args, "code_atlas"), spec=training_spec(exp))


def cmd_attributes(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import attributes

    exp = _experiment(args)
    out = Path(args.out or f"{_path(args, exp, 'metrics')}/attributes.json")
    shards = _shards(args, exp) if exp["quantizer"] == "matching" else []
    result = attributes(exp["name"], exp["dataset_name"], _path(args, exp, "model"), _path(args, exp, "codes"),
                        _path(args, exp, "data"), _extractor_weights(args, exp),
                        out, out.parent / "reconstructions.npz",  # the figure's images beside the JSON
                        shard_paths=shards, batch_size=exp["encode"]["batch_size"], job=_job(args, "attributes"),
                        spec=training_spec(exp))
    print(json.dumps(result, indent=2))


def cmd_evaluate(args) -> None:
    from pivq.device import Job
    from pivq.stages import evaluate

    fidelity = probe = None
    if args.fidelity or args.probe:
        if not args.experiment:
            raise SystemExit("pivq evaluate: --fidelity and --probe take their settings from an experiment: "
                             "name one with --experiment")
        exp = _experiment(args)
        probe = exp["probe"] if args.probe else None
        if args.fidelity:
            extractor = exp["dataset"]["feature_extractor"]
            trained = f"{args.data}/extractor.pt" if extractor["name"] == "pivq-toyfaces-cnn" else None
            fidelity = {"sample": exp["sample"], "metrics": exp["metrics"], "extractor": extractor,
                        "weights": args.extractor or extractor["weights"] or trained}
    job = Job(owner=f"model {args.model}", stage="evaluate", gpu=int(args.gpu), cpus=args.threads or 1)
    result = evaluate(args.model, args.data, args.out, batch_size=args.batch_size, job=job, fidelity=fidelity,
                      probe=probe)
    print(json.dumps(result, indent=2))


def cmd_capacity(args) -> None:
    from pivq.analysis.capacity import capacity_summary

    try:
        result = capacity_summary(args.codebook_size, args.length, k_img=args.k_img, k_data=args.k_data)
    except ValueError as err:
        raise SystemExit(f"pivq capacity: {err}") from None
    print(json.dumps(result, indent=2, sort_keys=True))


def cmd_report(args) -> None:
    from pivq.config import report_experiments
    from pivq.stages import report_figures, report_tables

    params = _params(args)
    if not Path(args.metrics).is_dir():
        raise FileNotFoundError(f"missing metrics folder: {args.metrics}")
    if args.what == "record":  # metrics built stage by stage with this CLI: say which settings they are of
        from pivq.built_with import BUILT_WITH, built_with
        from pivq.io import write_json

        write_json(Path(args.metrics) / BUILT_WITH, built_with(params))
        print(Path(args.metrics) / BUILT_WITH)
        return
    build = {"tables": report_tables, "figures": report_figures}[args.what]
    out = args.out or f"results/{args.what}"
    for path in build(report_experiments(params), params["report"], args.metrics, out, params=params):
        print(path)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pivq", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pivq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def add(name: str, func, help: str, experiment: bool = False, threads: bool = False):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func, parser=p)
        if name != "capacity":
            p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
        if experiment:
            p.add_argument("--experiment", required=True, help="an experiment of params.yaml")
        if threads:
            p.add_argument("--threads", type=_positive, default=None,
                           help="CPU threads (default: the stage's cpus in params.yaml resources)")
        return p

    add("validate", cmd_validate, "check params.yaml against its schema")
    p = add("prepare", cmd_prepare, "prepare a dataset into data/<dataset>/")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", help="output folder (default: data/<dataset>)")
    p.add_argument("--workers", type=_positive, default=None,
                   help="image-decoding processes for the real datasets (default: prepare_dataset's cpus)")
    p = add("extractor", cmd_extractor, "train a dataset's attribute CNN (toyfaces' feature extractor)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", help="the prepared dataset (default: data/<dataset>)")
    p.add_argument("--out", help="weights file (default: <data>/extractor.pt)")
    p.add_argument("--summary", help="summary JSON (default: results/metrics/extractor_<dataset>.json)")

    def stage(name: str, func, help: str, paths: tuple[str, ...], gpu_stage: bool = True):
        """A stage of an experiment: its settings from params.yaml, every file it reads or writes an option."""
        p = add(name, func, help, experiment=True, threads=gpu_stage)
        p.description = f"{help}: settings from the experiment in params.yaml, paths from the pipeline's layout"
        for key in paths:
            if key == "shards":
                p.add_argument("--shards", nargs="+", help="sample shards (default: runs/<exp>/samples/shard-*.npz)")
            else:
                p.add_argument(f"--{key}", help=f"default: {LAYOUT.get(key, '<metrics>/...')}")
        p.add_argument("--out", help="the output file (default: where the pipeline writes it)")
        return p

    stage("train", cmd_train, "train (or resume) an experiment", ("data", "run", "metrics"))
    stage("encode", cmd_encode, "encode every image of an experiment's dataset to its code set", ("model", "data"))
    p = stage("sample", cmd_sample, "generate one shard of interpolation samples (Algorithm 1)", ("model", "codes"))
    p.add_argument("--shard", type=int, required=True)
    stage("paths", cmd_paths, "decode Figure 1's smooth interpolation paths", ("model", "codes", "data", "metrics"))
    stage("fidelity", cmd_fidelity, "FID, precision, recall, density, coverage of the samples",
          ("shards", "data", "extractor", "metrics"))
    stage("usage", cmd_usage, "codebook usage and the capacity bound of the code sets (the capacity stage)",
          ("codes", "metrics"), gpu_stage=False)
    stage("rate", cmd_rate, "entropy-code the test code sets (the measured rate)", ("codes", "metrics"),
          gpu_stage=False)
    stage("probe", cmd_probe, "the attribute probe (section 3.8)", ("codes", "data", "metrics"))
    p = stage("atlas", cmd_atlas, "the code atlas", ("model", "codes", "data", "metrics"))
    p.add_argument("--probe", help="probe.json (default: <metrics>/probe.json)")
    stage("attributes", cmd_attributes, "attribute accuracy of the reconstructions and the samples' recombination",
          ("model", "codes", "data", "extractor", "shards", "metrics"))
    p = add("evaluate", cmd_evaluate, "evaluate any checkpoint on any prepared dataset: reconstruction L1, "
            "codebook usage and capacity; with --fidelity and --probe also those")
    p.add_argument("--model", required=True, help="a model.pt (or a run folder's)")
    p.add_argument("--data", required=True, help="a prepared dataset folder")
    p.add_argument("--out", required=True, help="the JSON to write")
    p.add_argument("--experiment", help="the experiment whose sample, metrics and probe settings to use")
    p.add_argument("--fidelity", action="store_true", help="also sample (Algorithm 1) and score the samples")
    p.add_argument("--probe", action="store_true", help="also run the attribute probe")
    p.add_argument("--extractor", help="the feature extractor's weights (default: as the pipeline finds them)")
    p.add_argument("--batch-size", type=_positive, default=256)
    p.add_argument("--threads", type=_positive, default=None, help="CPU threads (default: 1)")
    p.add_argument("--gpu", action="store_true", help="run on the GPU (a GPU asked for is a GPU used)")
    p = add("capacity", cmd_capacity, "capacity bounds in bits (eqs. 2 and 4, L log2 K, the multiset bound)")
    p.add_argument("--codebook-size", type=_positive, required=True, help="K")
    p.add_argument("--length", type=_positive, required=True, help="L, codes per image")
    p.add_argument("--k-img", type=_positive, required=True, help="distinct codes per image (eq. 2)")
    p.add_argument("--k-data", type=_positive, help="codes used over the dataset (default: K)")
    p = add("report", cmd_report, "rebuild the tables or figures from results/metrics (record: write the settings "
            "metrics built by hand are of, results/metrics/built_with.json, as Snakemake's built_with rule does)")
    p.add_argument("what", choices=["tables", "figures", "record"])
    p.add_argument("--metrics", default="results/metrics", help="metrics folder (default: results/metrics)")
    p.add_argument("--out", help="output folder (default: results/<what>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, so the usage line is the subcommand's
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from pivq.config import ParamsError
    from pivq.errors import UserError

    try:
        args.func(args)
    except (ParamsError, FileNotFoundError, NotImplementedError, UserError) as err:
        print(f"pivq {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
