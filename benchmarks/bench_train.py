"""Training-loop benchmark: parameter counts of every model preset in params.yaml, then seconds per training
step and peak memory of the real loop (pivq.train.loop.train) on procedural toyfaces.

    .venv/bin/python benchmarks/bench_train.py [--threads N] [--skip-256]

Cases, each in its own subprocess (so that peak RSS is that case's alone):
  * toy32 / toy schedule, CPU: L1 + VQ (the embedded recipe), batch 16, the steps of one log window after T_q
    and its codebook initialisation (k-means++ excluded).
  * ut256 / paper256 schedule at 256x256, batch 4, CPU: LPIPS (random VGG trunk: no weights offline) and the
    adversarial term (PatchGAN + DiffAugment + adaptive weight) on, one quantized step.
  * the same two on the GPU, more steps, when torch.cuda.is_available().
Seconds per step come from the loop's own log (steps_per_s of the last window); peak memory is the process's
max RSS (resource.getrusage) and, on the GPU, torch.cuda.max_memory_allocated. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def param_counts(params: dict) -> list[dict]:
    import torch

    from pivq.model import PIVQ, ModelConfig
    from pivq.model.discriminator import NLayerDiscriminator

    def n(module_or_params) -> int:
        items = module_or_params.parameters() if hasattr(module_or_params, "parameters") else module_or_params
        return sum(p.numel() for p in items)

    disc_settings = {(s["disc_ndf"], s["disc_layers"]) for s in params["schedules"].values()}
    rows = []
    for name, m in params["models"].items():
        with torch.device("meta"):  # counts only: no memory, no init time
            model = PIVQ(ModelConfig.from_dict(m))
            discs = {k: n(NLayerDiscriminator(*k)) for k in disc_settings}
        codebook = n(model.quantizer) + sum(b.numel() for k, b in model.quantizer.named_buffers() if "codebook" in k)
        transformers = n(model.encoder) + n(model.decoder) + n([model.pos_in, model.queries, model.pos_out])
        rows.append({"model": name, "res": m["resolution"], "conv encoder": n(model.conv_encoder),
                     "conv decoder": n(model.conv_decoder), "transformers (+embeddings)": transformers,
                     "codebook": codebook, "autoencoder total": n(model),
                     "discriminator": ", ".join(f"{v:,} (ndf {k[0]}, {k[1]} layers)" for k, v in sorted(discs.items()))})
    return rows


def run_case(case: str, device: str, threads: int) -> dict:
    """One training run in this process; returns seconds per step of the last log window and peak memory."""
    import torch

    from pivq.config import load_params, resolve_experiment
    from pivq.data import prepare_toyfaces
    from pivq.train.loop import losses_of, train, Schedule

    params = load_params(REPO / "params.yaml")
    gpu = device == "cuda"
    if case == "toy32":
        exp = copy.deepcopy(resolve_experiment(params, "toy_matching"))
        # T_q = 8, one init over W = 8 steps, log windows of 8: the last window (steps 16-23 on CPU, 48-55 on
        # the GPU) is quantized and holds no k-means++
        exp["schedule"].update(quantize_start=8, init_window=8, init_repeats=1, log_every=8,
                               steps=56 if gpu else 24, checkpoint_every=10**6)
        n_train, res = 64, 32
    else:  # ut256 / paper256, LPIPS + adversarial on from step 0
        exp = copy.deepcopy(resolve_experiment(params, "celebahq256"))
        # k-means++ needs >= K = 4096 vectors: W = 2 steps x batch 4 x L 512, T_q = 2; the last logged
        # window is step 3 alone on CPU, steps 8-11 on the GPU (k-means++ runs at step 2)
        exp["schedule"].update(quantize_start=2, init_window=2, init_repeats=1, adversarial_start=0,
                               log_every=4 if gpu else 1, steps=12 if gpu else 4, checkpoint_every=10**6)
        n_train, res = 16, 256
        exp["dataset"] = {"kind": "toyfaces", "resolution": 256, "n_train": n_train, "n_test": 4, "seed": 0}
    tmp = Path(tempfile.mkdtemp(prefix=f"bench_{case}_"))
    prepare_toyfaces(tmp / "data", resolution=res, n_train=n_train, n_test=4, seed=0)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = train(exp, tmp / "data", tmp / "run", threads=threads, device=device, progress=False,
                    perceptual_random_trunk=True)
    wall = time.perf_counter() - t0
    last = summary["log"][-1]
    steps_in_window = last["step"] - summary["log"][-2]["step"] if len(summary["log"]) > 1 else last["step"]
    return {"case": case, "device": device, "threads": threads, "batch": exp["schedule"]["batch_size"],
            "losses": losses_of(Schedule.from_dict(exp["schedule"])), "measured_steps": steps_in_window,
            "s_per_step": 1.0 / last["steps_per_s"], "quantized": last["quantized"],
            "adversarial": last["adversarial"], "run_wall_s": wall,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-256", action="store_true", help="skip the 256px cases (minutes on CPU)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case, args.device, args.threads)))
        return

    import torch

    from pivq.config import load_params

    params = load_params(REPO / "params.yaml")
    counts = param_counts(params)
    cols = list(counts[0])
    print("## Parameters per preset (params.yaml)\n")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in counts:
        print("| " + " | ".join(f"{v:,}" if isinstance(v, int) and k != "res" else str(v) for k, v in r.items()) + " |")

    cases = [("toy32", "cpu")] + ([] if args.skip_256 else [("ut256", "cpu")])
    if torch.cuda.is_available():
        cases += [("toy32", "cuda"), ("ut256", "cuda")]
    results = []
    for case, device in cases:
        proc = subprocess.run([sys.executable, __file__, "--case", case, "--device", device, "--threads",
                               str(args.threads)], capture_output=True, text=True, cwd=REPO)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"\n{case} on {device} failed:\n{proc.stderr[-3000:]}")
            continue
        results.append(json.loads(line[0][7:]))
    print(f"\n## Training step ({torch.__version__}; CPU threads {args.threads}"
          f"{'; ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''})\n")
    print("| preset | device | batch | losses | steps timed | s / step | steps / s | peak RSS (MB) | peak CUDA (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cuda = f"{r['peak_cuda_mb']:.0f}" if r["peak_cuda_mb"] is not None else "-"
        print(f"| {r['case']} | {r['device']} | {r['batch']} | {' + '.join(r['losses'])} | {r['measured_steps']} | "
              f"{r['s_per_step']:.3f} | {1 / r['s_per_step']:.2f} | {r['peak_rss_mb']:.0f} | {cuda} |")


if __name__ == "__main__":
    main()
