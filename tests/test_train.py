"""The training loop on a tiny toyfaces set: outputs, delayed codebook initialisation, exact resumption,
preemption, and the errors that stop a run."""

from __future__ import annotations

import ast
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import pivq.train.loop as loop
from pivq.encode import reconstruction_l1
from pivq.model import PIVQ, ModelConfig
from pivq.model.checkpoint import load_model, read_checkpoint
from pivq.train import LOSSES, Preempted, train
from pivq.train.state import FORMAT as STATE_FORMAT

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
TIMING = {"steps_per_s"}  # the one log column that differs between identical runs


def _run(experiment: dict, dataset: Path, run_dir: Path) -> dict:
    return train(experiment, dataset, run_dir, threads=1, device="cpu", progress=False)


def _sigterm_at(monkeypatch, step: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process during training step ``step`` (1-based), from inside the loop."""
    calls = {"n": 0}
    original = loop.to_float  # called once per step, as it reads the batch

    def to_float(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "to_float", to_float)


def _rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _assert_same_model_file(a: Path, b: Path) -> None:
    pa, pb = read_checkpoint(a), read_checkpoint(b)
    assert pa["config"] == pb["config"]
    for key in ("state_dict", "ema_state_dict"):
        assert pa[key].keys() == pb[key].keys()
        for name, tensor in pa[key].items():
            assert torch.equal(tensor, pb[key][name]), f"{key}.{name} differs"
    assert pa["meta"] == pb["meta"]


@pytest.fixture(scope="module")
def tiny_run(make_experiment, toyfaces16, tmp_path_factory):
    """An uninterrupted 60-step run (T_q = 20, W = 4, two initialisations): run A of the resume tests."""
    experiment = make_experiment()
    run_dir = tmp_path_factory.mktemp("run_a")
    summary = _run(experiment, toyfaces16, run_dir)
    return experiment, run_dir, summary


def test_live_records_follow_the_run(tiny_run):
    """dvclive's files (pivq.train.live): one metrics row per log row, image grids every image_every = 30 steps
    (reconstructions from the start, samples once matching gives sets), the summary at the end."""
    experiment, run_dir, summary = tiny_run
    live = run_dir / "dvclive"
    l1 = pd.read_csv(live / "plots" / "metrics" / "l1.tsv", sep="\t")
    assert l1["step"].tolist() == [10, 20, 30, 40, 50, 60]
    assert np.allclose(l1["l1"], [r["l1"] for r in summary["log"]], rtol=1e-6)
    assert (live / "plots" / "metrics" / "k_img_max.tsv").is_file()
    grids = live / "plots" / "images"
    images = sorted(p.relative_to(grids).as_posix() for p in grids.rglob("*.png"))
    assert images == ["reconstructions/00000030.png", "reconstructions/00000060.png", "samples/00000030.png",
                      "samples/00000060.png"]
    grid = np.asarray(Image.open(live / "plots" / "images" / "reconstructions" / "00000030.png"))
    size = experiment["model"]["resolution"]
    assert grid.shape == (2 * size + 1, 8 * (size + 1) - 1, 3)  # originals above decodes, 8 train images
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["step"] == 60 and metrics["l1"] == pytest.approx(summary["log"][-1]["l1"])
    assert yaml.safe_load((live / "params.yaml").read_text())["experiment"]["name"] == experiment["name"]
    assert not (run_dir / "dvc.yaml").exists()  # dvclive wrote no pipeline file of its own


def test_training_log_grows_as_training_goes(make_experiment, toyfaces16, tmp_path, monkeypatch):
    """Stopped at step 22, the run has already written its log rows of steps 10 and 20, and dvclive its rows."""
    _sigterm_at(monkeypatch, 22)
    with pytest.raises(Preempted):
        _run(make_experiment(), toyfaces16, tmp_path)
    assert pd.read_csv(tmp_path / "train_log.csv")["step"].tolist() == [10, 20]
    assert pd.read_csv(tmp_path / "dvclive" / "plots" / "metrics" / "l1.tsv", sep="\t")["step"].tolist() == [10, 20]


def test_tiny_run_writes_its_outputs(tiny_run):
    experiment, run_dir, summary = tiny_run
    for name in ("model.pt", "options.json", "train_log.csv", "checkpoints/latest.pt"):
        assert (run_dir / name).is_file(), name
    assert summary["steps"] == 60 and summary["losses"] == LOSSES

    options = json.loads((run_dir / "options.json").read_text())
    assert options["experiment"] == json.loads(json.dumps(experiment))
    assert options["losses"] == LOSSES and options["threads"] == 1
    software = options["software"]  # what trained it: shown in `snakemake --report`
    assert software["torch"] == torch.__version__.split("+")[0] and software["pivq"] and software["python"]

    log = pd.read_csv(run_dir / "train_log.csv")
    assert set(loop.LOG_COLUMNS) <= set(log.columns)
    assert log["step"].tolist() == [10, 20, 30, 40, 50, 60]
    assert log["quantized"].tolist() == [0, 0, 1, 1, 1, 1]
    assert np.allclose(log["l1"], [r["l1"] for r in summary["log"]], rtol=1e-5)
    assert np.isfinite(log[["loss", "l1", "vq"]].to_numpy()).all()
    assert (log["vq"][:2] == 0).all() and (log["vq"][2:] > 0).all()
    assert (log["k_data"][:2] == 0).all()
    # matching: every image holds L distinct codes once quantized
    assert (log["k_img_max"][2:] == 8).all() and (log["k_img_mean"][2:] == 8).all()
    assert (log["k_data"][2:] >= 8).all() and (log["k_data"][2:] <= 32).all()


def test_codebook_initialised_at_tq_and_again_after_w(tiny_run, toyfaces16):
    experiment, run_dir, summary = tiny_run
    inits = summary["codebook_inits"]
    assert [i["step"] for i in inits] == [20, 24]  # T_q and T_q + W
    # k-means++ over the encoder outputs of the last W = 4 steps: 4 x batch 8 x L 8 vectors
    assert all(i["window"] == 4 and i["vectors"] == 4 * 8 * 8 for i in inits)
    model = load_model(run_dir / "model.pt", expect_config=ModelConfig.of_experiment(experiment).to_dict())
    assert bool(model.quantizer.initialized)
    meta = read_checkpoint(run_dir / "model.pt")["meta"]
    assert meta["steps"] == 60 and meta["codebook_inits"] == inits
    codebook = model.quantizer.codebook.detach()
    assert torch.unique(codebook, dim=0).shape[0] == 32  # k-means++ gave K distinct entries


def test_checkpoints_after_the_last_initialisation_hold_no_window(tiny_run):
    """The k-means window (W x B x L x d floats: about 1 GB at the paper's settings) is dropped after the last
    codebook initialisation (step 24 here): the checkpoints at 30, 45 and 60 hold only what resuming needs."""
    _, run_a, _ = tiny_run
    state = read_checkpoint(run_a / "checkpoints" / "latest.pt", expect=STATE_FORMAT)
    assert state["step"] == 60 and state["history"] == []
    assert state["kmeans_generator"] is None  # on the CPU, k-means++ draws from the batch generator itself


def test_cpu_codebook_initialisation_is_the_previous_implementations(make_experiment, toyfaces16, tmp_path,
                                                                     monkeypatch):
    """On the CPU the window stays a CPU tensor and k-means++ draws from a CPU generator (the batch sampler's):
    redoing each initialisation the previous way, on the window moved to the host with a CPU generator in the
    same state, gives the same codebook bit for bit, so the embedded runs are unchanged."""
    calls = []
    original = loop.kmeans

    def spy(x, k, iters, generator):
        state = generator.get_state()
        centres = original(x, k, iters, generator)
        calls.append((x.clone(), k, iters, state, generator.device, centres))
        return centres

    monkeypatch.setattr(loop, "kmeans", spy)
    _run(make_experiment(), toyfaces16, tmp_path)
    assert [len(c[0]) for c in calls] == [4 * 8 * 8] * 2  # two initialisations over W x B x L vectors
    for x, k, iters, state, device, centres in calls:
        assert x.device.type == "cpu" and device.type == "cpu"
        previous = torch.Generator()
        previous.set_state(state)
        assert torch.equal(original(x.cpu(), k, iters, previous), centres)


@pytest.mark.slow
def test_training_beats_the_constant_image_baseline(make_experiment, toyfaces16, toy_images, tmp_path):
    experiment = make_experiment(schedule={"steps": 150, "batch_size": 16, "quantize_start": 60,
                                           "log_every": 25, "checkpoint_every": 1000})
    summary = _run(experiment, toyfaces16, tmp_path)
    assert summary["log"][-1]["l1"] < summary["log"][0]["l1"]
    result = reconstruction_l1(load_model(tmp_path / "model.pt"), toy_images[1])
    assert result["n_images"] == 50
    assert result["test_l1"] < 0.95 * result["constant_baseline_l1"], result


def test_sigterm_checkpoints_then_resume_is_exact(tiny_run, make_experiment, toyfaces16, tmp_path, monkeypatch):
    """Run B, stopped by SIGTERM at step 22 (after the first codebook init, before the second, in the middle
    of a log window, after the checkpoint at 15), then rerun: bit-identical to the uninterrupted run A."""
    experiment, run_a, summary_a = tiny_run
    before = signal.getsignal(signal.SIGTERM)
    _sigterm_at(monkeypatch, 22)
    with pytest.raises(Preempted) as err:
        _run(experiment, toyfaces16, tmp_path)
    assert isinstance(err.value, SystemExit) and err.value.code not in (0, None)
    assert "SIGTERM" in str(err.value) and "22" in str(err.value)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    state = read_checkpoint(tmp_path / "checkpoints" / "latest.pt", expect=STATE_FORMAT)
    assert state["step"] == 22 and [i["step"] for i in state["init_log"]] == [20]
    # an initialisation is still to come (step 24): the window of the last W = 4 steps' outputs travels with it
    assert [tuple(h.shape) for h in state["history"]] == [(8 * 8, experiment["model"]["width"])] * 4
    assert not (tmp_path / "model.pt").exists()
    monkeypatch.undo()

    summary_b = _run(experiment, toyfaces16, tmp_path)
    assert summary_b["steps"] == 60
    assert summary_b["codebook_inits"] == summary_a["codebook_inits"]
    assert _rows(summary_b["log"]) == _rows(summary_a["log"])
    _assert_same_model_file(run_a / "model.pt", tmp_path / "model.pt")
    log_a, log_b = (pd.read_csv(d / "train_log.csv").drop(columns=list(TIMING)) for d in (run_a, tmp_path))
    pd.testing.assert_frame_equal(log_a, log_b)


def test_rerun_of_a_finished_run_changes_nothing(tiny_run, toyfaces16, tmp_path):
    import shutil

    experiment, run_a, summary_a = tiny_run
    shutil.copytree(run_a, tmp_path / "copy")
    summary = _run(experiment, toyfaces16, tmp_path / "copy")
    assert _rows(summary["log"]) == _rows(summary_a["log"]) and summary["steps"] == 60
    _assert_same_model_file(run_a / "model.pt", tmp_path / "copy" / "model.pt")


_CHILD = """
import json, sys
from pivq.train import train
experiment = json.load(open(sys.argv[1]))
train(experiment, sys.argv[2], sys.argv[3], threads=1, device="cpu", progress=False)
"""


@pytest.mark.slow
def test_sigkill_after_first_checkpoint_then_resume_is_exact(tiny_run, toyfaces16, tmp_path):
    experiment, run_a, summary_a = tiny_run
    (tmp_path / "experiment.json").write_text(json.dumps(experiment))
    run_b = tmp_path / "run_b"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "experiment.json"), str(toyfaces16),
                              str(run_b)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = run_b / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    try:
        while not ckpt.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    step = read_checkpoint(ckpt, expect=STATE_FORMAT)["step"]
    assert 15 <= step < 60 and step % 15 == 0
    assert not (run_b / "model.pt").exists()

    summary_b = _run(experiment, toyfaces16, run_b)
    assert _rows(summary_b["log"]) == _rows(summary_a["log"])
    assert summary_b["codebook_inits"] == summary_a["codebook_inits"]
    _assert_same_model_file(run_a / "model.pt", run_b / "model.pt")


def test_nan_loss_stops_naming_the_step(make_experiment, toyfaces16, tmp_path, monkeypatch):
    original = PIVQ.forward
    calls = {"n": 0}

    def forward(self, x, quantize=True):
        rec, z, indices, vq_loss = original(self, x, quantize)
        calls["n"] += 1
        if calls["n"] == 5:  # the fifth step, i.e. step 4 counted from 0
            rec = rec * float("nan")
        return rec, z, indices, vq_loss

    monkeypatch.setattr(PIVQ, "forward", forward)
    with pytest.raises(FloatingPointError, match=r"step 4\b") as err:
        _run(make_experiment(), toyfaces16, tmp_path)
    assert "toy_matching" in str(err.value)
    assert not (tmp_path / "model.pt").exists()


def test_resolution_mismatch_and_no_quantized_step_raise(make_experiment, toyfaces16, tmp_path):
    with pytest.raises(ValueError, match="16px"):
        _run(make_experiment(model={"resolution": 32}), toyfaces16, tmp_path / "a")
    with pytest.raises(RuntimeError, match="T_q"):
        _run(make_experiment(schedule={"steps": 3, "quantize_start": 5}), toyfaces16, tmp_path / "b")
    assert not (tmp_path / "b" / "model.pt").exists()


# --- a run resumes only itself ------------------------------------------------------------------------------

# Each changes the weights: a finished run of the tiny schedule is set aside and the new one trains from step 0.
CHANGES = {
    "architecture": dict(model={"codes": 4, "ffn": 64}),
    "learning rate": dict(schedule={"lr_per_sample": 1e-4}),
    "batch size": dict(schedule={"batch_size": 4}),
    "seed": dict(schedule={"seed": 1}),
    "EMA rate": dict(schedule={"ema_beta": 0.9}),
    "EMA interval": dict(schedule={"ema_every": 2}),
    "VQ loss form": dict(schedule={"vq_loss": "vqvae"}),
    "data order": dict(schedule={"data_order": "replacement"}),
    "pixel range": dict(model={"pixel_range": "symmetric"}),
    "precision": dict(schedule={"precision": "bf16"}),
    "fewer steps": dict(schedule={"steps": 40}),
}


def _finished_copy(tiny_run, tmp_path) -> Path:
    import shutil

    shutil.copytree(tiny_run[1], tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_experiment_trains_afresh_and_keeps_the_old_run_aside(change, tiny_run, make_experiment,
                                                                        toyfaces16, tmp_path, caplog):
    """A finished run, then the experiment changed and trained again: the old checkpoint, model.pt, options.json,
    train_log.csv and live records move to superseded/<time>-<old run>/ (the log says where and what differs) and
    the new run
    starts at step 0, so options.json describes model.pt; with a new architecture, model.pt is bit for bit a
    fresh run's."""
    experiment, _, _ = tiny_run
    run = _finished_copy(tiny_run, tmp_path)
    old = {name: (run / name).read_bytes() for name in ("model.pt", "options.json", "train_log.csv")}
    old_ckpt = (run / "checkpoints" / "latest.pt").read_bytes()
    changed = make_experiment(**CHANGES[change])
    with caplog.at_level(logging.WARNING, logger="pivq.train.loop"):
        summary = _run(changed, toyfaces16, run)
    (aside,) = (run / "superseded").iterdir()
    assert {p.name: p.read_bytes() for p in aside.iterdir() if p.is_file()} == {**old, "latest.pt": old_ckpt}
    assert (aside / "dvclive" / "metrics.json").is_file() and (run / "dvclive" / "metrics.json").is_file()
    assert str(aside) in caplog.text and "training this run from step 0" in caplog.text
    options = json.loads((run / "options.json").read_text())
    assert options["resumed_from_step"] == 0 and options["experiment"] == json.loads(json.dumps(changed))
    assert summary["steps"] == changed["schedule"]["steps"] == read_checkpoint(run / "model.pt")["meta"]["steps"]
    if change == "architecture":
        assert "model.codes 8 there, 4 here" in caplog.text and "model.ffn 32 there, 64 here" in caplog.text
        _run(changed, toyfaces16, tmp_path / "fresh")
        _assert_same_model_file(tmp_path / "fresh" / "model.pt", run / "model.pt")


def test_another_quantizer_or_a_re_prepared_dataset_is_another_run(tiny_run, make_experiment, toyfaces16,
                                                                   tmp_path, caplog):
    from pivq.data import prepare_toyfaces

    run = _finished_copy(tiny_run, tmp_path)
    with caplog.at_level(logging.WARNING, logger="pivq.train.loop"):
        _run(make_experiment("toy_nearest"), toyfaces16, run)
    assert "quantizer 'matching' there, 'nearest' here" in caplog.text
    other_data = tmp_path / "other_data"  # the same settings but another seed: other images, other hashes
    prepare_toyfaces(other_data, resolution=16, n_train=200, n_test=50, seed=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pivq.train.loop"):
        _run(make_experiment("toy_nearest"), other_data, run)
    assert "dataset_files.images.npy" in caplog.text
    assert len(list((run / "superseded").iterdir())) == 2


def test_raising_steps_continues_the_run(tiny_run, make_experiment, toyfaces16, tmp_path):
    """Only steps changed, upwards: the finished 60-step run resumes at its last step and ends where an
    uninterrupted 80-step run does."""
    run = _finished_copy(tiny_run, tmp_path)
    longer = make_experiment(schedule={"steps": 80})
    summary = _run(longer, toyfaces16, run)
    assert json.loads((run / "options.json").read_text())["resumed_from_step"] == 60
    assert not (run / "superseded").exists() and summary["steps"] == 80
    _run(longer, toyfaces16, tmp_path / "straight")
    _assert_same_model_file(tmp_path / "straight" / "model.pt", run / "model.pt")


def test_a_checkpoint_without_an_identity_is_set_aside(tiny_run, toyfaces16, tmp_path, caplog):
    """Checkpoints of older pivq versions recorded no identity: they cannot be shown to be this run."""
    experiment, _, _ = tiny_run
    run = _finished_copy(tiny_run, tmp_path)
    ckpt = run / "checkpoints" / "latest.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["identity"]
    torch.save(state, ckpt)
    with caplog.at_level(logging.WARNING, logger="pivq.train.loop"):
        summary = _run(experiment, toyfaces16, run)
    assert "older pivq" in caplog.text and summary["steps"] == 60
    assert json.loads((run / "options.json").read_text())["resumed_from_step"] == 0


# --- one writer per run -----------------------------------------------------------------------------------


def test_a_second_training_of_a_live_run_is_refused_and_leaves_its_files_alone(make_experiment, toyfaces16,
                                                                               tmp_path):
    """While one process trains a run (it holds train.lock), another training of it stops at once, naming the
    holder, and removes none of the live run's temporaries."""
    from pivq.train.lock import RunLockedError, run_lock

    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    in_flight = ckpt_dir / ".latest.pt.abc123.tmp"  # what atomic_path names a checkpoint being written
    in_flight.write_bytes(b"half a checkpoint")
    with run_lock(tmp_path):
        with pytest.raises(RunLockedError) as err:
            _run(make_experiment(), toyfaces16, tmp_path)
    assert f"pid\": {os.getpid()}" in str(err.value) and "train.lock" in str(err.value)
    assert in_flight.exists() and not (tmp_path / "options.json").exists()


def test_a_killed_holder_does_not_lock_its_retry_out(make_experiment, toyfaces16, tmp_path):
    """The lock is the kernel's (flock): a SIGKILLed training leaves the file but not the lock."""
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pivq.train.lock import run_lock\n"
                              "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
                              str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout.readline().strip() == "locked"
    child.kill()
    child.wait()
    assert (tmp_path / "train.lock").exists()
    assert _run(make_experiment(), toyfaces16, tmp_path)["steps"] == 60


def test_sigint_checkpoints_like_sigterm(tiny_run, toyfaces16, tmp_path, monkeypatch):
    """Ctrl-C mid-run writes a checkpoint at the end of the step; the rerun ends with the uninterrupted weights."""
    experiment, run_a, _ = tiny_run
    _sigterm_at(monkeypatch, 27, signal.SIGINT)
    with pytest.raises(Preempted, match="SIGINT received: checkpoint written at step 27"):
        _run(experiment, toyfaces16, tmp_path)
    monkeypatch.undo()
    _run(experiment, toyfaces16, tmp_path)
    _assert_same_model_file(run_a / "model.pt", tmp_path / "model.pt")


def test_no_train_images_stops_before_training(make_experiment, toyfaces16, tmp_path, monkeypatch):
    from pivq.data import PreparedDataset

    indices = PreparedDataset.indices
    monkeypatch.setattr(PreparedDataset, "indices",
                        lambda self, split: indices(self, split)[:0] if split == "train" else indices(self, split))
    with pytest.raises(ValueError, match="no train images"):
        _run(make_experiment(), toyfaces16, tmp_path)
    assert not (tmp_path / "options.json").exists()


# --- Unleashing Transformers' recipe, item by item (params.yaml names each setting) ---------------------------


@pytest.mark.parametrize("form, w_encoder, w_codebook", [("unleashing", 1.0, 0.25), ("vqvae", 0.25, 1.0)])
def test_vq_loss_gradients_carry_the_weights_of_its_form(form, w_encoder, w_codebook):
    """UT (models/vqgan.py line 46): mean((sg(e) - z)^2) + beta mean((e - sg(z))^2): the encoder output gets
    2 (z - e) / n with weight 1, the codebook entry 2 (e - z) / n with beta; VQ-VAE's form the other way round."""
    from pivq.quantize import Quantizer

    torch.manual_seed(0)
    q = Quantizer(6, 3, "nearest", beta=0.25, vq_loss=form)
    q.set_codebook(torch.randn(6, 3))
    z = torch.randn(2, 4, 3, requires_grad=True)
    _, indices, loss = q(z)
    loss.backward()
    e = q.codebook.detach()[indices]
    n = z.numel()
    assert torch.allclose(z.grad, w_encoder * 2 * (z.detach() - e) / n, atol=1e-7)  # (straight-through adds 0)
    expected = torch.zeros_like(q.codebook).index_add_(0, indices.flatten(),
                                                        (w_codebook * 2 * (e - z.detach()) / n).reshape(-1, 3))
    assert torch.allclose(q.codebook.grad, expected, atol=1e-7)


def test_ema_moves_every_ema_every_steps_from_step_ema_every(make_experiment, toyfaces16, tmp_path, monkeypatch):
    """UT's condition (train_vqgan.py line 195): step % steps_per_update_ema == 0 and step > 0, steps 0-based."""
    seen, step = [], {"n": -1}
    original_read, original_ema = loop.to_float, loop.ema_update

    def to_float(*args, **kwargs):
        step["n"] += 1  # the 0-based step now running
        return original_read(*args, **kwargs)

    def ema_update(ema, model, beta):
        seen.append(step["n"])
        original_ema(ema, model, beta)

    monkeypatch.setattr(loop, "to_float", to_float)
    monkeypatch.setattr(loop, "ema_update", ema_update)
    _run(make_experiment(schedule={"ema_every": 10}), toyfaces16, tmp_path)
    assert seen == [10, 20, 30, 40, 50]  # 60 steps


def test_adam_betas_are_the_schedules_for_both_optimisers(make_experiment, toyfaces16, tmp_path):
    """UT (train_vqgan.py lines 39-40): torch's default betas (0.9, 0.999), autoencoder and discriminator."""
    experiment = make_experiment(schedule={"adversarial_start": 40, "disc_layers": 2, "disc_ndf": 8})
    _run(experiment, toyfaces16, tmp_path)
    state = read_checkpoint(tmp_path / "checkpoints" / "latest.pt", expect=STATE_FORMAT)
    for key in ("optimizer", "disc_optimizer"):
        assert state[key]["param_groups"][0]["betas"] == (0.9, 0.999), key


@pytest.mark.parametrize("pixel_range, low, high", [("unit", 0.0, 1.0), ("symmetric", -1.0, 1.0)])
def test_every_loss_term_sees_the_models_pixel_range(pixel_range, low, high, make_experiment, toyfaces16, tmp_path,
                                                     monkeypatch):
    """UT feeds [0, 1] images (utils/data_utils.py line 71) to the autoencoder, L1, LPIPS (models/vqgan.py
    line 438) and DiffAugment alike; a "symmetric" model sees [-1, 1]."""
    seen = []

    class Recorder(torch.nn.Module):  # stands in for LPIPS: records its real input, returns a differentiable 0
        def forward(self, x, rec):
            seen.append((x.min().item(), x.max().item()))
            return (rec * 0).mean(dim=(1, 2, 3))

    monkeypatch.setattr(loop, "build_lpips", lambda *a, **k: Recorder())
    experiment = make_experiment(model={"pixel_range": pixel_range}, schedule={"perceptual_weight": 1.0, "steps": 22})
    _run(experiment, toyfaces16, tmp_path)
    assert len(seen) == 22
    lowest, highest = min(s[0] for s in seen), max(s[1] for s in seen)
    assert low <= lowest and highest <= high and (lowest < 0) == (pixel_range == "symmetric"), (lowest, highest)
    model = load_model(tmp_path / "model.pt")
    assert model.cfg.pixel_range == pixel_range  # recorded with the weights: decoding maps back with it


def test_reconstruction_l1_is_in_symmetric_units_for_either_range(make_model, toy_images):
    """test_l1 of a [0, 1] model is twice its mean |rec - x| in [0, 1]: runs of either range compare."""
    from pivq.model.pixels import to_float

    images = toy_images[1][:12]
    model = make_model(pixel_range="unit")
    x = to_float(images, torch.device("cpu"), "unit")
    with torch.no_grad():
        rec = model.decode_indices(model.codes_of(x))
    result = reconstruction_l1(model, images, batch_size=5)
    assert result["test_l1"] == pytest.approx(2 * (rec - x).abs().mean().item(), rel=1e-6)


@pytest.mark.parametrize("tail, before_last", [("norm-conv", torch.nn.GroupNorm), ("norm-silu-conv", torch.nn.SiLU)])
def test_conv_tail_is_groupnorm_straight_into_the_last_conv_as_ut(tail, before_last, make_model):
    """UT (models/vqgan.py lines 253-254, 300-301): GroupNorm then the last conv; taming puts a SiLU between."""
    model = make_model(conv_tail=tail)
    encoder, decoder = list(model.conv_encoder.net), list(model.conv_decoder.net)
    assert isinstance(encoder[-1], torch.nn.Conv2d) and isinstance(encoder[-2], before_last)
    assert isinstance(decoder[-1], before_last)  # then conv_out, the adaptive weight's last layer
    if tail == "norm-conv":
        assert not isinstance(encoder[-3], torch.nn.SiLU) and isinstance(decoder[-1], torch.nn.GroupNorm)


def test_epochs_read_every_train_row_once_per_epoch_and_drop_the_last_partial_batch():
    """UT (utils/data_utils.py lines 174-181): a shuffled DataLoader with drop_last, cycled."""
    from pivq.train.batches import BatchOrder

    rows = np.arange(100, 120)
    order = BatchOrder(rows, 6, "epochs", seed=3, gen=torch.Generator())
    assert order.steps_per_epoch == 3
    epoch0 = np.concatenate([order(s) for s in range(3)])
    epoch1 = np.concatenate([order(s) for s in range(3, 6)])
    for epoch in (epoch0, epoch1):
        assert len(epoch) == 18 and len(np.unique(epoch)) == 18 and set(epoch) <= set(rows)  # 2 rows dropped
    assert not np.array_equal(np.sort(epoch0), np.sort(epoch1)) or not np.array_equal(order(0), order(3))
    fresh = BatchOrder(rows, 6, "epochs", seed=3, gen=torch.Generator())  # a resumed run: the step alone decides
    assert np.array_equal(fresh(4), order(4)) and np.array_equal(fresh(1), order(1))
    assert not np.array_equal(BatchOrder(rows, 6, "epochs", seed=4, gen=torch.Generator())(0), order(0))
    drawn = BatchOrder(rows, 6, "replacement", seed=3, gen=torch.Generator().manual_seed(0))
    assert np.array_equal(drawn(0), np.sort(rows[torch.randint(20, (6,), generator=torch.Generator().manual_seed(0))]))
    with pytest.raises(ValueError, match="batch_size = 32"):
        BatchOrder(rows, 32, "epochs", seed=3, gen=torch.Generator())


def test_a_train_split_smaller_than_a_batch_stops_naming_the_schedule(make_experiment, toyfaces16, tmp_path):
    with pytest.raises(ValueError, match=r"schedules\.toy: .*batch_size = 256"):
        _run(make_experiment(schedule={"batch_size": 256}), toyfaces16, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_paper_presets_follow_unleashing_transformers(params):
    """Each recipe item the paper leaves to UT has UT's value in the paper's presets (docs/faithfulness.md)."""
    ut_schedule = {"adam_betas": [0.9, 0.999], "ema_beta": 0.995, "ema_every": 10, "vq_loss": "unleashing",
                   "vq_beta": 0.25, "disc_init": "pytorch", "data_order": "epochs", "lr_per_sample": 4.5e-6,
                   "adaptive_weight_limit": 1.0, "disc_weight": 1.0, "diffaug": ["color", "translation"],
                   "disc_layers": 3, "disc_ndf": 64, "perceptual_weight": 1.0}
    for name in params["experiment_sets"]["paper"]:
        exp = params["experiments"][name]
        sched, model = params["schedules"][exp["schedule"]], params["models"][exp["model"]]
        assert {k: sched[k] for k in ut_schedule} == ut_schedule, name
        assert (model["pixel_range"], model["conv_tail"]) == ("unit", "norm-conv"), name
        metrics = exp["metrics"]
        assert (metrics["nearest_k"], metrics["reference"], metrics["reference_rows"]) == (3, "all", "first"), name


# --- the step at the GPU's speed: precision, device-side bookkeeping, batches (issue 19) ----------------------


def test_bf16_autocast_trains_with_the_quantizer_in_float32(make_experiment, toyfaces16, tmp_path, monkeypatch):
    """precision bf16 (CPU autocast here, as on a GPU): the conv stacks and transformers compute in bf16, the
    quantizer's inputs and codebook are float32 with autocast off, and the run ends with finite losses."""
    from pivq.quantize import module

    seen, original = [], module.assign

    def spy(z, codebook, method):
        seen.append((z.dtype, codebook.dtype, torch.is_autocast_enabled("cpu")))
        return original(z, codebook, method)

    monkeypatch.setattr(module, "assign", spy)
    encoder_dtypes = []
    hook = PIVQ.encode

    def encode(self, x):
        z = hook(self, x)
        encoder_dtypes.append(self.conv_encoder(x).dtype)
        return z

    monkeypatch.setattr(PIVQ, "encode", encode)
    summary = _run(make_experiment(schedule={"precision": "bf16", "steps": 30}), toyfaces16, tmp_path)
    assert seen and set(seen) == {(torch.float32, torch.float32, False)}
    assert torch.bfloat16 in encoder_dtypes  # the autocast did reach the network
    assert all(np.isfinite([r["loss"], r["l1"], r["vq"]]).all() for r in summary["log"])
    assert summary["log"][-1]["l1"] < summary["log"][0]["l1"] * 1.5


def test_foreach_ema_equals_the_per_parameter_update(make_model):
    ema, model = make_model(seed=0), make_model(seed=1)
    model.quantizer.initialized.fill_(False)
    reference = [e.detach().clone().lerp_(p.detach(), 1 - 0.9) for e, p in zip(ema.parameters(), model.parameters())]
    loop.ema_update(ema, model, 0.9)
    for got, want in zip(ema.parameters(), reference):
        assert torch.equal(got, want)
    assert not bool(ema.quantizer.initialized)  # buffers are copied


@pytest.mark.parametrize("order", ["epochs", "replacement"])
def test_resident_and_streamed_batches_are_the_same_pixels(order, toyfaces16):
    """The device-resident train split and the memmap (with the next batch prefetched for epochs) draw the same
    uint8 batches, step by step."""
    from pivq.data import PreparedDataset
    from pivq.data.prepared import read_rows
    from pivq.train.batches import BatchOrder
    from pivq.train.images import TrainImages

    data = PreparedDataset(toyfaces16)
    rows = data.indices("train")

    def source(resident):
        order_ = BatchOrder(rows, 8, order, seed=2, gen=torch.Generator().manual_seed(2))
        return TrainImages(data.images, order_, torch.device("cpu"), resident=resident, prefetch=True), order_

    (resident, _), (streamed, _), (_, plain) = source(True), source(False), source(False)
    assert resident.resident and not streamed.resident and (streamed._pool is not None) == (order == "epochs")
    try:
        for step in range(60):  # 200 train rows: 25 steps an epoch, so epochs change twice
            a, b = resident(step), streamed(step)
            assert a.dtype == torch.uint8 and torch.equal(a, b)
            assert torch.equal(a, torch.from_numpy(read_rows(data.images, plain(step))))
    finally:
        streamed.close()


def test_a_nan_after_a_checkpoint_leaves_that_checkpoint_as_the_last_good_one(make_experiment, toyfaces16, tmp_path,
                                                                              monkeypatch):
    """The finite check reads one device flag per log row (and before each checkpoint): a NaN at step 16 (after
    the checkpoint at 15, before the log row at 20) stops the run naming step 16, and latest.pt stays step 15's."""
    original = PIVQ.forward
    calls = {"n": 0}

    def forward(self, x, quantize=True):
        rec, z, indices, vq_loss = original(self, x, quantize)
        calls["n"] += 1
        return (rec * float("nan") if calls["n"] == 17 else rec), z, indices, vq_loss

    monkeypatch.setattr(PIVQ, "forward", forward)
    with pytest.raises(FloatingPointError, match=r"not finite at step 16\b"):
        _run(make_experiment(), toyfaces16, tmp_path)
    assert read_checkpoint(tmp_path / "checkpoints" / "latest.pt", expect=STATE_FORMAT)["step"] == 15
    assert not (tmp_path / "model.pt").exists()


def test_the_log_says_which_matching_path_solved_each_window(make_experiment, toyfaces16, tmp_path, caplog):
    """Every log row of a matching run counts, per solver path, the images matched in its window: together,
    one per image of every quantized training step (on the CPU, never the device path)."""
    experiment = make_experiment()
    sched = experiment["schedule"]
    with caplog.at_level(logging.INFO, logger="pivq.train.loop"):
        _run(experiment, toyfaces16, tmp_path / "run")
    counts = [ast.literal_eval(r.getMessage().split("matching paths ", 1)[1])
              for r in caplog.records if "matching paths" in r.getMessage()]
    assert len(counts) == sched["steps"] // sched["log_every"]
    assert all(set(c) <= {"nearest", "identical", "dense", "crowded", "pruned", "fallback"} for c in counts)
    assert sum(sum(c.values()) for c in counts) == sched["batch_size"] * (sched["steps"] - sched["quantize_start"])
