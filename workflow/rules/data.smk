# Stage 1: raw data (or the toyfaces generator) -> data/<dataset>/ in the prepared format.


rule prepare_dataset:
    output:
        images="data/{dataset}/images.npy",
        attributes="data/{dataset}/attributes.csv",
        split="data/{dataset}/split.csv",
        manifest="data/{dataset}/manifest.json",
    params:
        dataset=lambda wc: config["datasets"][wc.dataset],
    log:
        "logs/prepare_{dataset}.log",
    conda:
        "../envs/pivq.yaml"
    threads: 1
    script:
        "../scripts/prepare_dataset.py"
