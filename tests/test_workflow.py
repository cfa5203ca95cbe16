"""The workflow as a user runs it: Snakemake (`snakemake --cores 2 all`) and DVC (`dvc repro`) in a copy of the repo.

The end-to-end test builds a shrunken embedded run (16px toyfaces, a tiny model, 60 training steps) with the real
Snakefile, rules and scripts, then checks what the README promises: every table and figure of `all`, one log per
job, a checkpoint per run, nothing to do on a second run, and `dvc repro` rebuilding the same bytes and re-running
only what a parameter change touches. The other tests run Snakemake at parse time only (dry runs, lint, bad params).

Every command runs in a subprocess with this interpreter's bin folder first on PATH (dvc.yaml's commands call `pivq`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
DVC = BIN / "dvc"

# Every rule a full `all` of the embedded set runs, besides `all` itself (README's stages 1-8).
STAGE_RULES = ["prepare_dataset", "train_extractor", "train", "encode", "sample_shard", "interpolation_paths",
               "fidelity", "capacity", "rate", "probe", "tables", "figures"]
TABLE_NAMES = ["table1_capabilities", "table2_capacity", "table3_metrics", "paper_vs_reproduced"]
EXPERIMENTS = {"toy_matching": "matching", "toy_nearest": "nearest"}

TINY_MODEL = {"resolution": 16, "nf": 8, "ch_mult": [1, 2], "res_blocks": 1, "attn_resolutions": [8],
              "norm_groups": 4, "width": 16, "heads": 2, "layers": 1, "ffn": 32, "codes": 8, "codebook_size": 32}

# A tiny run takes ~70 s on 2 cores; the whole module's budget for one snakemake call is generous.
SNAKEMAKE_TIMEOUT = 600
DVC_TIMEOUT = 180


def _need(executable: Path) -> None:
    if not executable.exists():
        pytest.skip(f"{executable.name} is not installed next to {sys.executable}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"  # no network from the tests
    env.pop("SNAKEMAKE_PROFILE", None)  # a user's default profile (say, slurm) must not leak in
    return env


def _run(args: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command; its stdout and stderr together in ``.out``."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    proc.out = proc.stdout
    return proc


def _check(proc: subprocess.CompletedProcess, what: str) -> str:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{proc.out[-6000:]}"
    return proc.out


def _copy_workflow(dest: Path) -> Path:
    """The files Snakemake needs (Snakefile, workflow/, params.yaml), no outputs."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Snakefile", dest / "Snakefile")
    shutil.copytree(REPO / "workflow", dest / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "params.yaml", dest / "params.yaml")
    return dest


def _load_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _write_params(path: Path, params: dict) -> None:
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def tiny_params() -> dict:
    """params.yaml shrunk to a run of about a minute on 2 CPU cores; same experiment names, same rules."""
    params = _load_params()
    data = params["datasets"]["toyfaces32"]
    data.update(resolution=16, n_train=200, n_test=60)
    data["feature_extractor"].update(steps=30, batch_size=32)
    params["models"]["tiny"] = copy.deepcopy(TINY_MODEL)
    params["schedules"]["toy"].update(steps=60, batch_size=8, quantize_start=30, init_window=4, init_repeats=2,
                                      kmeans_iters=3, log_every=10, checkpoint_every=20)
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
    figure_names = (["figure4_capacity", "training_curves"] + (["figure1_interpolations"] if sampled else [])
                    + [f"figure5_probe_{e}" for e in exps])
    figures = [f"results/figures/{n}.{f}" for n in figure_names for f in params["report"]["figures"]["formats"]]
    return tables, figures


def expected_logs(params: dict) -> set[str]:
    """One log per job of `all` (the rules' `log:` names)."""
    exps = params["experiment_sets"][params["experiment_set"]]
    datasets = {params["experiments"][e]["dataset"] for e in exps}
    logs = {"tables", "figures"}
    for d in datasets:
        logs |= {f"prepare_{d}", f"train_extractor_{d}"}
    for e in exps:
        exp = params["experiments"][e]
        logs |= {f"train_{e}", f"encode_{e}", f"capacity_{e}", f"probe_{e}"}
        if exp["quantizer"] == "matching":
            logs |= {f"interpolation_paths_{e}", f"fidelity_{e}", f"rate_{e}"}
            logs |= {f"sample_{e}_{i}" for i in range(exp["sample"]["shards"])}
    return {f"logs/{name}.log" for name in logs}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _mtimes(root: Path, folders: list[str]) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for f in folders for p in sorted((root / f).rglob("*")) if p.is_file()}


def _jobs_listed(dry_run_output: str) -> list[str]:
    """The rule of every job a dry run lists (`rule x:` / `localrule x:` lines)."""
    return re.findall(r"^(?:local)?rule (\w+):", dry_run_output, flags=re.MULTILINE)


# --- the tiny end-to-end run (built once for the module) ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`snakemake --cores 2 all` on the tiny params in a fresh copy, then a second run and a dry run."""
    _need(SNAKEMAKE)
    root = _copy_workflow(tmp_path_factory.mktemp("tiny_project"))
    params = tiny_params()
    _write_params(root / "params.yaml", params)

    start = time.monotonic()
    first = _run([SNAKEMAKE, "--cores", "2", "all"], root, timeout=SNAKEMAKE_TIMEOUT)
    seconds = time.monotonic() - start
    _check(first, "snakemake --cores 2 all")
    print(f"tiny `snakemake --cores 2 all`: {seconds:.1f} s")

    tables = _snapshot(root / "results" / "tables")
    figures = _snapshot(root / "results" / "figures")
    before = _mtimes(root, ["results", "runs", "data"])
    second = _run([SNAKEMAKE, "--cores", "2", "all"], root)
    after = _mtimes(root, ["results", "runs", "data"])
    dry = _run([SNAKEMAKE, "-n", "all"], root)
    return {"root": root, "params": params, "first": first, "second": second, "dry": dry, "tables": tables,
            "figures": figures, "mtimes": (before, after)}


def test_all_builds_every_table_and_figure(tiny_run):
    root = tiny_run["root"]
    tables, figures = expected_targets(tiny_run["params"])
    missing = [t for t in tables + figures if not (root / t).is_file() or (root / t).stat().st_size == 0]
    assert not missing, f"`all` did not build {missing}"
    # ... and nothing else in the report folders (a stale name would mean the rules and the report disagree)
    built = sorted(p.relative_to(root).as_posix() for d in ("tables", "figures")
                   for p in (root / "results" / d).iterdir())
    assert built == sorted(tables + figures)
    assert "100%) done" in tiny_run["first"].out


def test_metrics_are_valid_json_naming_their_feature_extractor(tiny_run):
    root, params = tiny_run["root"], tiny_run["params"]
    extractor = params["datasets"]["toyfaces32"]["feature_extractor"]["name"]
    for exp, quantizer in EXPERIMENTS.items():
        folder = root / "results" / "metrics" / exp
        names = {p.name for p in folder.glob("*.json")}
        expected = {"training.json", "capacity.json", "probe.json"} | (
            {"fidelity.json", "rate.json"} if quantizer == "matching" else set())
        assert names == expected, f"{folder}: {sorted(names)}"
        for path in folder.glob("*.json"):
            data = json.loads(path.read_text())  # valid JSON
            assert isinstance(data, dict) and data, path
        capacity = json.loads((folder / "capacity.json").read_text())
        assert capacity["quantizer"] == quantizer
        assert (capacity["K"], capacity["L"]) == (TINY_MODEL["codebook_size"], TINY_MODEL["codes"])
        assert (folder / "training_log.csv").stat().st_size > 0
    fidelity = json.loads((root / "results/metrics/toy_matching/fidelity.json").read_text())
    assert fidelity["feature_extractor"] == extractor
    assert fidelity["experiment"] == "toy_matching"
    assert fidelity["n_fake"] == params["experiments"]["toy_matching"]["sample"]["n"]
    for key in ("fid", "precision", "recall", "density", "coverage"):
        assert isinstance(fidelity[key], (int, float)), key
    assert (root / "results/metrics/toy_matching/interpolation_paths.npz").is_file()
    rate = json.loads((root / "results/metrics/toy_matching/rate.json").read_text())
    assert rate["roundtrip_ok"] is True and rate["n_test"] == params["datasets"]["toyfaces32"]["n_test"]
    assert not (root / "results/metrics/toy_nearest/fidelity.json").exists()  # nearest runs are not sampled
    summary = json.loads((root / "results/metrics/extractor_toyfaces32.json").read_text())
    assert summary["extractor"] == extractor
    # the table of sample metrics names the extractor its numbers come from
    assert extractor in (root / "results/tables/table3_metrics.csv").read_text()


def test_one_log_per_job_and_a_checkpoint_per_run(tiny_run):
    root = tiny_run["root"]
    logs = {p.relative_to(root).as_posix() for p in (root / "logs").glob("*.log")}
    assert logs == expected_logs(tiny_run["params"])
    for exp in EXPERIMENTS:
        assert (root / "runs" / exp / "checkpoints" / "latest.pt").is_file()
        assert (root / "runs" / exp / "model.pt").is_file()
        assert (root / "runs" / exp / "codes.npz").is_file()
    shards = tiny_run["params"]["experiments"]["toy_matching"]["sample"]["shards"]
    assert sorted(p.name for p in (root / "runs/toy_matching/samples").iterdir()) == [
        f"shard-{i}.npz" for i in range(shards)]


def test_second_run_has_nothing_to_do(tiny_run):
    second, dry = tiny_run["second"], tiny_run["dry"]
    assert "Nothing to be done" in _check(second, "second snakemake --cores 2 all")
    assert _jobs_listed(second.out) == []
    before, after = tiny_run["mtimes"]
    assert before == after, "the second run touched outputs"
    assert "Nothing to be done" in _check(dry, "snakemake -n all after a full run")
    assert _jobs_listed(dry.out) == []


def test_dvc_repro_rebuilds_the_same_bytes_and_only_what_changed(tiny_run):
    """README: `dvc repro` rebuilds tables and figures from results/metrics; a second run does nothing; a change
    to report.figures re-runs only `figures`."""
    _need(DVC)
    root = tiny_run["root"]
    if shutil.which("git", path=_env()["PATH"]) is None:
        pytest.skip("git is not installed")
    _check(_run(["git", "init", "-q"], root), "git init")
    _check(_run([DVC, "init", "-q"], root), "dvc init")
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    # dvc.yaml's stages depend on the report code: bring those files along (the same code as the installed pivq)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for dep in stage["deps"]:
            if not (root / dep).exists():
                assert (REPO / dep).is_file(), f"dvc.yaml names a dependency that does not exist: {dep}"
                (root / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / dep, root / dep)

    first = _check(_run([DVC, "repro"], root, timeout=DVC_TIMEOUT), "dvc repro")
    assert "Running stage 'tables'" in first and "Running stage 'figures'" in first
    assert (root / "dvc.lock").is_file()
    tables, figures = _snapshot(root / "results/tables"), _snapshot(root / "results/figures")
    # same code, same inputs: the bytes Snakemake built
    assert tables == tiny_run["tables"], "tables built by `dvc repro` differ from Snakemake's"
    assert figures == tiny_run["figures"], "figures built by `dvc repro` differ from Snakemake's"

    second = _check(_run([DVC, "repro"], root, timeout=DVC_TIMEOUT), "second dvc repro")
    assert "Running stage" not in second
    assert "Stage 'tables' didn't change, skipping" in second
    assert "Stage 'figures' didn't change, skipping" in second
    assert "Data and pipelines are up to date." in second

    params = yaml.safe_load((root / "params.yaml").read_text())
    old_dpi = params["report"]["figures"]["dpi"]
    params["report"]["figures"]["dpi"] = 60 if old_dpi != 60 else 72
    _write_params(root / "params.yaml", params)
    third = _check(_run([DVC, "repro"], root, timeout=DVC_TIMEOUT), "dvc repro after a dpi change")
    assert "Running stage 'figures'" in third
    assert "Running stage 'tables'" not in third
    assert "Stage 'tables' didn't change, skipping" in third
    assert _snapshot(root / "results/tables") == tables, "tables changed with a figure-only parameter"
    refigured = _snapshot(root / "results/figures")
    assert sorted(refigured) == sorted(figures)
    unchanged_png = [name for name in figures if name.endswith(".png") and refigured[name] == figures[name]]
    assert not unchanged_png, f"figures not redrawn at the new dpi: {unchanged_png}"


# --- parse-time checks (no job runs) -----------------------------------------------------------------------


@pytest.fixture
def workflow_copy(tmp_path):
    _need(SNAKEMAKE)
    return _copy_workflow(tmp_path / "repo")


def test_dry_run_lists_every_stage(workflow_copy):
    out = _check(_run([SNAKEMAKE, "-n", "all"], workflow_copy), "snakemake -n all")
    listed = set(_jobs_listed(out))
    missing = [r for r in STAGE_RULES if r not in listed]
    assert not missing, f"the dry run lists no job of {missing}:\n{out[-4000:]}"
    assert "all" in listed
    for folder in ("data", "runs", "results", "logs"):
        assert not (workflow_copy / folder).exists(), f"a dry run created {folder}/"


def test_lint_is_clean(workflow_copy):
    proc = _run([SNAKEMAKE, "--lint"], workflow_copy)
    out = _check(proc, "snakemake --lint")
    # snakemake reports a clean workflow with this line, and each problem under "Lints for ..."
    assert "Congratulations, your workflow is in a good condition!" in out
    assert "Lints for" not in out


def _break(params: dict, case: str) -> str:
    """Break ``params`` in place; return the dotted key the error must name."""
    exp = params["experiments"]["toy_matching"]
    if case == "unknown_key":
        exp["learning_rate"] = 0.1
        return "experiments.toy_matching"
    if case == "bad_quantizer":
        exp["quantizer"] = "foo"
        return "experiments.toy_matching.quantizer"
    if case == "codes_over_codebook":
        assert exp["quantizer"] == "matching"
        model = params["models"][exp["model"]]
        model["codes"], model["codebook_size"] = 500, 128
        return "experiments.toy_matching.quantizer"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unknown_key", "bad_quantizer", "codes_over_codebook"])
def test_bad_params_stop_before_any_job(workflow_copy, case):
    params = _load_params()
    key = _break(params, case)
    _write_params(workflow_copy / "params.yaml", params)
    # the dry run for each case; one real run too (a job would create its folders before failing)
    runs = [["-n", "all"]] + ([["--cores", "1", "all"]] if case == "bad_quantizer" else [])
    for args in runs:
        proc = _run([SNAKEMAKE, *args], workflow_copy)
        assert proc.returncode != 0, f"snakemake {' '.join(args)} accepted {case}:\n{proc.out[-3000:]}"
        assert key in proc.out, f"the error does not name {key}:\n{proc.out[-3000:]}"
        if case == "unknown_key":
            assert "learning_rate" in proc.out
        if case == "bad_quantizer":
            assert "'foo'" in proc.out
        if case == "codes_over_codebook":
            assert "500" in proc.out and "128" in proc.out
        assert "ParamsError" in proc.out
        for folder in ("data", "runs", "results", "logs"):
            assert not (workflow_copy / folder).exists(), f"a job ran ({folder}/ exists) despite {case}"


def test_dry_run_stops_on_a_missing_raw_download(workflow_copy):
    """The paper's datasets are never downloaded: `snakemake -n` names the missing folder and the params key."""
    proc = _run([SNAKEMAKE, "-n", "all", "--config", "experiment_set=paper"], workflow_copy)
    assert proc.returncode != 0
    assert "datasets.celeba64.root = raw/celeba" in proc.out and "list_attr_celeba.txt" in proc.out, proc.out[-3000:]
    assert not (workflow_copy / "data").exists()


def test_slurm_profile_parses():
    """`snakemake --profile slurm` needs a Slurm; check what the profile sets instead."""
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert isinstance(profile["jobs"], int) and profile["jobs"] > 0
    assert isinstance(profile["retries"], int) and profile["retries"] >= 1  # a preempted training run resumes
    assert profile["config"] == ["experiment_set=paper"]
    assert "paper" in _load_params()["experiment_sets"]


# --- on a real Slurm: `snakemake --profile slurm` (README, "On a Slurm cluster") ------------------------------
# slurm/local/setup-slurm.sh installs and starts a single-node Slurm on localhost (root and apt-get needed, as in
# CI); slurm/local/config.yaml is the overlay profile for it. Each snakemake run is bounded by `timeout -s INT`
# (SIGINT: the one signal the Slurm plugin honours while it polls).

SLURM_TIMEOUT = 1200
SETUP_SLURM = REPO / "slurm" / "local" / "setup-slurm.sh"
STOP_SLURM = REPO / "slurm" / "local" / "stop-slurm.sh"
SLURM_PROFILE = ["--profile", "slurm", "--profile", "slurm/local"]
LOCAL_RULES = {"all", "capacity", "tables", "figures"}  # the Snakefile's localrules
# run-time facts, not results: they differ between any two runs
TIMING_KEYS = {"seconds", "steps_per_s", "wall_seconds"}


@pytest.fixture(scope="module")
def local_slurm():
    """A running single-node Slurm. Started here from the project's own script and stopped afterwards (only the
    daemons this fixture started); skipped where it cannot run (not root, no apt-get)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("a local Slurm needs root and apt-get (Debian/Ubuntu)")
    if subprocess.run(["pgrep", "-x", "slurmctld"], stdout=subprocess.DEVNULL).returncode == 0:
        pytest.skip("a slurmctld is already running here: not touching someone else's cluster")
    start = time.monotonic()
    setup = subprocess.run(["bash", str(SETUP_SLURM)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=600)
    assert setup.returncode == 0, f"{SETUP_SLURM} failed:\n{setup.stdout[-3000:]}"
    print(f"local Slurm up in {time.monotonic() - start:.1f} s")
    try:
        yield
    finally:
        subprocess.run(["bash", str(STOP_SLURM)], timeout=120)


def _slurm_project(root: Path, params: dict) -> Path:
    _copy_workflow(root)
    shutil.copytree(REPO / "slurm", root / "slurm")
    _write_params(root / "params.yaml", params)
    return root


def _snakemake_slurm(root: Path, *targets: str) -> subprocess.CompletedProcess:
    return _run(["timeout", "-s", "INT", "-k", "30", str(SLURM_TIMEOUT), SNAKEMAKE, *SLURM_PROFILE, *targets],
                root, timeout=SLURM_TIMEOUT + 60)


def _results(root: Path) -> dict[str, object]:
    """Every metrics JSON under results/metrics, without run-time keys."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
        return [strip(v) for v in obj] if isinstance(obj, list) else obj

    return {p.relative_to(root).as_posix(): strip(json.loads(p.read_text()))
            for p in sorted((root / "results" / "metrics").rglob("*.json"))}


@pytest.mark.slurm
def test_embedded_pipeline_through_slurm_matches_a_local_run(tiny_run, local_slurm, tmp_path):
    params = copy.deepcopy(tiny_run["params"])
    params["experiments"]["toy_matching"]["resources"]["gpu"] = 1  # a fake GPU (GRES): exercises --gpus
    root = _slurm_project(tmp_path / "cluster_project", params)

    start = time.monotonic()
    proc = _snakemake_slurm(root, "all")
    seconds = time.monotonic() - start
    _check(proc, "snakemake --profile slurm --profile slurm/local all")
    print(f"tiny `snakemake --profile slurm --profile slurm/local all`: {seconds:.1f} s")

    # every job but the local rules went through sbatch: one Slurm log per job, named by rule
    slurm_logs = {p.relative_to(root / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
                  for p in (root / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert slurm_logs == set(STAGE_RULES) - LOCAL_RULES
    train_log = (root / "logs" / "train_toy_matching.log").read_text()
    assert "SLURM_JOB_ID=" in train_log and "CUDA_VISIBLE_DEVICES=0" in train_log  # the fake GPU was granted
    assert "SLURM_JOB_ID=" not in (root / "logs" / "tables.log").read_text()  # a local rule

    cluster, local = _results(root), _results(tiny_run["root"])
    assert sorted(cluster) == sorted(local)
    differ = {f"{name}:{key}": (cluster[name].get(key), local[name].get(key)) for name in cluster
              for key in set(cluster[name]) | set(local[name]) if cluster[name].get(key) != local[name].get(key)}
    assert not differ, f"the Slurm run's metrics differ from the local run's (cluster, local): {differ}"
    assert _snapshot(root / "results" / "tables") == tiny_run["tables"]


@pytest.mark.slurm
def test_scancelled_training_job_resumes_from_its_checkpoint(local_slurm, tmp_path):
    """scancel the training job once it has checkpointed; the profile's retry resumes it and the run completes."""
    params = tiny_params()
    params["schedules"]["toy"].update(steps=400, checkpoint_every=20, log_every=20)
    root = _slurm_project(tmp_path / "fault_project", params)
    target = "runs/toy_matching/model.pt"
    checkpoint = root / "runs" / "toy_matching" / "checkpoints" / "latest.pt"

    snakemake = subprocess.Popen([str(a) for a in ["timeout", "-s", "INT", "-k", "30", str(SLURM_TIMEOUT), SNAKEMAKE,
                                  *SLURM_PROFILE, target]],
                                 cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = None
    deadline = time.monotonic() + 600
    while job is None and snakemake.poll() is None and time.monotonic() < deadline:
        if checkpoint.is_file():  # the job is running and has checkpointed once: cancel it now
            running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], stdout=subprocess.PIPE,
                                     text=True).stdout.split("\n")
            # the plugin's --comment: rule_<rule>_wildcards_<values> (plugin 2.x) or rule_<rule>
            job = next((line.split()[0] for line in running
                        if re.fullmatch(r"\d+ rule_train(_wildcards_.*)?", line)), None)
        time.sleep(0.5)
    assert job is not None, "no running training job with a checkpoint to cancel"
    subprocess.run(["scancel", job], check=True)
    out, _ = snakemake.communicate(timeout=SLURM_TIMEOUT + 60)
    assert snakemake.returncode == 0, f"the run did not complete after scancel:\n{out[-6000:]}"

    # the cancelled job went through Slurm; its retry (a new job: Snakemake starts the retry's log afresh) resumed
    assert (root / ".snakemake" / "slurm_logs" / "rule_train" / "toy_matching" / f"{job}.log").is_file()
    log = (root / "logs" / "train_toy_matching.log").read_text()
    retry = re.findall(r"SLURM_JOB_ID=(\d+)", log)
    assert retry and int(retry[0]) > int(job), log[:2000]
    resumed = re.findall(r"resumed toy_matching from .* at step (\d+)", log)
    assert resumed and int(resumed[0]) > 0, f"the retry started over instead of resuming:\n{log[-3000:]}"
    training = json.loads((root / "results/metrics/toy_matching/training.json").read_text())
    assert training["steps"] == 400
