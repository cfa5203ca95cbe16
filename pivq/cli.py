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
    print(f"{args.params}: valid; `all` builds {experiments_to_build(params)} (experiment_set={params['experiment_set']})")


def cmd_prepare(args) -> None:
    from pivq.config import stage_resources
    from pivq.stages import prepare_dataset

    params = _params(args)
    if args.dataset not in params["datasets"]:
        raise SystemExit(f"pivq prepare: unknown dataset {args.dataset!r}; known: {sorted(params['datasets'])}")
    workers = args.workers or stage_resources(params, "prepare_dataset", dataset=args.dataset)["cpus"]
    print(prepare_dataset(args.dataset, params["datasets"][args.dataset], args.out or f"data/{args.dataset}",
                          workers=workers))


def cmd_train(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import train_model

    exp = _experiment(args)
    name = exp["name"]
    # what the Snakemake rule passes too: the run's options and identity do not depend on the entry point
    print(json.dumps(train_model(training_spec(exp), f"data/{exp['dataset_name']}", f"runs/{name}",
                                 f"results/metrics/{name}/training.json",
                                 f"results/metrics/{name}/training_log.csv", job=_job(args, "train"),
                                 eval_batch_size=exp["encode"]["batch_size"]), indent=2))


def cmd_encode(args) -> None:
    from pivq.stages import encode_dataset

    from pivq.config import training_spec

    exp = _experiment(args)
    encode_dataset(f"runs/{exp['name']}/model.pt", f"data/{exp['dataset_name']}", f"runs/{exp['name']}/codes.npz",
                   batch_size=exp["encode"]["batch_size"], job=_job(args, "encode"), spec=training_spec(exp))


def cmd_sample(args) -> None:
    from pivq.config import training_spec
    from pivq.stages import sample_shard

    exp = _experiment(args)
    shards = exp["sample"]["shards"]
    if not 0 <= args.shard < shards:  # before any file is read
        raise SystemExit(f"pivq sample: --shard {args.shard} is outside 0..{shards - 1} "
                         f"(experiments.{exp['name']}.sample.shards = {shards})")
    sample_shard(f"runs/{exp['name']}/model.pt", f"runs/{exp['name']}/codes.npz", exp["sample"], args.shard,
                 f"runs/{exp['name']}/samples/shard-{args.shard}.npz", job=_job(args, "sample_shard"),
                 spec=training_spec(exp))


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
    build = {"tables": report_tables, "figures": report_figures}[args.what]
    out = args.out or f"results/{args.what}"
    for path in build(report_experiments(params), params["report"], args.metrics, out):
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
    add("train", cmd_train, "train (or resume) an experiment", experiment=True, threads=True)
    add("encode", cmd_encode, "encode every image of an experiment's dataset to its code set", experiment=True,
        threads=True)
    p = add("sample", cmd_sample, "generate one shard of interpolation samples", experiment=True, threads=True)
    p.add_argument("--shard", type=int, required=True)
    p = add("capacity", cmd_capacity, "capacity bounds in bits (eqs. 2 and 4, L log2 K, the multiset bound)")
    p.add_argument("--codebook-size", type=_positive, required=True, help="K")
    p.add_argument("--length", type=_positive, required=True, help="L, codes per image")
    p.add_argument("--k-img", type=_positive, required=True, help="distinct codes per image (eq. 2)")
    p.add_argument("--k-data", type=_positive, help="codes used over the dataset (default: K)")
    p = add("report", cmd_report, "rebuild the tables or figures from results/metrics")
    p.add_argument("what", choices=["tables", "figures"])
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
