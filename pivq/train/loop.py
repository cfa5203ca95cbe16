"""The PI-VQ training loop (sections 3.6 and 3.7, supplement section 2), top to bottom.

One step: sample a batch, encode, quantize (from T_q on), decode, L1 + VQ loss, Adam, EMA.
Delayed codebook initialisation: before T_q the latents pass unquantized; at T_q, and again every W steps
``init_repeats`` times in all, k-means++ over the encoder outputs of the last W steps sets the codebook.
Training state is checkpointed atomically every ``checkpoint_every`` steps and on SIGTERM/SIGUSR1 (Slurm's
warning before the time limit); rerunning the same command resumes from the latest checkpoint and ends
with the same weights as an uninterrupted run.

Not yet here (issue 3): LPIPS, the PatchGAN/hinge adversarial term with DiffAug and adaptive weight.
The embedded default trains on L1 + the VQ losses, and says so in its outputs (``losses``).
"""

from __future__ import annotations

import copy
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pivq.data import PreparedDataset
from pivq.io import atomic_path, write_json
from pivq.model import PIVQ, ModelConfig
from pivq.model.checkpoint import save_model
from pivq.quantize import kmeans
from pivq.train.state import load_state, save_state

log = logging.getLogger(__name__)

LOSSES = ["l1", "codebook+commitment"]  # the loss terms this loop optimises (recorded with every run)
LOG_COLUMNS = ["step", "loss", "l1", "vq", "k_data", "k_img_max", "k_img_mean", "quantized"]


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int
    lr_per_sample: float  # Adam lr = lr_per_sample * batch_size (paper: 4.5e-6)
    adam_betas: tuple[float, float]
    ema_beta: float
    beta_commit: float
    quantize_start: int  # T_q
    init_window: int  # W
    init_repeats: int
    kmeans_iters: int
    log_every: int
    checkpoint_every: int
    seed: int

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        return cls(**{**d, "adam_betas": tuple(d["adam_betas"])})

    @property
    def init_steps(self) -> list[int]:
        return [self.quantize_start + r * self.init_window for r in range(self.init_repeats)]


class Preempted(SystemExit):
    """Raised after a checkpoint when SIGTERM/SIGUSR1 arrives; a non-zero exit so the job is retried."""


def to_float(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def ema_update(ema: PIVQ, model: PIVQ, beta: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - beta)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def train(experiment: dict, dataset_dir: str | Path, run_dir: str | Path, threads: int = 1,
          device: str | None = None, progress: bool = True) -> dict:
    """Train one resolved experiment (pivq.config.resolve_experiment); returns the run summary.

    Writes into ``run_dir``: checkpoints/latest.pt (resume state, not a pipeline output), model.pt (raw and
    EMA weights), options.json (the resolved experiment), train_log.csv (every log row, with timing).
    """
    run_dir = Path(run_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(threads)
    sched = Schedule.from_dict(experiment["schedule"])
    cfg = ModelConfig.from_dict(experiment["model"], quantizer=experiment["quantizer"], beta=sched.beta_commit)
    data = PreparedDataset(dataset_dir)
    if data.resolution != cfg.resolution:
        raise ValueError(f"{dataset_dir}: images are {data.resolution}px but the model expects {cfg.resolution}px")
    train_idx = data.indices("train")
    images = data.images
    write_json(run_dir / "options.json", {"experiment": experiment, "losses": LOSSES, "device": str(dev),
                                          "threads": threads, "dataset_manifest": data.manifest["files"]})

    torch.manual_seed(sched.seed)
    model = PIVQ(cfg).to(dev)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=sched.lr_per_sample * sched.batch_size, betas=sched.adam_betas)
    gen = torch.Generator().manual_seed(sched.seed)  # drives batch sampling and k-means++ seeding
    history: deque[torch.Tensor] = deque(maxlen=sched.init_window)  # encoder outputs of the last W steps
    rows: list[dict] = []
    init_log: list[dict] = []
    step = 0

    window_codes: list[torch.Tensor] = []  # codes and loss sums since the last log row
    sums = {"loss": 0.0, "l1": 0.0, "vq": 0.0, "n": 0}
    ckpt = run_dir / "checkpoints" / "latest.pt"
    if ckpt.exists():
        state = load_state(ckpt, cfg.to_dict())
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        history.extend(state["history"])
        rows, init_log, step = state["rows"], state["init_log"], state["step"]
        window_codes, sums = state["window_codes"], state["window_sums"]
        log.info("resumed %s from %s at step %d", experiment["name"], ckpt, step)

    def checkpoint() -> None:
        save_state(ckpt, model=model, ema=ema, optimizer=opt, generator=gen, history=list(history),
                   rows=rows, init_log=init_log, step=step, config=cfg.to_dict(),
                   window_codes=window_codes, window_sums=sums)

    stop = {"signal": None}

    def on_signal(signum, frame):  # finish the current step, checkpoint, exit non-zero
        stop["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}
    t_start, t_window = time.perf_counter(), time.perf_counter()
    bar = tqdm(total=sched.steps, initial=step, desc=f"train {experiment['name']}", disable=not progress,
               mininterval=5)
    try:
        while step < sched.steps:
            if step in sched.init_steps:
                init_codebook(model, ema, history, sched, gen, step, init_log)
            batch = train_idx[torch.randint(len(train_idx), (sched.batch_size,), generator=gen).numpy()]
            x = to_float(images[np.sort(batch)], dev)
            quantize = step >= sched.quantize_start
            rec, z, indices, vq_loss = model(x, quantize=quantize)
            l1 = (rec - x).abs().mean()
            loss = l1 + vq_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{experiment['name']}: loss is {loss.item()} at step {step}; stopping. "
                    f"The last good checkpoint is {ckpt if ckpt.exists() else 'not written yet'}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema_update(ema, model, sched.ema_beta)
            history.append(z.detach().reshape(-1, cfg.width).cpu())
            if indices is not None:
                window_codes.append(indices.cpu())
            sums["loss"] += loss.item()
            sums["l1"] += l1.item()
            sums["vq"] += vq_loss.item()
            sums["n"] += 1
            step += 1
            bar.update()

            if step % sched.log_every == 0 or step == sched.steps:
                rows.append(_log_row(step, sums, window_codes, quantize, time.perf_counter() - t_window))
                bar.set_postfix(l1=f"{rows[-1]['l1']:.4f}", k_data=rows[-1]["k_data"])
                log.info("step %d %s", step, {k: rows[-1][k] for k in ("loss", "l1", "vq", "k_data", "k_img_max")})
                window_codes, sums, t_window = [], {"loss": 0.0, "l1": 0.0, "vq": 0.0, "n": 0}, time.perf_counter()
            if stop["signal"] is not None:
                checkpoint()
                raise Preempted(f"{stop['signal']} received: checkpoint written at step {step} to {ckpt}; "
                                "rerun the same command to resume")
            if step % sched.checkpoint_every == 0 and step < sched.steps:
                checkpoint()
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)

    if not bool(model.quantizer.initialized):
        raise RuntimeError(f"{experiment['name']}: training ended before T_q; the codebook was never initialised")
    checkpoint()
    save_model(run_dir / "model.pt", model, ema, meta={"experiment": experiment["name"], "steps": step,
                                                        "losses": LOSSES, "codebook_inits": init_log})
    _write_log(run_dir / "train_log.csv", rows)
    seconds = time.perf_counter() - t_start
    log.info("trained %s: %d steps, %.1f s in this process", experiment["name"], step, seconds)
    return {"steps": step, "losses": LOSSES, "codebook_inits": init_log, "log": rows}


def init_codebook(model: PIVQ, ema: PIVQ, history, sched: Schedule, gen: torch.Generator, step: int,
                  init_log: list[dict]) -> None:
    """k-means++ over the last W steps' encoder outputs -> the codebook of both the model and its EMA.

    The EMA copy takes the new codebook as is: averaging it with the replaced one would mix unrelated centres.
    """
    vectors = torch.cat(list(history))
    centres = kmeans(vectors, model.cfg.codebook_size, sched.kmeans_iters, gen)
    model.quantizer.set_codebook(centres.to(model.quantizer.codebook.device))
    ema.quantizer.set_codebook(centres.to(ema.quantizer.codebook.device))
    init_log.append({"step": step, "vectors": len(vectors), "window": len(history)})
    log.info("codebook initialised at step %d from %d encoder outputs (k-means++, %d Lloyd steps)",
             step, len(vectors), sched.kmeans_iters)


def _log_row(step: int, sums: dict, window_codes: list[torch.Tensor], quantized: bool, seconds: float) -> dict:
    n = max(sums["n"], 1)
    row = {"step": step, "loss": sums["loss"] / n, "l1": sums["l1"] / n, "vq": sums["vq"] / n,
           "k_data": 0, "k_img_max": 0, "k_img_mean": 0.0, "quantized": int(quantized),
           "steps_per_s": sums["n"] / max(seconds, 1e-9)}
    if window_codes:
        codes = torch.cat(window_codes)
        per_image = torch.tensor([len(torch.unique(c)) for c in codes])
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
