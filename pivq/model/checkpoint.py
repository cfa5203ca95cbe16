"""Reading and writing trained models, below both training and evaluation.

A model file holds plain tensors and a config dict, so it loads with ``torch.load(weights_only=True)``:
no pickled code runs when a checkpoint is read.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from pivq.io import atomic_path
from pivq.model.pivq import PIVQ, ModelConfig

FORMAT = "pivq-model-v1"


def save_model(path: str | os.PathLike, model: PIVQ, ema: PIVQ, meta: dict) -> None:
    """Raw and EMA weights side by side; evaluation uses the EMA weights."""
    payload = {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "ema_state_dict": ema.state_dict(),
        "meta": meta,
    }
    save_atomic(payload, path)


def save_atomic(payload: dict, path: str | os.PathLike) -> None:
    """torch.save to a temporary name, renamed when complete. Saved through a file object: given a path,
    torch names the zip's records after the (random) temporary file, so equal payloads would differ in bytes
    and in every hash taken of them."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def read_checkpoint(path: str | os.PathLike, expect: str = FORMAT) -> dict:
    """torch.load with weights only, and errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing checkpoint: {path}")
    _check_records(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files fail in many ways inside torch.load
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != expect:
        raise ValueError(f"{path} is not a {expect} checkpoint")
    return payload


def _check_records(path: Path) -> None:
    """A checkpoint is a zip archive whose records carry CRC-32s that torch.load never checks: a flipped bit
    in the weights would load silently. One extra read of the file (cheap next to loading it) checks them."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if bad is not None:
        raise ValueError(f"{path} is corrupt: its record {bad} fails its CRC-32 check")


def config_diff(found: dict, expected: dict) -> str:
    """Each differing key with both values, e.g. ``nf 8 here, 128 expected``: both configurations named (a key
    only one of them has shows None on the other side)."""
    keys = sorted(k for k in {*found, *expected} if found.get(k) != expected.get(k))
    return "; ".join(f"{k} {found.get(k)!r} here, {expected.get(k)!r} expected" for k in keys)


def load_model(path: str | os.PathLike, ema: bool = True, expect_config: dict | None = None,
               device: str | torch.device = "cpu") -> PIVQ:
    """The model saved at ``path`` in eval mode on ``device`` (EMA weights unless ``ema=False``).

    ``expect_config`` (a ModelConfig dict) rejects a checkpoint trained with another architecture. ``device``
    is the stage's (pivq.device.Job.start): nothing here picks one.
    """
    payload = read_checkpoint(path)
    cfg = ModelConfig.from_dict(payload["config"])  # a file older than a setting has that setting's default
    if expect_config is not None and cfg.to_dict() != expect_config:
        raise ValueError(f"{path} was trained with another model configuration (differs in: "
                         f"{config_diff(cfg.to_dict(), expect_config)})")
    model = PIVQ(cfg)
    model.load_state_dict(payload["ema_state_dict" if ema else "state_dict"])
    model.meta = payload["meta"]  # which experiment and run trained it: stages check what they read against it
    return model.to(device).eval()
