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
