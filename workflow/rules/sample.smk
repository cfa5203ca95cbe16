# Stage 4: interpolation samples (Algorithm 1), one independent job per shard; Figure 1's smooth paths.


rule sample_shard:
    input:
        model="runs/{exp}/model.pt",
        codes="runs/{exp}/codes.npz",
    output:
        shard="runs/{exp}/samples/shard-{shard}.npz",
    params:
        sample=lambda wc: experiment(wc)["sample"],
        spec=train_spec,  # the model and codes must be this experiment's
    log:
        "logs/sample_{exp}_{shard}.log",
    benchmark:
        "logs/benchmarks/sample_shard_{exp}_{shard}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("sample_shard")
    resources:
        **requested("sample_shard"),
    script:
        "../scripts/sample_shard.py"


rule interpolation_paths:
    input:
        model="runs/{exp}/model.pt",
        codes="runs/{exp}/codes.npz",
        manifest=dataset_manifest,
    output:
        paths="results/metrics/{exp}/interpolation_paths.npz",
    params:
        figure1=lambda wc: experiment(wc)["figure1"],
        spec=train_spec,
    log:
        "logs/interpolation_paths_{exp}.log",
    benchmark:
        "logs/benchmarks/interpolation_paths_{exp}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("interpolation_paths")
    resources:
        **requested("interpolation_paths"),
    script:
        "../scripts/interpolation_paths.py"
