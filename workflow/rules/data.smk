# Stage 1: raw data (or the toyfaces generator) -> data/<dataset>/ in the prepared format.


rule prepare_dataset:
    output:
        images="data/{dataset}/images.npy",
        attributes="data/{dataset}/attributes.csv",
        split="data/{dataset}/split.csv",
        manifest="data/{dataset}/manifest.json",
    params:
        # what preparation reads: a new feature extractor or thread count must not re-prepare the data
        dataset=lambda wc: {k: v for k, v in config["datasets"][wc.dataset].items()
                            if k not in ("feature_extractor", "threads")},
    log:
        "logs/prepare_{dataset}.log",
    conda:
        "../envs/pivq.yaml"
    threads: lambda wc: config["datasets"][wc.dataset]["threads"]  # decoding processes; capped by --cores locally
    script:
        "../scripts/prepare_dataset.py"
