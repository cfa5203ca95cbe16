"""A small attribute-classifying CNN whose penultimate layer is the offline stand-in for Inception.

Inception-v3 weights cannot be fetched offline, so on the embedded toyfaces data the pipeline trains
its own feature extractor: a CNN that predicts every categorical face attribute. Features that
separate hair colour, glasses, hats, ... are exactly the semantic features FID / precision / recall /
density / coverage should compare. Held-out accuracy is returned so the caller can record that the
features mean something.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pivq.model.checkpoint import read_checkpoint, save_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pivq-attribute-cnn/1"
HELDOUT_FRACTION = 0.1
IGNORE_LABEL = -1  # pandas' code for a missing categorical value; skipped by the loss


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: identical behaviour in train and eval, independent of batch size.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
    )


class AttributeCNN(nn.Module):
    """Conv net: 4 conv blocks -> 4x4 pooled map -> ``feature_dim`` features -> one head per attribute.

    Input is NCHW RGB, uint8 in [0, 255] or float in [0, 1]; it is normalised here and resized
    (bilinear) to ``resolution`` if it differs, so any sample size can be scored.
    """

    def __init__(
        self, heads: dict[str, int], resolution: int = 32, width: int = 32, feature_dim: int = 128
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("AttributeCNN needs at least one attribute head")
        self.config = {
            "heads": dict(heads),
            "resolution": int(resolution),
            "width": int(width),
            "feature_dim": int(feature_dim),
        }
        self.resolution = int(resolution)
        self.body = nn.Sequential(
            _block(3, width, 1),
            _block(width, 2 * width, 2),
            _block(2 * width, 4 * width, 2),
            _block(4 * width, 4 * width, 2),
        )
        # Pool to 4x4 rather than 1x1: faces are aligned, so *where* a feature is (hat vs beard)
        # is informative and cheap to keep.
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.embed = nn.Linear(4 * width * 16, feature_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, n) for name, n in heads.items()})

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.resolution, self.resolution):
            shrink = x.shape[-1] > self.resolution
            x = F.interpolate(
                x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                antialias=shrink,
            )
        return x * 2.0 - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, shape (N, feature_dim): what the metrics compare."""
        h = self.pool(self.body(self._prepare(x))).flatten(1)
        return F.silu(self.embed(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (features, {attribute: logits})."""
        f = self.features(x)
        return f, {name: head(f) for name, head in self.heads.items()}


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) numpy -> uint8 (N, 3, H, W) tensor, with the shape checked."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


@torch.no_grad()
def _accuracy(
    model: AttributeCNN, x: torch.Tensor, y: dict[str, torch.Tensor], batch_size: int
) -> dict[str, float]:
    model.eval()
    dev = next(model.parameters()).device
    correct = {name: 0 for name in y}
    for start in range(0, len(x), batch_size):
        _, logits = model(x[start : start + batch_size].to(dev))
        for name, lg in logits.items():
            correct[name] += int((lg.argmax(1).cpu() == y[name][start : start + batch_size]).sum())
    counts = {name: int((t != IGNORE_LABEL).sum()) for name, t in y.items()}
    return {name: correct[name] / max(counts[name], 1) for name in y}


def _majority_baseline(y: dict[str, torch.Tensor]) -> dict[str, float]:
    out = {}
    for name, t in y.items():
        t = t[t != IGNORE_LABEL]
        out[name] = float(torch.bincount(t).max()) / len(t) if len(t) else 0.0
    return out


def _check_labels(
    labels: dict[str, np.ndarray], n: int, class_names: dict[str, list[str]] | None
) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, list[str]]]:
    if not labels:
        raise ValueError("train_extractor needs at least one attribute in labels")
    tensors, heads, names = {}, {}, {}
    for attr, values in labels.items():
        values = np.asarray(values)
        if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"labels[{attr!r}] must be {n} integer codes, got {values.dtype} {values.shape}"
            )
        if values.min() < IGNORE_LABEL:
            raise ValueError(f"labels[{attr!r}] has codes below {IGNORE_LABEL}")
        given = (class_names or {}).get(attr)
        n_classes = len(given) if given is not None else int(values.max()) + 1
        if values.max() >= n_classes:
            raise ValueError(f"labels[{attr!r}] has code {values.max()} but only {n_classes} classes")
        tensors[attr] = torch.from_numpy(values.astype(np.int64))
        heads[attr] = max(n_classes, 1)
        names[attr] = [str(c) for c in (given if given is not None else range(n_classes))]
    return tensors, heads, names


def _batches(
    indices: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless minibatches of ``indices``, reshuffled every epoch by ``generator``."""
    batch_size = min(batch_size, len(indices))
    while True:
        perm = indices[torch.randperm(len(indices), generator=generator)]
        for start in range(0, len(perm) - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]


def soften(images: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """The blur augmentation: ``fraction`` of the uint8 (N, 3, S, S) images (drawn with ``generator``) shrunk to a
    random side in [S/4, S) by area averaging and enlarged back bilinearly, as float in [0, 255].

    What a decode loses first is sharpness; a classifier trained on sharp images alone reads a blurred face's
    attributes wrongly although they are plainly there (measured on toyfaces: the originals shrunk to 16 px and
    back keep only 77% of the eye-colour accuracy). Trained with this, it reads the attributes, not the focus."""
    x = images.float()
    n, size = len(x), x.shape[-1]
    pick = torch.rand(n, generator=generator) < fraction
    sides = torch.randint(max(size // 4, 1), size, (n,), generator=generator)
    for i in torch.nonzero(pick).flatten().tolist():
        small = F.interpolate(x[i:i + 1], size=int(sides[i]), mode="area")
        x[i:i + 1] = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    return x / 255.0


def _fit(
    model: AttributeCNN, x: torch.Tensor, y: dict[str, torch.Tensor], train: torch.Tensor,
    steps: int, batch_size: int, lr: float, seed: int, blur: float = 0.0,
) -> float:
    """Adam on cross-entropy summed over heads, batches moved to the model's device, ``blur`` of each batch
    softened (:func:`soften`); returns the last minibatch loss."""
    dev = next(model.parameters()).device
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    # Cosine decay to zero: the weights settle by the last step instead of stopping mid-stride.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(steps, 1))
    batches = _batches(train, batch_size, torch.Generator().manual_seed(seed))
    augment = torch.Generator().manual_seed(seed + 1)  # its own stream: blur 0 draws exactly what it always did
    loss_value = float("nan")
    model.train()
    for _ in tqdm(range(steps), desc="train extractor", unit="step", leave=False):
        idx = next(batches)
        batch = soften(x[idx], blur, augment) if blur > 0 else x[idx]
        _, logits = model(batch.to(dev))
        loss = sum(F.cross_entropy(logits[a], y[a][idx].to(dev), ignore_index=IGNORE_LABEL) for a in logits)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_value = loss.detach().item()
    model.eval()
    return loss_value


def train_extractor(
    images: np.ndarray,
    labels: dict[str, np.ndarray],
    out_path: str | os.PathLike,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    threads: int = 1,
    width: int = 32,
    feature_dim: int = 128,
    class_names: dict[str, list[str]] | None = None,
    device: str | torch.device = "cpu",
    blur: float = 0.0,
) -> dict[str, Any]:
    """Train an :class:`AttributeCNN` on uint8 ``images`` (N, H, W, 3) and save it to ``out_path``.

    ``labels`` holds one integer-coded array per categorical attribute (-1 = missing, ignored);
    ``class_names`` optionally names the classes (else their codes). The loss is cross-entropy
    summed over heads (Adam, cosine learning-rate decay). 10% of the images are held out; their
    per-attribute accuracy, next to the majority-class baseline, is returned so the caller can
    record that the extractor is meaningful. Deterministic on CPU for a given seed and thread count.
    ``device``: where the network and its batches go (the images stay on the host as uint8).
    The checkpoint loads with ``torch.load(weights_only=True)``.
    """
    x = images_to_tensor(images)
    n, height, width_px = images.shape[:3]
    if height != width_px:
        raise ValueError(f"expected square images, got {height}x{width_px}")
    if n < 10:
        raise ValueError(f"need at least 10 images to train and hold out, got {n}")
    y, heads, names = _check_labels(labels, n, class_names)

    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_held = max(1, round(HELDOUT_FRACTION * n))
    held, train = order[:n_held], order[n_held:]

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # restored below: callers share the process
    try:
        torch.manual_seed(seed)
        model = AttributeCNN(heads, resolution=height, width=width, feature_dim=feature_dim).to(device)
        start = time.perf_counter()
        final_loss = _fit(model, x, y, train, steps, batch_size, lr, seed, blur)
        seconds = time.perf_counter() - start
        heldout_acc = _accuracy(model, x[held], {a: t[held] for a, t in y.items()}, 256)
        train_acc = _accuracy(model, x[train], {a: t[train] for a, t in y.items()}, 256)
    finally:
        torch.set_num_threads(previous_threads)

    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": model.cpu().state_dict(),  # saved from the host, wherever it trained
        "config": model.config,
        "class_names": names,
        "train_accuracy": train_acc,
        "heldout_accuracy": heldout_acc,
        "seed": seed,
        "steps": steps,
    }
    save_atomic(checkpoint, out_path)
    # wall-clock time goes to the log, not the summary: equal inputs must give byte-identical metrics files
    log.info("feature extractor trained in %.1f s (%d steps, %d threads, on %s)", seconds, steps, threads, device)

    return {
        "path": str(out_path),
        "n_train": len(train),
        "n_heldout": n_held,
        "resolution": height,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "blur": blur,
        "threads": threads,
        "final_loss": final_loss,
        "heldout_accuracy": heldout_acc,
        "heldout_accuracy_mean": float(np.mean(list(heldout_acc.values()))),
        "majority_baseline": _majority_baseline({a: t[held] for a, t in y.items()}),
        "train_accuracy": train_acc,
    }


def load_extractor(path: str | os.PathLike, device: str | torch.device = "cpu") -> AttributeCNN:
    """Load a checkpoint written by :func:`train_extractor` (weights only), in eval mode, frozen."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"feature extractor checkpoint not found: {path} (train it with train_extractor)"
        )
    ckpt = read_checkpoint(path, expect=CHECKPOINT_FORMAT)  # weights only, CRC-checked, errors naming the file
    cfg = ckpt["config"]
    model = AttributeCNN(
        cfg["heads"], resolution=cfg["resolution"], width=cfg["width"], feature_dim=cfg["feature_dim"]
    )
    model.load_state_dict(ckpt["state_dict"])
    model.class_names = ckpt["class_names"]
    return model.to(device).eval().requires_grad_(False)
