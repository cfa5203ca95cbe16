# Stages 6 and 7: capacity, codebook usage and measured rate (Table 2, eqs. 2 and 4); attribute probe (Figure 5)
# and the code atlas.


rule capacity:
    input:
        codes="runs/{exp}/codes.npz",
    output:
        capacity="results/metrics/{exp}/capacity.json",
    params:
        dataset=dataset_name,
        quantizer=lambda wc: experiment(wc)["quantizer"],
        spec=train_spec,  # the codes must be this experiment's
    log:
        "logs/capacity_{exp}.log",
    conda:
        "../envs/pivq.yaml"
    threads: 1
    script:
        "../scripts/capacity.py"


rule rate:
    input:
        codes="runs/{exp}/codes.npz",
    output:
        rate="results/metrics/{exp}/rate.json",
    params:
        dataset=dataset_name,
        spec=train_spec,
    log:
        "logs/rate_{exp}.log",
    benchmark:
        "logs/benchmarks/rate_{exp}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("rate")
    resources:
        **requested("rate"),
    script:
        "../scripts/rate.py"


rule probe:
    input:
        codes="runs/{exp}/codes.npz",
        manifest=dataset_manifest,
    output:
        probe="results/metrics/{exp}/probe.json",
    params:
        dataset=dataset_name,
        probe=lambda wc: experiment(wc)["probe"],
        spec=train_spec,
    log:
        "logs/probe_{exp}.log",
    benchmark:
        "logs/benchmarks/probe_{exp}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("probe")  # folds fit in parallel
    resources:
        **requested("probe"),
    script:
        "../scripts/probe.py"


# Beyond the paper: the code atlas decodes test images with the probe's top codes swapped in (a model decode,
# like Figure 1's paths); the figures rule draws it without torch.
rule code_atlas:
    input:
        model="runs/{exp}/model.pt",
        codes="runs/{exp}/codes.npz",
        manifest=dataset_manifest,
        probe="results/metrics/{exp}/probe.json",
    output:
        atlas="results/metrics/{exp}/code_atlas.npz",
    params:
        atlas=lambda wc: experiment(wc)["atlas"],
        spec=train_spec,
    log:
        "logs/code_atlas_{exp}.log",
    benchmark:
        "logs/benchmarks/code_atlas_{exp}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("code_atlas")
    resources:
        **requested("code_atlas"),
    script:
        "../scripts/code_atlas.py"
