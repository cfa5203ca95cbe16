"""Per-step cost of the quantizers (issue 4): matching quantization against scipy's dense solver.

    .venv/bin/python benchmarks/bench_quantize.py [--repeats N] [--threads T] [--workers W] [--kinds ...] [--usage-only]

For each shape (L, K, d, B) and latent kind, the median (ms per step, B images) of:
distances (cdist); nearest (incl. distances); scipy's dense linear_sum_assignment per image (incl.
distances); lapx's lapjvh on the whole problem per image (incl. distances); ours, ``assign(.., "matching")``
(incl. distances), whose dense cores lapx solves; "ours, scipy cores", the same with the cores on scipy (how
ours ran before lapx: the before/after of that change, in the same rounds); sinkhorn (incl. distances).
Everything runs in one process so that the ratios compare like with like, and distances, nearest, ours, ours
with scipy cores and sinkhorn are called in turn, round after round, so that a busy spell of a shared machine
slows them alike. Prints a Markdown table.

"in solvers" is the part of ours spent inside the exact assignment solvers (lapx's or scipy's dense, scipy's
sparse), per step, and "of budget" that part over issue 4's allowance 0.2 x nearest (the target (distances +
ours) / (distances + nearest) <= 1.2).

A second table (alone with --usage-only: no timings) gives issue 4's codebook usage and cost gap of OptVQ's
Sinkhorn assignment, against nearest, on the same latents.
"""

from __future__ import annotations

import argparse
import statistics
import threading
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
FAST_ROUNDS = 3  # distances, nearest, ours and sinkhorn get this many times --repeats rounds (scipy and lapjvh: --repeats)


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
            yield f"{n_codes}, {codebook_size}, {dim}, {batch}", kind, *latents(kind, n_codes, codebook_size, dim, batch)


def scipy_dense(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    dist = pairwise_distances(z, codebook).double().numpy()
    out = torch.empty(z.shape[:2], dtype=torch.int64)
    for b, cost in enumerate(dist):
        rows, cols = linear_sum_assignment(cost)
        out[b, torch.from_numpy(rows)] = torch.from_numpy(cols.astype(np.int64))
    return out


def lap_dense(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    dist = pairwise_distances(z, codebook).double().numpy()
    out = torch.empty(z.shape[:2], dtype=torch.int64)
    for b, cost in enumerate(dist):
        rows, cols = lap.lapjvh(cost, extend_cost=True, return_cost=False)
        out[b, torch.from_numpy(np.asarray(rows, np.int64))] = torch.from_numpy(np.asarray(cols, np.int64))
    return out


def scipy_cores(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Ours with its dense cores on scipy, as without lapx."""
    saved, matching._lapx = matching._lapx, None
    try:
        return assign(z, codebook, "matching")
    finally:
        matching._lapx = saved


class SolverClock:
    """Wraps matching's exact solvers and sums the seconds spent inside them (from every thread): its dense
    solver (lapx or scipy), its scipy fallback, and scipy's sparse solver."""

    NAMES = ("_dense_solve", "_dense_reference", "min_weight_full_bipartite_matching")

    def __init__(self):
        self.seconds = 0.0
        self.lock = threading.Lock()
        for name in self.NAMES:
            setattr(matching, name, self.timed(getattr(matching, name)))

    def timed(self, solver):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return solver(*args, **kwargs)
            finally:
                with self.lock:
                    self.seconds += time.perf_counter() - start
        return wrapper


def interleaved_ms(fns: dict[str, Callable[[], torch.Tensor]], rounds: int, clock: SolverClock):
    """Median ms per call of each of fns, called in turn in every round so that a slow spell of a shared
    machine hits them alike (their ratios are what the table is for); also their last results and the
    median ms that the calls of fns["ours"] spent inside scipy's solvers."""
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    in_scipy, results = [], {}
    for _ in range(rounds):
        for name, fn in fns.items():
            clock.seconds = 0.0
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
            if name == "ours":
                in_scipy.append(clock.seconds)
    medians = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    return medians, results, 1e3 * statistics.median(in_scipy)


def median_ms(fn, repeats: int):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), result


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (scipy's solvers use one core)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads solving a batch's images in ours (default: matching.WORKERS' rule: "
                        "1 for small images, else torch's thread count on the CPU)")
    parser.add_argument("--kinds", nargs="*", default=KINDS)
    parser.add_argument("--usage-only", action="store_true", help="only the Sinkhorn table (codebook usage and "
                        "cost against matching; no timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.workers is not None:
        matching.WORKERS = args.workers
    workers = getattr(matching, "WORKERS", None) or "default (1 for small images, else torch's threads)"
    print(f"torch {torch.__version__}, {args.threads} torch thread(s), ours' workers: {workers}, ms per step: medians "
          f"of {FAST_ROUNDS * args.repeats} interleaved rounds (scipy dense, lapjvh: of {args.repeats} repeats)")
    print(f"lap: {'lapx ' + lap.__version__ + ' lapjvh' if lap else 'not installed'}\n")
    clock = SolverClock()
    if not args.usage_only:
        timings(args, clock)
    print("\nCodebook usage and cost of OptVQ's Sinkhorn assignment against nearest (no timings; matching: every "
          "image's L codes distinct, cost 1 by definition). distinct: mean share of an image's L codes that differ; "
          "repeats: share of images with a repeated code; batch: distinct codes in the whole batch; cost: total "
          "distance / matching's optimum\n")
    print("| L, K, d, B | latents | nearest: distinct | repeats | batch | cost | sinkhorn: distinct | repeats | batch "
          "| cost |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape, kind, z, codebook in instances(args.kinds):
        print(f"| {shape} | {kind} | {usage_row(z, codebook)} |", flush=True)


def timings(args: argparse.Namespace, clock: SolverClock) -> None:
    """The timing table."""
    print("| L, K, d, B | latents | distances | nearest | scipy dense | lapjvh | ours | ours, scipy cores | sinkhorn "
          "| ours/scipy | ours / ours with scipy cores | ours/nearest | ours: in solvers | of budget |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape, kind, z, codebook in instances(args.kinds):
        fast = {"distances": lambda: pairwise_distances(z, codebook),
                "nearest": lambda: assign(z, codebook, "nearest"),
                "ours": lambda: assign(z, codebook, "matching"),
                "scipy cores": lambda: scipy_cores(z, codebook),
                "sinkhorn": lambda: assign(z, codebook, "sinkhorn")}
        t, results, t_core = interleaved_ms(fast, FAST_ROUNDS * args.repeats, clock)
        t_dist, t_near, t_ours, t_sink, ours = t["distances"], t["nearest"], t["ours"], t["sinkhorn"], results["ours"]
        t_ref, ref = median_ms(lambda: scipy_dense(z, codebook), args.repeats)
        t_lap = median_ms(lambda: lap_dense(z, codebook), args.repeats)[0] if lap else float("nan")
        # exactness check on the benchmark data itself
        got, want = total_cost(z, codebook, ours), total_cost(z, codebook, ref)
        assert abs(got - want) <= 1e-6 * want, (kind, got, want)
        assert all(len(set(row.tolist())) == z.shape[1] for row in ours), kind
        print(
            f"| {shape} | {kind} | {t_dist:.1f} | {t_near:.1f} | {t_ref:.1f} "
            f"| {t_lap:.1f} | {t_ours:.1f} | {t['scipy cores']:.1f} | {t_sink:.1f} | {t_ours / t_ref:.3f} "
            f"| {t_ours / t['scipy cores']:.2f} | {t_ours / t_near:.2f} | {t_core:.1f} "
            f"| {t_core / (0.2 * t_near):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
