"""Helpers shared by the workflow-level tests (test_workflow.py, test_faults.py): run Snakemake and DVC in a
fresh copy of the repo on a shrunken embedded configuration.

Every command runs in a subprocess with this interpreter's bin folder first on PATH (dvc.yaml's commands call `pivq`).
Importable because pyproject.toml puts tests/ on pytest's pythonpath; this is not a test module.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_model import TINY_MODEL

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
DVC = BIN / "dvc"

# Every rule a full `all` of the embedded set runs, besides `all` itself (README's stages 1-8).
STAGE_RULES = ["prepare_dataset", "train_extractor", "train", "encode", "sample_shard", "interpolation_paths",
               "fidelity", "capacity", "rate", "probe", "code_atlas", "attributes", "built_with", "tables", "figures"]
TABLE_NAMES = ["table1_capabilities", "table2_capacity", "table3_metrics", "paper_vs_reproduced", "table_quantizers",
               "table_attributes"]
EXPERIMENTS = {"toy_matching": "matching", "toy_nearest": "nearest"}

# A tiny run takes ~70 s on 2 cores; the whole module's budget for one snakemake call is generous.
SNAKEMAKE_TIMEOUT = 600
DVC_TIMEOUT = 180


def need(executable: Path) -> None:
    if not executable.exists():
        pytest.skip(f"{executable.name} is not installed next to {sys.executable}")


def env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"  # no network from the tests
    env.pop("SNAKEMAKE_PROFILE", None)  # a user's default profile (say, slurm) must not leak in
    return env


def run(args: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command; its stdout and stderr together in ``.out``."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    proc.out = proc.stdout
    return proc


def check(proc: subprocess.CompletedProcess, what: str) -> str:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{proc.out[-6000:]}"
    return proc.out


def copy_workflow(dest: Path) -> Path:
    """The files Snakemake needs (Snakefile, workflow/, params.yaml), no outputs."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Snakefile", dest / "Snakefile")
    shutil.copytree(REPO / "workflow", dest / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "params.yaml", dest / "params.yaml")
    return dest


def load_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(path: Path, params: dict) -> None:
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def tiny_params() -> dict:
    """params.yaml shrunk to a run of about a minute on 2 CPU cores; same experiment names, same rules."""
    params = load_params()
    data = params["datasets"]["toyfaces32"]
    data.update(resolution=16, n_train=200, n_test=60)
    data["feature_extractor"].update(steps=30, batch_size=32)
    params["models"]["tiny"] = copy.deepcopy(TINY_MODEL)
    params["schedules"]["toy"].update(steps=60, batch_size=8, quantize_start=30, init_window=4, init_repeats=2,
                                      kmeans_iters=3, log_every=10, image_every=30,
                                      checkpoint_every=20)
    for name in EXPERIMENTS:
        exp = params["experiments"][name]
        exp["model"] = "tiny"
        exp["sample"].update(n=120, shards=2, batch_size=60)
        exp["metrics"].update(n_real=120, batch_size=60)
        exp["probe"]["folds"] = 2
        exp["figure1"]["steps"] = 4
    assert params["experiment_sets"][params["experiment_set"]] == list(EXPERIMENTS)
    return params


def expected_targets(params: dict) -> tuple[list[str], list[str]]:
    """The tables and figures `all` must build for ``params`` (README, "What you get")."""
    exps = params["experiment_sets"][params["experiment_set"]]
    sampled = [e for e in exps if params["experiments"][e]["quantizer"] == "matching"]
    tables = [f"results/tables/{n}.{f}" for n in TABLE_NAMES for f in params["report"]["tables"]["formats"]]
    tables.append("results/tables/summary.json")  # the headline numbers, dvc.yaml's metrics
    scored = [e for e in exps if params["datasets"][params["experiments"][e]["dataset"]]["feature_extractor"]["name"]
              == "pivq-toyfaces-cnn"]
    figure_names = (["figure4_capacity", "training_curves"] + (["figure1_interpolations"] if sampled else [])
                    + (["reconstructions"] if scored else [])
                    + [f"figure5_probe_{e}" for e in exps] + [f"code_atlas_{e}" for e in exps])
    figures = [f"results/figures/{n}.{f}" for n in figure_names for f in params["report"]["figures"]["formats"]]
    return tables, figures


def expected_logs(params: dict) -> set[str]:
    """One log per job of `all` (the rules' `log:` names)."""
    exps = params["experiment_sets"][params["experiment_set"]]
    datasets = {params["experiments"][e]["dataset"] for e in exps}
    logs = {"tables", "figures", "built_with"}
    for d in datasets:
        logs |= {f"prepare_{d}", f"train_extractor_{d}"}
    for e in exps:
        exp = params["experiments"][e]
        logs |= {f"train_{e}", f"encode_{e}", f"capacity_{e}", f"probe_{e}", f"code_atlas_{e}"}
        if params["datasets"][exp["dataset"]]["feature_extractor"]["name"] == "pivq-toyfaces-cnn":
            logs.add(f"attributes_{e}")
        if exp["quantizer"] == "matching":
            logs |= {f"interpolation_paths_{e}", f"fidelity_{e}", f"rate_{e}"}
            logs |= {f"sample_{e}_{i}" for i in range(exp["sample"]["shards"])}
    return {f"logs/{name}.log" for name in logs}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def mtimes(root: Path, folders: list[str]) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for f in folders for p in sorted((root / f).rglob("*")) if p.is_file()}


def jobs_listed(dry_run_output: str) -> list[str]:
    """The rule of every job a dry run lists (`rule x:` / `localrule x:` lines)."""
    return re.findall(r"^(?:local)?rule (\w+):", dry_run_output, flags=re.MULTILINE)



def add_dvc_stages(root: Path) -> None:
    """dvc.yaml and the report code its stages depend on (the same code as the installed pivq)."""
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for dep in stage["deps"]:
            if not (root / dep).exists():
                assert (REPO / dep).is_file(), f"dvc.yaml names a dependency that does not exist: {dep}"
                (root / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / dep, root / dep)
