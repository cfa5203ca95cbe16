from pivq.logs import to_file

# the run folder's outputs (model.pt, options.json) are cleaned by training itself, under the run's lock: a
# live `pivq train` of the same run may be writing them
with to_file(snakemake.log[0], outputs=[snakemake.output.training, snakemake.output.curve]):
    from pivq.device import Job
    from pivq.stages import train_model

    train_model(snakemake.params.spec, snakemake.input.manifest, snakemake.params.run_dir,
                snakemake.output.training, snakemake.output.curve,
                job=Job.from_snakemake(snakemake, f"experiment {snakemake.wildcards.exp}"),
                eval_batch_size=snakemake.params.eval_batch_size)
