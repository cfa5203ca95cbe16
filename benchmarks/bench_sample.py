"""Sampling throughput (issue 6): samples per second of the full per-batch sampling path against a bare decoder
forward of the same batch size, in one process (target: ratio >= 0.9).

    .venv/bin/python benchmarks/bench_sample.py [--repeats N] [--threads T] [--batch B] [--ut256 [--ut256-batch B]]

Model: a preset of params.yaml (toy32 by default; ``--ut256`` adds the paper's 256x256 stack at a small batch,
its repeats capped by ``--time-cap`` seconds), randomly initialised with a random codebook (throughput does not
depend on the weights). Training codes: ``--n-train`` random sets of L distinct codes out of K, int32 as
``encode`` writes them. Per repeat, alternating, each timed with a device sync:

  * decode: ``model.decode_indices`` of one (B, L) batch of code indices already on the device (no_grad);
  * sample: ``pivq.sample.generate_shard`` for one batch of B samples (n = B, one shard): draw the pairs,
    Algorithm 1 per sample with its own generator, one decoder pass, to uint8 on the host;
  * sample before: the same batch as generate_shard built it before issue 6 (one ``interpolate`` call per
    sample, then decode and uint8), for the before/after ratio in the same process;
  * parts of the sample path, for the record: the code sets alone (pairs + Algorithm 1, no decode), built
    per sample with ``interpolate`` (generate_shard before issue 6) and batched as generate_shard now builds
    them (checked equal), and the uint8 conversion of one decoded batch.

One warm-up round excluded; medians of the repeats. ratio = sample samples/s / decode samples/s (ratio of the
medians); paired ratio = median over rounds of decode time / sample time within the round (robust to a load
that changes between rounds, as on a shared machine).
Device: cuda if available, else cpu. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pivq.config import load_params  # noqa: E402
from pivq.model import PIVQ, ModelConfig  # noqa: E402
from pivq.model.pixels import to_uint8  # noqa: E402
from pivq.sample import _check_code_rows, _interpolate_rows, draw_pairs, generate_shard, interpolate, sample_generator  # noqa: E402  # noqa: E402


def make_model(preset: dict, device: str, seed: int = 0) -> PIVQ:
    cfg = ModelConfig.from_dict(preset, quantizer="matching")
    torch.manual_seed(seed)
    model = PIVQ(cfg).eval().to(device)
    g = torch.Generator().manual_seed(seed + 1)
    model.quantizer.set_codebook(torch.randn(cfg.codebook_size, cfg.width, generator=g).to(device))
    return model


def random_code_sets(n: int, codes: int, codebook_size: int, seed: int = 0) -> np.ndarray:
    """n sets of L distinct codes out of K, sorted, int32 (what encode writes)."""
    rng = np.random.default_rng(seed)
    keys = rng.random((n, codebook_size))
    return np.sort(np.argpartition(keys, codes, axis=1)[:, :codes], axis=1).astype(np.int32)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def code_sets_per_sample(train_codes: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """Pairs and Algorithm 1 for n samples, one ``interpolate`` call per sample (generate_shard before issue 6)."""
    pairs = draw_pairs(len(train_codes), n, seed)
    codes = torch.from_numpy(train_codes).long()
    return torch.stack([interpolate(codes[a], codes[b], sample_generator(seed, i)) for i, (a, b) in enumerate(pairs)])


def code_sets_batched(train_codes: np.ndarray, n: int, seed: int, codebook_size: int) -> torch.Tensor:
    """The same sets as generate_shard now builds them: checked and interpolated for the whole batch at once."""
    pairs = draw_pairs(len(train_codes), n, seed)
    _check_code_rows(train_codes, np.unique(pairs), codebook_size)
    sets = _interpolate_rows(train_codes[pairs[:, 0]].astype(np.int64), train_codes[pairs[:, 1]].astype(np.int64),
                             [sample_generator(seed, i) for i in range(n)])
    return torch.from_numpy(sets)


def bench(name: str, preset: dict, batch: int, device: str, repeats: int, n_train: int, time_cap: float) -> dict:
    model = make_model(preset, device)
    cfg = model.cfg
    train_codes = random_code_sets(n_train, cfg.codes, cfg.codebook_size)
    indices = code_sets_batched(train_codes, batch, 0, cfg.codebook_size).to(device)
    assert torch.equal(indices.cpu(), code_sets_per_sample(train_codes, batch, seed=0))  # the same sets

    @torch.no_grad()
    def decode():
        return model.decode_indices(indices)

    def sample(seed: int):
        return generate_shard(model, train_codes, n=batch, shards=1, shard=0, seed=seed, batch_size=batch,
                              progress=False)

    @torch.no_grad()
    def sample_before(seed: int):  # generate_shard's batch before issue 6: one interpolate() per sample
        return to_uint8(model.decode_indices(code_sets_per_sample(train_codes, batch, seed).to(device)),
                        model.cfg.pixel_range)

    with torch.no_grad():
        decoded = model.decode_indices(indices)
    times = {"decode": [], "sample": [], "sample before": [], "sets per sample": [], "sets batched": [],
             "to uint8": []}
    begin = time.perf_counter()
    for r in range(repeats + 1):  # round 0 is the warm-up
        seed = 1000 + r
        runs = [("decode", decode), ("sample", lambda: sample(seed)), ("sample before", lambda: sample_before(seed))]
        for key, fn in runs[r % 3 :] + runs[: r % 3]:  # rotate the order: none always runs first
            t = timed(fn, device)
            if r:
                times[key].append(t)
        parts = {"sets per sample": lambda: code_sets_per_sample(train_codes, batch, seed),
                 "sets batched": lambda: code_sets_batched(train_codes, batch, seed, cfg.codebook_size),
                 "to uint8": lambda: to_uint8(decoded, model.cfg.pixel_range)}
        for key, fn in parts.items():
            t = timed(fn, device)
            if r:
                times[key].append(t)
        if r and time.perf_counter() - begin > time_cap:
            break
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"preset": name, "res": cfg.resolution, "L": cfg.codes, "K": cfg.codebook_size, "batch": batch,
            "device": device, "repeats": len(times["decode"]), "ms": {k: 1e3 * v for k, v in med.items()},
            "decode_sps": batch / med["decode"], "sample_sps": batch / med["sample"],
            "ratio": med["decode"] / med["sample"],
            "paired": statistics.median(d / t for d, t in zip(times["decode"], times["sample"])),
            "ratio_before": med["decode"] / med["sample before"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--batch", type=int, default=100, help="toy32 batch (params.yaml: toy_matching sample.batch_size)")
    ap.add_argument("--n-train", type=int, default=2000, help="training code sets to draw pairs from")
    ap.add_argument("--ut256", action="store_true", help="also the paper's ut256 preset (slow on CPU)")
    ap.add_argument("--ut256-batch", type=int, default=2)
    ap.add_argument("--time-cap", type=float, default=120.0, help="seconds per preset after which repeats stop")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(REPO / "params.yaml")
    cases = [("toy32", args.batch)] + ([("ut256", args.ut256_batch)] if args.ut256 else [])
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "-"
    print(f"torch {torch.__version__}, device {args.device} ({gpu}), {args.threads} torch thread(s), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, medians of up to {args.repeats} "
          f"repeats (1 warm-up excluded), time cap {args.time_cap:.0f} s per preset\n")
    print("| preset | res | L, K | batch | device | repeats | decode ms | sample ms | sets: per-sample ms "
          "| sets: batched ms | to uint8 ms | decode samples/s | sample samples/s | ratio | paired ratio "
          "| sample before ms | ratio before |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, batch in cases:
        r = bench(name, params["models"][name], batch, args.device, args.repeats, args.n_train, args.time_cap)
        ms = r["ms"]
        print(f"| {name} | {r['res']} | {r['L']}, {r['K']} | {batch} | {r['device']} | {r['repeats']} "
              f"| {ms['decode']:.1f} | {ms['sample']:.1f} | {ms['sets per sample']:.1f} | {ms['sets batched']:.1f} "
              f"| {ms['to uint8']:.1f} "
              f"| {r['decode_sps']:.4g} | {r['sample_sps']:.4g} | {r['ratio']:.3f} | {r['paired']:.3f} "
              f"| {ms['sample before']:.1f} | {r['ratio_before']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
