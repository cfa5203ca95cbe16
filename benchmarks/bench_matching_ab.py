"""The exact matching solver alone, this version against another one (CPU time per step, same distances).

    git show <rev>:pivq/quantize/matching.py > /tmp/matching_old.py
    .venv/bin/python benchmarks/bench_matching_ab.py /tmp/matching_old.py [--rounds 7] [--kinds ...]

For each of bench_quantize.py's shapes and latent kinds, both versions' ``optimal_matching`` run in turn on
the same distances for ``--rounds`` rounds, one torch thread; the table gives each one's fastest and median
CPU time (process time: less disturbed by other jobs on a shared machine than wall time) and new / old of
the fastest. Every round checks that both give the same total distance.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch
from bench_quantize import KINDS, SHAPES, latents

import pivq.quantize.matching as new
from pivq.quantize import pairwise_distances


def load(path: str):
    spec = importlib.util.spec_from_file_location("matching_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", help="another version's pivq/quantize/matching.py")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kinds", nargs="*", default=KINDS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    old = load(args.old)
    print(f"ms of CPU time per step, {args.rounds} rounds alternating the versions, 1 torch thread\n")
    print("| L, K, d, B | latents | old: fastest | old: median | new: fastest | new: median | new / old |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for n_codes, codebook_size, dim, batch in SHAPES:
        for kind in args.kinds:
            z, codebook = latents(kind, n_codes, codebook_size, dim, batch)
            dist = pairwise_distances(z, codebook)
            nearest = dist.argmin(dim=-1)
            times = {"old": [], "new": []}
            for _ in range(args.rounds + 1):  # the first round warms up
                cost = {}
                for name, module in (("old", old), ("new", new)):
                    start = time.process_time()
                    cols = module.optimal_matching(dist, nearest, z)
                    times[name].append(time.process_time() - start)
                    cost[name] = float(dist.gather(2, cols[..., None]).double().sum())
                assert abs(cost["new"] - cost["old"]) <= 1e-6 * cost["old"], (kind, cost)
            best = {name: 1e3 * min(t[1:]) for name, t in times.items()}
            median = {name: 1e3 * statistics.median(t[1:]) for name, t in times.items()}
            print(f"| {n_codes}, {codebook_size}, {dim}, {batch} | {kind} | {best['old']:.1f} | {median['old']:.1f} "
                  f"| {best['new']:.1f} | {median['new']:.1f} | {best['new'] / best['old']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
