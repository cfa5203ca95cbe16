# Stage 2: train a PI-VQ model; stage 3: encode every image to its set of L codes.
# runs/<exp>/checkpoints/ is deliberately not an output: a failed or preempted job's retry resumes from it.


rule train:
    input:
        manifest=dataset_manifest,
    output:
        model="runs/{exp}/model.pt",
        training="results/metrics/{exp}/training.json",
        curve=report("results/metrics/{exp}/training_log.csv", category="Training",
                     caption="../report/training_log.rst", labels={"experiment": "{exp}", "file": "training_log.csv"}),
        # the resolved experiment and the software that trained it
        options=report("runs/{exp}/options.json", category="Training", caption="../report/options.rst",
                       labels={"experiment": "{exp}", "file": "options.json"}),
    params:
        spec=train_spec,
        run_dir=lambda wc: f"runs/{wc.exp}",
        eval_batch_size=lambda wc: experiment(wc)["encode"]["batch_size"],  # the test-L1 evaluation's batches
    log:
        "logs/train_{exp}.log",
    benchmark:
        "logs/benchmarks/train_{exp}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("train")  # also the threads the matcher solves a batch's images on
    priority: 10  # start every training run first: they are the critical path
    resources:
        **requested("train"),
    script:
        "../scripts/train.py"


rule encode:
    input:
        model="runs/{exp}/model.pt",
        manifest=dataset_manifest,
    output:
        codes="runs/{exp}/codes.npz",
    params:
        batch_size=lambda wc: experiment(wc)["encode"]["batch_size"],
        spec=train_spec,  # the model must be this experiment's
    log:
        "logs/encode_{exp}.log",
    benchmark:
        "logs/benchmarks/encode_{exp}.tsv"
    conda:
        "../envs/pivq.yaml"
    threads: cpus("encode")
    resources:
        **requested("encode"),
    script:
        "../scripts/encode.py"
