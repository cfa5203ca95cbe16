# Stage 5: sample quality (FID, precision, recall, density, coverage) with a named feature extractor.


rule train_extractor:
    input:
        manifest="data/{dataset}/manifest.json",
    output:
        weights="data/{dataset}/extractor.pt",
        summary="results/metrics/extractor_{dataset}.json",
    params:
        extractor=lambda wc: config["datasets"][wc.dataset]["feature_extractor"],
    log:
        "logs/train_extractor_{dataset}.log",
    benchmark:
        "logs/benchmarks/train_extractor_{dataset}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("train_extractor")
    resources:
        **requested("train_extractor"),
    script:
        "../scripts/train_extractor.py"


rule fidelity:
    input:
        shards=sample_shards,
        manifest=dataset_manifest,
        extractor=extractor_weights,
    output:
        metrics="results/metrics/{exp}/fidelity.json",
    params:
        dataset=dataset_name,
        metrics=lambda wc: experiment(wc)["metrics"],
        extractor=extractor_of,
        # a cache shared by every experiment on the dataset, keyed by content: not an output
        reference_cache=lambda wc: f"data/{dataset_name(wc)}/reference_features",
        spec=train_spec,  # the shards must be this experiment's
    log:
        "logs/fidelity_{exp}.log",
    benchmark:
        "logs/benchmarks/fidelity_{exp}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("fidelity")
    resources:
        **requested("fidelity"),
    script:
        "../scripts/fidelity.py"


rule attributes:
    # Only where the dataset's feature extractor classifies attributes (toyfaces' CNN): Inception does not.
    input:
        model="runs/{exp}/model.pt",
        codes="runs/{exp}/codes.npz",
        manifest=dataset_manifest,
        extractor=attribute_extractor,
        shards=lambda wc: sample_shards(wc) if wc.exp in SET_CODED else [],  # Algorithm 1 needs sets
    output:
        metrics="results/metrics/{exp}/attributes.json",
        figure="results/metrics/{exp}/reconstructions.npz",
    params:
        dataset=dataset_name,
        batch_size=lambda wc: experiment(wc)["encode"]["batch_size"],
        spec=train_spec,
    log:
        "logs/attributes_{exp}.log",
    benchmark:
        "logs/benchmarks/attributes_{exp}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("attributes")
    resources:
        **requested("attributes"),
    script:
        "../scripts/attributes.py"
