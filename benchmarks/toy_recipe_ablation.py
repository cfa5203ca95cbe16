"""Test L1 of the embedded toy_matching run with some of its recipe settings changed: how the embedded
default's choices (params.yaml, "deviation") were measured against Unleashing Transformers' values.

    python benchmarks/toy_recipe_ablation.py --set schedule.ema_every=10 --set model.pixel_range='"unit"'

Each --set is <schedule|model>.<key>=<JSON value>. Trains the toy (1100 steps, one thread: about 2 to 5 min on
a 2-core machine) into a temporary folder on data/toyfaces32 (prepared here if missing), then prints the test L1
in [-1, 1] pixel units (pivq.encode.reconstruction_l1). One seed: differences of a few thousandths are within
what another seed would change.
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
    args = ap.parse_args()

    from pivq.config import load_params, resolve_experiment, training_spec
    from pivq.data import ImageRows, PreparedDataset
    from pivq.encode import reconstruction_l1
    from pivq.model.checkpoint import load_model
    from pivq.stages import prepare_dataset
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
    with tempfile.TemporaryDirectory(prefix="toy_ablation_") as run:
        t0 = time.perf_counter()
        train(exp, data_dir, run, threads=1, progress=False)
        data = PreparedDataset(data_dir)
        result = reconstruction_l1(load_model(Path(run) / "model.pt"), ImageRows(data.images, data.indices("test")))
    print(json.dumps({"experiment": args.experiment, "set": args.set, "test_l1": round(result["test_l1"], 4),
                      "seconds": round(time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
