from pathlib import Path

from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.stages import prepare_dataset

    prepare_dataset(snakemake.wildcards.dataset, snakemake.params.dataset, Path(snakemake.output.manifest).parent,
                    workers=snakemake.threads)
