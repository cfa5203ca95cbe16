"""Test L1 and attribute retention of the embedded toy_matching run with some of its recipe settings changed:
how the embedded default's choices (params.yaml, "deviation") were measured against Unleashing Transformers'
values and against each other.

    python benchmarks/toy_recipe_ablation.py --set schedule.ema_every=10 --set model.pixel_range='"unit"'

Each --set is <schedule|model>.<key>=<JSON value>. Trains the toy into a temporary folder on data/toyfaces32
(prepared here if missing, with its feature extractor), then prints the test L1 in [-1, 1] pixel units
(pivq.encode.reconstruction_l1) and the attribute CNN's accuracy on the test reconstructions over its accuracy on
the originals, per attribute (pivq.metrics.attributes). One seed: differences of a few thousandths in L1 are
within what another seed would change.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="toy_matching")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from pivq.config import load_params, resolve_experiment, training_spec
    from pivq.data import ImageRows, PreparedDataset
    from pivq.encode import reconstruction_l1, reconstructions
    from pivq.metrics import load_extractor
    from pivq.metrics.attributes import label_codes, predict, reconstruction_attributes
    from pivq.model.checkpoint import load_model
    from pivq.stages import prepare_dataset, train_feature_extractor
    from pivq.train import train

    params = load_params(REPO / "params.yaml")
    exp = training_spec(resolve_experiment(params, args.experiment))
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in ("schedule", "model") or name not in exp[section]:
            raise SystemExit(f"--set {item}: expected schedule.<key> or model.<key> of {args.experiment}")
        exp[section] = {**exp[section], name: json.loads(value)}
    data_dir = REPO / "data" / exp["dataset_name"]
    if not (data_dir / "manifest.json").exists():
        prepare_dataset(exp["dataset_name"], params["datasets"][exp["dataset_name"]], data_dir)
    extractor_path = data_dir / "extractor.pt"
    if not extractor_path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            train_feature_extractor(data_dir, params["datasets"][exp["dataset_name"]]["feature_extractor"],
                                    extractor_path, Path(tmp) / "summary.json")
    with tempfile.TemporaryDirectory(prefix="toy_ablation_") as run:
        t0 = time.perf_counter()
        train(exp, data_dir, run, threads=args.threads, progress=False)
        seconds = time.perf_counter() - t0
        data = PreparedDataset(data_dir)
        model = load_model(Path(run) / "model.pt")
        test = ImageRows(data.images, data.indices("test"))
        result = reconstruction_l1(model, test)
        extractor = load_extractor(extractor_path)
        truth = label_codes(data.attributes.iloc[test.rows], extractor)
        kept = reconstruction_attributes(predict(extractor, test.batches(256)),
                                         predict(extractor, reconstructions(model, test)), truth)
    print(json.dumps({"experiment": args.experiment, "set": args.set, "test_l1": round(result["test_l1"], 4),
                      "retention_min": round(kept["retention_min"], 3), "worst": kept["retention_min_attribute"],
                      "retention": {a: round(v["retention"], 3) for a, v in kept["attributes"].items()},
                      "train_seconds": round(seconds)}))


if __name__ == "__main__":
    main()
