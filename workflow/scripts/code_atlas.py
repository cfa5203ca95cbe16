from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.device import Job
    from pivq.stages import code_atlas

    code_atlas(snakemake.input.model, snakemake.input.codes, snakemake.input.manifest, snakemake.input.probe,
               snakemake.params.atlas, snakemake.output.atlas,
               job=Job.from_snakemake(snakemake, f"experiment {snakemake.wildcards.exp}"), spec=snakemake.params.spec)
