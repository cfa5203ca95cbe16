# Experiment lookups shared by the rules. Each rule receives only the parameters its stage reads, so a
# change to, say, the sampling settings does not re-trigger training (Snakemake's params rerun trigger).

EXPERIMENTS = experiments_to_build(config)
# Matching gives every image a *set* of codes: Algorithm 1 (sampling, sample metrics, Figure 1) and the
# set coder (measured rate) need that, so they are built for matching runs only.
SET_CODED = [e for e in EXPERIMENTS if config["experiments"][e]["quantizer"] == "matching"]
# The attributes stage needs a feature extractor that classifies attributes: toyfaces' CNN (Inception does not).
ATTRIBUTE_SCORED = [e for e in EXPERIMENTS
                    if config["datasets"][config["experiments"][e]["dataset"]]["feature_extractor"]["name"]
                    == "pivq-toyfaces-cnn"]


def check_raw_downloads():
    """Nothing is downloaded: a real dataset not yet prepared needs its raw files, so even a dry run stops here,
    naming the missing path and what belongs there. A prepared one (say, pulled with DVC) needs none."""
    for name in sorted({config["experiments"][e]["dataset"] for e in EXPERIMENTS}):
        dataset = config["datasets"][name]
        if dataset["kind"] != "toyfaces" and not os.path.exists(f"data/{name}/manifest.json"):
            from pivq.data.sources import check_source  # only imported when a real dataset is in play

            try:
                check_source(dataset["kind"], dataset["root"])
            except FileNotFoundError as err:
                raise FileNotFoundError(f"datasets.{name}.root = {dataset['root']}: {err}") from None


check_raw_downloads()


wildcard_constraints:
    exp="|".join(config["experiments"]),
    dataset="|".join(config["datasets"]),
    shard=r"\d+",


def experiment(wildcards):
    return config["experiments"][wildcards.exp]


def dataset_name(wildcards):
    return experiment(wildcards)["dataset"]


def dataset_manifest(wildcards):
    return f"data/{dataset_name(wildcards)}/manifest.json"


def train_spec(wildcards):
    """What training reads (pivq.config.training_spec: the architecture, the schedule, the quantizer), as `pivq
    train` passes it."""
    return training_spec(resolve_experiment(config, wildcards.exp))


def _job(stage, wildcards):
    """params.yaml resources.<preset>.<stage> for the job's experiment (or, in dataset rules, its dataset)."""
    if hasattr(wildcards, "exp"):
        return stage_resources(config, stage, experiment=wildcards.exp)
    return stage_resources(config, stage, dataset=wildcards.dataset)


def cpus(stage):
    """A heavy rule's threads: the CPUs its job asks for (capped by --cores locally)."""
    return lambda wildcards: _job(stage, wildcards)["cpus"]


def requested(stage):
    """A heavy rule's resources: what its job asks for, from params.yaml (the Slurm plugin turns gpu into
    --gpus, gpu_model into --gpus=<model>:1, cpus_per_task into --cpus-per-task, mem_mb into --mem, runtime
    into --time). cpus_per_task repeats the rule's threads, so the request is the preset's whatever --cores caps
    Snakemake's thread count at (a dry run counts 1). The rule's script reads gpu back (pivq.device.Job.from_snakemake): a GPU asked for is a
    GPU used."""
    keys = {"gpu": "gpu", "gpu_model": "gpu_model", "cpus_per_task": "cpus", "mem_mb": "mem_mb",
            "runtime": "runtime_min"}
    return {name: (lambda wildcards, key=key: _job(stage, wildcards)[key]) for name, key in keys.items()}


def extractor_of(wildcards):
    return config["datasets"][dataset_name(wildcards)]["feature_extractor"]


def extractor_weights(wildcards):
    """The toyfaces CNN is trained by the pipeline; Inception's weights come from a local file."""
    extractor = extractor_of(wildcards)
    if extractor["name"] == "pivq-toyfaces-cnn" and extractor["weights"] is None:
        return f"data/{dataset_name(wildcards)}/extractor.pt"
    return []


def attribute_extractor(wildcards):
    """The attribute CNN's weights: the pipeline's own (trained) or the file params.yaml names."""
    return extractor_of(wildcards)["weights"] or f"data/{dataset_name(wildcards)}/extractor.pt"


def sample_shards(wildcards):
    shards = experiment(wildcards)["sample"]["shards"]
    return [f"runs/{wildcards.exp}/samples/shard-{i}.npz" for i in range(shards)]


def in_report(paths, category):
    """`snakemake --report`: CSV tables and PNG figures go in (the md/tex/pdf twins hold the same content)."""
    return [report(p, category=category, caption="../report/results.rst", labels={"file": os.path.basename(p)})
            if p.endswith((".csv", ".png")) else p for p in paths]
