"""Two probes of the embedded toy that benchmarks/toy_recipe_ablation.py (whole runs) cannot give quickly.

    python benchmarks/toy_probes.py continuous --set model.norm_groups=8 --lr 2e-4 --steps 400 [--conv-only]
    python benchmarks/toy_probes.py blur --extractor data/toyfaces32/extractor.pt [--run runs/toy_matching]

* ``continuous``: how fast the toy32 autoencoder learns before T_q (no quantizer): the mean L1 of the last 50 train
  batches (batch 16, drawn with replacement, seed 0) every 100 steps, one thread. ``--conv-only`` skips the
  transformers (conv encoder straight into the conv decoder): what the set bottleneck costs in learning speed.
* ``blur``: the attribute classifier's accuracy on the test images shrunk to 16, 12 and 8 px and enlarged back, over
  its accuracy on the originals, per attribute (pivq.metrics.attributes), and with ``--run`` the same ratio for that
  run's decodes: whether a classifier reads attributes or sharpness.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def continuous(args) -> None:
    import numpy as np
    import torch

    from pivq.config import load_params, resolve_experiment, training_spec
    from pivq.data import PreparedDataset
    from pivq.model import PIVQ, ModelConfig
    from pivq.model.pixels import to_float

    torch.set_num_threads(1)
    exp = training_spec(resolve_experiment(load_params(REPO / "params.yaml"), "toy_matching"))
    model_settings = dict(exp["model"])
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section != "model" or name not in model_settings:
            raise SystemExit(f"--set {item}: expected model.<key> of toy32")
        model_settings[name] = json.loads(value)
    cfg = ModelConfig.of_experiment({**exp, "model": model_settings})
    torch.manual_seed(0)
    model = PIVQ(cfg)
    opt = torch.optim.Adam(model.parameters(), args.lr)
    data = PreparedDataset(REPO / "data" / exp["dataset_name"])
    train, images = data.indices("train"), np.asarray(data.images)
    rng = np.random.default_rng(0)
    losses, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        x = to_float(images[rng.choice(train, 16)], torch.device("cpu"), cfg.pixel_range)
        rec = model.conv_decoder(model.conv_encoder(x)) if args.conv_only else model(x, quantize=False)[0]
        loss = (rec - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0:
            print(json.dumps({"step": step, "l1_last_50": round(float(np.mean(losses[-50:])), 4),
                              "seconds": round(time.perf_counter() - start)}), flush=True)


def blur(args) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from pivq.data import PreparedDataset
    from pivq.encode import reconstructions
    from pivq.metrics import load_extractor
    from pivq.metrics.attributes import label_codes, predict, reconstruction_attributes
    from pivq.model.checkpoint import load_model

    torch.set_num_threads(1)
    data = PreparedDataset(REPO / "data" / "toyfaces32")
    extractor = load_extractor(args.extractor)
    test = data.indices("test")
    images = np.asarray(data.images[test])
    truth = label_codes(data.attributes.iloc[test], extractor)
    original = predict(extractor, [images])

    def report(label: str, predicted: dict, extra: dict) -> None:
        kept = reconstruction_attributes(original, predicted, truth)
        print(json.dumps({"images": label, **extra,
                          "retention": {a: round(v["retention"], 3) for a, v in kept["attributes"].items()}}))

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    for side in (16, 12, 8):
        small = F.interpolate(x, size=side, mode="area")
        back = F.interpolate(small, size=images.shape[1], mode="bilinear", align_corners=False)
        blurred = back.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        l1 = float(np.abs(blurred.astype(np.float64) - images).mean() / 127.5)
        report(f"originals shrunk to {side} px and back", predict(extractor, [blurred]), {"l1": round(l1, 3)})
    if args.run:
        model = load_model(Path(args.run) / "model.pt")
        report(f"decodes of {args.run}", predict(extractor, reconstructions(model, images)), {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="probe", required=True)
    c = sub.add_parser("continuous")
    c.add_argument("--set", action="append", default=[], metavar="model.KEY=JSON")
    c.add_argument("--lr", type=float, default=2e-4, help="Adam's learning rate")
    c.add_argument("--steps", type=int, default=400)
    c.add_argument("--conv-only", action="store_true")
    b = sub.add_parser("blur")
    b.add_argument("--extractor", default=str(REPO / "data" / "toyfaces32" / "extractor.pt"))
    b.add_argument("--run", help="a run folder whose decodes to score too")
    args = ap.parse_args()
    {"continuous": continuous, "blur": blur}[args.probe](args)


if __name__ == "__main__":
    main()
