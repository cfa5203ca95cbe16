# Stages 6 and 7: capacity, codebook usage and measured rate (Table 2, eqs. 2 and 4); attribute probe (Figure 5).


rule capacity:
    input:
        codes="runs/{exp}/codes.npz",
    output:
        capacity="results/metrics/{exp}/capacity.json",
    params:
        dataset=dataset_name,
        quantizer=lambda wc: experiment(wc)["quantizer"],
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
    log:
        "logs/rate_{exp}.log",
    conda:
        "../envs/pivq.yaml"
    threads: 1
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
    log:
        "logs/probe_{exp}.log",
    conda:
        "../envs/pivq.yaml"
    threads: 1
    script:
        "../scripts/probe.py"
