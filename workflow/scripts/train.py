from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.device import Job
    from pivq.stages import train_model

    train_model(snakemake.params.spec, snakemake.input.manifest, snakemake.params.run_dir,
                snakemake.output.training, snakemake.output.curve,
                job=Job.from_snakemake(snakemake, f"experiment {snakemake.wildcards.exp}"),
                eval_batch_size=snakemake.params.eval_batch_size)
