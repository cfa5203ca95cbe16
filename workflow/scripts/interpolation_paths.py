from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.device import Job
    from pivq.stages import interpolation_figure_data

    interpolation_figure_data(snakemake.input.model, snakemake.input.codes, snakemake.input.manifest,
                              snakemake.params.figure1, snakemake.output.paths,
                              job=Job.from_snakemake(snakemake, f"experiment {snakemake.wildcards.exp}"),
                              spec=snakemake.params.spec)
