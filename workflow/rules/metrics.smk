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
    conda:
        "../envs/pivq.yaml"
    threads: 1
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
    log:
        "logs/fidelity_{exp}.log",
    conda:
        "../envs/pivq.yaml"
    threads: 2
    resources:
        gpu=resources_of("gpu"),
    script:
        "../scripts/fidelity.py"
