"""Live training records with dvclive: every log row as it happens, image grids every ``image_every`` steps.

Why dvclive: the pipeline already versions its artefacts with DVC, and dvclive's files are plain TSV, JSON and PNG
that `dvc plots show`, `dvc plots diff` and any editor read, with no server to run (TensorBoard needs one; MLflow
and W&B a tracking service, which a cluster's compute nodes often cannot reach).

In ``runs/<exp>/dvclive/`` (dvclive's layout):

* ``plots/metrics/<column>.tsv``: one row per log row (step, value and dvclive's timestamp), appended as training
  goes; ``dvc plots show runs/<exp>/dvclive/plots/metrics/l1.tsv`` draws one.
* ``plots/images/reconstructions/<step>.png``: the first train images above their decodes (quantized from T_q);
  ``plots/images/samples/<step>.png``: Algorithm 1 recombinations of those images' code sets (matching, from T_q).
* ``metrics.json``: the latest row, rewritten at every row; at the end also the run's summary.
* ``params.yaml``: the resolved experiment.

A resumed run reopens its records (dvclive's resume) and carries on from the checkpoint's step; the rows the killed
attempt wrote after that checkpoint appear twice in the TSV files, with the same values (train_log.csv, rebuilt from
the checkpoint's rows, has each once). dvclive is imported only here, so a
machine without it trains without records, saying so in the log.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

LIVE_DIR = "dvclive"
PREVIEW_IMAGES = 8  # train images in each grid


def _grid(rows: list[np.ndarray]) -> np.ndarray:
    """uint8 image rows (n, H, W, 3) stacked into one picture, a 1-pixel white gap between tiles."""
    n, h, w, _ = rows[0].shape
    canvas = np.full((len(rows) * (h + 1) - 1, n * (w + 1) - 1, 3), 255, dtype=np.uint8)
    for r, images in enumerate(rows):
        for i, image in enumerate(images):
            canvas[r * (h + 1):r * (h + 1) + h, i * (w + 1):i * (w + 1) + w] = image
    return canvas


class LiveRecords:
    """dvclive's Live for one run, or nothing where dvclive is not installed (module docstring)."""

    def __init__(self, run_dir: Path, experiment: dict, resume: bool) -> None:
        try:
            from dvclive import Live
        except ImportError:
            log.warning("dvclive is not installed: no live records in %s (pip install dvclive)", run_dir / LIVE_DIR)
            self.live = None
            return
        # dvcyaml=False: dvclive would otherwise add its plots to the project's dvc.yaml; save_dvc_exp=False: a
        # training job must not create DVC experiments (commits) in the user's repository behind their back
        self.live = Live(dir=str(run_dir / LIVE_DIR), resume=resume, save_dvc_exp=False, dvcyaml=False,
                         monitor_system=False)
        if not resume:
            self.live.log_params({"experiment": experiment})

    def row(self, row: dict) -> None:
        """One log row (its step and every numeric column) as dvclive metrics at that step."""
        if self.live is None:
            return
        self.live.step = int(row["step"])
        for name, value in row.items():
            if name != "step":
                self.live.log_metric(name, float(value), plot=True)
        self.live.make_summary()

    def images(self, step: int, originals: np.ndarray, decodes: np.ndarray, samples: np.ndarray | None) -> None:
        """The reconstruction grid (originals above decodes) and, when given, the samples' grid at ``step``."""
        if self.live is None:
            return
        self.live.log_image(f"reconstructions/{step:08d}.png", _grid([originals, decodes]))
        if samples is not None:
            self.live.log_image(f"samples/{step:08d}.png", _grid([samples]))

    def end(self, summary: dict) -> None:
        """The run's summary beside the last row in metrics.json, then dvclive's own end."""
        if self.live is None:
            return
        self.live.summary.update(summary)
        self.live.make_summary()
        self.live.end()


@torch.no_grad()
def preview(model, images: np.ndarray, quantize: bool, step: int, seed: int):
    """(decodes, samples or None) of a fixed batch of uint8 train images (N, H, W, 3) for the grids:
    decodes quantized from T_q on (as the step trains), samples by Algorithm 1 between consecutive pairs of
    their code sets where the quantizer gives sets (matching). Draws from its own generator: training's random
    numbers are untouched."""
    from pivq.model.pixels import to_float, to_uint8
    from pivq.quantize import matching
    from pivq.sample import interpolate

    counted = Counter(matching.PATHS)  # the log's solver-path counts are the training steps': these are put back
    pixel_range = model.cfg.pixel_range
    images = to_float(images, next(model.parameters()).device, pixel_range)
    decodes = to_uint8(model(images, quantize=quantize)[0], pixel_range)
    samples = None
    if quantize and model.quantizer.method == "matching":
        codes = model.codes_of(images).cpu()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        sets = [interpolate(codes[i], codes[(i + 1) % len(codes)], gen) for i in range(len(codes))]
        samples = to_uint8(model.decode_indices(torch.stack(sets).to(images.device)), pixel_range)
    matching.PATHS.clear()
    matching.PATHS.update(counted)
    return decodes, samples
