"""Benchmark pivq.data.prepare_ffhq: throughput and peak memory for growing image counts.

Builds a synthetic FFHQ layout (images1024x1024/<thousands>/<index>.png, json/<index>.json copied cyclically
from the FFHQ-features fixtures) in a temporary folder, then prepares it once per count, each in its own
subprocess so that peak-memory figures do not carry over. Encoding thousands of 1024px PNGs would take
longer than preparing them, so ``--unique`` distinct pictures (a smooth gradient plus noise, about the
size and entropy of a photo) are made and the rest are hard links to them: decoding cost is the same.

Peak memory: resource.getrusage ru_maxrss of this process (SELF) and of its largest pool worker
(CHILDREN), plus the peak anonymous RSS of SELF sampled from /proc every 20 ms. ru_maxrss also counts
file-backed pages of the output memmap that write_prepared fills (reclaimable page cache, not heap), so it
grows with the output size; RssAnon is the part that would have to fit in memory.

    .venv/bin/python benchmarks/bench_prepare.py --count 200 800 --workers 2
    .venv/bin/python benchmarks/bench_prepare.py --count 1000 --size 1024 --resolution 256 --workers 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FIXTURES = Path("/work/shared/fixtures/ffhq-features")


def make_ffhq(root: Path, count: int, size: int, unique: int) -> None:
    """A synthetic FFHQ layout with ``count`` PNGs of size x size, ``unique`` of them distinct."""
    import numpy as np
    from PIL import Image

    jsons = sorted(FIXTURES.glob("*.json"))
    (root / "json").mkdir(parents=True)
    originals: list[Path] = []
    for i in range(count):
        folder = root / "images1024x1024" / f"{i // 1000 * 1000:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        if i < unique:
            rng = np.random.default_rng(i)
            y, x = np.mgrid[0:size, 0:size]
            base = np.stack([x * 255 // size, y * 255 // size, (x + y + 37 * i) * 255 // (2 * size)], axis=-1)
            Image.fromarray(np.clip(base + rng.integers(-24, 24, base.shape), 0, 255).astype(np.uint8)).save(path)
            originals.append(path)
        else:
            _link(originals[i % unique], path)
        shutil.copy(jsons[i % len(jsons)], root / "json" / f"{i:05d}.json")


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)


def subset(full: Path, root: Path, count: int) -> None:
    """The first ``count`` images and JSON files of ``full``, as hard links."""
    for i in range(count):
        rel = Path("images1024x1024") / f"{i // 1000 * 1000:05d}" / f"{i:05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _link(full / rel, root / rel)
        (root / "json").mkdir(exist_ok=True)
        _link(full / "json" / f"{i:05d}.json", root / "json" / f"{i:05d}.json")


def _case(root: Path, out: Path, resolution: int, workers: int) -> None:
    """Runs in its own process: prepare, then print one JSON line of timings and peak memory."""
    peak_anon = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak_anon[0] = max(peak_anon[0], int(line.split()[1]))

    from pivq.data import prepare_ffhq  # imports outside the timed region

    count = len(list(root.glob("json/*.json")))
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    prepare_ffhq(root, out, resolution=resolution, workers=workers)
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    mib = 1024  # ru_maxrss and /proc are in KiB on Linux
    print(json.dumps({
        "count": count,
        "workers": workers,
        "seconds": round(seconds, 2),
        "images_per_s": round(count / seconds, 1),
        "images_per_s_per_worker": round(count / seconds / workers, 1),
        "peak_rss_self_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mib, 1),
        "peak_rss_anon_self_mib": round(peak_anon[0] / mib, 1),
        "peak_rss_children_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mib, 1),
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, nargs="+", default=[200, 800], help="image counts, one run each")
    parser.add_argument("--size", type=int, default=1024, help="side of the synthetic PNGs")
    parser.add_argument("--resolution", type=int, default=256, help="prepared resolution")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    parser.add_argument("--unique", type=int, default=16, help="distinct PNGs (the rest are hard links)")
    parser.add_argument("--tmp", default=None, help="where to build the data (default: the system temp dir)")
    parser.add_argument("--_case", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._case:
        _case(Path(args._case[0]), Path(args._case[1]), args.resolution, args.workers)
        return

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_ffhq(tmp / "full", max(args.count), args.size, min(args.unique, max(args.count)))
        print(f"# made {max(args.count)} PNGs of {args.size}px ({args.unique} distinct) in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows = []
        for count in args.count:
            root = tmp / f"ffhq{count}"
            subset(tmp / "full", root, count)
            cmd = [sys.executable, __file__, "--_case", str(root), str(tmp / f"out{count}"),
                   "--resolution", str(args.resolution), "--workers", str(args.workers)]
            result = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            shutil.rmtree(tmp / f"out{count}")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
