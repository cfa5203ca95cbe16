"""Peak host memory of the FID/PRDC stage (pivq.stages.fidelity) at a few sample counts, 256x256 images.

The stage reads the sample shards and the reference images a batch at a time (pivq.sample.ShardImages,
pivq.data.ImageRows), so its peak should barely move when the number of images grows, where loading both sets
(as it once did) costs 2 x N x 192 KiB. Each count runs the real stage, called with keyword arguments, in its own
subprocess; its peak is that process's max RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss), which includes the
interpreter and torch (the driver imports neither, and makes the inputs in a subprocess of its own: a child's
max RSS starts from its parent's RSS at the fork). The table also gives the RSS as the stage starts and the peaks
of its two parts, sampled every 5 ms from /proc/self/status: anonymous (RssAnon: the interpreter, torch, one batch
and its activations, the features, the P/R distance blocks) and file-backed (RssFile: torch's libraries, and the
pages of the prepared images.npy memmap that ImageRows reads the reference rows through, which
pivq.data.prepared.read_rows drops from the resident set again after each batch).

The precision/recall step is timed and sampled on its own (the stage's ``pivq.metrics.fidelity.precision_recall``
is wrapped): the anonymous RSS as it starts and its peak during it; the difference is the memory the step adds.
``--prc torch-fidelity`` runs torch-fidelity's ``prc_features_to_metric(save_cpu_ram=True)`` there instead (what
the stage ran before pivq.metrics.prc_chunked; the same numbers), to compare.

Synthetic inputs, no Inception weights: a prepared toyfaces set at 256px (n_train = the largest count), the
``pivq-toyfaces-cnn`` extractor trained for a few steps on 32px copies of 200 of its images (the stage resizes
256px inputs to its 32px), and shards of uniform noise written with pivq.sample.save_shard (the metrics' values
mean nothing here; only the memory does). The reference-feature cache starts empty, so the key's hash and the
extraction both run.

    .venv/bin/python benchmarks/bench_fidelity_memory.py                        # 1000 and 4000 samples
    .venv/bin/python benchmarks/bench_fidelity_memory.py --counts 500 2000 --threads 2 --workdir /tmp/bench
    .venv/bin/python benchmarks/bench_fidelity_memory.py --counts 1000 4000 8000 --prc torch-fidelity
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESOLUTION = 256
SHARD_SIZE = 500  # samples per shard, as sample_shard jobs would write them
IMAGE_BYTES = RESOLUTION * RESOLUTION * 3


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _Sampler(threading.Thread):
    """Peak RssAnon and RssFile of this process, sampled every 5 ms (a thread: torch releases the GIL), and the
    peak RssAnon since the last :meth:`start_phase`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.anon_kib, self.file_kib, self.phase_anon_kib, self.stop = 0, 0, 0, threading.Event()
        self.lock = threading.Lock()

    def sample(self) -> None:
        with self.lock:
            anon = _status_kib("RssAnon")
            self.anon_kib, self.phase_anon_kib = max(self.anon_kib, anon), max(self.phase_anon_kib, anon)
            self.file_kib = max(self.file_kib, _status_kib("RssFile"))

    def start_phase(self) -> int:
        """Starts a phase; returns the RssAnon (KiB) now."""
        with self.lock:
            self.phase_anon_kib = _status_kib("RssAnon")
            return self.phase_anon_kib

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.005)


def _wrap_precision_recall(sampler: _Sampler, implementation: str, record: dict) -> None:
    """Makes the stage's precision/recall step record its RssAnon at the start and its peak into ``record``;
    ``implementation`` "torch-fidelity" runs prc_features_to_metric(save_cpu_ram=True) instead of pivq's."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    from pivq.metrics import fidelity

    ours = fidelity.precision_recall

    def torch_fidelity_prc(fake, real, neighborhood, batch_size):
        out = prc_features_to_metric(fake, real, prc_neighborhood=neighborhood, prc_batch_size=batch_size,
                                     save_cpu_ram=True, verbose=False)
        return out["precision"], out["recall"]

    inner = {"pivq": ours, "torch-fidelity": torch_fidelity_prc}[implementation]

    def measured(fake, real, neighborhood, batch_size):
        start = sampler.start_phase()
        t0 = time.perf_counter()
        out = inner(fake, real, neighborhood=neighborhood, batch_size=batch_size)
        sampler.sample()
        record.update(prc_start_anon_kib=start, prc_peak_anon_kib=sampler.phase_anon_kib,
                      prc_seconds=time.perf_counter() - t0)
        return out

    fidelity.precision_recall = measured


def _child(spec: dict) -> None:
    """One measurement: the stage, called as the workflow calls it; prints one JSON line."""
    import torch

    from pivq import stages
    from pivq.device import Job

    torch.set_num_threads(spec["threads"])
    # interpreter, torch and pivq imported (the max RSS counts torch's mapped libraries too)
    start_kib, start_anon_kib = _status_kib("VmRSS"), _status_kib("RssAnon")
    sampler = _Sampler()
    prc: dict = {}
    _wrap_precision_recall(sampler, spec["prc"], prc)
    sampler.start()
    t0 = time.perf_counter()
    result = stages.fidelity(
        name="bench", dataset_name="toyfaces256", metrics=spec["metrics"], extractor={"name": "pivq-toyfaces-cnn"},
        shard_paths=spec["shards"], dataset_dir=spec["dataset"], extractor_weights=spec["weights"],
        out_path=spec["out"], job=Job(owner="benchmark", stage="fidelity", gpu=0, cpus=spec["threads"]),
        reference_cache=spec["cache"],
    )
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    sampler.sample()
    print(json.dumps({
        "n_fake": result["n_fake"], "n_real": result["n_real"], "seconds": seconds,
        "start_kib": start_kib, "start_anon_kib": start_anon_kib,
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "peak_anon_kib": sampler.anon_kib, "peak_file_kib": sampler.file_kib,
        "precision": result["precision_torch_fidelity"], "recall": result["recall_torch_fidelity"], **prc,
    }))


def _prepare(workdir: Path, counts: list[int], threads: int) -> dict:
    """The dataset, the extractor and each count's shards under ``workdir``, made once and reused (run in a
    subprocess: rendering 256px faces leaves a large process behind)."""
    import numpy as np
    import pandas as pd
    import torch

    from pivq.data import PreparedDataset, prepare_toyfaces
    from pivq.metrics import train_extractor
    from pivq.sample import save_shard

    torch.set_num_threads(threads)
    n_train = max(counts)
    dataset = workdir / f"toyfaces{RESOLUTION}-{n_train}"
    if not (dataset / "manifest.json").is_file():
        t0 = time.perf_counter()
        prepare_toyfaces(dataset, resolution=RESOLUTION, n_train=n_train, n_test=16, seed=0)
        print(f"prepared {dataset} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    weights = workdir / "extractor.pt"
    if not weights.is_file():
        data = PreparedDataset(dataset)
        rows = data.indices("train")[:200]
        f = RESOLUTION // 32  # 32px copies by block means: a small, fast network the stage feeds 256px images
        small = np.asarray(data.images[rows]).reshape(len(rows), 32, f, 32, f, 3).mean(axis=(2, 4))
        labels, names = {}, {}
        for column in data.categorical_attributes:
            cat = pd.Categorical(data.attributes[column].iloc[rows])
            labels[column], names[column] = cat.codes.astype(np.int64), [str(c) for c in cat.categories]
        train_extractor(small.round().astype(np.uint8), labels, weights, steps=20, batch_size=32, lr=2e-3, seed=0,
                        threads=threads, class_names=names)
    shards = {}
    for count in counts:
        folder = workdir / f"shards-{count}"
        folder.mkdir(exist_ok=True)
        shards[count] = []
        for k, start in enumerate(range(0, count, SHARD_SIZE)):
            path = folder / f"shard-{k}.npz"
            if not path.is_file():
                m = min(SHARD_SIZE, count - start)
                rng = np.random.default_rng([count, k])
                save_shard(path, {"images": rng.integers(0, 256, (m, RESOLUTION, RESOLUTION, 3), dtype=np.uint8),
                                  "pairs": np.zeros((m, 2), np.int64), "sample_index": np.arange(start, start + m)})
            shards[count].append(str(path))
    return {"dataset": str(dataset), "weights": str(weights), "shards": shards}


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1000, 4000],
                    help="sample counts (real images: as many), one subprocess each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the stage (default 1)")
    ap.add_argument("--batch-size", type=int, default=100, help="metrics.batch_size (default 100, as the 256px runs)")
    ap.add_argument("--prc", choices=["pivq", "torch-fidelity"], default="pivq",
                    help="precision/recall implementation run in the stage (default pivq's, the stage's own)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the inputs are made and kept for the next run (default: a temporary folder)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_prepare", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        return _child(json.loads(a._child))
    if a._prepare:
        spec = json.loads(a._prepare)
        return print(json.dumps(_prepare(Path(spec["workdir"]), spec["counts"], spec["threads"])))

    with tempfile.TemporaryDirectory(prefix="bench-fidelity-") as tmp:
        workdir = a.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        spec = {"workdir": str(workdir), "counts": a.counts, "threads": a.threads}
        proc = subprocess.run([sys.executable, __file__, "--_prepare", json.dumps(spec)], stdout=subprocess.PIPE,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit("preparing the inputs failed (its error is above)")
        inputs = json.loads(proc.stdout.strip().splitlines()[-1])
        inputs["shards"] = {int(k): v for k, v in inputs["shards"].items()}
        rows = []
        for count in a.counts:
            run = Path(tempfile.mkdtemp(prefix=f"run-{count}-", dir=tmp))  # a fresh, empty cache each time
            spec = {"threads": a.threads, "prc": a.prc, "dataset": inputs["dataset"], "weights": inputs["weights"],
                    "shards": inputs["shards"][count], "out": str(run / "fidelity.json"), "cache": str(run / "cache"),
                    "metrics": {"n_real": count, "reference": "train", "reference_rows": "random", "nearest_k": 3,
                                "batch_size": a.batch_size, "seed": 0}}
            proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{count} samples: the stage failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print(f"\npivq.stages.fidelity, {RESOLUTION}x{RESOLUTION} images, metrics.batch_size {a.batch_size}, "
          f"{a.threads} thread(s), CPU, precision/recall by {a.prc}\n")
    print("| samples | real images | both image sets would take | peak RSS (ru_maxrss) | RSS at the stage's start "
          "(anonymous) | peak anonymous RSS | peak file-backed RSS | P/R step: anonymous RSS at start -> peak (added) "
          "| P/R time | precision, recall (torch-fidelity's, the step measured) | stage time |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        images_kib = (r["n_fake"] + r["n_real"]) * IMAGE_BYTES / 1024
        print(f"| {r['n_fake']:,} | {r['n_real']:,} | {_mib(images_kib)} | {_mib(r['peak_kib'])} | "
              f"{_mib(r['start_kib'])} ({_mib(r['start_anon_kib'])}) | {_mib(r['peak_anon_kib'])} | "
              f"{_mib(r['peak_file_kib'])} | {_mib(r['prc_start_anon_kib'])} -> {_mib(r['prc_peak_anon_kib'])} "
              f"(+{_mib(r['prc_peak_anon_kib'] - r['prc_start_anon_kib'])}) | {r['prc_seconds']:.1f} s | "
              f"{r['precision']!r}, {r['recall']!r} | {r['seconds']:.0f} s |")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f"\nfrom {first['n_fake']:,} to {last['n_fake']:,} samples (x{last['n_fake'] / first['n_fake']:g}): "
              f"peak RSS x{last['peak_kib'] / first['peak_kib']:.2f} "
              f"(+{_mib(last['peak_kib'] - first['peak_kib'])}), peak anonymous RSS "
              f"x{last['peak_anon_kib'] / first['peak_anon_kib']:.2f} "
              f"(+{_mib(last['peak_anon_kib'] - first['peak_anon_kib'])}); the images alone "
              f"+{_mib((last['n_fake'] + last['n_real'] - first['n_fake'] - first['n_real']) * IMAGE_BYTES / 1024)}")


if __name__ == "__main__":
    main()
