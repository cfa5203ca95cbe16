"""What results/metrics were built with, so that no table or figure is drawn from metrics of other parameters.

Snakemake builds results/metrics (training, sampling, metrics); DVC and ``pivq report`` only draw the tables and
figures from them. After a change to a key a heavy stage reads (``dvc exp run -S schedules.toy.steps=2000``, an
edit of params.yaml), the metrics on disk are those of the old value until Snakemake reruns what the key
affects. Snakemake's ``built_with`` rule therefore records, next to the metrics, every setting of the experiments
it built (:func:`built_with`), and the report refuses to draw from metrics whose record differs from params.yaml
(:func:`check_built_with`), naming the keys and saying to run Snakemake first.

What is recorded: the experiment set and, per experiment of it, its resolved settings (its dataset, model and
schedule presets inlined) without the job sizes (``resources``: they size cluster jobs, not results). The report's
own settings (``report``) are not recorded: the tables and figures are rebuilt from the same metrics when they
change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pivq.config import experiments_to_build, resolve_experiment
from pivq.errors import UserError
from pivq.io import read_json

BUILT_WITH = "built_with.json"
SHOWN_DIFFERENCES = 8  # keys named in the error; the rest are counted


class StaleMetricsError(UserError, RuntimeError):
    """results/metrics were built with other parameters than params.yaml holds now."""


def built_with(params: dict) -> dict[str, Any]:
    """The settings the experiment set's metrics depend on (module docstring)."""
    experiments = {}
    for name in experiments_to_build(params):
        exp = resolve_experiment(params, name)
        exp = {k: v for k, v in exp.items() if k != "resources"}
        exp["dataset"] = {k: v for k, v in exp["dataset"].items() if k != "resources"}
        experiments[name] = exp
    return {"experiment_set": params["experiment_set"], "experiments": experiments}


def _differences(old: Any, new: Any, key: str = "") -> list[str]:
    """Dotted keys where two JSON-like values differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{key}.{k}" if key else str(k)
            if k not in old:
                out.append(f"{sub} is new ({new[k]!r})")
            elif k not in new:
                out.append(f"{sub} is gone (was {old[k]!r})")
            else:
                out += _differences(old[k], new[k], sub)
        return out
    return [] if old == new else [f"{key}: {old!r} in the metrics, {new!r} in params.yaml"]


def check_built_with(params: dict, metrics_dir: str | Path, source: str = "params.yaml") -> None:
    """Refuse (StaleMetricsError) unless ``metrics_dir`` records that it was built with ``params``'s settings."""
    path = Path(metrics_dir) / BUILT_WITH
    if not path.exists():
        raise StaleMetricsError(f"{path} is missing: it is written when Snakemake builds the metrics. Run "
                                "`snakemake --cores all all` first (it also draws the tables and figures), or, "
                                "for metrics built stage by stage with the pivq CLI, `pivq report record`.")
    # through JSON, as the record was written: tuples become lists, keys strings
    now = json.loads(json.dumps(built_with(params)))
    differ = _differences(read_json(path), now)
    if differ:
        shown = "; ".join(differ[:SHOWN_DIFFERENCES])
        more = f" (and {len(differ) - SHOWN_DIFFERENCES} more)" if len(differ) > SHOWN_DIFFERENCES else ""
        raise StaleMetricsError(
            f"{metrics_dir} was built with other settings than {source} holds now: {shown}{more}. Tables and figures "
            f"drawn from it would show the old results beside the new parameters. Run `snakemake --cores all all` "
            f"(it reruns what those keys affect, then draws the tables and figures); `dvc exp run` cannot, because "
            f"the heavy stages are Snakemake's (README, 'Comparing two variants').")
