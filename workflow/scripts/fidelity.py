from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.device import Job
    from pivq.stages import fidelity

    # the pipeline-trained extractor is an input; otherwise the configured local weights (None: default cache)
    weights = snakemake.input.extractor or snakemake.params.extractor["weights"]
    fidelity(snakemake.wildcards.exp, snakemake.params.dataset, snakemake.params.metrics, snakemake.params.extractor,
             list(snakemake.input.shards), snakemake.input.manifest, weights, snakemake.output.metrics,
             job=Job.from_snakemake(snakemake, f"experiment {snakemake.wildcards.exp}"),
             reference_cache=snakemake.params.reference_cache, spec=snakemake.params.spec)
