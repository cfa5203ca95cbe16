from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.device import Job
    from pivq.stages import sample_shard

    sample_shard(snakemake.input.model, snakemake.input.codes, snakemake.params.sample, int(snakemake.wildcards.shard),
                 snakemake.output.shard, job=Job.from_snakemake(snakemake, f"experiment {snakemake.wildcards.exp}"),
                 spec=snakemake.params.spec)
