"""The training recipe beyond L1 + VQ: hinge losses, the adaptive weight, DiffAugment, the PatchGAN
discriminator, offline LPIPS, and the loop with LPIPS (random trunk) and the adversarial term on:
finite logs, exact resume with the discriminator active, and an unchanged L1 + VQ recipe."""

from __future__ import annotations

import copy
import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import pivq.train.loop as loop
from pivq.model.checkpoint import read_checkpoint
from pivq.model.discriminator import NLayerDiscriminator, build_discriminator, patch_grid
from pivq.train.diffaug import diff_augment, rand_brightness, rand_translation
from pivq.train.losses import VGG16_FILE, adaptive_weight, build_lpips, check_lpips_weights, hinge_d_loss, hinge_g_loss
from pivq.train.state import FORMAT as STATE_FORMAT
from pivq.weights import WeightsFileError, accept_unpublished_weights

pytestmark = pytest.mark.usefixtures("one_thread")

TIMING = {"steps_per_s"}
# The recipe with every new term on, sized for the tiny 16px model: LPIPS with a random VGG trunk (no
# weights file), a 2-layer PatchGAN (3 layers would reduce 16px to nothing) from step 4.
ADV = {"perceptual_weight": 1.0, "adversarial_start": 4, "disc_weight": 0.8, "adaptive_weight_limit": 1.0,
       "diffaug": ["color", "translation"], "disc_layers": 2, "disc_ndf": 8}
OFF = {"perceptual_weight": 0.0, "adversarial_start": None, "disc_weight": 1.0, "adaptive_weight_limit": 1.0,
       "diffaug": ["color", "translation"], "disc_layers": 3, "disc_ndf": 64}


def _run(experiment, dataset, run_dir, **kw):
    return loop.train(experiment, dataset, run_dir, threads=1, device="cpu", progress=False, **kw)


def _rows(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _same_weights(a: Path, b: Path) -> None:
    pa, pb = read_checkpoint(a), read_checkpoint(b)
    for key in ("state_dict", "ema_state_dict"):
        assert pa[key].keys() == pb[key].keys()
        for name, t in pa[key].items():
            assert torch.equal(t, pb[key][name]), f"{key}.{name} differs"
    assert pa["meta"] == pb["meta"]


# --- hinge losses and the adaptive weight ------------------------------------------------------------------


def test_hinge_losses_on_hand_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2 -> mean 2.5/3
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2 -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))
    assert hinge_d_loss(torch.full((4,), 1.5), torch.full((4,), -1.5)).item() == 0.0  # margins met: no loss
    assert hinge_g_loss(fake).item() == pytest.approx(1 / 3)  # -mean D(fake)
    logits = torch.tensor([0.5, -0.5, 3.0], requires_grad=True)
    hinge_g_loss(logits).backward()
    assert torch.allclose(logits.grad, torch.full((3,), -1 / 3))


def test_adaptive_weight_is_the_clamped_ratio_of_gradient_norms():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)  # the "decoder's last layer": y = x W^T
    x, t = torch.randn(5, 3), torch.randn(5, 2)
    y = layer(x)
    rec_loss = ((y - t) ** 2).mean()
    g_loss = -(y * torch.tensor([1.0, 3.0])).mean()
    # by hand: d rec / dW = 2 / (5 * 2) (y - t)^T x ; d g / dW = -1 / (5 * 2) c^T x with c = [1, 3] per row
    w_rec = (2 / 10) * (y - t).detach().T @ x
    w_g = -(1 / 10) * torch.tensor([1.0, 3.0]).expand(5, 2).T @ x
    ratio = w_rec.norm() / (w_g.norm() + 1e-4)

    got = adaptive_weight(rec_loss, g_loss, layer.weight, limit=1e4, disc_weight=1.0)
    assert not got.requires_grad and got.item() == pytest.approx(ratio.item(), rel=1e-5)
    assert adaptive_weight(rec_loss, g_loss, layer.weight, 1e4, 0.8).item() == pytest.approx(0.8 * ratio.item(),
                                                                                              rel=1e-5)
    limit = 0.5 * ratio.item()  # clamped to [0, limit], then times disc_weight
    assert adaptive_weight(rec_loss, g_loss, layer.weight, limit, 0.8).item() == pytest.approx(0.8 * limit)
    (rec_loss + got * g_loss).backward()  # the graph survives the two autograd.grad calls
    assert layer.weight.grad is not None


# --- DiffAugment -------------------------------------------------------------------------------------------


def test_diffaugment_shapes_ranges_determinism_and_gradients():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    out = diff_augment(x, ["color", "translation"], torch.Generator().manual_seed(0))
    again = diff_augment(x, ["color", "translation"], torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.equal(out, x)
    assert torch.equal(out, again)  # its random numbers come from the generator alone
    g = torch.Generator().manual_seed(0)  # real and fake are drawn independently, one after the other
    assert not torch.equal(diff_augment(x, ["color"], g), diff_augment(x, ["color"], g))

    before = torch.random.get_rng_state()
    diff_augment(x, ["color", "translation", "cutout"], torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is untouched

    shifted = rand_brightness(x, torch.Generator().manual_seed(2)) - x  # one constant per image in [-0.5, 0.5]
    per_image = shifted.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    assert (per_image.abs() <= 0.5).all()

    moved = rand_translation(x, torch.Generator().manual_seed(3))  # integer shifts, zero padding, <= 2 px
    for i in range(len(x)):
        values = set(np.round(x[i].numpy().ravel(), 6)) | {0.0}
        assert set(np.round(moved[i].numpy().ravel(), 6)) <= values
        found = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                 if torch.equal(moved[i, :, 2:-2, 2:-2], x[i, :, 2 + dx:14 + dx, 2 + dy:14 + dy])]
        assert found, f"image {i} is not a shift of at most 2 px"

    leaf = x.clone().requires_grad_(True)
    diff_augment(leaf, ["color", "translation"], torch.Generator().manual_seed(4)).square().sum().backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'flip'"):
        diff_augment(x, ["flip"], torch.Generator())


# --- discriminator -----------------------------------------------------------------------------------------


def test_patchgan_discriminator_shape_init_and_rng():
    """Shape, both initialisations (UT's PyTorch default, taming's), and the caller's RNG left alone."""
    disc = NLayerDiscriminator(ndf=64, layers=3)
    assert disc(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 6, 6) and patch_grid(64, 3) == 6
    assert patch_grid(256, 3) == 30  # taming's 30x30 patches at 256px
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]

    before = torch.random.get_rng_state()
    a, b = build_discriminator(8, 2, 16, seed=5), build_discriminator(8, 2, 16, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # built in a forked RNG
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    # disc_init "pytorch" (UT's, the default): exactly PyTorch's own initialisation, BatchNorm weights all 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        plain = NLayerDiscriminator(8, 2)
    for (name, p), q in zip(a.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(a.main[3].weight, torch.ones(16))
    # disc_init "taming": conv N(0, 0.02), BatchNorm weight N(1, 0.02), biases 0
    t = build_discriminator(8, 2, 16, seed=5, init="taming")
    assert t.main[0].weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert a.main[0].weight.std().item() > 0.05  # kaiming-uniform: 1 / sqrt(3 fan_in) = 0.083 at fan_in 48
    assert 0 < (t.main[3].weight - 1).abs().max() < 0.1 and torch.equal(t.main[0].bias, torch.zeros(8))
    with pytest.raises(ValueError, match="disc_init"):
        build_discriminator(8, 2, 16, seed=5, init="xavier")
    with pytest.raises(ValueError, match="disc_layers"):
        build_discriminator(8, 3, 16, seed=0)  # 16px -> an empty logit map


# --- LPIPS offline -----------------------------------------------------------------------------------------


def _no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_lpips_without_vgg_weights_names_the_file(tmp_path, monkeypatch, make_experiment, toyfaces16):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    _no_download(monkeypatch)
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as err:
        build_lpips()
    assert str(folder / VGG16_FILE) in str(err.value) and "downloads nothing" in str(err.value)
    # train() stops at once: before reading the dataset (there is none here) or writing anything
    experiment = make_experiment(schedule={**ADV, "adversarial_start": None})
    with pytest.raises(FileNotFoundError, match=VGG16_FILE):
        _run(experiment, tmp_path / "no_dataset", tmp_path / "run")
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name != "train.lock"]  # (the run's lock at most)
    folder.mkdir(parents=True)
    (folder / VGG16_FILE).write_bytes(b"")  # present but not the published file: refused by its sha256
    with pytest.raises(WeightsFileError, match=r"sha256 begins e3b0c442, expected 397923af"):
        check_lpips_weights()
    with accept_unpublished_weights(folder / VGG16_FILE):  # (tests only) its own hash accepted: the check passes
        assert check_lpips_weights() == folder / VGG16_FILE


def test_lpips_random_trunk_builds_offline_and_is_frozen(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _no_download(monkeypatch)
    before = torch.random.get_rng_state()
    net = build_lpips(random_trunk=True, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    d = net(x, y)
    assert d.shape == (2, 1, 1, 1) and (d > 0).all() and net(x, x).abs().max() < 1e-6
    d.sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


# --- the loop with every term on ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adv_experiment(make_experiment):
    """16 steps of batch 4 (LPIPS dominates the time): T_q = 6, W = 2 (inits at 6 and 8), logs every 4,
    checkpoints every 6, adversarial from step 4."""
    return make_experiment(schedule={**ADV, "steps": 16, "batch_size": 4, "quantize_start": 6, "init_window": 2,
                                     "log_every": 4, "checkpoint_every": 6})


@pytest.fixture(scope="module")
def adv_run(adv_experiment, toyfaces16, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("adv_a")
    return run_dir, _run(adv_experiment, toyfaces16, run_dir, perceptual_random_trunk=True)


def test_run_with_lpips_and_adversarial_logs_finite_terms(adv_run, adv_experiment):
    run_dir, summary = adv_run
    expected = ["l1", "lpips", "adversarial(hinge, from step 4)", "codebook+commitment"]
    assert summary["losses"] == expected
    assert json.loads((run_dir / "options.json").read_text())["losses"] == expected
    assert read_checkpoint(run_dir / "model.pt")["meta"]["losses"] == expected
    log = pd.read_csv(run_dir / "train_log.csv")
    assert set(loop.LOG_COLUMNS) <= set(log.columns) and log["step"].tolist() == [4, 8, 12, 16]
    assert np.isfinite(log[loop.LOG_COLUMNS].to_numpy(dtype=float)).all()
    assert (log["lpips"] > 0).all()
    assert log["adversarial"].tolist() == [0, 1, 1, 1]
    assert (log.loc[0, ["g_loss", "d_loss", "d_weight"]] == 0).all()  # steps 0-3: no adversarial term
    assert (log["d_loss"][1:] > 0).all() and (log["d_weight"][1:] > 0).all()
    assert (log["d_weight"][1:] <= ADV["disc_weight"] * ADV["adaptive_weight_limit"] + 1e-6).all()
    state = read_checkpoint(run_dir / "checkpoints" / "latest.pt", expect=STATE_FORMAT)
    assert state["discriminator"] is not None and state["disc_optimizer"]["state"]
    assert {k: state["identity"]["schedule"][k] for k in ADV} == ADV  # the recipe is part of the run's identity


def test_sigterm_resume_is_exact_with_the_discriminator_active(adv_run, adv_experiment, toyfaces16, tmp_path,
                                                               monkeypatch):
    """Stopped at step 9 (after the checkpoint at 6 and both codebook inits, adversarial since 4, mid log
    window), then rerun: the same weights, discriminator, augmentation generator and log as run A."""
    run_a, summary_a = adv_run
    calls, original = {"n": 0}, loop.to_float  # called once per step, as it reads the batch

    def to_float(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "to_float", to_float)
    with pytest.raises(loop.Preempted):
        _run(adv_experiment, toyfaces16, tmp_path, perceptual_random_trunk=True)
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "checkpoints" / "latest.pt", expect=STATE_FORMAT)["step"] == 9

    summary_b = _run(adv_experiment, toyfaces16, tmp_path, perceptual_random_trunk=True)
    assert _rows(summary_b["log"]) == _rows(summary_a["log"])
    _same_weights(run_a / "model.pt", tmp_path / "model.pt")
    da, db = (read_checkpoint(d / "checkpoints" / "latest.pt", expect=STATE_FORMAT) for d in (run_a, tmp_path))
    for name, t in da["discriminator"].items():
        assert torch.equal(t, db["discriminator"][name]), name
    assert torch.equal(da["aug_generator"], db["aug_generator"])


def test_other_loss_settings_are_another_run(adv_run, adv_experiment, toyfaces16, tmp_path, caplog):
    """The loss recipe is part of a run's identity: its checkpoint is set aside, the new recipe trains from 0."""
    import logging
    import shutil

    run_a, _ = adv_run
    shutil.copytree(run_a / "checkpoints", tmp_path / "checkpoints")
    other = copy.deepcopy(adv_experiment)
    other["schedule"]["disc_weight"] = 0.5
    with caplog.at_level(logging.WARNING, logger="pivq.train.loop"):
        _run(other, toyfaces16, tmp_path, perceptual_random_trunk=True)
    assert "schedule.disc_weight 0.8 there, 0.5 here" in caplog.text
    assert (next((tmp_path / "superseded").iterdir()) / "latest.pt").is_file()


# --- the L1 + VQ recipe is unchanged -----------------------------------------------------------------------


def test_terms_off_build_nothing(make_experiment, toyfaces16, tmp_path, monkeypatch):
    """perceptual_weight 0 and adversarial_start null (toy's settings) never build LPIPS or the discriminator
    nor draw augmentations, and log the inactive terms as 0. (Bit-identity with the loop before the
    adversarial term existed was checked by hand on this config and toy32: same weight checksums.)"""
    def refuse(*args, **kwargs):
        raise AssertionError("built or used although its term is off")

    for name in ("build_lpips", "build_discriminator", "diff_augment", "adaptive_weight"):
        monkeypatch.setattr(loop, name, refuse)
    toy = make_experiment(schedule={**OFF, "steps": 30})
    a = _run(toy, toyfaces16, tmp_path / "a")
    assert a["losses"] == loop.LOSSES == ["l1", "codebook+commitment"]
    assert all(r["lpips"] == r["g_loss"] == r["d_loss"] == r["d_weight"] == r["adversarial"] == 0 for r in a["log"])


def test_schedule_keys_are_all_required(make_experiment, params):
    partial = make_experiment()
    del partial["schedule"]["adversarial_start"]
    with pytest.raises(KeyError, match="adversarial_start"):
        loop.Schedule.from_dict(partial["schedule"])
    for name, sched in params["schedules"].items():  # params.yaml names every key
        assert set(loop.Schedule.__dataclass_fields__) <= set(sched), name
    assert loop.losses_of(loop.Schedule.from_dict(params["schedules"]["toy"])) == loop.LOSSES
    assert loop.losses_of(loop.Schedule.from_dict(params["schedules"]["paper256"])) == [
        "l1", "lpips", "adversarial(hinge, from step 500000)", "codebook+commitment"]


def test_adversarial_start_after_the_last_step_is_a_params_error(params_copy):
    from pivq.config import ParamsError, validate_params

    params_copy["schedules"]["toy"]["adversarial_start"] = params_copy["schedules"]["toy"]["steps"]
    with pytest.raises(ParamsError, match="schedules.toy.adversarial_start"):
        validate_params(params_copy)
    del params_copy["schedules"]["toy"]["disc_ndf"]
    with pytest.raises(ParamsError, match="disc_ndf"):
        validate_params(params_copy)
