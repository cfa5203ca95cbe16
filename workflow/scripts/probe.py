from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.stages import probe

    probe(snakemake.wildcards.exp, snakemake.params.dataset, snakemake.params.probe, snakemake.input.codes,
          snakemake.input.manifest, snakemake.output.probe, cpus=snakemake.threads, spec=snakemake.params.spec)
