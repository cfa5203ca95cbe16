from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.io import write_json

    write_json(snakemake.output[0], snakemake.params.record)
