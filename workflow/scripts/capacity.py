from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.stages import capacity

    capacity(snakemake.wildcards.exp, snakemake.params.dataset, snakemake.params.quantizer, snakemake.input.codes,
             snakemake.output.capacity, spec=snakemake.params.spec)
