from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.device import Job
    from pivq.stages import encode_dataset

    encode_dataset(snakemake.input.model, snakemake.input.manifest, snakemake.output.codes,
                   batch_size=snakemake.params.batch_size, spec=snakemake.params.spec,
                   job=Job.from_snakemake(snakemake, f"experiment {snakemake.wildcards.exp}"))
