"""The one device rule (pivq.device): every stage that runs a network puts its models and batches on the device its
job asked for, and a job configured for a GPU that sees none stops at once, naming the experiment, the stage and
CUDA_VISIBLE_DEVICES, before it reads any data.

CI has no GPU, so placement is checked on the meta device: a stage handed ``meta`` must run every module call with
its parameters and its tensor inputs there (and then fails at the first copy to the host, which meta cannot do).
A stage that loaded a model on the CPU, or fed it host tensors, would be caught by the recorded calls.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from pivq import stages
from pivq.device import Job, NoGPUError
from pivq.model.checkpoint import save_model

EXPERIMENT = "experiment toy_matching"
SAMPLE = {"n": 8, "shards": 1, "seed": 3, "batch_size": 4}
FIGURE1 = {"pairs": 1, "paths": 1, "steps": 3, "seed": 0}
ATLAS = {"attributes": 1, "images": 1, "codes": 1, "seed": 0}
METRICS = {"n_real": 20, "reference": "all", "reference_rows": "first", "nearest_k": 3, "batch_size": 10,
           "seed": 0}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, toyfaces16, params):
    """A tiny model, its codes, a probe, a sample shard and a toyfaces extractor, all made on the CPU."""
    from tiny_model import TINY_MODEL

    from pivq.model import PIVQ, ModelConfig

    root = tmp_path_factory.mktemp("device_inputs")
    torch.manual_seed(0)
    model = PIVQ(ModelConfig.from_dict(TINY_MODEL, quantizer="matching")).eval()
    model.quantizer.set_codebook(torch.randn(model.cfg.codebook_size, model.cfg.width))
    save_model(root / "model.pt", model, model, meta={})
    stages.encode_dataset(root / "model.pt", toyfaces16, root / "codes.npz")
    stages.probe("toy", "toyfaces16", {"folds": 2, "seed": 0}, root / "codes.npz", toyfaces16, root / "probe.json")
    stages.sample_shard(root / "model.pt", root / "codes.npz", SAMPLE, 0, root / "shard-0.npz")
    extractor = {**params["datasets"]["toyfaces32"]["feature_extractor"], "steps": 2, "batch_size": 16}
    stages.train_feature_extractor(toyfaces16, extractor, root / "extractor.pt", root / "extractor.json")
    return {"root": root, "data": toyfaces16, "extractor": extractor}


def _calls(stage: str, paths: dict, job: Job, out: Path, make_experiment=None):
    """The stage called with ``job``: every network stage of the pipeline, by rule name."""
    p = paths
    return {
        "train": lambda: stages.train_model(make_experiment(), p["data"], out / "run", out / "training.json",
                                            out / "training.csv", job=job),
        "encode": lambda: stages.encode_dataset(p["root"] / "model.pt", p["data"], out / "codes.npz", job=job),
        "sample_shard": lambda: stages.sample_shard(p["root"] / "model.pt", p["root"] / "codes.npz", SAMPLE, 0,
                                                    out / "shard.npz", job=job),
        "interpolation_paths": lambda: stages.interpolation_figure_data(
            p["root"] / "model.pt", p["root"] / "codes.npz", p["data"], FIGURE1, out / "paths.npz", job=job),
        "code_atlas": lambda: stages.code_atlas(p["root"] / "model.pt", p["root"] / "codes.npz", p["data"],
                                                p["root"] / "probe.json", ATLAS, out / "atlas.npz", job=job),
        "fidelity": lambda: stages.fidelity("toy", "toyfaces16", METRICS, p["extractor"], [p["root"] / "shard-0.npz"],
                                            p["data"], p["root"] / "extractor.pt", out / "fidelity.json", job=job),
        "train_extractor": lambda: stages.train_feature_extractor(p["data"], p["extractor"], out / "extractor.pt",
                                                                  out / "extractor.json", job=job),
    }[stage]


NETWORK_STAGES = ["train", "encode", "sample_shard", "interpolation_paths", "code_atlas", "fidelity", "train_extractor"]


@pytest.mark.parametrize("stage", NETWORK_STAGES)
def test_a_gpu_job_that_sees_no_gpu_stops_before_reading_anything(stage, monkeypatch, tmp_path, make_experiment,
                                                                  params):
    """Every input path is missing: a stage that read anything before checking its device would fail with
    FileNotFoundError instead; nothing is written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what a fake or broken GPU allocation looks like
    missing = tmp_path / "missing"
    paths = {"root": missing, "data": missing / "data",
             "extractor": params["datasets"]["toyfaces32"]["feature_extractor"]}
    out = tmp_path / "out"
    job = Job(EXPERIMENT, stage, gpu=1, cpus=1)
    with pytest.raises(NoGPUError) as err:
        _calls(stage, paths, job, out, make_experiment)()
    message = str(err.value)
    assert f"{EXPERIMENT}, stage {stage}" in message and "CUDA_VISIBLE_DEVICES='0'" in message, message
    assert "Not falling back to the CPU" in message
    assert not out.exists() and not missing.exists()


def test_the_error_says_when_cuda_visible_devices_is_unset(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(NoGPUError, match="dataset ffhq256, stage encode: .*CUDA_VISIBLE_DEVICES=unset"):
        Job("dataset ffhq256", "encode", gpu=1).start()


def test_gpu_0_is_the_cpu_even_where_a_gpu_is_visible_and_gpu_1_is_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr("pivq.device.describe", str)  # no real GPU to ask for its name
    assert Job(EXPERIMENT, "train", gpu=0, cpus=1).start() == torch.device("cpu")
    assert Job(EXPERIMENT, "train", gpu=1, cpus=1).start() == torch.device("cuda", 0)


def test_cpus_are_torch_threads_and_the_matchers(monkeypatch):
    """The matcher solves a batch's images on torch's thread count, never on the whole node's cores."""
    import pivq.quantize.matching as matching

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    Job(EXPERIMENT, "train", gpu=0, cpus=3).start()
    assert torch.get_num_threads() == 3 and matching._auto_workers() == 3


@pytest.mark.parametrize("job", [dict(gpu=2), dict(cpus=0)])
def test_a_job_is_one_device_and_at_least_one_cpu(job):
    with pytest.raises(ValueError, match="stage train"):
        Job(EXPERIMENT, "train", **job)


def test_a_rules_job_comes_from_its_rule_resources_and_threads():
    class Resources(dict):
        pass

    class Smk:
        rule, threads, resources = "encode", 6, Resources(gpu=1, mem_mb=8000)

    assert Job.from_snakemake(Smk, EXPERIMENT) == Job(EXPERIMENT, "encode", gpu=1, cpus=6)


@pytest.fixture
def on_meta(monkeypatch):
    """Every Job.start() returns the meta device; every module call is recorded: (module, parameter devices,
    tensor input devices)."""
    calls = []

    def record(module, args):
        devices = {p.device.type for p in module.parameters(recurse=False)}
        inputs = {a.device.type for a in args if isinstance(a, torch.Tensor)}
        calls.append((type(module).__name__, devices, inputs))

    monkeypatch.setattr(Job, "start", lambda self: torch.device("meta"))
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    yield calls
    handle.remove()


@pytest.mark.parametrize("stage", NETWORK_STAGES)
def test_each_stage_runs_its_networks_on_the_jobs_device(stage, inputs, on_meta, tmp_path, make_experiment,
                                                         monkeypatch):
    if stage == "train":
        # the loop itself takes the device as an argument (benchmarks/gpu_check.py runs it on CUDA); here: that
        # the stage hands it the job's device, then evaluates the test L1 there
        import pivq.train

        def fake_train(experiment, dataset_dir, run_dir, threads, device):
            assert torch.device(device).type == "meta" and threads == 1
            Path(run_dir).mkdir(parents=True)
            (Path(run_dir) / "model.pt").write_bytes((inputs["root"] / "model.pt").read_bytes())
            return {"steps": 0, "losses": [], "codebook_inits": [], "log": []}

        monkeypatch.setattr(pivq.train, "train", fake_train)
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"):  # meta tensors have no data to copy out
        _calls(stage, inputs, Job(EXPERIMENT, stage), tmp_path, make_experiment)()
    assert on_meta, f"{stage}: no network ran before the stage failed"
    off = [(name, params, args) for name, params, args in on_meta if params - {"meta"} or args - {"meta"}]
    assert not off, f"{stage}: module calls off the job's device: {off[:5]}"
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".npz", ".json", ".pt")
                and "run" not in p.relative_to(tmp_path).parts]  # (the fake training's model.pt)


def test_the_cli_follows_the_device_rule(monkeypatch, tmp_path, capsys, params):
    """`pivq encode` on an experiment whose preset asks for a GPU stops with the named error (exit 2) on a
    machine without one, before it opens the model."""
    import yaml

    from pivq.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_params = copy.deepcopy(params)
    gpu_params["resources"]["embedded"]["encode"]["gpu"] = 1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(gpu_params))
    monkeypatch.chdir(tmp_path)  # no runs/ here: reading the model first would be a FileNotFoundError
    assert main(["encode", "--experiment", "toy_matching", "--params", str(path)]) == 2
    assert "experiment toy_matching, stage encode: configured for a GPU" in capsys.readouterr().err


def test_the_gpu_check_runs_in_its_tiny_form_on_the_cpu(tmp_path, monkeypatch):
    """benchmarks/gpu_check.py (the paper-scale stages on one GPU) in its tiny form with gpu 0: every stage runs
    through the same code, each network stage on the job's device, and the JSON it writes holds every row."""
    import importlib.util
    import json

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # the check points it at random weights
    spec = importlib.util.spec_from_file_location("gpu_check",
                                                  Path(__file__).parents[1] / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    rows = gpu_check.main(["--tiny", "--device", "cpu", "--cpus", "2", "--out", str(tmp_path / "out")])
    stages_run = {r["stage"].split(" (")[0]: r for r in rows}
    for stage in ("train", "encode", "sample shard", "Figure 1 paths", "code atlas", "fidelity"):
        assert stages_run[stage]["devices"] == ["cpu"], (stage, stages_run[stage])
        assert stages_run[stage]["seconds"] > 0
    assert stages_run["k-means: device vs CPU"]["kmeans_inertia_ratio"] == 1.0  # the same device: the same result
    written = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [r["stage"] for r in written["stages"]] == [r["stage"] for r in rows]
    assert [int(r["step"]) for r in written["train_log"]] == [4, 8, 12]


def test_the_training_benchmark_runs_in_its_tiny_form_and_counts_flops(one_thread):
    """benchmarks/bench_train.py's tiny case on the CPU: the real loop, a timed window after T_q, the assignment's
    share of it, and FLOPs counted on the meta device (ut256 before the discriminator: about 4.6 TFLOP a step)."""
    import copy
    import importlib.util

    from pivq.config import load_params, resolve_experiment

    path = Path(__file__).parents[1] / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.run_case("tiny", "cpu", 1)
    assert row["quantized"] == 1 and row["measured_steps"] == 4 and row["s_per_step"] > 0
    assert 0 < row["assign_share"] < 1 and row["tflop_per_step"] > 0 and row["mfu"] is None  # no CPU peak
    exp = copy.deepcopy(resolve_experiment(load_params(Path(__file__).parents[1] / "params.yaml"), "celebahq256"))
    exp["schedule"]["adversarial_start"] = None
    pre = bench.step_flops(exp)
    exp["schedule"]["adversarial_start"] = 0
    assert 4.3e12 < pre < 4.9e12 and bench.step_flops(exp) > pre  # the discriminator adds FLOPs
    assert bench.peak_flops("NVIDIA H200", "bf16") == 989e12 and bench.peak_flops("cpu", "bf16") is None
