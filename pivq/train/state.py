"""Training state on disk: everything needed to resume a run exactly where it stopped.

With the adversarial term on, that includes the discriminator, its optimizer and the DiffAugment generator;
``identity`` records the run (pivq.train.identity), so a checkpoint resumes only its own run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pivq.model.checkpoint import read_checkpoint, save_atomic

FORMAT = "pivq-train-state-v1"


def save_state(path: Path, *, model, ema, optimizer, generator: torch.Generator,
               kmeans_generator: torch.Generator | None, history: list[torch.Tensor],
               rows: list[dict], init_log: list[dict], step: int, config: dict, window_codes: list[torch.Tensor],
               window_sums: dict, identity: dict, discriminator=None, disc_optimizer=None,
               aug_generator: torch.Generator | None = None) -> None:
    payload = {
        "format": FORMAT,
        "config": config,
        "step": step,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        # k-means++ seeding's generator on a GPU (None: on the CPU it is ``generator`` itself)
        "kmeans_generator": None if kmeans_generator is None else kmeans_generator.get_state(),
        # encoder outputs of the last W steps, for a codebook (re-)initialisation; empty after the last one
        "history": history,
        "rows": rows,
        "init_log": init_log,
        "window_codes": window_codes,
        "window_sums": window_sums,
        "identity": identity,  # what changes the weights (pivq.train.identity): only this run resumes from here
        "discriminator": None if discriminator is None else discriminator.state_dict(),
        "disc_optimizer": None if disc_optimizer is None else disc_optimizer.state_dict(),
        "aug_generator": None if aug_generator is None else aug_generator.get_state(),
    }
    save_atomic(payload, path)


def load_state(path: Path) -> dict:
    """The saved state (weights only, CRC-checked, errors naming the file). Whether it is the caller's run is
    its ``identity``'s to say (pivq.train.loop)."""
    return read_checkpoint(path, expect=FORMAT)
