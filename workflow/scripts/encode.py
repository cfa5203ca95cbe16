from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.stages import encode_dataset

    encode_dataset(snakemake.input.model, snakemake.input.manifest, snakemake.output.codes, threads=snakemake.threads)
