"""The PI-VQ training loop (sections 3.6 and 3.7, supplement section 2), top to bottom.

One step: read a batch (pivq.train.batches: shuffled epochs, or draws with replacement), encode, quantize (from
T_q on), decode, loss, Adam; the EMA every ``ema_every`` steps; then, once the adversarial term is on, one
discriminator step. The loss (Unleashing Transformers / taming-transformers VQ-GAN recipe):

    rec_loss = L1 + perceptual_weight * LPIPS(VGG)                        (LPIPS only if perceptual_weight > 0)
    loss     = rec_loss + lambda * hinge_g(D(DiffAug(rec))) + VQ          (adversarial term from adversarial_start)
    VQ       = per vq_loss (pivq.quantize.module.Quantizer; UT's: |sg(e) - z|^2 + vq_beta |e - sg(z)|^2)
    lambda   = clamp(||grad rec_loss|| / (||grad g|| + 1e-4), 0, adaptive_weight_limit) * disc_weight, at the
               decoder's last layer weights, detached
    d_loss   = hinge_d(D(DiffAug(x)), D(DiffAug(rec).detach()))            (its own Adam, same lr and betas)

Every term sees images in the model's pixel_range (UT's [0, 1], or [-1, 1]); params.yaml names each setting
that follows Unleashing Transformers' code, with its file and line.

At the device's speed: the forward passes run in the schedule's ``precision`` (pivq.precision; the quantizer always
in float32); batches come resident on the GPU or streamed from the memmap (pivq.train.images); loss sums and the
finite check (FiniteGuard) stay on the device until a log row; on a GPU, fused Adam, channels_last conv stacks,
cuDNN autotuning and optionally torch.compile. On the CPU in fp32 every number is what it was before these.

The discriminator (seed + 1), the DiffAugment generator (seed + 2) and a random LPIPS trunk (seed + 3) are
seeded on their own and built only when their term is on: a run with perceptual_weight 0 and
adversarial_start null consumes exactly the random numbers it did before they existed (bit-identical weights).
Delayed codebook initialisation: before T_q the latents pass unquantized; at T_q, and again every W steps
``init_repeats`` times in all, k-means++ over the encoder outputs of the last W steps sets the codebook. The
window stays on the training device and k-means runs there; it is emptied after the last initialisation, so
later checkpoints do not carry it (about 1 GB at the paper's W x B x L x d).
Training state is checkpointed atomically every ``checkpoint_every`` steps and on SIGTERM, SIGUSR1 (Slurm's
warning before the time limit) and SIGINT (Ctrl-C); rerunning the same command resumes from the latest
checkpoint and ends with the same weights as an uninterrupted run. A checkpoint resumes only its own run
(pivq.train.identity: everything that changes the weights, and the dataset's hashes; raising ``steps`` alone
continues it): any other is moved aside with that run's outputs, named in the log, and training starts afresh,
so ``options.json`` always describes the weights in ``model.pt``. One process trains a run at a time
(pivq.train.lock).

The embedded default (toy) trains on L1 + the VQ losses, and says so in its outputs (``losses``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from pivq.data import PreparedDataset
from pivq.data.prepared import read_rows
from pivq.io import atomic_path, remove_stale_temporaries, write_json
from pivq.logs import software_versions
from pivq.model import PIVQ, ModelConfig
from pivq.model.checkpoint import save_model
from pivq.model.discriminator import build_discriminator
from pivq.model.pixels import to_float
from pivq.precision import autocast, check_precision, gpu_settings
from pivq.quantize import kmeans
from pivq.quantize.matching import take_paths
from pivq.train.batches import BatchOrder
from pivq.train.diffaug import diff_augment
from pivq.train.identity import identity_diff, identity_hash, run_identity
from pivq.train.images import TrainImages
from pivq.train.live import LIVE_DIR, PREVIEW_IMAGES, LiveRecords, preview
from pivq.train.lock import run_lock
from pivq.train.losses import adaptive_weight, build_lpips, hinge_d_loss, hinge_g_loss
from pivq.train.state import load_state, save_state

log = logging.getLogger(__name__)

LOSSES = ["l1", "codebook+commitment"]  # the terms of the L1 + VQ recipe (toy); losses_of(schedule) in general
# Logged every log_every steps; terms that are off log 0 (g_loss, d_loss, d_weight: means over the window's
# adversarial steps). The deterministic columns written to results/ (no timings):
LOG_COLUMNS = ["step", "loss", "l1", "lpips", "vq", "g_loss", "d_loss", "d_weight", "k_data", "k_img_max",
               "k_img_mean", "quantized", "adversarial"]
_SUMS = ("loss", "l1", "lpips", "vq", "g_loss", "d_loss", "d_weight", "n", "n_adv")
# a run's files beside its checkpoint (set aside with it when another run takes the folder)
RUN_FILES = ("model.pt", "options.json", "train_log.csv", LIVE_DIR)


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int
    lr_per_sample: float  # Adam lr = lr_per_sample * batch_size (paper: 4.5e-6)
    adam_betas: tuple[float, float]
    ema_beta: float
    ema_every: int  # the EMA moves on steps ema_every, 2 ema_every, ... (UT: 10)
    vq_loss: str  # unleashing | vqvae (pivq.quantize.module.Quantizer)
    vq_beta: float
    quantize_start: int  # T_q
    init_window: int  # W
    init_repeats: int
    kmeans_iters: int
    log_every: int
    image_every: int  # steps between the live records' image grids (pivq.train.live); 0 = none
    checkpoint_every: int
    seed: int
    perceptual_weight: float  # LPIPS weight; 0 = no LPIPS network at all
    adversarial_start: int | None  # first step of the adversarial term; None = never
    disc_weight: float  # multiplies the clamped adaptive weight
    adaptive_weight_limit: float  # the adaptive weight is clamped to [0, this]
    diffaug: tuple[str, ...]  # DiffAugment policies on the discriminator's inputs
    disc_layers: int
    disc_ndf: int
    disc_init: str  # pytorch (UT) | taming (pivq.model.discriminator)
    data_order: str  # epochs (UT) | replacement (pivq.train.batches)
    precision: str  # fp32 | tf32 | bf16 (pivq.precision)
    compile: bool  # torch.compile the conv stacks (and the discriminator) on a GPU

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        missing = [k for k in cls.__dataclass_fields__ if k not in d]
        if missing:
            raise KeyError(f"schedule: missing settings {missing}")
        return cls(**{**d, "adam_betas": tuple(d["adam_betas"]), "diffaug": tuple(d["diffaug"])})

    @property
    def perceptual(self) -> bool:
        return self.perceptual_weight > 0

    @property
    def adversarial(self) -> bool:
        return self.adversarial_start is not None

    @property
    def init_steps(self) -> list[int]:
        return [self.quantize_start + r * self.init_window for r in range(self.init_repeats)]


def losses_of(sched: Schedule) -> list[str]:
    """The loss terms a schedule optimises, as recorded with every run (options.json, model.pt, results/)."""
    terms = ["l1"]
    if sched.perceptual:
        terms.append("lpips")
    if sched.adversarial:
        terms.append(f"adversarial(hinge, from step {sched.adversarial_start})")
    return terms + ["codebook+commitment"]


class Preempted(SystemExit):
    """Raised after a checkpoint when SIGTERM/SIGUSR1 arrives; a non-zero exit so the job is retried."""


@torch.no_grad()
def ema_update(ema: PIVQ, model: PIVQ, beta: float) -> None:
    """ema <- ema + (1 - beta) (model - ema) for every parameter, buffers copied: one foreach kernel family for
    all tensors (on the CPU, the same per-tensor lerp_ as a loop)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - beta)
    torch._foreach_copy_(list(ema.buffers()), list(model.buffers()))


def train(experiment: dict, dataset_dir: str | Path, run_dir: str | Path, threads: int = 1,
          device: str | torch.device = "cpu", progress: bool = True, perceptual_random_trunk: bool = False) -> dict:
    """Train one resolved experiment (pivq.config.resolve_experiment); returns the run summary.

    Writes into ``run_dir``: checkpoints/latest.pt (resume state, not a pipeline output), model.pt (raw and
    EMA weights), options.json (the resolved experiment), train_log.csv (every log row, with timing).

    ``device`` is the stage's (pivq.device.Job.start; nothing here picks one); ``threads`` torch's CPU threads,
    which the matcher solves the batch's images on.
    ``perceptual_random_trunk`` (tests and benchmarks only, never the pipeline): LPIPS with a randomly
    initialised VGG16 trunk, which needs no weights file. Without it, a schedule with perceptual_weight > 0
    needs the VGG16 weights in the torch hub cache and stops here, before any work, if they are missing.
    """
    with run_lock(run_dir):  # a second training of this run stops here, naming the first
        return _train(experiment, Path(dataset_dir), Path(run_dir), threads, torch.device(device), progress,
                      perceptual_random_trunk)


def _train(experiment: dict, dataset_dir: Path, run_dir: Path, threads: int, dev: torch.device, progress: bool,
           perceptual_random_trunk: bool) -> dict:
    """train()'s body, run while holding the run's lock."""
    torch.set_num_threads(threads)
    sched = Schedule.from_dict(experiment["schedule"])
    check_precision(sched.precision)
    losses = losses_of(sched)
    # LPIPS weights and the discriminator's size are checked before anything heavy happens
    lpips_net = build_lpips(perceptual_random_trunk, sched.seed + 3).to(dev) if sched.perceptual else None
    cfg = ModelConfig.of_experiment(experiment)
    disc = d_opt = aug_gen = None
    if sched.adversarial:
        disc = build_discriminator(sched.disc_ndf, sched.disc_layers, cfg.resolution, sched.seed + 1,
                                   sched.disc_init).to(dev)
        aug_gen = torch.Generator().manual_seed(sched.seed + 2)  # DiffAugment's random numbers
    data = PreparedDataset(dataset_dir, verify=True)  # a corrupt set stops the run, named
    if data.resolution != cfg.resolution:
        raise ValueError(f"{dataset_dir}: images are {data.resolution}px but the model expects {cfg.resolution}px")
    train_idx = data.indices("train")
    if not len(train_idx):
        raise ValueError(f"{dataset_dir} has no train images (split.csv): nothing to train {experiment['name']} on")
    gen = torch.Generator().manual_seed(sched.seed)  # draws with replacement (and k-means++ seeding on the CPU)
    try:
        batch_rows = BatchOrder(train_idx, sched.batch_size, sched.data_order, sched.seed, gen)
    except ValueError as err:
        schedule = experiment.get("schedule_name", "<schedule>")
        raise ValueError(f"{experiment['name']} on {dataset_dir}: schedules.{schedule}: {err}") from None
    identity = run_identity(experiment, data.manifest["files"])
    ckpt = run_dir / "checkpoints" / "latest.pt"
    # temporaries of writes cut short by a killed earlier run; no other process writes here while we hold the lock
    for stale in remove_stale_temporaries([ckpt, *(run_dir / f for f in RUN_FILES)]):
        log.info("removed %s, left by a killed earlier attempt", stale)
    state = _own_checkpoint(ckpt, identity, sched.steps, run_dir)
    software = {**software_versions(), "cuda": torch.version.cuda}
    write_json(run_dir / "options.json", {"experiment": experiment, "run": identity_hash(identity),
                                          "identity": identity, "losses": losses, "device": str(dev),
                                          "threads": threads, "resumed_from_step": state["step"] if state else 0,
                                          "software": software})  # (the dataset's hashes: identity.dataset_files)

    torch.manual_seed(sched.seed)
    model = PIVQ(cfg).to(dev)
    gpu = dev.type == "cuda"  # a GPU's speed settings; on the CPU every number is what it always was
    if gpu:
        for net in (model.conv_encoder, model.conv_decoder, disc, lpips_net):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    lr = sched.lr_per_sample * sched.batch_size
    fused = True if gpu else None  # one fused Adam kernel per step on a GPU (the CPU keeps torch's default)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=sched.adam_betas, fused=fused)
    if disc is not None:
        d_opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=sched.adam_betas, fused=fused)
    if sched.compile and gpu:  # in place: the state dict keeps its keys
        for net in (model.conv_encoder, model.conv_decoder, disc):
            if net is not None:
                net.compile()
    amp = autocast(sched.precision, dev)
    finite = FiniteGuard(experiment["name"], ckpt, dev)
    last_layer = model.conv_decoder.conv_out.weight  # where the adaptive weight compares gradient norms
    # k-means++ draws on the device the window lives on: on the CPU from the batch generator itself (the
    # embedded runs consume exactly the random numbers they always did), on a GPU from a generator there
    kmeans_gen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(sched.seed + 4)
    history: deque[torch.Tensor] = deque(maxlen=sched.init_window)  # encoder outputs of the last W steps
    rows: list[dict] = []
    init_log: list[dict] = []
    step = 0

    window_codes: list[torch.Tensor] = []  # codes and loss sums since the last log row
    sums = _new_sums()
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        if kmeans_gen is not gen and state.get("kmeans_generator") is not None:
            kmeans_gen.set_state(state["kmeans_generator"])
        history.extend(h.to(dev) for h in state["history"])
        rows, init_log, step = state["rows"], state["init_log"], state["step"]
        window_codes, sums = state["window_codes"], {**_new_sums(), **state["window_sums"]}
        if disc is not None:
            disc.load_state_dict(state["discriminator"])
            d_opt.load_state_dict(state["disc_optimizer"])
            aug_gen.set_state(state["aug_generator"])
        log.info("resumed %s from %s at step %d", experiment["name"], ckpt, step)

    def checkpoint() -> None:
        finite.check()  # never a checkpoint of weights a non-finite loss has touched
        save_state(ckpt, model=model, ema=ema, optimizer=opt, generator=gen,
                   kmeans_generator=None if kmeans_gen is gen else kmeans_gen, history=list(history),
                   rows=rows, init_log=init_log, step=step, config=cfg.to_dict(),
                   window_codes=[c.cpu() for c in window_codes], window_sums={k: float(v) for k, v in sums.items()},
                   identity=identity, discriminator=disc, disc_optimizer=d_opt, aug_generator=aug_gen)

    stop = {"signal": None}

    def on_signal(signum, frame):  # finish the current step, checkpoint, exit non-zero
        stop["signal"] = signal.Signals(signum).name

    batches = TrainImages(data.images, batch_rows, dev, resident=None)  # resident on a GPU when they fit
    live = LiveRecords(run_dir, experiment, resume=state is not None)
    shown = read_rows(data.images, train_idx[:PREVIEW_IMAGES])  # the grids' images (uint8)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    settings = contextlib.ExitStack()
    settings.enter_context(gpu_settings(sched.precision, dev))  # TF32, cuDNN autotuning: restored after
    t_start, t_window = time.perf_counter(), time.perf_counter()
    take_paths()  # count matching's solver paths from this run's first step
    bar = tqdm(total=sched.steps, initial=step, desc=f"train {experiment['name']}", disable=not progress,
               mininterval=5)
    try:
        while step < sched.steps:
            if step in sched.init_steps:
                init_codebook(model, ema, history, sched, kmeans_gen, step, init_log)
                if step == sched.init_steps[-1]:
                    history.clear()  # never used again: later checkpoints stay the size of the weights
            x = to_float(batches(step), dev, cfg.pixel_range)
            if gpu:
                x = x.contiguous(memory_format=torch.channels_last)
            quantize = step >= sched.quantize_start
            adversarial = disc is not None and step >= sched.adversarial_start
            with amp:  # bf16 autocast (precision: bf16) over the forward passes; the quantizer stays float32
                rec, z, indices, vq_loss = model(x, quantize=quantize)
                rec = rec.float()
                l1 = (rec - x).abs().mean()
                rec_loss = l1
                if lpips_net is not None:
                    p_loss = lpips_net(x, rec).mean().float()
                    rec_loss = rec_loss + sched.perceptual_weight * p_loss
                if adversarial:
                    disc.requires_grad_(False)  # the generator's pass: gradients reach the decoder, not D
                    fake = diff_augment(rec, sched.diffaug, aug_gen)
                    g_loss = hinge_g_loss(disc(fake)).float()
            if adversarial:
                d_weight = adaptive_weight(rec_loss, g_loss, last_layer, sched.adaptive_weight_limit,
                                           sched.disc_weight)
                loss = rec_loss + d_weight * g_loss + vq_loss
            else:
                loss = rec_loss + vq_loss
            finite.record(loss, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if adversarial:
                disc.requires_grad_(True)
                real = diff_augment(x, sched.diffaug, aug_gen)
                with amp:
                    d_loss = hinge_d_loss(disc(real), disc(fake.detach())).float()
                finite.record(d_loss, step)
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
                # sums stay on the device (float64: the same numbers as summing .item()s) until a log row
                sums["g_loss"] += g_loss.detach().double()
                sums["d_loss"] += d_loss.detach().double()
                sums["d_weight"] += d_weight.double()
                sums["n_adv"] += 1
            if step > 0 and step % sched.ema_every == 0:  # UT's condition (train_vqgan.py line 195)
                ema_update(ema, model, sched.ema_beta)
            if sched.init_steps[0] - sched.init_window <= step < sched.init_steps[-1]:  # a k-means window
                history.append(z.detach().float().reshape(-1, cfg.width))  # stays on the device, like k-means
            if indices is not None:
                window_codes.append(indices.detach())
            sums["loss"] += loss.detach().double()
            sums["l1"] += l1.detach().double()
            sums["vq"] += vq_loss.detach().double()
            if lpips_net is not None:
                sums["lpips"] += p_loss.detach().double()
            sums["n"] += 1
            step += 1
            bar.update()

            if step % sched.log_every == 0 or step == sched.steps:
                finite.check()  # the one host read of the window: a non-finite loss stops the run here
                rows.append(_log_row(step, sums, window_codes, quantize, adversarial,
                                     time.perf_counter() - t_window))
                bar.set_postfix(l1=f"{rows[-1]['l1']:.4f}", k_data=rows[-1]["k_data"])
                log.info("step %d %s", step, {k: rows[-1][k] for k in ("loss", "l1", "lpips", "vq", "g_loss",
                                                                        "d_loss", "d_weight", "k_data", "k_img_max")})
                if model.quantizer.method == "matching":  # images per solver path (on the GPU: "device")
                    log.info("step %d matching paths %s", step, take_paths())
                live.row(rows[-1])
                _write_log(run_dir / "train_log.csv", rows)  # grows as training goes (rewritten whole: atomic)
                window_codes, sums, t_window = [], _new_sums(), time.perf_counter()
            if sched.image_every and step % sched.image_every == 0:
                # float32, outside the autocast: the grids' code sets come from the quantizer's own float32 assignment
                decodes, samples = preview(model, shown, bool(model.quantizer.initialized), step, sched.seed)
                live.images(step, shown, decodes, samples)
            if stop["signal"] is not None:
                checkpoint()
                raise Preempted(f"{stop['signal']} received: checkpoint written at step {step} to {ckpt}; "
                                "rerun the same command to resume")
            if step % sched.checkpoint_every == 0 and step < sched.steps:
                checkpoint()
    except Exception:
        finite.check()  # a non-finite loss earlier in the window is the cause to name (NaN weights fail later)
        raise
    finally:
        bar.close()
        batches.close()
        settings.close()
        for s, handler in previous.items():
            signal.signal(s, handler)

    if not bool(model.quantizer.initialized):
        raise RuntimeError(f"{experiment['name']}: training ended before T_q; the codebook was never initialised")
    checkpoint()
    save_model(run_dir / "model.pt", model, ema, meta={"experiment": experiment["name"], "steps": step,
                                                        "losses": losses, "codebook_inits": init_log,
                                                        "run": identity_hash(identity), "identity": identity})
    _write_log(run_dir / "train_log.csv", rows)
    live.end({"steps": step, "codebook_inits": len(init_log)})
    seconds = time.perf_counter() - t_start
    log.info("trained %s: %d steps, %.1f s in this process", experiment["name"], step, seconds)
    return {"steps": step, "losses": losses, "codebook_inits": init_log, "log": rows}


def _own_checkpoint(ckpt: Path, identity: dict, steps: int, run_dir: Path) -> dict | None:
    """The checkpoint's state if it is this run's (same identity, not beyond ``steps``), else None, with the
    other run's files moved to ``run_dir/superseded/<time>-<its run>/`` (logged): nothing is lost, and what
    starts afresh is never mixed with it. A checkpoint that cannot be read stops the run, named (pivq decides
    nothing about a file it cannot read)."""
    if not ckpt.exists():
        return None
    state = load_state(ckpt)
    found = state.get("identity")
    if found == identity and state["step"] <= steps:
        return state
    if found is None:
        why = "written by an older pivq that did not record its run's identity"
    elif found == identity:
        why = f"at step {state['step']}, beyond steps = {steps}: a shorter run is another run"
    else:
        why = "another run: " + "; ".join(identity_diff(found, identity))
    aside = run_dir / "superseded" / f"{time.strftime('%Y%m%d-%H%M%S')}-{identity_hash(found) if found else 'old'}"
    aside.mkdir(parents=True, exist_ok=True)
    for path in (ckpt, *(run_dir / f for f in RUN_FILES)):
        if path.exists():
            path.replace(aside / path.name)
    log.warning("%s is %s. Moved it, with that run's model.pt, options.json and train_log.csv, to %s; "
                "training this run from step 0", ckpt, why, aside)
    return None


class FiniteGuard:
    """Records, on the device, the first step whose loss (or discriminator loss) was not finite; ``check`` reads it
    (one host sync) at each log row, before each checkpoint and when the loop fails, and stops the run naming
    that step. No checkpoint is written after a non-finite loss, so the last one on disk is the last good one."""

    def __init__(self, name: str, ckpt: Path, device: torch.device):
        self.name, self.ckpt = name, ckpt
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def record(self, value: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(value.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)

    def check(self) -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise FloatingPointError(
                f"{self.name}: the loss is not finite at step {step}; stopping. The last good checkpoint is "
                f"{self.ckpt if self.ckpt.exists() else 'not written yet'}")


def init_codebook(model: PIVQ, ema: PIVQ, history, sched: Schedule, gen: torch.Generator, step: int,
                  init_log: list[dict]) -> None:
    """k-means++ over the last W steps' encoder outputs -> the codebook of both the model and its EMA, on the
    device of the outputs, drawing from ``gen`` (a generator on that device).

    The EMA copy takes the new codebook as is: averaging it with the replaced one would mix unrelated centres.
    """
    vectors = torch.cat(list(history))
    centres = kmeans(vectors, model.cfg.codebook_size, sched.kmeans_iters, gen)
    model.quantizer.set_codebook(centres.to(model.quantizer.codebook.device))
    ema.quantizer.set_codebook(centres.to(ema.quantizer.codebook.device))
    init_log.append({"step": step, "vectors": len(vectors), "window": len(history)})
    log.info("codebook initialised at step %d from %d encoder outputs (k-means++, %d Lloyd steps)",
             step, len(vectors), sched.kmeans_iters)


def _new_sums() -> dict:
    return {k: 0 if k.startswith("n") else 0.0 for k in _SUMS}


def _log_row(step: int, sums: dict, window_codes: list[torch.Tensor], quantized: bool, adversarial: bool,
             seconds: float) -> dict:
    sums = {k: float(v) for k, v in sums.items()}  # the window's device sums, read once
    n, n_adv = max(sums["n"], 1), max(sums["n_adv"], 1)
    row = {"step": step, "loss": sums["loss"] / n, "l1": sums["l1"] / n, "lpips": sums["lpips"] / n,
           "vq": sums["vq"] / n, "g_loss": sums["g_loss"] / n_adv, "d_loss": sums["d_loss"] / n_adv,
           "d_weight": sums["d_weight"] / n_adv, "k_data": 0, "k_img_max": 0, "k_img_mean": 0.0,
           "quantized": int(quantized), "adversarial": int(adversarial), "steps_per_s": sums["n"] / max(seconds, 1e-9)}
    if window_codes:
        codes = torch.cat(window_codes).sort(dim=1).values  # (images, L), on the device the codes came from
        per_image = 1 + (codes[:, 1:] != codes[:, :-1]).sum(dim=1)  # distinct codes of each image
        row.update(k_data=len(torch.unique(codes)), k_img_max=int(per_image.max()),
                   k_img_mean=float(per_image.float().mean()))
    return row


def _write_log(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or list(rows[0])
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(",".join(columns) + "\n")
            for r in rows:
                f.write(",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in columns) + "\n")


def write_training_metrics(summary: dict, evaluation: dict, json_path: Path, csv_path: Path) -> None:
    """The deterministic part of a run for results/: no timings (they differ between identical runs)."""
    write_json(json_path, {**evaluation, "steps": summary["steps"], "losses": summary["losses"],
                           "codebook_inits": summary["codebook_inits"]})
    _write_log(csv_path, summary["log"], LOG_COLUMNS)
