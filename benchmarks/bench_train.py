"""Training-loop benchmark: parameter counts of every model preset in params.yaml, then, per preset and
precision, seconds per step of the real loop (pivq.train.loop.train) on procedural toyfaces, its FLOPs and model
FLOPs utilisation, the quantizer assignment's share of the step, and peak memory; on a GPU also k-means at T_q
at the paper's window and the estimated wall clock of each paper experiment.

    .venv/bin/python benchmarks/bench_train.py [--threads N] [--skip-256] [--precisions fp32 tf32 bf16]
    .venv/bin/python benchmarks/bench_train.py --baseline <git rev> [--rounds 3]   # toy32 CPU before/after

Cases, each in its own subprocess (so that peak RSS is that case's alone):
  * toy32 / toy schedule: L1 + VQ (the embedded recipe), batch 16, the steps of one log window after T_q and its
    codebook initialisation (k-means++ excluded).
  * ut256 / paper256 schedule at 256x256, batch 4: LPIPS (random VGG trunk: no weights offline), before the
    discriminator starts (the MFU target's case); ut256-adv: with the adversarial term on.
  * celeba64: the paper's 64x64 preset and schedule, batch 16, LPIPS, before the discriminator (only on request:
    bench_quantize.py's training step for L = 32, via run_case).
  * The CPU runs toy32 and ut256 in fp32; a GPU runs all three in each precision.
Seconds per step come from the loop's own log (steps_per_s of the last window). FLOPs per step are counted by
torch's FlopCounterMode on the meta device (:func:`step_flops`); MFU divides FLOPs per second by the device's
dense peak for that precision (PEAK_FLOPS; none on the CPU). The assignment share times the quantizer's assign
calls with a device synchronisation around each. Peak memory is the process's max RSS and, on the GPU,
torch.cuda.max_memory_allocated. Prints Markdown tables. ``run_case("tiny", "cpu", 1)`` is the tests' form.
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
                     "discriminator": ", ".join(f"{v:,} (ndf {k[0]}, {k[1]} layers)"
                                                for k, v in sorted(discs.items()))})
    return rows


# Dense peak of one GPU, per precision (vendor datasheets, SXM parts, no sparsity): MFU's denominator.
PEAK_FLOPS = {"H100": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
              "H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
              "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}}


def peak_flops(device_name: str, precision: str) -> float | None:
    for key, peaks in PEAK_FLOPS.items():
        if key in device_name:
            return peaks[precision]
    return None


def step_flops(exp: dict) -> float:
    """FLOPs of one training step of ``exp`` (forward and backward of the autoencoder, LPIPS on the image pair,
    and, with the adversarial term on, the discriminator's three passes), counted by torch's FlopCounterMode on
    the meta device (no memory, no arithmetic). The quantizer's distances are left out (4.3 GFLOP at the paper's
    B x L x K x d, 0.1% of a ut256 step); so are the optimisers and the EMA (memory-bound, no matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pivq.model import PIVQ, ModelConfig
    from pivq.model.discriminator import NLayerDiscriminator
    from pivq.train.loop import Schedule
    from pivq.train.losses import build_lpips

    sched = Schedule.from_dict(exp["schedule"])
    cfg = ModelConfig.of_experiment(exp)
    lpips_net = build_lpips(random_trunk=True).to("meta") if sched.perceptual else None
    with torch.device("meta"):
        model = PIVQ(cfg)
        disc = NLayerDiscriminator(sched.disc_ndf, sched.disc_layers) if sched.adversarial else None
        x = torch.rand(sched.batch_size, 3, cfg.resolution, cfg.resolution)
    with FlopCounterMode(display=False) as counter:
        rec, _, _, _ = model(x, quantize=False)
        loss = (rec - x).abs().mean()
        if lpips_net is not None:
            loss = loss + lpips_net(x, rec).mean()
        if disc is not None:
            loss = loss - disc(rec).mean()
        loss.backward()
        if disc is not None:
            (disc(x).mean() + disc(rec.detach()).mean()).backward()
    return float(counter.get_total_flops())


def run_case(case: str, device: str, threads: int, precision: str = "fp32", steps: int | None = None) -> dict:
    """One training run in this process: seconds per step of the last log window, the share of it spent in the
    quantizer's assignment, FLOPs per step and MFU, peak memory."""
    import torch

    import pivq.quantize.module as quantizer_module
    from pivq.config import load_params, resolve_experiment
    from pivq.data import prepare_toyfaces
    from pivq.train.loop import Schedule, losses_of, train

    params = load_params(REPO / "params.yaml")
    gpu = device == "cuda"
    if case in ("toy32", "tiny"):
        exp = copy.deepcopy(resolve_experiment(params, "toy_matching"))
        # T_q = 8, one init over W = 8 steps, log windows of 8: the last window (steps 16-23 on CPU, 48-55 on
        # the GPU) is quantized and holds no k-means++
        exp["schedule"].update(quantize_start=8, init_window=8, init_repeats=1, log_every=8,
                               steps=steps or (56 if gpu else 24), checkpoint_every=10**6)
        n_train, res = 64, 32
        if case == "tiny":  # the tests' form: the embedded code path in a second
            exp["model"].update(resolution=16, ch_mult=[1, 2], codes=8, codebook_size=32, width=16, ffn=32,
                                heads=2, layers=1, nf=8, norm_groups=4, attn_resolutions=[8])
            exp["schedule"].update(batch_size=8, quantize_start=4, init_window=4, log_every=4, steps=steps or 12)
            n_train, res = 32, 16
    else:  # a paper preset with LPIPS (random VGG trunk): ut256 / paper256, or celeba64 (64x64, L 32, batch 16);
        # "ut256-adv": the adversarial term on from step 0
        name, n_train, res = ("celeba64", 32, 64) if case == "celeba64" else ("celebahq256", 16, 256)
        exp = copy.deepcopy(resolve_experiment(params, name))
        # k-means++ needs >= K vectors (4096: W = 2 steps x batch 4 x L 512; 512: 2 x 16 x 32), T_q = 2; the
        # last logged window is step 3 alone on CPU, steps 8-11 on the GPU (k-means++ runs at step 2)
        exp["schedule"].update(quantize_start=2, init_window=2, init_repeats=1,
                               adversarial_start=0 if case == "ut256-adv" else None,
                               log_every=4 if gpu else 1, steps=steps or (12 if gpu else 4), checkpoint_every=10**6)
        exp["dataset"] = {"kind": "toyfaces", "resolution": res, "n_train": n_train, "n_test": 4, "seed": 0}
    if "precision" in exp["schedule"]:  # (a baseline checkout of an older pivq has no such setting)
        exp["schedule"]["precision"] = precision
    tmp = Path(tempfile.mkdtemp(prefix=f"bench_{case}_"))
    prepare_toyfaces(tmp / "data", resolution=res, n_train=n_train, n_test=4, seed=0)

    assign_s = []
    original_assign = quantizer_module.assign

    def timed_assign(z, codebook, method):  # synchronises around the call: the share is of a synchronised step
        if gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = original_assign(z, codebook, method)
        if gpu:
            torch.cuda.synchronize()
        assign_s.append(time.perf_counter() - t)
        return out

    quantizer_module.assign = timed_assign
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = train(exp, tmp / "data", tmp / "run", threads=threads, device=device, progress=False,
                    perceptual_random_trunk=True)
    wall = time.perf_counter() - t0
    quantizer_module.assign = original_assign
    last = summary["log"][-1]
    steps_in_window = last["step"] - summary["log"][-2]["step"] if len(summary["log"]) > 1 else last["step"]
    s_per_step = 1.0 / last["steps_per_s"]
    flops = step_flops(exp)
    name = torch.cuda.get_device_name() if gpu else "cpu"
    peak = peak_flops(name, precision) if gpu else None
    assign_window = sum(assign_s[-steps_in_window:]) / steps_in_window if assign_s else 0.0
    return {"case": case, "device": device, "device_name": name, "threads": threads, "precision": precision,
            "batch": exp["schedule"]["batch_size"],
            "losses": losses_of(Schedule.from_dict(exp["schedule"])), "measured_steps": steps_in_window,
            "s_per_step": s_per_step, "quantized": last["quantized"], "adversarial": last["adversarial"],
            "run_wall_s": wall, "tflop_per_step": flops / 1e12,
            "mfu": flops / s_per_step / peak if peak else None, "assign_share": assign_window / s_per_step,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None}


def kmeans_at_paper_window(device: str, n: int = 1_024_000, k: int = 4096, d: int = 256, iters: int = 20) -> dict:
    """Seconds of one codebook initialisation at T_q (k-means++ then ``iters`` Lloyd steps) on ``device``; the
    paper's window is W x B x L = 500 x 4 x 512 = 1,024,000 vectors of d = 256 into K = 4096."""
    import torch

    from pivq.quantize import kmeans

    gen = torch.Generator(device=device).manual_seed(0)
    centres = torch.randn(k, d, generator=gen, device=device)
    x = centres[torch.randint(k, (n,), generator=gen, device=device)] + 0.3 * torch.randn(n, d, generator=gen,
                                                                                       device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    kmeans(x, k, iters, gen)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"device": device, "n": n, "k": k, "d": d, "iters": iters, "seconds": time.perf_counter() - t}


def _subprocess_case(script: Path, case: str, device: str, threads: int, precision: str, cwd: Path) -> dict | None:
    proc = subprocess.run([sys.executable, str(script), "--case", case, "--device", device, "--threads",
                           str(threads), "--precision", precision], capture_output=True, text=True, cwd=cwd)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        print(f"\n{case} on {device} ({precision}) failed:\n{proc.stderr[-3000:]}")
        return None
    return json.loads(line[0][7:])


def baseline_ratio(rev: str, threads: int, rounds: int) -> None:
    """toy32's CPU seconds per step at git revision ``rev`` against this checkout, interleaved rounds in one
    invocation (each case its own process), medians: the before/after of a change to the loop."""
    import statistics

    work = Path(tempfile.mkdtemp(prefix="bench_baseline_"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(work / "tree"), rev], check=True,
                   capture_output=True)
    try:
        times = {"baseline": [], "this": []}
        for _ in range(rounds):
            for label, root in (("baseline", work / "tree"), ("this", REPO)):
                # the baseline's own benchmark script, as old as its loop (its --case interface is the same)
                proc = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_train.py"), "--case", "toy32",
                                       "--device", "cpu", "--threads", str(threads)], capture_output=True, text=True,
                                      cwd=root)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not line:
                    raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
                times[label].append(json.loads(line[0][7:])["s_per_step"])
        old, new = statistics.median(times["baseline"]), statistics.median(times["this"])
        print(f"\n## toy32 on the CPU, {threads} thread(s), {rounds} interleaved rounds: s/step baseline {rev} "
              f"{old:.4f}, this checkout {new:.4f}; steps/s ratio (this / baseline) {old / new:.3f}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "tree")],
                       capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-256", action="store_true", help="skip the 256px cases (minutes on CPU)")
    ap.add_argument("--precisions", nargs="+", default=None,
                    help="precisions of the GPU cases (default: fp32 tf32 bf16); the CPU runs fp32")
    ap.add_argument("--kmeans-n", type=int, default=1_024_000, help="k-means vectors on the GPU (paper: 1,024,000)")
    ap.add_argument("--baseline", metavar="REV", help="only: toy32 CPU s/step at git REV vs this checkout")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --baseline")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case, args.device, args.threads, args.precision)))
        return
    if args.baseline:
        baseline_ratio(args.baseline, args.threads, args.rounds)
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

    cases = [("toy32", "cpu", "fp32")] + ([] if args.skip_256 else [("ut256", "cpu", "fp32")])
    if torch.cuda.is_available():
        for precision in args.precisions or ["fp32", "tf32", "bf16"]:
            cases += [("toy32", "cuda", precision), ("ut256", "cuda", precision), ("ut256-adv", "cuda", precision)]
    results = [r for r in (_subprocess_case(Path(__file__), c, d, args.threads, p, REPO) for c, d, p in cases) if r]
    print(f"\n## Training step ({torch.__version__}; CPU threads {args.threads}"
          f"{'; ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''})\n")
    print("| preset | device | precision | batch | losses | steps timed | s / step | steps / s | TFLOP / step | MFU "
          "| assignment share | peak RSS (MB) | peak CUDA (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cuda = f"{r['peak_cuda_mb']:.0f}" if r["peak_cuda_mb"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"| {r['case']} | {r['device']} | {r['precision']} | {r['batch']} | {' + '.join(r['losses'])} | "
              f"{r['measured_steps']} | {r['s_per_step']:.4f} | {1 / r['s_per_step']:.2f} | {r['tflop_per_step']:.3f} "
              f"| {mfu} | {100 * r['assign_share']:.1f}% | {r['peak_rss_mb']:.0f} | {cuda} |")
    gpu_rows = {(r["case"], r["precision"]): r for r in results if r["device"] == "cuda"}
    if torch.cuda.is_available():
        km = kmeans_at_paper_window("cuda", n=args.kmeans_n)
        print(f"\nk-means at T_q on the GPU: {km['n']:,} x {km['d']} into {km['k']}, {km['iters']} Lloyd steps: "
              f"{km['seconds']:.1f} s")
        for name in ("celeba64", "celebahq256", "ffhq256"):  # wall clock = steps x s/step, before and after D
            sched = params["schedules"][params["experiments"][name]["schedule"]]
            pre, adv = gpu_rows.get(("ut256", sched["precision"])), gpu_rows.get(("ut256-adv", sched["precision"]))
            if name == "celeba64" or pre is None or adv is None:
                continue  # (no 64x64 case measured here)
            hours = (sched["adversarial_start"] * pre["s_per_step"]
                     + (sched["steps"] - sched["adversarial_start"]) * adv["s_per_step"]) / 3600
            print(f"estimated training of {name} ({sched['steps']:,} steps, {sched['precision']}): {hours:.1f} h")


if __name__ == "__main__":
    main()
