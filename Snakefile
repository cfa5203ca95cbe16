# pivq: the PI-VQ pipeline. `snakemake --cores 2 all` runs the embedded toyfaces experiments;
# `snakemake --profile slurm all` runs the paper's experiments on a Slurm cluster (see README).
# Parse-time work stays light: pivq.config imports no torch, rules call workflow/scripts in their own process.

import os

from snakemake.utils import min_version

from pivq.built_with import built_with
from pivq.config import (experiments_to_build, read_params_yaml, report_experiments, resolve_experiment,
                         stage_resources, training_spec, validate_params)


# before Snakemake's own, plain, YAML load: a duplicate key or an alias bomb in params.yaml is a ParamsError
# (a missing params.yaml is left to configfile's own error, or to --configfile's files)
if os.path.exists("params.yaml"):
    read_params_yaml("params.yaml")


min_version("9.0")  # (the slurm executor plugin and the profile's keys)


configfile: "params.yaml"


# `snakemake --report report.html`: every table, figure, training curve and run's options in one HTML file
report: "workflow/report/workflow.rst"


# before any job: a wrong key or value names the key (config: params.yaml with --config's overrides);
# files given with --configfile are read strictly too (Snakemake has loaded them already)
for _configfile in workflow.overwrite_configfiles:
    read_params_yaml(_configfile)
validate_params(config, schema_path=f"{workflow.basedir}/workflow/schemas/params.schema.yaml")


# Seconds of CPU work each: on a cluster they run on the submitting node instead of waiting in the queue.
localrules:
    all,
    capacity,
    built_with,
    tables,
    figures,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True  # a bare `snakemake` builds everything, not the first included rule
    input:
        TABLES,
        FIGURES,
