"""The paper-scale path on one GPU, stage by stage: every network stage of the pipeline at the paper's 256x256
shapes (ut256, the paper256 schedule, matching), on a synthetic dataset, through the real stage functions.

    PYTHONPATH=. python benchmarks/gpu_check.py [--out DIR]           # on a machine with a GPU: a few minutes
    PYTHONPATH=. python benchmarks/gpu_check.py --tiny --device cpu   # the same code paths, tiny shapes, seconds

Stages, in order, each through pivq.stages with a pivq.device.Job asking for the GPU (the device rule):
prepare (toyfaces at 256px, CPU), train (a few hundred steps of ut256 with LPIPS and the discriminator active,
T_q and a k-means++ codebook initialisation inside them, checkpoints, then the test-L1 evaluation), encode, one
sample shard, Figure 1's paths, the probe (CPU) and the code atlas, FID/PRDC (Inception-v3), plus k-means++ and
Lloyd at the paper's window (W x B x L = 1,024,000 vectors of d = 256 into K = 4096 centres) and a k-means check
of the device against the CPU. No weights are downloaded: LPIPS's VGG16 trunk and Inception get randomly
initialised weights files in a temporary TORCH_HOME, so the pipeline's own loading code runs unchanged; the
times are those of the real networks, the FID values mean nothing. Their hashes are not the published ones, so the
pipeline would refuse them: the stages run inside pivq.weights.accept_unpublished_weights (tests and
benchmarks only), which accepts these two files' own sha256 for this process until the check ends.

Printed for each stage: seconds, images (or steps) per second, peak GPU memory, and the devices the parameters
of every module call were on (a forward pre-hook on the first calls of each stage). The process's peak host
RSS is printed at the end. With --out, the same as JSON (gpu_check.json).

On the project's lent H200 (no lpips, torch-fidelity or prdc there, and no downloads), carry pure-Python wheels
made here:
    echo /.whl/ >> .git/info/exclude
    pip download --no-deps --only-binary=:all: -d .whl lpips==0.1.4 torch-fidelity==0.4.0 prdc==0.2
then run with carry [".whl"]:
    pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the paper-scale form and the tiny one (the embedded toy32 preset): model, dataset size, training steps, T_q,
# adversarial start, log and checkpoint intervals, samples, and the k-means problem (vectors, centres)
SHAPES = {
    "paper": dict(model="ut256", n_train=256, n_test=64, steps=300, quantize_start=100, adversarial_start=100,
                  log_every=50, checkpoint_every=100, samples=512, kmeans_n=1_024_000, kmeans_k=4096),
    "tiny": dict(model="toy32", n_train=16, n_test=8, steps=12, quantize_start=4, adversarial_start=4,
                 log_every=4, checkpoint_every=8, samples=12, kmeans_n=4096, kmeans_k=64),
}


def random_weights(torch_home: Path) -> list[Path]:
    """Randomly initialised VGG16 (LPIPS's trunk) and Inception-v3 (FID) weights under the names the pipeline
    looks for in torch hub's cache: the real loading code runs, nothing is downloaded. Returns the two files (for
    accept_unpublished_weights: their hashes are not the published ones)."""
    import torch
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from pivq.metrics.registry import INCEPTION_WEIGHTS_FILE
    from pivq.train.losses import VGG16_FILE

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16().state_dict(), folder / VGG16_FILE)
    # torch-fidelity's constructor insists on loading a state dict: build the network with that step skipped
    empty = folder / "empty.pt"
    torch.save({}, empty)
    load = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = load
    torch.save(net.state_dict(), folder / INCEPTION_WEIGHTS_FILE)
    empty.unlink()
    return [folder / VGG16_FILE, folder / INCEPTION_WEIGHTS_FILE]


class Placement:
    """The devices the parameters and tensor inputs of module calls were on, over the first ``limit`` calls."""

    def __init__(self, limit: int = 5000):
        import torch

        self.devices: set[str] = set()
        self.calls, self.limit = 0, limit
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self._record)

    def _record(self, module, args) -> None:
        self.calls += 1
        if self.calls > self.limit:
            return
        self.devices |= {str(p.device) for p in module.parameters(recurse=False)}
        self.devices |= {str(a.device) for a in args if hasattr(a, "device")}

    def close(self) -> list[str]:
        self.handle.remove()
        return sorted(self.devices)


def timed(results: list[dict], name: str, fn, count: int | None, unit: str, cuda: bool) -> None:
    """Run one stage; record its seconds, rate, peak GPU memory and the devices its networks ran on."""
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    placement = Placement()
    start = time.perf_counter()
    try:
        fn()
        if cuda:
            torch.cuda.synchronize()
    finally:
        devices = placement.close()
    seconds = time.perf_counter() - start
    row = {"stage": name, "seconds": round(seconds, 2), "count": count, "unit": unit,
           "per_s": round(count / seconds, 2) if count else None,
           "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
           "devices": devices or ["(no network)"]}
    results.append(row)
    print(f"  {name}: {seconds:.1f} s" + (f", {row['per_s']} {unit}/s" if count else "")
          + (f", peak GPU {row['peak_gpu_gib']} GiB" if cuda else "") + f", on {', '.join(row['devices'])}",
          flush=True)


def kmeans_rows(results: list[dict], shape: dict, device, cuda: bool) -> None:
    """k-means++ and Lloyd at the paper's window on the device; then the device against the CPU on a smaller
    problem: Lloyd from the same centres (max centre difference) and k-means++ (inertia ratio)."""
    import torch

    from pivq.quantize import kmeans
    from pivq.quantize.kmeans import kmeans_plus_plus, lloyd, nearest_centre

    g = torch.Generator(device=device).manual_seed(0) if cuda else torch.Generator().manual_seed(0)
    n, k, d = shape["kmeans_n"], shape["kmeans_k"], 256
    means = torch.randn(k, d, generator=g, device=device) * 3  # a Gaussian mixture, as encoder outputs cluster
    x = means[torch.randint(k, (n,), generator=g, device=device)] + torch.randn(n, d, generator=g, device=device)
    centres = {}
    timed(results, f"k-means++ seeding ({n:,} x {d} -> {k})", lambda: centres.update(
        c=kmeans_plus_plus(x, k, g)), k, "centres", cuda)
    timed(results, "Lloyd, 20 iterations", lambda: centres.update(c=lloyd(x, centres["c"], 20)), 20, "iterations",
          cuda)
    x = means = None  # frees the window; rebound, not del (ruff's F821 misreads a del after the lambdas above)
    small = torch.randn(16384, d, generator=torch.Generator().manual_seed(1))
    start = torch.randn(min(k, 1024), d, generator=torch.Generator().manual_seed(2))
    on_cpu, on_dev = lloyd(small, start, 10), lloyd(small.to(device), start.to(device), 10).cpu()

    def inertia(points, c):
        return float(((points - c[nearest_centre(points, c)]) ** 2).sum())

    dev_gen = torch.Generator(device=device).manual_seed(3) if cuda else torch.Generator().manual_seed(3)
    ratio = (inertia(small, kmeans(small.to(device), len(start), 10, dev_gen).cpu())
             / inertia(small, kmeans(small, len(start), 10, torch.Generator().manual_seed(3))))
    results.append({"stage": "k-means: device vs CPU (16,384 x 256)",
                    "lloyd_max_centre_difference": float((on_cpu - on_dev).abs().max()),
                    "kmeans_inertia_ratio": round(ratio, 4)})
    print(f"  k-means on {device} vs CPU: Lloyd from the same centres differs by at most "
          f"{results[-1]['lloyd_max_centre_difference']:.2e}; k-means++ inertia ratio {ratio:.4f}", flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (the tests run this on the CPU)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: gpu 0 in every job")
    ap.add_argument("--cpus", type=int, default=4, help="CPUs of each job (torch and matcher threads)")
    ap.add_argument("--out", help="folder for gpu_check.json")
    ap.add_argument("--work", help="folder for the dataset, run and outputs (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    if args.work:
        return run_check(args, Path(args.work))
    with tempfile.TemporaryDirectory(prefix="pivq_gpu_check_") as work:
        return run_check(args, Path(work))


def run_check(args: argparse.Namespace, work: Path) -> list[dict]:
    """Every stage in ``work``, with random weights files in ``work/torch_home`` accepted (by their own sha256,
    for this process, until the stages end); returns the result rows (also printed, and written to --out)."""
    from pivq.weights import accept_unpublished_weights

    os.environ["TORCH_HOME"] = str(work / "torch_home")
    with accept_unpublished_weights(*random_weights(work / "torch_home")):  # benchmark only, never the pipeline
        return _run_stages(args, work)


def _run_stages(args: argparse.Namespace, work: Path) -> list[dict]:
    import torch
    import yaml

    from pivq import stages
    from pivq.config import resolve_experiment
    from pivq.data import prepare_toyfaces
    from pivq.device import Job, describe

    shape = SHAPES["tiny" if args.tiny else "paper"]
    gpu = int(args.device == "cuda")
    name = "celebahq256"
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # (jsonschema, for validation, may be missing)
    exp = copy.deepcopy(resolve_experiment(params, name))
    exp["model_name"], exp["model"] = shape["model"], params["models"][shape["model"]]
    resolution = exp["model"]["resolution"]
    exp["schedule"].update(steps=shape["steps"], quantize_start=shape["quantize_start"],
                           adversarial_start=shape["adversarial_start"], log_every=shape["log_every"],
                           checkpoint_every=shape["checkpoint_every"], init_repeats=1,
                           # k-means++ needs K vectors: W steps x B x L of them
                           init_window=-(-exp["model"]["codebook_size"] // (exp["schedule"]["batch_size"]
                                                                             * exp["model"]["codes"])))
    exp["dataset"] = {"kind": "toyfaces", "resolution": resolution, "n_train": shape["n_train"],
                      "n_test": shape["n_test"], "seed": 0}

    def job(stage: str) -> Job:
        return Job(f"experiment {name}", stage, gpu=gpu, cpus=args.cpus)

    device = job("train").start()
    cuda = device.type == "cuda"
    header = (f"pivq GPU check, {time.strftime('%Y-%m-%d')}: {describe(device)}; torch {torch.__version__}"
              f" (CUDA {torch.version.cuda}); {args.cpus} CPUs per job; {'tiny' if args.tiny else 'paper'} shapes")
    print(header, flush=True)
    results: list[dict] = []
    data, run = work / "data", work / "run"
    n_images = shape["n_train"] + shape["n_test"]
    sample = {"n": shape["samples"], "shards": 1, "batch_size": exp["sample"]["batch_size"], "seed": 1}
    metrics = {**exp["metrics"], "n_real": shape["n_train"]}
    extractor = params["datasets"][name]["feature_extractor"]

    timed(results, "prepare (toyfaces, CPU)", lambda: prepare_toyfaces(
        data, resolution=resolution, n_train=shape["n_train"], n_test=shape["n_test"], seed=0),
        n_images, "images", cuda)
    timed(results, f"train ({shape['steps']} steps, LPIPS + GAN from {shape['adversarial_start']}) + test L1",
          lambda: stages.train_model(exp, data, run, work / "training.json", work / "training_log.csv",
                                     job=job("train"), eval_batch_size=exp["encode"]["batch_size"]),
          shape["steps"], "steps", cuda)
    inits = json.loads((work / "training.json").read_text())["codebook_inits"]
    timed(results, "encode (every image, matching)", lambda: stages.encode_dataset(
        run / "model.pt", data, work / "codes.npz", batch_size=exp["encode"]["batch_size"], job=job("encode")),
        n_images, "images", cuda)
    timed(results, "sample shard (Algorithm 1)", lambda: stages.sample_shard(
        run / "model.pt", work / "codes.npz", sample, 0, work / "shard-0.npz", job=job("sample_shard")),
        shape["samples"], "samples", cuda)
    figure1 = exp["figure1"]
    timed(results, "Figure 1 paths", lambda: stages.interpolation_figure_data(
        run / "model.pt", work / "codes.npz", data, figure1, work / "paths.npz", job=job("interpolation_paths")),
        figure1["pairs"] * figure1["paths"] * figure1["steps"], "decodes", cuda)
    timed(results, "probe (CPU, 2 folds)", lambda: stages.probe(
        name, "toyfaces", {"folds": 2, "seed": 0}, work / "codes.npz", data, work / "probe.json", cpus=args.cpus),
        None, "", cuda)
    atlas = exp["atlas"]
    timed(results, "code atlas", lambda: stages.code_atlas(
        run / "model.pt", work / "codes.npz", data, work / "probe.json", atlas, work / "atlas.npz",
        job=job("code_atlas")), None, "", cuda)
    timed(results, "fidelity (random Inception-v3, FID/P/R/D/C)", lambda: stages.fidelity(
        name, "toyfaces", metrics, extractor, [work / "shard-0.npz"], data, None, work / "fidelity.json",
        job=job("fidelity"), reference_cache=work / "reference_features"),
        shape["n_train"] + shape["samples"], "images", cuda)
    kmeans_rows(results, shape, device, cuda)

    train_log = _read_log(run / "train_log.csv")
    print(f"\n{header}\n")
    print("| stage | seconds | rate | peak GPU memory | ran on |\n|---|---:|---:|---:|---|")
    for r in results:
        if "seconds" not in r:
            continue
        rate = f"{r['per_s']} {r['unit']}/s" if r["per_s"] else "-"
        gib = f"{r['peak_gpu_gib']} GiB" if r["peak_gpu_gib"] is not None else "-"
        print(f"| {r['stage']} | {r['seconds']} | {rate} | {gib} | {', '.join(r['devices'])} |")
    print("\ntraining steps/s per log window (quantized from step {q}, adversarial from step {a}): {w}".format(
        q=shape["quantize_start"], a=shape["adversarial_start"],
        w=", ".join(f"{int(r['step'])}: {float(r['steps_per_s']):.2f}" for r in train_log)))
    print(f"codebook initialisations: {inits}")
    for r in results:
        if "kmeans_inertia_ratio" in r:
            print(f"{r['stage']}: Lloyd max centre difference {r['lloyd_max_centre_difference']:.2e}, "
                  f"k-means++ inertia ratio {r['kmeans_inertia_ratio']}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak host RSS of the process: {rss:.1f} GiB; checkpoint {_size(run / 'checkpoints' / 'latest.pt')}, "
          f"model.pt {_size(run / 'model.pt')}")
    fid = json.loads((work / "fidelity.json").read_text())
    print(f"fidelity.json (random Inception: numbers without meaning): FID {fid['fid']:.2f}, "
          f"precision {fid['precision']:.3f}, n_real {fid['n_real']}, n_fake {fid['n_fake']}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(
            {"header": header, "stages": results, "train_log": train_log, "peak_rss_gib": rss,
             "fidelity": fid}, indent=2, default=str))
    return results


def _read_log(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    keys = lines[0].split(",")
    return [dict(zip(keys, line.split(","))) for line in lines[1:]]


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**30:.2f} GiB" if path.exists() else "absent"


if __name__ == "__main__":
    main()
