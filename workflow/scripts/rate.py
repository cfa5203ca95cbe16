from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.stages import rate

    rate(snakemake.wildcards.exp, snakemake.params.dataset, snakemake.input.codes, snakemake.output.rate,
         spec=snakemake.params.spec)
