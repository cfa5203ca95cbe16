# Shared by the `tables` and `figures` rules: the rule's name picks the builder.
from pathlib import Path

from pivq.logs import to_file

with to_file(snakemake.log[0], outputs=snakemake.output):
    from pivq.stages import report_figures, report_tables

    build = {"tables": report_tables, "figures": report_figures}[snakemake.rule]
    build(snakemake.params.experiments, snakemake.params.report, "results/metrics",
          Path(snakemake.output[0]).parent, params=snakemake.config)
