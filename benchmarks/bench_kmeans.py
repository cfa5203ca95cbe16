"""Codebook-initialisation benchmark: pivq's torch k-means (greedy k-means++ seeding + Lloyd) against
scikit-learn's KMeans (the reference) on the same vectors, in one process.

    .venv/bin/python benchmarks/bench_kmeans.py [--n 65536] [--dim 256] [--k 4096] [--iters 20] [--device cpu]
        [--threads N]

At T_q (section 3.7) the codebook is fit to the encoder outputs of the last W iterations: at the paper's
256x256 scale W x B x L = 500 x 4 x 512 = 1,024,000 vectors of d = 256 into K = 4096 centres, 20 Lloyd
iterations (params.yaml, schedule paper256). The vectors here are a mixture of Gaussians (a stand-in for
encoder outputs: clustered, not uniform). Prints a Markdown table with seconds for seeding and for the Lloyd
iterations, the inertia (sum of squared distances to the nearest centre), and pivq/scikit-learn ratios.
``--skip-sklearn`` times pivq alone (e.g. at the full paper scale on a GPU, where scikit-learn would take long).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pivq.quantize.kmeans import kmeans_plus_plus, lloyd, nearest_centre  # noqa: E402


def mixture(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(clusters, dim)).astype(np.float32)
    return means[rng.integers(clusters, size=n)] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)


def inertia(x: torch.Tensor, centres: torch.Tensor) -> float:
    labels = nearest_centre(x, centres)
    return float(sum(((part - centres[lab]) ** 2).sum() for part, lab in zip(x.split(65536), labels.split(65536))))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_pivq(x: torch.Tensor, k: int, iters: int, seed: int, device: str) -> dict:
    t0 = time.perf_counter()
    seeds = kmeans_plus_plus(x, k, torch.Generator(device=device).manual_seed(seed))
    sync(device)
    t1 = time.perf_counter()
    centres = lloyd(x, seeds, iters)
    sync(device)
    t2 = time.perf_counter()
    return {"seeding_s": t1 - t0, "lloyd_s": t2 - t1, "total_s": t2 - t0, "inertia": inertia(x, centres),
            "n_iter": iters}


def time_sklearn(x: np.ndarray, k: int, iters: int, seed: int) -> dict:
    from sklearn.cluster import KMeans, kmeans_plusplus

    t0 = time.perf_counter()
    seeds, _ = kmeans_plusplus(x, k, random_state=seed)
    t1 = time.perf_counter()
    # tol=0: all iters unless the labels stop changing (n_iter says)
    fit = KMeans(k, init=seeds, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(x)
    t2 = time.perf_counter()
    return {"seeding_s": t1 - t0, "lloyd_s": t2 - t1, "total_s": t2 - t0, "inertia": float(fit.inertia_),
            "n_iter": int(fit.n_iter_)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=65536, help="vectors (paper 256x256 scale: 1024000)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--clusters", type=int, default=1000, help="Gaussian components of the synthetic vectors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="CPU threads for both (more threads than free cores makes OpenMP spin: keep it honest)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # scikit-learn's OpenMP/BLAS pools

    data = mixture(args.n, args.dim, args.clusters, args.seed)
    x = torch.from_numpy(data).to(args.device)
    ours = time_pivq(x, args.k, args.iters, args.seed, args.device)
    rows = [("pivq (torch, %s)" % args.device, ours)]
    if not args.skip_sklearn:
        rows.append(("scikit-learn KMeans (reference)", time_sklearn(data, args.k, args.iters, args.seed)))

    print(f"n={args.n} d={args.dim} K={args.k} Lloyd iterations={args.iters} torch threads={torch.get_num_threads()} "
          f"cpus={os.cpu_count()} loadavg={os.getloadavg()[0]:.1f}")
    print("| implementation | seeding s | Lloyd s (iterations) | total s | inertia |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['seeding_s']:.2f} | {r['lloyd_s']:.2f} ({r['n_iter']}) | {r['total_s']:.2f} | "
              f"{r['inertia']:.4g} |")
    if len(rows) == 2:
        ref = rows[1][1]
        print(f"| pivq / scikit-learn | {ours['seeding_s'] / ref['seeding_s']:.2f} | "
              f"{ours['lloyd_s'] / max(ref['lloyd_s'], 1e-9):.2f} | {ours['total_s'] / ref['total_s']:.2f} | "
              f"{ours['inertia'] / ref['inertia']:.4f} |")


if __name__ == "__main__":
    main()
