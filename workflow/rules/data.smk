# Stage 1: raw data (or the toyfaces generator) -> data/<dataset>/ in the prepared format.


rule prepare_dataset:
    output:
        images="data/{dataset}/images.npy",
        attributes="data/{dataset}/attributes.csv",
        split="data/{dataset}/split.csv",
        manifest="data/{dataset}/manifest.json",
    params:
        # what preparation reads: a new feature extractor or job size must not re-prepare the data
        dataset=lambda wc: {k: v for k, v in config["datasets"][wc.dataset].items()
                            if k not in ("feature_extractor", "resources")},
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare_dataset_{dataset}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("prepare_dataset")  # decoding processes
    resources:
        **requested("prepare_dataset"),
    script:
        "../scripts/prepare_dataset.py"
