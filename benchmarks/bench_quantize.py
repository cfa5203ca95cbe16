"""Matching quantization's cost per training step (issue 20): ours against scipy's and lapx's dense solvers.

    .venv/bin/python benchmarks/bench_quantize.py [--repeats ROUNDS] [--threads T] [--kinds ...]
        [--train-step L=SECONDS ...] [--measure-train-step] [--scans] [--usage-only]

For each shape (L, K, d, B) and latent kind, ms per step (B images): distances (cdist); nearest (incl.
distances); then the solvers alone, on the same precomputed distances: scipy's dense linear_sum_assignment per
image (float64, as pivq's reference), lapx's lapjvh on the whole problem per image, and ours
(``optimal_matching``, on the CPU). "ours / scipy" is the solver-time budget's ratio (at most 0.25 in every
regime). With CUDA, the same on the GPU: distances, nearest and ours on the device (the device solver,
pivq.quantize.device_solver, with a synchronisation around each call). Every call is made in turn, round
after round (--repeats rounds; 10 x on the GPU), so that a busy spell of a shared machine slows them
alike; scipy and lapjvh too, in the same rounds (calls back to back run from warm caches: ours would be
compared unfairly). Every run asserts that ours reaches scipy's optimum with distinct codes.

Shares of a training step: each solver's time (what matching adds to a step over nearest, which needs the
distances too) over one training step of the matching preset of that shape on the same device: ut256
(celebahq256) for L = 512 and celeba64 for L = 32, from bench_train.run_case (``--measure-train-step``: minutes
on a CPU) or given as ``--train-step 512=42.0`` (seconds, bench_train's figure). The GPU budget is a 10% share.

``--scans``: the device solver's kernel run by Triton's interpreter on the CPU (TRITON_INTERPRET=1; slow, so one
call per case) to count its row scans per image (the largest), which sets its time on a GPU; on a GPU they
are counted in one more call on the device.

A second table (alone with --usage-only: no timings) gives the codebook usage and cost gap of OptVQ's Sinkhorn
assignment, against nearest, on the same latents.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

import pivq.quantize.matching as matching
from pivq.quantize import assign, pairwise_distances

try:  # a dependency of pivq (pivq.quantize.matching solves its dense cores with it)
    import lap
except ImportError:
    lap = None

SHAPES = [(512, 4096, 256, 4), (32, 512, 128, 16)]  # (L, K, d, B)
KINDS = ["gaussian", "clustered", "collapsed", "near_collapsed", "near_distinct"]


def latents(kind: str, n_codes: int, codebook_size: int, dim: int, batch: int, seed: int = 0):
    """(z (B, L, d), codebook (K, d)) of one kind; the codebook is standard normal."""
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(codebook_size, dim, generator=g)
    noise = torch.randn(batch, n_codes, dim, generator=g)
    if kind == "gaussian":  # untrained encoder: unrelated to the codebook
        z = noise
    elif kind == "clustered":  # every latent near one of 8 codes per image (nearest repeats codes heavily)
        centres = codebook[torch.randint(codebook_size, (batch, 8), generator=g)]
        z = centres.gather(1, torch.randint(8, (batch, n_codes, 1), generator=g).expand(-1, -1, dim)) + 0.1 * noise
    elif kind == "collapsed":  # one point per image (a collapsed encoder): L identical latents
        z = torch.randn(batch, 1, dim, generator=g).expand(-1, n_codes, -1)
    elif kind == "near_collapsed":  # one point per image plus 1% noise: a genuinely hard dense L x L problem
        z = torch.randn(batch, 1, dim, generator=g) + 0.01 * noise
    elif kind == "near_distinct":  # each latent close to its own code: nearest is already one-to-one
        idx = torch.stack([torch.randperm(codebook_size, generator=g)[:n_codes] for _ in range(batch)])
        z = codebook[idx] + 0.05 * noise
    else:
        raise ValueError(kind)
    return z.contiguous(), codebook


def instances(kinds: list[str]):
    """(shape label, kind, z, codebook) for every shape and latent kind, in table order."""
    for n_codes, codebook_size, dim, batch in SHAPES:
        for kind in kinds:
            yield (f"{n_codes}, {codebook_size}, {dim}, {batch}", kind,
                   *latents(kind, n_codes, codebook_size, dim, batch))


def scipy_solver(dist: torch.Tensor) -> np.ndarray:
    """scipy's dense solver per image on float64 distances (the reference: what ours must equal)."""
    return np.stack([linear_sum_assignment(cost)[1] for cost in dist.double().numpy()])


def lapjvh_solver(dist: torch.Tensor) -> np.ndarray:
    """lapx's lapjvh on each whole L x K problem (float64)."""
    return np.stack([np.asarray(lap.lapjvh(cost, extend_cost=True, return_cost=False)[1])
                     for cost in dist.double().numpy()])


def synchronised(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """fn, followed by a device synchronisation on CUDA (so that a call's time is its work's)."""
    if device.type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return call


def interleaved_ms(fns: dict[str, Callable[[], object]], rounds: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median ms per call of each of fns, called in turn in every round so that a slow spell of a shared
    machine hits them alike (their ratios are what the table is for); also their last results."""
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    results = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}, results


def total_cost(z: torch.Tensor, codebook: torch.Tensor, idx: torch.Tensor) -> float:
    return float((z.double() - codebook.double()[idx]).norm(dim=-1).sum())


def usage_row(z: torch.Tensor, codebook: torch.Tensor) -> str:
    """One row of the Sinkhorn table (no timings): per method, the mean share of an image's L codes that are
    distinct, the share of images with a repeated code, the distinct codes of the whole batch, and the total
    distance over matching's optimum (nearest is a lower bound on any assignment; below 1 means repeats)."""
    cells = []
    codes = {method: assign(z, codebook, method) for method in ("nearest", "matching", "sinkhorn")}
    optimum = total_cost(z, codebook, codes["matching"])
    for method in ("nearest", "sinkhorn"):
        idx = codes[method]
        distinct = [len(torch.unique(row)) / len(row) for row in idx]
        cells += [f"{statistics.mean(distinct):.3f}", f"{sum(d < 1 for d in distinct) / len(distinct):.2f}",
                  f"{len(torch.unique(idx))}", f"{total_cost(z, codebook, idx) / optimum:.4f}"]
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, and ours' threads on the CPU")
    parser.add_argument("--kinds", nargs="*", default=KINDS)
    parser.add_argument("--train-step", nargs="*", default=[], metavar="L=SECONDS",
                        help="seconds of a training step of the matching preset with L codes (bench_train's figure)")
    parser.add_argument("--measure-train-step", action="store_true",
                        help="measure those steps here with bench_train.run_case (minutes on a CPU)")
    parser.add_argument("--scans", action="store_true",
                        help="count the device solver's kernel scans under Triton's CPU interpreter (slow)")
    parser.add_argument("--usage-only", action="store_true", help="only the Sinkhorn table (codebook usage and "
                        "cost against matching; no timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.scans:  # before Triton is first imported (pivq.quantize.device_solver imports it on first use)
        os.environ["TRITON_INTERPRET"] = "1"
    print(f"torch {torch.__version__}, {args.threads} torch thread(s); lap: "
          f"{'lapx ' + lap.__version__ if lap else 'not installed'}; "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}\n")
    if not args.usage_only:
        timings(args, train_steps(args))
    print("\nCodebook usage and cost of OptVQ's Sinkhorn assignment against nearest (no timings; matching: every "
          "image's L codes distinct, cost 1 by definition). distinct: mean share of an image's L codes that differ; "
          "repeats: share of images with a repeated code; batch: distinct codes in the whole batch; cost: total "
          "distance / matching's optimum\n")
    print("| L, K, d, B | latents | nearest: distinct | repeats | batch | cost | sinkhorn: distinct | repeats | batch "
          "| cost |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape, kind, z, codebook in instances(args.kinds):
        print(f"| {shape} | {kind} | {usage_row(z, codebook)} |", flush=True)


STEP_CASES = {512: "ut256", 32: "celeba64"}  # bench_train's case of each shape's matching preset


def train_steps(args: argparse.Namespace) -> dict[tuple[int, str], float]:
    """Seconds per training step, by (L, device type): given (--train-step, this script's device) or measured."""
    steps = {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for item in args.train_step:
        n_codes, seconds = item.split("=")
        steps[int(n_codes), device] = float(seconds)
    if args.measure_train_step:
        import bench_train

        for n_codes, case in STEP_CASES.items():
            for dev in ["cpu"] + (["cuda"] if device == "cuda" else []):
                if (n_codes, dev) not in steps:
                    steps[n_codes, dev] = bench_train.run_case(case, dev, args.threads,
                                                               "bf16" if dev == "cuda" else "fp32")["s_per_step"]
                    print(f"training step of {case} on {dev}: {steps[n_codes, dev]:.4f} s")
    return steps


def share(ms: float, step_s: float | None) -> str:
    return f"{ms / (10 * step_s):.2f}%" if step_s else "-"  # ms / (1000 step_s) as a percentage


def device_scans(dist: torch.Tensor, z: torch.Tensor) -> int | None:
    """The largest number of kernel row scans of one image when the device solver matches ``dist``."""
    from pivq.quantize import device_solver

    seen = []
    original = device_solver.solve_images

    def spy(*args):
        out = original(*args)
        seen.append(int(out[2].max()))
        return out

    device_solver.solve_images, saved = spy, device_solver.ON_CPU_INTERPRETER
    device_solver.ON_CPU_INTERPRETER = dist.device.type == "cpu"
    try:
        matching.optimal_matching(dist, dist.argmin(dim=-1), z)
    finally:
        device_solver.solve_images, device_solver.ON_CPU_INTERPRETER = original, saved
    return max(seen) if seen else None


def timings(args: argparse.Namespace, steps: dict[tuple[int, str], float]) -> None:
    """The timing table: CPU, then (with CUDA) the device."""
    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    columns = ["distances", "nearest", "scipy", "lapjvh", "ours", "ours / scipy", "budget 0.25",
               "step share: scipy", "lapjvh", "ours"]
    if gpu:
        columns += ["GPU: distances", "nearest", "ours", "ours / nearest", "step share"]
    if args.scans or gpu:
        columns += ["device solver: scans"]
    print("ms per step; solvers alone, on precomputed distances; step share: solver ms / training step of the "
          "shape's matching preset\n")
    print("| L, K, d, B | latents | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for shape, kind, z, codebook in instances(args.kinds):
        n_codes = z.shape[1]
        dist = pairwise_distances(z, codebook)
        nearest = dist.argmin(dim=-1)
        calls = {"distances": lambda: pairwise_distances(z, codebook),
                 "nearest": lambda: assign(z, codebook, "nearest"),
                 "ours": lambda: matching.optimal_matching(dist, nearest, z),
                 "scipy": lambda: scipy_solver(dist)}
        if lap:
            calls["lapjvh"] = lambda: lapjvh_solver(dist)
        t, results = interleaved_ms(calls, args.repeats)
        t_ref, t_lap = t["scipy"], t.get("lapjvh", float("nan"))
        want = total_cost(z, codebook, torch.from_numpy(results["scipy"]))
        check(z, codebook, results["ours"], want, kind)
        step = steps.get((n_codes, "cpu"))
        cells = [f"{t['distances']:.1f}", f"{t['nearest']:.1f}", f"{t_ref:.1f}", f"{t_lap:.1f}", f"{t['ours']:.1f}",
                 f"{t['ours'] / t_ref:.3f}", "met" if t["ours"] <= 0.25 * t_ref else "**not met**",
                 share(t_ref, step), share(t_lap, step), share(t["ours"], step)]
        if gpu:
            zg, cg = z.to(gpu), codebook.to(gpu)
            on_gpu = {"distances": synchronised(lambda: pairwise_distances(zg, cg), gpu),
                      "nearest": synchronised(lambda: assign(zg, cg, "nearest"), gpu),
                      "ours": synchronised(lambda: assign(zg, cg, "matching"), gpu)}
            tg, results = interleaved_ms(on_gpu, 10 * args.repeats)
            check(z, codebook, results["ours"].cpu(), want, kind)
            solver_ms = tg["ours"] - tg["nearest"]  # what matching adds to the step
            cells += [f"{tg['distances']:.2f}", f"{tg['nearest']:.2f}", f"{tg['ours']:.2f}",
                      f"{tg['ours'] / tg['nearest']:.2f}", share(solver_ms, steps.get((n_codes, "cuda")))]
        if args.scans or gpu:
            scans = device_scans(pairwise_distances(zg, cg) if gpu else dist, zg if gpu else z)
            cells.append("-" if scans is None else str(scans))
        print(f"| {shape} | {kind} | " + " | ".join(cells) + " |", flush=True)


def check(z: torch.Tensor, codebook: torch.Tensor, ours: torch.Tensor, optimum: float, kind: str) -> None:
    """Exactness on the benchmark's own data: scipy's optimal cost and L distinct codes per image."""
    got = total_cost(z, codebook, ours)
    assert abs(got - optimum) <= 1e-6 * optimum, (kind, got, optimum)
    assert all(len(set(row.tolist())) == z.shape[1] for row in ours), kind


if __name__ == "__main__":
    main()
