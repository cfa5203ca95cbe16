"""Benchmark pivq.metrics.prdc_chunked.compute_prdc (chunked, exact) against prdc.compute_prdc.

Each case runs in its own subprocess; peak memory is that process's max RSS
(resource.getrusage(RUSAGE_SELF).ru_maxrss), which includes the interpreter, torch and the inputs.

    .venv/bin/python benchmarks/bench_prdc.py                      # ours vs prdc at 2k/5k/10k, then ours at 50k
    .venv/bin/python benchmarks/bench_prdc.py --compare 2000 5000 --n 20000 --dim 2048
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import time


def _case(impl: str, n: int, dim: int, k: int, device: str | None, chunk: int | None) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    real = rng.standard_normal((n, dim), dtype=np.float32)
    fake = rng.standard_normal((n, dim), dtype=np.float32)
    fake += 0.02
    if impl == "ours":
        from pivq.metrics.prdc_chunked import DEFAULT_CHUNK
        from pivq.metrics.prdc_chunked import compute_prdc as ours

        fn = lambda: ours(real, fake, nearest_k=k, device=device, chunk=chunk or DEFAULT_CHUNK)  # noqa: E731
    else:
        from prdc import compute_prdc as ref

        def fn():
            with contextlib.redirect_stdout(io.StringIO()):
                return {key: float(v) for key, v in ref(real, fake, nearest_k=k).items()}

    t0 = time.perf_counter()  # imports (torch, sklearn) excluded from the time, not from the RSS
    out = fn()
    seconds = time.perf_counter() - t0
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux: KiB
    print(json.dumps(dict(impl=impl, n=n, dim=dim, seconds=seconds, peak_rss_gib=rss_gib, result=out)))


def run_case(impl, n, dim, k, device, chunk):
    cmd = [sys.executable, __file__, "--_case", impl, "--n", str(n), "--dim", str(dim), "--k", str(k)]
    if device:
        cmd += ["--device", device]
    if chunk:
        cmd += ["--chunk", str(chunk)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return dict(impl=impl, n=n, error=res.stderr.strip().splitlines()[-1:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", type=int, nargs="*", default=[2000, 5000, 10000], help="N for ours vs prdc")
    ap.add_argument("--n", type=int, default=50000, help="N (real = fake) for ours alone; 0 to skip")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--compare-dim", type=int, default=None, help="dim for the comparison (default --dim)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--device", default=None, help="device for ours (default cuda if available else cpu)")
    ap.add_argument("--chunk", type=int, default=None)
    ap.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._case:
        return _case(a._case, a.n, a.dim, a.k, a.device, a.chunk)

    cdim = a.compare_dim or a.dim
    print(f"{'N':>7} {'dim':>5} {'impl':>5} {'seconds':>9} {'peak RSS GiB':>13}  max|diff|", flush=True)
    for n in a.compare:
        ours = run_case("ours", n, cdim, a.k, a.device, a.chunk)
        ref = run_case("prdc", n, cdim, a.k, None, None)
        for r in (ours, ref):
            if "error" in r:
                print(f"{n:>7} {cdim:>5} {r['impl']:>5}  ERROR {r['error']}", flush=True)
        if "error" in ours or "error" in ref:
            continue
        diff = max(abs(ours["result"][key] - ref["result"][key]) for key in ref["result"])
        for r in (ours, ref):
            print(f"{n:>7} {cdim:>5} {r['impl']:>5} {r['seconds']:>9.2f} {r['peak_rss_gib']:>13.3f}  {diff:.1e}")
        print(
            f"{'':>7} {'':>5} ratio ours/prdc: time {ours['seconds'] / ref['seconds']:.2f}, "
            f"peak RSS {ours['peak_rss_gib'] / ref['peak_rss_gib']:.2f}   {ref['result']}",
            flush=True,
        )
    if a.n:
        r = run_case("ours", a.n, a.dim, a.k, a.device, a.chunk)
        if "error" in r:
            print(f"{a.n:>7} {a.dim:>5}  ours ERROR {r['error']}")
        else:
            print(f"{a.n:>7} {a.dim:>5}  ours {r['seconds']:>9.2f} {r['peak_rss_gib']:>13.3f}   {r['result']}")


if __name__ == "__main__":
    main()
