"""Size of the training checkpoint (runs/<exp>/checkpoints/latest.pt) at an experiment's settings, with and without
the k-means window of encoder outputs, written by the real pivq.train.state.save_state.

    .venv/bin/python benchmarks/bench_checkpoint.py [--experiment celebahq256] [--dir /tmp]

The window is W x B x L x d float32 (schedule init_window, batch_size; model codes, width). Up to pivq 0.1.0 every
checkpoint after T_q carried it until the last step; now it is dropped after the last codebook initialisation,
so only the checkpoints written between T_q - W and the last initialisation hold it. The model, its EMA copy,
Adam's two moments and the discriminator with its optimizer are built on the CPU and saved once each way
(a few GB of disk for the paper's 256x256 settings, deleted afterwards).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="celebahq256")
    ap.add_argument("--dir", default=None, help="folder for the two temporary checkpoints (default: system temp)")
    args = ap.parse_args()

    import copy

    import torch

    from pivq.config import load_params, resolve_experiment
    from pivq.model import PIVQ, ModelConfig
    from pivq.model.discriminator import build_discriminator
    from pivq.train.loop import Schedule
    from pivq.train.state import save_state

    torch.set_num_threads(1)
    exp = resolve_experiment(load_params(REPO / "params.yaml"), args.experiment)
    sched = Schedule.from_dict(exp["schedule"])
    cfg = ModelConfig.of_experiment(exp)
    model = PIVQ(cfg)
    ema = copy.deepcopy(model)
    disc = build_discriminator(sched.disc_ndf, sched.disc_layers, cfg.resolution, 0, sched.disc_init)
    opts = []
    for net in (model, disc):  # one step on zero gradients: Adam's state has its full size
        opt = torch.optim.Adam(net.parameters(), betas=sched.adam_betas)
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        opts.append(opt)
    window = [torch.randn(sched.batch_size * cfg.codes, cfg.width) for _ in range(sched.init_window)]
    gen = torch.Generator().manual_seed(0)

    sizes = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for label, history in (("with the k-means window", window), ("without it (after the last init)", [])):
            path = Path(tmp) / "latest.pt"
            save_state(path, model=model, ema=ema, optimizer=opts[0], generator=gen, kmeans_generator=None,
                       history=history, rows=[], init_log=[], step=sched.quantize_start, config=cfg.to_dict(),
                       window_codes=[], window_sums={}, identity={"schedule": exp["schedule"]}, discriminator=disc,
                       disc_optimizer=opts[1], aug_generator=gen)
            sizes[label] = path.stat().st_size
            path.unlink()

    n_model, n_disc = (sum(p.numel() for p in net.parameters()) for net in (model, disc))
    window_bytes = sched.init_window * sched.batch_size * cfg.codes * cfg.width * 4
    print(f"## Training checkpoint of {args.experiment} ({exp['model_name']}, {exp['schedule_name']})\n")
    print(f"autoencoder {n_model:,} parameters (x4: weights, EMA, Adam's two moments), discriminator {n_disc:,} "
          f"(x3: weights, two moments); k-means window W x B x L x d = {sched.init_window} x {sched.batch_size} x "
          f"{cfg.codes} x {cfg.width} float32 = {window_bytes / 2**30:.2f} GiB\n")
    print("| checkpoint | bytes | GiB |\n|---|---:|---:|")
    for label, size in sizes.items():
        print(f"| {label} | {size:,} | {size / 2**30:.2f} |")


if __name__ == "__main__":
    main()
