"""Running a trained model over a prepared dataset: every image's code set, and reconstruction error."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pivq.data.prepared import ImageRows
from pivq.io import atomic_path
from pivq.model import PIVQ
from pivq.model.pixels import span, to_float, to_uint8


def _batches(n: int, batch_size: int, desc: str, progress: bool):
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, mininterval=5):
        yield slice(start, min(start + batch_size, n))


@torch.no_grad()
def encode_images(model: PIVQ, images: np.ndarray | ImageRows, batch_size: int = 256,
                  progress: bool = True) -> np.ndarray:
    """Code sets (N, L) as sorted codebook indices, int32, for uint8 images (N, H, W, 3) (a memmap or an
    ImageRows view: read one batch at a time), on the model's device."""
    dev = next(model.parameters()).device
    rows = images if isinstance(images, ImageRows) else ImageRows(images)  # RSS stays a batch's (read_rows)
    out = np.empty((len(images), model.cfg.codes), dtype=np.int32)
    for sl in _batches(len(images), batch_size, "encode", progress):
        out[sl] = model.codes_of(to_float(rows[sl], dev, model.cfg.pixel_range)).cpu().numpy()
    return out


@torch.no_grad()
def reconstructions(model: PIVQ, images: np.ndarray | ImageRows, batch_size: int = 256):
    """The quantized reconstructions of ``images`` (uint8 (N, H, W, 3) or an ImageRows view), as uint8 batches of
    at most ``batch_size`` images, in order: what a reader of the decodes sees."""
    dev = next(model.parameters()).device
    rows = images if isinstance(images, ImageRows) else ImageRows(images)
    for sl in _batches(len(rows), batch_size, "reconstruct", False):
        x = to_float(rows[sl], dev, model.cfg.pixel_range)
        yield to_uint8(model.decode_indices(model.codes_of(x)), model.cfg.pixel_range)


@torch.no_grad()
def reconstruction_l1(model: PIVQ, images: np.ndarray | ImageRows, batch_size: int = 256) -> dict:
    """Mean absolute error of the quantized reconstructions of ``images``, beside a constant-image baseline (the
    mean image of the same set: the best constant in L2, a fair floor in L1). Both are in units of pixels in
    [-1, 1] whatever the model's pixel_range (a [0, 1] model's error is doubled), so runs of either range compare.

    ``images``: uint8 (N, H, W, 3), or an ImageRows view of a memmap, read one batch at a time."""
    dev = next(model.parameters()).device
    pixel_range = model.cfg.pixel_range
    images = images if isinstance(images, ImageRows) else ImageRows(images)
    total, n = 0.0, 0
    mean_image = torch.zeros(3, model.cfg.resolution, model.cfg.resolution, dtype=torch.float64)
    for sl in _batches(len(images), batch_size, "reconstruct", False):
        x = to_float(images[sl], dev, pixel_range)
        rec = model.decode_indices(model.codes_of(x))
        total += (rec - x).abs().sum().item()
        n += x.numel()
        mean_image += x.double().sum(0).cpu()
    mean_image /= len(images)
    baseline = 0.0
    for sl in _batches(len(images), batch_size, "baseline", False):
        baseline += (to_float(images[sl], torch.device("cpu"), pixel_range).double() - mean_image).abs().sum().item()
    to_symmetric = 2.0 / span(pixel_range)
    return {"test_l1": total / n * to_symmetric, "constant_baseline_l1": baseline / n * to_symmetric,
            "n_images": len(images)}


def save_codes(path: str | Path, codes: np.ndarray, split: np.ndarray, codebook_size: int, experiment: str = "",
               run: str = "") -> None:
    """codes.npz: the code sets, the split, K, and the experiment and run (model.pt's ``meta["run"]``) they
    were encoded by, so the stages that read them can refuse another run's."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, codes=codes, split=split.astype("U5"), codebook_size=np.int64(codebook_size),
                     experiment=np.str_(experiment), run=np.str_(run))


def load_codes(path: str | Path, expect: dict | None = None, against: str | Path | None = None
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """(codes (N, L), split (N,), K) from a codes.npz written by save_codes.

    ``expect``: what the reading stage's experiment says, any of ``experiment``, ``run`` (the model it decodes
    with), ``codes`` (L) and ``codebook_size`` (K); a file that differs is refused, naming it, what differs and
    ``against`` (the file or setting the expectation comes from)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing codes file: {path} (run the encode rule)")
    try:
        with np.load(path) as f:
            missing = {"codes", "split", "codebook_size"} - set(f.files)
            if missing:
                raise ValueError(f"{path}: not a codes file (missing arrays {sorted(missing)})")
            codes, split, K = f["codes"], f["split"], int(f["codebook_size"])
            found = {"experiment": str(f["experiment"]) if "experiment" in f.files else None,
                     "run": str(f["run"]) if "run" in f.files else None,
                     "codes": int(codes.shape[1]) if codes.ndim == 2 else None, "codebook_size": K}
    except (OSError, EOFError, zipfile.BadZipFile) as err:  # truncated, or a failed CRC check
        raise ValueError(f"{path}: not a readable codes file ({err}); delete it and rerun the encode rule") from None
    differ = [f"{k} {found[k]!r} there, {v!r} expected" for k, v in (expect or {}).items() if found[k] != v]
    if differ:
        raise ValueError(f"{path} does not belong here ({'; '.join(differ)}"
                         f"{f', from {against}' if against else ''}): rerun the encode rule")
    return codes, split, K
