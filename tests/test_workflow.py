"""The workflow as a user runs it: Snakemake (`snakemake --cores 2 all`) and DVC (`dvc repro`) in a copy of the repo.

The end-to-end test builds a shrunken embedded run (16px toyfaces, a tiny model, 60 training steps) with the real
Snakefile, rules and scripts, then checks what the README promises: every table and figure of `all`, one log per
job, a checkpoint per run, nothing to do on a second run, and `dvc repro` rebuilding the same bytes and re-running
only what a parameter change touches. The other tests run Snakemake at parse time only (dry runs, lint, bad params).

The helpers (running Snakemake and DVC in a copy, the tiny params) are in workflow_support.py.
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
from workflow_support import (
    BIN,
    DVC,
    DVC_TIMEOUT,
    EXPERIMENTS,
    REPO,
    SNAKEMAKE,
    SNAKEMAKE_TIMEOUT,
    STAGE_RULES,
    TINY_MODEL,
    add_dvc_stages,
    check,
    copy_workflow,
    env,
    expected_logs,
    expected_targets,
    jobs_listed,
    load_params,
    mtimes,
    need,
    run,
    snapshot,
    tiny_params,
    write_params,
)

# --- the tiny end-to-end run (built once for the module) ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`snakemake --cores 2 all` on the tiny params in a fresh copy, then a second run and a dry run."""
    need(SNAKEMAKE)
    root = copy_workflow(tmp_path_factory.mktemp("tiny_project"))
    params = tiny_params()
    write_params(root / "params.yaml", params)

    start = time.monotonic()
    first = run([SNAKEMAKE, "--cores", "2", "all"], root, timeout=SNAKEMAKE_TIMEOUT)
    seconds = time.monotonic() - start
    check(first, "snakemake --cores 2 all")
    print(f"tiny `snakemake --cores 2 all`: {seconds:.1f} s")

    tables = snapshot(root / "results" / "tables")
    figures = snapshot(root / "results" / "figures")
    before = mtimes(root, ["results", "runs", "data"])
    second = run([SNAKEMAKE, "--cores", "2", "all"], root)
    after = mtimes(root, ["results", "runs", "data"])
    dry = run([SNAKEMAKE, "-n", "all"], root)
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


def test_report_holds_every_table_figure_training_log_and_options(tiny_run):
    """README: `snakemake --report report.html` is one HTML file with the tables (CSV), figures (PNG), and each
    run's training log and options.json (the resolved experiment and software versions)."""
    root = tiny_run["root"]
    out = check(run([SNAKEMAKE, "--report", "report.html"], root), "snakemake --report report.html")
    assert "Report created" in out
    tables, figures = expected_targets(tiny_run["params"])
    expected = [Path(p).name for p in tables + figures if p.endswith((".csv", ".png"))]
    expected += ["training_log.csv", "options.json"] * len(EXPERIMENTS)
    added = re.findall(r"^Adding (\S+) \(", out, flags=re.MULTILINE)  # Snakemake lists each file it embeds
    assert sorted(added) == sorted(expected)
    html = (root / "report.html").read_text()
    assert all(f"runs/{e}/options.json" in html for e in EXPERIMENTS)


def test_metrics_are_valid_json_naming_their_feature_extractor(tiny_run):
    root, params = tiny_run["root"], tiny_run["params"]
    extractor = params["datasets"]["toyfaces32"]["feature_extractor"]["name"]
    for exp, quantizer in EXPERIMENTS.items():
        folder = root / "results" / "metrics" / exp
        names = {p.name for p in folder.glob("*.json")}
        expected = {"training.json", "capacity.json", "probe.json", "attributes.json"} | (
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
    for exp, quantizer in EXPERIMENTS.items():  # the attributes stage: reconstructions for both, samples for sets
        attributes = json.loads((root / "results/metrics" / exp / "attributes.json").read_text())
        assert attributes["reconstruction"]["n_images"] == params["datasets"]["toyfaces32"]["n_test"]
        assert ("recombination" in attributes) == (quantizer == "matching")
    built = json.loads((root / "results/metrics/built_with.json").read_text())
    assert sorted(built["experiments"]) == sorted(EXPERIMENTS) and built["experiment_set"] == params["experiment_set"]
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


def test_snakemake_and_the_cli_hand_training_the_same_spec(tiny_run):
    """options.json records what the train rule passed: pivq.config.training_spec of the resolved experiment, what
    `pivq train` passes too, so a run's options and identity do not depend on how it was started."""
    from pivq.config import resolve_experiment, training_spec

    for exp in EXPERIMENTS:
        options = json.loads((tiny_run["root"] / "runs" / exp / "options.json").read_text())
        assert options["experiment"] == training_spec(resolve_experiment(tiny_run["params"], exp))
        assert options["resumed_from_step"] == 0 and len(options["run"]) == 16


def test_second_run_has_nothing_to_do(tiny_run):
    second, dry = tiny_run["second"], tiny_run["dry"]
    assert "Nothing to be done" in check(second, "second snakemake --cores 2 all")
    assert jobs_listed(second.out) == []
    before, after = tiny_run["mtimes"]
    assert before == after, "the second run touched outputs"
    assert "Nothing to be done" in check(dry, "snakemake -n all after a full run")
    assert jobs_listed(dry.out) == []


def _git(*args: str) -> list[str]:
    return ["git", "-c", "user.name=pivq tests", "-c", "user.email=tests@pivq.invalid", *args]


def test_dvc_round_trip_pull_rebuilds_tables_without_training(tiny_run, tmp_path):
    """docs/dvc.md, sharing artefacts: after a run, `dvc add data runs`, commit, `dvc push`; a fresh clone
    does `dvc pull`, `snakemake --touch all`, `dvc repro`: nothing is re-run (Snakemake and DVC agree), the tables
    and figures are byte-identical, and rebuilding them from the pulled metrics gives the same bytes."""
    need(DVC)
    if shutil.which("git", path=env()["PATH"]) is None:
        pytest.skip("git is not installed")
    origin, clone, remote = tmp_path / "origin", tmp_path / "clone", tmp_path / "remote"
    shutil.copytree(tiny_run["root"], origin, ignore=shutil.ignore_patterns(".snakemake", "logs", ".git", ".dvc*",
                                                                             "dvc.*"))
    shutil.copy2(REPO / ".gitignore", origin / ".gitignore")
    add_dvc_stages(origin)
    check(run(["git", "init", "-q"], origin), "git init")
    check(run([DVC, "init", "-q"], origin), "dvc init")
    check(run([DVC, "remote", "add", "-d", "storage", remote], origin), "dvc remote add")
    check(run([DVC, "repro"], origin, timeout=DVC_TIMEOUT), "dvc repro")  # writes dvc.lock
    check(run([DVC, "add", "data", "runs"], origin, timeout=DVC_TIMEOUT), "dvc add data runs")
    check(run(_git("add", "-A"), origin), "git add")
    check(run(_git("commit", "-q", "-m", "a run"), origin), "git commit")
    assert "runs/" not in check(run(["git", "ls-files"], origin), "git ls-files")  # heavy files stay out of git
    check(run([DVC, "push"], origin, timeout=DVC_TIMEOUT), "dvc push")

    check(run(["git", "clone", "-q", origin, clone], tmp_path), "git clone")
    assert not (clone / "runs").exists()
    check(run([DVC, "pull"], clone, timeout=DVC_TIMEOUT), "dvc pull")
    for folder in ("data", "runs"):
        assert snapshot(clone / folder) == snapshot(origin / folder), f"{folder}/ pulled differs"
    # Checkout times put the pulled inputs after the committed results: without --touch Snakemake re-runs
    stale = jobs_listed(check(run([SNAKEMAKE, "-n", "all"], clone), "snakemake -n all after dvc pull"))
    assert "tables" in stale
    check(run([SNAKEMAKE, "--cores", "1", "--touch", "all"], clone), "snakemake --touch all")
    dry = check(run([SNAKEMAKE, "-n", "all"], clone), "snakemake -n all after --touch")
    assert "Nothing to be done" in dry and jobs_listed(dry) == []
    repro = check(run([DVC, "repro"], clone, timeout=DVC_TIMEOUT), "dvc repro in the clone")
    assert "Running stage" not in repro and "Data and pipelines are up to date." in repro
    assert "up to date" in check(run([DVC, "status"], clone, timeout=DVC_TIMEOUT), "dvc status")

    # rebuild the tables and figures from the pulled metrics: same bytes, and runs/ untouched (no training)
    runs_before = snapshot(clone / "runs")
    check(run([DVC, "repro", "--force"], clone, timeout=DVC_TIMEOUT), "dvc repro --force")
    assert snapshot(clone / "results/tables") == tiny_run["tables"]
    assert snapshot(clone / "results/figures") == tiny_run["figures"]
    assert snapshot(clone / "runs") == runs_before

    # the headline numbers are DVC metrics; a parameter change shows in `dvc params diff`
    shown = check(run([DVC, "metrics", "show", "--json"], clone, timeout=DVC_TIMEOUT), "dvc metrics show")
    fidelity = json.loads((clone / "results/metrics/toy_matching/fidelity.json").read_text())
    (workspace,) = json.loads(shown).values()  # keyed by revision: "" is the workspace
    assert workspace["data"]["results/tables/summary.json"]["data"]["toy_matching"]["fid"] == fidelity["fid"]
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["report"]["figures"]["dpi"] += 1
    write_params(clone / "params.yaml", params)
    assert "report.figures.dpi" in check(run([DVC, "params", "diff"], clone, timeout=DVC_TIMEOUT), "dvc params diff")


def test_dvc_repro_rebuilds_the_same_bytes_and_only_what_changed(tiny_run):
    """README: `dvc repro` rebuilds tables and figures from results/metrics; a second run does nothing; a change
    to report.figures re-runs only `figures`."""
    need(DVC)
    root = tiny_run["root"]
    if shutil.which("git", path=env()["PATH"]) is None:
        pytest.skip("git is not installed")
    check(run(["git", "init", "-q"], root), "git init")
    check(run([DVC, "init", "-q"], root), "dvc init")
    add_dvc_stages(root)

    first = check(run([DVC, "repro"], root, timeout=DVC_TIMEOUT), "dvc repro")
    assert "Running stage 'tables'" in first and "Running stage 'figures'" in first
    assert (root / "dvc.lock").is_file()
    tables, figures = snapshot(root / "results/tables"), snapshot(root / "results/figures")
    # same code, same inputs: the bytes Snakemake built
    assert tables == tiny_run["tables"], "tables built by `dvc repro` differ from Snakemake's"
    assert figures == tiny_run["figures"], "figures built by `dvc repro` differ from Snakemake's"

    second = check(run([DVC, "repro"], root, timeout=DVC_TIMEOUT), "second dvc repro")
    assert "Running stage" not in second
    assert "Stage 'tables' didn't change, skipping" in second
    assert "Stage 'figures' didn't change, skipping" in second
    assert "Data and pipelines are up to date." in second

    params = yaml.safe_load((root / "params.yaml").read_text())
    old_dpi = params["report"]["figures"]["dpi"]
    params["report"]["figures"]["dpi"] = 60 if old_dpi != 60 else 72
    write_params(root / "params.yaml", params)
    third = check(run([DVC, "repro"], root, timeout=DVC_TIMEOUT), "dvc repro after a dpi change")
    assert "Running stage 'figures'" in third
    assert "Running stage 'tables'" not in third
    assert "Stage 'tables' didn't change, skipping" in third
    assert snapshot(root / "results/tables") == tables, "tables changed with a figure-only parameter"
    refigured = snapshot(root / "results/figures")
    assert sorted(refigured) == sorted(figures)
    unchanged_png = [name for name in figures if name.endswith(".png") and refigured[name] == figures[name]]
    assert not unchanged_png, f"figures not redrawn at the new dpi: {unchanged_png}"


def test_a_configfile_variant_trains_beside_the_default_run(tiny_run, tmp_path):
    """README, "Comparing two variants": an overlay adds a variant and a set holding it and the default; a dry run
    trains only the variant (the default's runs and metrics are up to date) and redraws the report for the set."""
    root = tiny_run["root"]
    params = tiny_run["params"]
    overlay = {"models": {"tiny_k": {**params["models"]["tiny"], "codebook_size": 32}},
               "experiments": {"toy_matching_k": {**params["experiments"]["toy_matching"], "model": "tiny_k"}},
               "experiment_sets": {"compare": ["toy_matching", "toy_matching_k"]}, "experiment_set": "compare"}
    variant = tmp_path / "variant.yaml"
    variant.write_text(yaml.safe_dump(overlay, sort_keys=False))
    out = check(run([SNAKEMAKE, "-n", "all", "--configfile", variant], root), "snakemake -n --configfile variant.yaml")
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    wildcards: exp=(\w+)", out, flags=re.MULTILINE)
    trained = sorted(exp for rule, exp in jobs if rule == "train")
    assert trained == ["toy_matching_k"], out[-3000:]
    assert not [exp for rule, exp in jobs if exp == "toy_matching"], "the default run would be rebuilt"
    assert {"tables", "figures", "built_with"} <= set(jobs_listed(out))


def test_pivq_evaluate_reproduces_the_pipelines_numbers(tiny_run, tmp_path):
    """`pivq evaluate` on the run's checkpoint and dataset, outside the pipeline: the same test L1, capacity,
    probe and (Algorithm 1 samples drawn with the same seeds) FID, P, R, D, C as the pipeline's metrics files."""
    root = tiny_run["root"]
    out = tmp_path / "evaluation.json"
    batch = tiny_run["params"]["experiments"]["toy_matching"]["encode"]["batch_size"]
    check(run([BIN / "pivq", "evaluate", "--model", root / "runs/toy_matching/model.pt", "--data",
               root / "data/toyfaces32", "--out", out, "--experiment", "toy_matching", "--params", root / "params.yaml",
               "--fidelity", "--probe", "--batch-size", batch], root, timeout=SNAKEMAKE_TIMEOUT), "pivq evaluate")
    result = json.loads(out.read_text())
    metrics = root / "results/metrics/toy_matching"
    training = json.loads((metrics / "training.json").read_text())
    assert result["test_l1"] == pytest.approx(training["test_l1"], rel=1e-9)
    capacity = json.loads((metrics / "capacity.json").read_text())
    assert {k: result["capacity"][k] for k in ("k_data", "k_img_max", "bits")} == \
        {k: capacity[k] for k in ("k_data", "k_img_max", "bits")}
    fidelity = json.loads((metrics / "fidelity.json").read_text())
    for m in ("fid", "precision", "recall", "density", "coverage"):
        assert result["fidelity"][m] == pytest.approx(fidelity[m], rel=1e-6, abs=1e-9), m
    probe = json.loads((metrics / "probe.json").read_text())
    assert result["probe"]["attributes"] == probe["attributes"]


def test_dvc_exp_run_refuses_a_training_key_and_runs_a_report_key(tiny_run, tmp_path):
    """`dvc exp run -S <key>`: a key a heavy stage reads (here the training steps) stops the experiment with a message
    naming it and Snakemake, and leaves the tables as they were; a report key (the figures' dpi) redraws the
    figures, and `dvc exp show` lists the experiment with its parameter and the metrics."""
    need(DVC)
    git = shutil.which("git", path=env()["PATH"])
    if git is None:
        pytest.skip("git is not installed")
    root = tmp_path / "exp"
    shutil.copytree(tiny_run["root"], root, ignore=shutil.ignore_patterns(".snakemake", ".git", ".dvc", "dvc.lock"))
    for step in (["init", "-q"], ["config", "user.email", "t@example.org"], ["config", "user.name", "t"]):
        check(run([git, *step], root), f"git {step[0]}")
    check(run([DVC, "init", "-q"], root), "dvc init")
    add_dvc_stages(root)
    check(run([DVC, "repro"], root, timeout=DVC_TIMEOUT), "dvc repro")
    check(run([git, "add", "-A"], root), "git add")
    check(run([git, "commit", "-q", "-m", "run"], root), "git commit")
    tables = snapshot(root / "results/tables")

    steps = tiny_run["params"]["schedules"]["toy"]["steps"]
    refused = run([DVC, "exp", "run", "-S", f"schedules.toy.steps={steps + 20}"], root, timeout=DVC_TIMEOUT)
    assert refused.returncode != 0, refused.out
    # the record holds each experiment's resolved settings: the key is named as the experiment sees it
    assert f"experiments.toy_matching.schedule.steps: {steps} in the metrics, {steps + 20} in params.yaml" in \
        refused.out.replace("\n", " ")
    assert "snakemake --cores all all" in refused.out
    assert snapshot(root / "results/tables") == tables, "tables were rebuilt from metrics of other parameters"
    check(run([git, "checkout", "--", "params.yaml"], root), "git checkout params.yaml")

    dpi = tiny_run["params"]["report"]["figures"]["dpi"] + 1
    ran = check(run([DVC, "exp", "run", "-n", "dpi", "-S", f"report.figures.dpi={dpi}"], root, timeout=DVC_TIMEOUT),
                "dvc exp run -S report.figures.dpi")
    assert "Running stage 'figures'" in ran and "Running stage 'tables'" not in ran
    shown = json.loads(check(run([DVC, "exp", "show", "--json"], root, timeout=DVC_TIMEOUT), "dvc exp show"))
    text = json.dumps(shown)
    assert '"dpi"' in text and f"{dpi}" in text and "attribute_retention_min" in text


# --- parse-time checks (no job runs) -----------------------------------------------------------------------


@pytest.fixture
def workflow_copy(tmp_path):
    need(SNAKEMAKE)
    return copy_workflow(tmp_path / "repo")


def test_dry_run_lists_every_stage(workflow_copy):
    out = check(run([SNAKEMAKE, "-n", "all"], workflow_copy), "snakemake -n all")
    listed = set(jobs_listed(out))
    missing = [r for r in STAGE_RULES if r not in listed]
    assert not missing, f"the dry run lists no job of {missing}:\n{out[-4000:]}"
    assert "all" in listed
    for folder in ("data", "runs", "results", "logs"):
        assert not (workflow_copy / folder).exists(), f"a dry run created {folder}/"


def test_lint_is_clean(workflow_copy):
    proc = run([SNAKEMAKE, "--lint"], workflow_copy)
    out = check(proc, "snakemake --lint")
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
    if case == "duplicate_key":  # written into the file below: a dict holds no duplicate
        return "experiments.toy_matching.quantizer: duplicate key"
    raise AssertionError(case)


def _duplicate_quantizer(path: Path) -> None:
    """A second `quantizer:` in toy_matching (YAML alone would keep it silently; Snakemake's configfile too)."""
    text = path.read_text()
    assert text.count("\n    quantizer: matching\n") >= 1
    path.write_text(text.replace("\n    quantizer: matching\n",
                                 "\n    quantizer: matching\n    quantizer: nearest\n", 1))


@pytest.mark.parametrize("case", ["unknown_key", "bad_quantizer", "codes_over_codebook", "duplicate_key"])
def test_bad_params_stop_before_any_job(workflow_copy, case):
    params = load_params()
    key = _break(params, case)
    write_params(workflow_copy / "params.yaml", params)
    if case == "duplicate_key":
        _duplicate_quantizer(workflow_copy / "params.yaml")
    # the dry run for each case; one real run too (a job would create its folders before failing)
    runs = [["-n", "all"]] + ([["--cores", "1", "all"]] if case == "bad_quantizer" else [])
    for args in runs:
        proc = run([SNAKEMAKE, *args], workflow_copy)
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
    proc = run([SNAKEMAKE, "-n", "all", "--config", "experiment_set=paper"], workflow_copy)
    assert proc.returncode != 0
    assert "datasets.celeba64.root = raw/celeba" in proc.out and "list_attr_celeba.txt" in proc.out, proc.out[-3000:]
    assert not (workflow_copy / "data").exists()


def test_paper_dry_run_sizes_every_heavy_job_from_params(tmp_path):
    """`snakemake -n --profile slurm all` on the paper set, its datasets stubbed as prepared: every heavy job is
    listed with what params.yaml's resources preset asks for (GPU, CPUs, memory, time) and a benchmark file."""
    need(SNAKEMAKE)
    root = copy_workflow(tmp_path / "paper")
    shutil.copytree(REPO / "slurm", root / "slurm")
    params = load_params()
    for name in ("celeba64", "celebahq256", "ffhq256"):  # prepared: no raw download is looked for
        for file in ("images.npy", "attributes.csv", "split.csv", "manifest.json"):
            (root / "data" / name).mkdir(parents=True, exist_ok=True)
            (root / "data" / name / file).touch()
    out = check(run([SNAKEMAKE, "-n", "--profile", "slurm", "all"], root), "snakemake -n --profile slurm all")
    jobs = re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", out, flags=re.MULTILINE | re.DOTALL)
    heavy = {"train", "encode", "sample_shard", "interpolation_paths", "fidelity", "rate", "probe", "code_atlas"}
    seen = set()
    for rule, body in jobs:
        if rule not in heavy:
            continue
        exp = re.search(r"wildcards: exp=(\w+)", body).group(1)
        want = params["resources"][params["experiments"][exp]["resources"]][rule]
        resources = dict(re.findall(r"(\w+)=([^,\s]*)", re.search(r"resources: (.*)", body).group(1)))
        got = {k: resources.get(k) for k in ("gpu", "cpus_per_task", "mem_mb", "runtime")}
        assert got == {"gpu": str(want["gpu"]), "cpus_per_task": str(want["cpus"]), "mem_mb": str(want["mem_mb"]),
                       "runtime": str(want["runtime_min"])}, (rule, exp, got)
        assert re.search(rf"benchmark: logs/benchmarks/{rule}_{exp}", body), (rule, body)
        seen.add((rule, exp))
    paper = params["experiment_sets"]["paper"]
    sampled = [e for e in paper if params["experiments"][e]["quantizer"] == "matching"]
    expected = ({(r, e) for r in ("train", "encode", "probe", "code_atlas") for e in paper}
                | {(r, e) for r in ("sample_shard", "interpolation_paths", "fidelity", "rate") for e in sampled})
    assert seen == expected
    assert any(rule == "train" and "gpu=1" in body for rule, body in jobs)


def test_a_bare_snakemake_builds_rule_all():
    """`rule all` is the default target (it comes after the included rules, which would otherwise win)."""
    out = check(run([SNAKEMAKE, "-n", "-F", "--cores", "1"], REPO), "snakemake -n -F")
    stats = out[out.index("Job stats:"):]
    assert re.search(r"^all\s+1$", stats, re.M), stats[:2000]


def test_slurm_profile_parses():
    """`snakemake --profile slurm` needs a Slurm; check what the profile sets instead."""
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert isinstance(profile["jobs"], int) and profile["jobs"] > 0
    assert isinstance(profile["retries"], int) and profile["retries"] >= 1  # a preempted training run resumes
    assert profile["config"] == ["experiment_set=paper"]
    assert "paper" in load_params()["experiment_sets"]


# --- on a real Slurm: `snakemake --profile slurm` (docs/cluster.md) ------------------------------
# slurm/local/setup-slurm.sh installs and starts a single-node Slurm on localhost (root and apt-get needed, as in
# CI); slurm/local/config.yaml is the overlay profile for it. Each snakemake run is bounded by `timeout -s INT`
# (SIGINT: the one signal the Slurm plugin honours while it polls).

SLURM_TIMEOUT = 1200
SETUP_SLURM = REPO / "slurm" / "local" / "setup-slurm.sh"
STOP_SLURM = REPO / "slurm" / "local" / "stop-slurm.sh"
SLURM_PROFILE = ["--profile", "slurm", "--profile", "slurm/local"]
LOCAL_RULES = {"all", "capacity", "built_with", "tables", "figures"}  # the Snakefile's localrules
# run-time facts, not results, would differ between any two runs: none is left in a metrics JSON (wall-clock
# times go to the logs; tests/test_faults.py checks two runs give byte-identical metrics files)
TIMING_KEYS: set[str] = set()


@pytest.fixture(scope="module")
def local_slurm():
    """A running single-node Slurm. Started here from the project's own script and stopped afterwards (only the
    daemons this fixture started); only when asked (PIVQ_SLURM_TESTS=1: it installs system packages and starts
    daemons; .ci/run asks), and skipped where it cannot run (not root, no apt-get)."""
    if os.environ.get("PIVQ_SLURM_TESTS") != "1":
        pytest.skip("starts a local Slurm (apt-get, daemons): run with PIVQ_SLURM_TESTS=1 to allow it")
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
    copy_workflow(root)
    shutil.copytree(REPO / "slurm", root / "slurm")
    write_params(root / "params.yaml", params)
    return root


def _snakemake_slurm(root: Path, *targets: str) -> subprocess.CompletedProcess:
    return run(["timeout", "-s", "INT", "-k", "30", str(SLURM_TIMEOUT), SNAKEMAKE, *SLURM_PROFILE, *targets],
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
    root = _slurm_project(tmp_path / "cluster_project", params)

    start = time.monotonic()
    proc = _snakemake_slurm(root, "all")
    seconds = time.monotonic() - start
    check(proc, "snakemake --profile slurm --profile slurm/local all")
    print(f"tiny `snakemake --profile slurm --profile slurm/local all`: {seconds:.1f} s")

    # every job but the local rules went through sbatch: one Slurm log per job, named by rule
    slurm_logs = {p.relative_to(root / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
                  for p in (root / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert slurm_logs == set(STAGE_RULES) - LOCAL_RULES
    train_log = (root / "logs" / "train_toy_matching.log").read_text()
    assert "SLURM_JOB_ID=" in train_log and "stage train: running on cpu, 1 CPU thread(s)" in train_log
    assert "SLURM_JOB_ID=" not in (root / "logs" / "tables.log").read_text()  # a local rule
    benchmarks = {p.name for p in (root / "logs" / "benchmarks").iterdir()}
    assert {"train_toy_matching.tsv", "fidelity_toy_matching.tsv", "prepare_dataset_toyfaces32.tsv"} <= benchmarks

    cluster, local = _results(root), _results(tiny_run["root"])
    assert sorted(cluster) == sorted(local)
    differ = {f"{name}:{key}": (cluster[name].get(key), local[name].get(key)) for name in cluster
              for key in set(cluster[name]) | set(local[name]) if cluster[name].get(key) != local[name].get(key)}
    assert not differ, f"the Slurm run's metrics differ from the local run's (cluster, local): {differ}"
    assert snapshot(root / "results" / "tables") == tiny_run["tables"]


@pytest.mark.slurm
def test_a_gpu_job_on_a_node_whose_gpu_torch_cannot_use_stops_at_once(local_slurm, tmp_path):
    """The local node's GPU is fake (GRES on /dev/null): Slurm grants it (--gpus=1, CUDA_VISIBLE_DEVICES=0) but
    torch sees none. A training job configured for a GPU stops before reading its data, naming the experiment,
    the stage and CUDA_VISIBLE_DEVICES, instead of training for hours on the CPU."""
    params = tiny_params()
    params["resources"]["fakegpu"] = copy.deepcopy(params["resources"]["embedded"])
    params["resources"]["fakegpu"]["train"]["gpu"] = 1
    params["experiments"]["toy_matching"]["resources"] = "fakegpu"
    root = _slurm_project(tmp_path / "gpu_project", params)
    proc = run(["timeout", "-s", "INT", "-k", "30", str(SLURM_TIMEOUT), SNAKEMAKE, *SLURM_PROFILE, "--retries", "0",
                "runs/toy_matching/model.pt"], root, timeout=SLURM_TIMEOUT + 60)
    assert proc.returncode != 0, proc.out[-3000:]
    log = (root / "logs" / "train_toy_matching.log").read_text()
    assert "SLURM_JOB_ID=" in log and "CUDA_VISIBLE_DEVICES=0" in log, log[-3000:]  # the fake GPU was granted
    assert "NoGPUError: experiment toy_matching, stage train: configured for a GPU" in log, log[-3000:]
    assert "CUDA_VISIBLE_DEVICES='0'" in log
    assert not (root / "runs" / "toy_matching" / "options.json").exists()  # stopped before any training work


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
                                 cwd=root, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


IMPORTED = """
import json, sys
from pivq.cli import main
code = main(sys.argv[1:])
print(json.dumps(sorted(m.__file__ for name, m in list(sys.modules.items())
                        if (name == "pivq" or name.startswith("pivq.")) and getattr(m, "__file__", None))))
sys.exit(code)
"""


@pytest.mark.parametrize("stage", sorted(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]))
def test_each_dvc_stage_lists_the_code_its_command_runs(stage, tmp_path):
    """dvc.yaml's deps are true: the pivq modules a stage's command imports when it runs (on the committed metrics)
    are exactly its pivq deps, so an edit of any of them reruns the stage and no listed file is stale."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    args = spec["cmd"].split()
    assert args[0] == "pivq", spec["cmd"]
    proc = subprocess.run([sys.executable, "-c", IMPORTED, *args[1:], "--out", str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {Path(f).resolve().relative_to(REPO).as_posix() for f in json.loads(proc.stdout.splitlines()[-1])}
    listed = {d for d in spec["deps"] if d.startswith("pivq/")}
    assert imported - listed == set(), f"{stage} runs pivq code dvc.yaml does not list"
    assert listed - imported == set(), f"{stage} lists pivq code its command does not import"
