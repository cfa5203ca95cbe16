"""`pivq <command>` as a shell user runs it: the installed entry point, in a subprocess, from a scratch folder.

Errors a user can make (a missing argument, a bad value, a broken params.yaml, a dataset that cannot be prepared
yet) must end in a one-line message and a non-zero exit, never in a traceback.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pivq.built_with import built_with
from pivq.io import write_json

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PIVQ = BIN / "pivq"
SUBCOMMANDS = ["validate", "prepare", "extractor", "train", "encode", "sample", "paths", "fidelity", "usage", "rate",
               "probe", "atlas", "attributes", "capacity", "report", "evaluate"]
EXPERIMENT_STAGES = ["train", "encode", "sample", "paths", "fidelity", "usage", "rate", "probe", "atlas", "attributes"]
# What each subcommand needs at least; `validate` has no required argument (params.yaml is the default).
REQUIRED = {
    "prepare": "--dataset",
    "extractor": "--dataset",
    **{stage: "--experiment" for stage in EXPERIMENT_STAGES},
    "capacity": "--codebook-size",
    "report": "what",
    "evaluate": "--model",
}
TABLE_NAMES = ["table1_capabilities", "table2_capacity", "table3_metrics", "paper_vs_reproduced", "table_quantizers",
               "table_attributes"]


@pytest.fixture(scope="module", autouse=True)
def _installed():
    if not PIVQ.exists():
        pytest.skip(f"the pivq entry point is not installed next to {sys.executable}")


def pivq(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(PIVQ), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, a message naming each needle on stderr, no traceback."""
    assert proc.returncode != 0, f"exited 0:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"a traceback instead of a message:\n{proc.stderr}"
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in stderr:\n{proc.stderr}"


# --- help and argument errors ---------------------------------------------------------------------------


def test_top_level_help_lists_every_subcommand(tmp_path):
    proc = pivq("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: pivq")
    for command in SUBCOMMANDS:  # (argparse puts a long name's help on the next line)
        assert re.search(rf"^    {command}(\s|$)", proc.stdout, re.M), f"{command} missing from `pivq --help`"


def test_version_and_no_command(tmp_path):
    proc = pivq("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("pivq ")
    proc = pivq(cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage: pivq" in proc.stderr


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command, tmp_path):
    proc = pivq(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: pivq {command}")


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_missing_required_arguments_is_a_usage_error(command, tmp_path):
    proc = pivq(command, cwd=tmp_path)
    assert proc.returncode == 2, f"{proc.returncode}:\n{proc.stderr}"
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith(f"usage: pivq {command}"), proc.stderr
    assert "the following arguments are required" in proc.stderr
    assert REQUIRED[command] in lines[-1]
    assert "Traceback" not in proc.stderr


# Each subcommand's required arguments, filled in: then the only error is the one a test adds.
FILLED = {
    "validate": [],
    "prepare": ["--dataset", "toyfaces32"],
    "extractor": ["--dataset", "toyfaces32"],
    **{stage: ["--experiment", "toy_matching"] for stage in EXPERIMENT_STAGES},
    "sample": ["--experiment", "toy_matching", "--shard", "0"],
    "capacity": ["--codebook-size", "8", "--length", "4", "--k-img", "2"],
    "report": ["tables"],
    "evaluate": ["--model", "m.pt", "--data", "d", "--out", "o.json"],
}


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_unknown_option_is_a_usage_error(command, tmp_path):
    proc = pivq(command, *FILLED[command], "--no-such-option", cwd=tmp_path)
    assert proc.returncode == 2, f"{proc.returncode}:\n{proc.stderr}"
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"usage: pivq {command}"), proc.stderr
    assert "unrecognized arguments: --no-such-option" in lines[-1]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["sample", "--experiment", "toy_matching", "--shard", "first"], "--shard"),
    (["train", "--experiment", "toy_matching", "--threads", "0"], "--threads"),
    (["report", "charts"], "charts"),
    (["prepare", "--dataset", "toyfaces32", "--workers", "two"], "--workers"),
])
def test_wrong_argument_value_is_a_usage_error(args, needle, tmp_path):
    proc = pivq(*args, cwd=tmp_path)
    assert proc.returncode == 2, f"{proc.returncode}:\n{proc.stderr}"
    assert proc.stderr.startswith(f"usage: pivq {args[0]}") and needle in proc.stderr.splitlines()[-1], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["train", "--experiment", "no_such_experiment"], "no_such_experiment"),
    (["sample", "--experiment", "toy_matching", "--shard", "7"], "7"),
    (["prepare", "--dataset", "no_such_dataset"], "no_such_dataset"),
])
def test_unknown_names_are_clean_failures(args, needle, tmp_path):
    proc = pivq(*args, "--params", REPO / "params.yaml", cwd=tmp_path)
    assert_clean_failure(proc, needle)


# --- capacity -------------------------------------------------------------------------------------------


def test_capacity_at_the_papers_setting(tmp_path):
    proc = pivq("capacity", "--codebook-size", 4096, "--length", 512, "--k-img", 49, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["matching_bits"] == pytest.approx(2220.71, abs=0.01)  # Table 2: 2221
    assert result["nearest_bits"] == pytest.approx(611.28, abs=0.01)  # eq. 2; the paper prints 614
    assert result["pi_upper_bound_bits"] == pytest.approx(2313.10, abs=0.01)
    assert result["conventional_vq_bits"] == 6144  # L log2 K = 512 * 12
    assert (result["K"], result["L"], result["k_img"], result["k_data"]) == (4096, 512, 49, 4096)


@pytest.mark.parametrize("args, needle", [
    (["--length", 0, "--k-img", 49], "--length"),
    (["--length", -3, "--k-img", 49], "--length"),
    (["--length", "many", "--k-img", 49], "--length"),
    (["--length", 512, "--k-img", 0], "--k-img"),
])
def test_capacity_rejects_non_positive_arguments(args, needle, tmp_path):
    proc = pivq("capacity", "--codebook-size", 4096, *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: pivq capacity")
    assert needle in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--length", 10, "--k-img", 49], "k_img=49 exceeds L=10"),
    (["--length", 512, "--k-img", 49, "--k-data", 5000], "k_data=5000"),
])
def test_capacity_rejects_inconsistent_arguments(args, needle, tmp_path):
    proc = pivq("capacity", "--codebook-size", 4096, *args, cwd=tmp_path)
    assert_clean_failure(proc, "pivq capacity:", needle)


# --- validate -------------------------------------------------------------------------------------------


def test_validate_the_repo_params(tmp_path):
    proc = pivq("validate", "--params", REPO / "params.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    assert "toy_matching" in proc.stdout  # what `all` builds by default


@pytest.mark.parametrize("case", ["unknown_key", "bad_quantizer", "missing_key", "dangling_model"])
def test_validate_names_the_broken_key(case, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    exp = params["experiments"]["toy_matching"]
    if case == "unknown_key":
        exp["learning_rate"], needles = 0.1, ["experiments.toy_matching", "learning_rate"]
    elif case == "bad_quantizer":
        exp["quantizer"], needles = "foo", ["experiments.toy_matching.quantizer", "'foo'"]
    elif case == "missing_key":
        del params["report"]["figures"]["dpi"]
        needles = ["report.figures", "dpi"]
    else:
        exp["model"], needles = "no_such_model", ["experiments.toy_matching.model", "no_such_model"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    proc = pivq("validate", "--params", path, cwd=tmp_path)
    assert_clean_failure(proc, "pivq validate:", *needles)


def test_validate_a_missing_or_malformed_file(tmp_path):
    proc = pivq("validate", "--params", tmp_path / "nope.yaml", cwd=tmp_path)
    assert_clean_failure(proc, "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    proc = pivq("validate", "--params", tmp_path / "list.yaml", cwd=tmp_path)
    assert_clean_failure(proc, "list.yaml", "mapping")


# --- report ---------------------------------------------------------------------------------------------


def _capacity_metrics(metrics: Path, params: dict) -> None:
    """capacity.json for each experiment of the active set, from a small synthetic code set."""
    import numpy as np

    from pivq.encode import save_codes
    from pivq.stages import capacity

    rng = np.random.default_rng(0)
    for name in params["experiment_sets"][params["experiment_set"]]:
        exp = params["experiments"][name]
        model = params["models"][exp["model"]]
        K, L = model["codebook_size"], model["codes"]
        if exp["quantizer"] == "matching":
            codes = np.stack([rng.permutation(K)[:L] for _ in range(40)])
        else:
            codes = rng.integers(0, min(K, 6), size=(40, L))
        codes_path = metrics.parent / f"{name}_codes.npz"
        save_codes(codes_path, codes.astype(np.int64), np.array(["train"] * 30 + ["test"] * 10), K)
        capacity(name, exp["dataset"], exp["quantizer"], codes_path, metrics / name / "capacity.json")
    write_json(metrics / "built_with.json", built_with(params))  # as Snakemake's built_with rule writes it


def test_report_tables_from_a_metrics_folder(tmp_path):
    params_path = tmp_path / "params.yaml"
    shutil.copy2(REPO / "params.yaml", params_path)
    params = yaml.safe_load(params_path.read_text())
    metrics = tmp_path / "metrics"
    if (REPO / "results" / "metrics").is_dir():
        shutil.copytree(REPO / "results" / "metrics", metrics)
    else:
        _capacity_metrics(metrics, params)
    out = tmp_path / "tables"

    proc = pivq("report", "tables", "--params", params_path, "--metrics", metrics, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = sorted([f"{n}.{f}" for n in TABLE_NAMES for f in params["report"]["tables"]["formats"]]
                      + ["summary.json"])
    assert sorted(p.name for p in out.iterdir()) == expected
    assert sorted(Path(line).name for line in proc.stdout.split()) == expected  # it prints what it wrote
    for path in out.iterdir():
        assert path.stat().st_size > 0, path
    # every experiment with a capacity.json gets a reproduced row in Table 2
    with open(out / "table2_capacity.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    reproduced = {r["experiment"] for r in rows if r["source"] == "reproduced"}
    measured = {p.parent.name for p in metrics.glob("*/capacity.json")}
    active = set(params["experiment_sets"][params["experiment_set"]])
    assert measured & active, "no capacity.json for the active experiments"
    assert reproduced == measured & active
    assert {r["source"] for r in rows} >= {"reported", "recomputed", "reproduced"}

    # the same inputs give the same bytes
    again = tmp_path / "again"
    proc = pivq("report", "tables", "--params", params_path, "--metrics", metrics, "--out", again, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in expected:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name

    # a key the metrics were built with, changed: refused, naming it, and nothing written
    params["schedules"]["toy"]["steps"] += 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    stale = tmp_path / "stale"
    proc = pivq("report", "tables", "--params", params_path, "--metrics", metrics, "--out", stale, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "experiments.toy_matching.schedule.steps" in proc.stderr and "snakemake" in proc.stderr
    assert not stale.exists()
    # metrics built by hand with the stage commands: `pivq report record` says which settings they are of
    proc = pivq("report", "record", "--params", params_path, "--metrics", metrics, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((metrics / "built_with.json").read_text()) == json.loads(json.dumps(built_with(params)))
    proc = pivq("report", "tables", "--params", params_path, "--metrics", metrics, "--out", stale, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


# --- prepare --------------------------------------------------------------------------------------------


def test_prepare_a_real_dataset_fails_fast_and_clearly(tmp_path):
    """Without the raw download: a message naming the missing folder and what belongs there, no traceback."""
    out = tmp_path / "celeba64"
    proc = pivq("prepare", "--params", REPO / "params.yaml", "--dataset", "celeba64", "--out", out, cwd=tmp_path,
                timeout=60)
    assert_clean_failure(proc, "pivq prepare:", "raw/celeba", "list_attr_celeba.txt")
    assert not out.exists(), "a failed preparation left a folder behind"


def test_prepare_an_unknown_dataset(tmp_path):
    proc = pivq("prepare", "--params", REPO / "params.yaml", "--dataset", "imagenet", cwd=tmp_path)
    assert_clean_failure(proc, "imagenet", "toyfaces32")
    assert not (tmp_path / "data").exists()
