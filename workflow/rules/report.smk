# Stage 8: tables and figures in results/. dvc.yaml runs the same `pivq report` code, so `dvc repro`
# rebuilds them from results/metrics without Snakemake and without retraining.

TABLE_NAMES = ["table1_capabilities", "table2_capacity", "table3_metrics", "paper_vs_reproduced", "table_quantizers",
               "table_attributes"]
TABLES = expand(
    "results/tables/{name}.{fmt}", name=TABLE_NAMES, fmt=config["report"]["tables"]["formats"]
) + ["results/tables/summary.json"]  # the headline numbers per experiment: dvc.yaml's metrics
FIGURE_NAMES = (
    ["figure4_capacity", "training_curves"]
    + (["figure1_interpolations"] if SET_CODED else [])
    + (["reconstructions"] if ATTRIBUTE_SCORED else [])
    + [f"figure5_probe_{e}" for e in EXPERIMENTS]
    + [f"code_atlas_{e}" for e in EXPERIMENTS]
)
FIGURES = expand(
    "results/figures/{name}.{fmt}", name=FIGURE_NAMES, fmt=config["report"]["figures"]["formats"]
)
METRICS = (
    expand("results/metrics/{exp}/{name}", exp=EXPERIMENTS, name=["training.json", "training_log.csv",
                                                                   "capacity.json", "probe.json",
                                                                   "code_atlas.npz"])
    + expand("results/metrics/{exp}/{name}", exp=SET_CODED, name=["fidelity.json", "interpolation_paths.npz", "rate.json"])
    + expand("results/metrics/{exp}/{name}", exp=ATTRIBUTE_SCORED, name=["attributes.json", "reconstructions.npz"])
)


rule tables:
    input:
        METRICS,
        "results/metrics/built_with.json",
    output:
        in_report(TABLES, "Tables"),
    params:
        experiments=report_experiments(config),
        report=config["report"],
    log:
        "logs/tables.log",
    conda:
        "../envs/pivq.yaml"
    script:
        "../scripts/report.py"


rule figures:
    input:
        METRICS,
        "results/metrics/built_with.json",
    output:
        in_report(FIGURES, "Figures"),
    params:
        experiments=report_experiments(config),
        report=config["report"],
    log:
        "logs/figures.log",
    conda:
        "../envs/pivq.yaml"
    script:
        "../scripts/report.py"


rule built_with:
    # What the metrics were built with (pivq.report.built_with): the report refuses metrics of other parameters.
    # Its params are the record itself, so any change to them reruns it (Snakemake's params trigger).
    input:
        METRICS,
    output:
        "results/metrics/built_with.json",
    params:
        record=built_with(config),
    log:
        "logs/built_with.log",
    conda:
        "../envs/pivq.yaml"
    script:
        "../scripts/built_with.py"
