from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.device import Job
    from pivq.stages import train_feature_extractor

    train_feature_extractor(snakemake.input.manifest, snakemake.params.extractor, snakemake.output.weights,
                            snakemake.output.summary,
                            job=Job.from_snakemake(snakemake, f"dataset {snakemake.wildcards.dataset}"))
