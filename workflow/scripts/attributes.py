from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.device import Job
    from pivq.stages import attributes

    attributes(snakemake.wildcards.exp, snakemake.params.dataset, snakemake.input.model, snakemake.input.codes,
               snakemake.input.manifest, snakemake.input.extractor, snakemake.output.metrics,
               snakemake.output.figure, shard_paths=list(snakemake.input.shards),
               batch_size=snakemake.params.batch_size,
               job=Job.from_snakemake(snakemake, f"experiment {snakemake.wildcards.exp}"), spec=snakemake.params.spec)
