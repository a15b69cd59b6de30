"""Benchmark ``sepkit.metrics.bss_eval`` against fast_bss_eval and mir_eval.

Times BSS Eval v3 (sources, 512-tap filters, permutation solved) on 2 and 4 sources of
10 s at 16 kHz, for the three implementations in one run, checks that they agree, and
prints a markdown table with the ratios. With a CUDA GPU it also times a batch of 100
items evaluated in one call against a Python loop over the items.

Usage::

    python benchmarks/metrics.py                  # CPU, 1 thread, all three tools
    python benchmarks/metrics.py --no-mir-eval    # skip mir_eval (minutes for 4 sources)
    python benchmarks/metrics.py --threads 2 --repeats 5 --json out.json

mir_eval and fast_bss_eval are test extras (``pip install -e .[test]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib.metadata import version


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", default="2,4", help="comma-separated source counts")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=16000)
    p.add_argument("--filter-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="best of N for sepkit/fast_bss_eval")
    p.add_argument("--threads", type=int, default=1, help="BLAS/torch threads")
    p.add_argument("--no-mir-eval", action="store_true", help="skip mir_eval (slow)")
    p.add_argument("--gpu-batch", type=int, default=100, help="items in the GPU batch test")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def _best(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _case(rng, n_src, n_times):
    """Dry sources and estimates with filtering, leakage, noise and a shuffled order."""
    import numpy as np
    from scipy.signal import lfilter

    S = rng.standard_normal((n_src, n_times))
    E = np.stack(
        [lfilter([1.0, 0.5, -0.3], [1.0], S[j]) + 0.3 * S[(j + 1) % n_src] for j in range(n_src)]
    )
    E += 0.1 * rng.standard_normal(E.shape)
    return S, E[rng.permutation(n_src)]


def main(argv=None) -> int:
    args = _parse(argv)
    # Pin the thread count before numpy / torch load their BLAS, for a fair comparison.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import warnings

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import fast_bss_eval

    from sepkit import metrics as M

    rng = np.random.default_rng(0)
    n_times = int(args.seconds * args.rate)
    L = args.filter_length
    rows = []
    # Warm-up (first-call costs of torch / scipy are not what we want to time).
    S0, E0 = _case(rng, 2, 4000)
    M.bss_eval(S0, E0, filter_length=L)
    fast_bss_eval.bss_eval_sources(S0, E0, filter_length=L)

    for n_src in (int(x) for x in args.sources.split(",")):
        S, E = _case(rng, n_src, n_times)
        t_ours, ours = _best(lambda S=S, E=E: M.bss_eval(S, E, filter_length=L), args.repeats)
        t_fbe, fbe = _best(
            lambda S=S, E=E: fast_bss_eval.bss_eval_sources(S, E, filter_length=L), args.repeats
        )
        diff_fbe = max(float(np.max(np.abs(a - b))) for a, b in zip(ours[:3], fbe[:3], strict=True))
        row = {
            "n_sources": n_src,
            "sepkit_s": t_ours,
            "fast_bss_eval_s": t_fbe,
            "fast_bss_eval_over_sepkit": t_fbe / t_ours,
            "max_abs_diff_db_vs_fast_bss_eval": diff_fbe,
            "same_perm_as_fast_bss_eval": bool(np.array_equal(ours.perm, fbe[3])),
        }
        if not args.no_mir_eval and L == 512:
            import mir_eval.separation

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_mir, mir = _best(lambda S=S, E=E: mir_eval.separation.bss_eval_sources(S, E), 1)
            row["mir_eval_s"] = t_mir
            row["mir_eval_over_sepkit"] = t_mir / t_ours
            row["max_abs_diff_db_vs_mir_eval"] = max(
                float(np.max(np.abs(a - b))) for a, b in zip(ours[:3], mir[:3], strict=True)
            )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    gpu = None
    if torch.cuda.is_available():
        n_src, B = 2, args.gpu_batch
        S = torch.randn(B, n_src, n_times, dtype=torch.float64, device="cuda")
        E = S.flip(1) + 0.3 * torch.randn_like(S)
        M.bss_eval(S[:2], E[:2], filter_length=L)  # warm-up

        def batched():
            out = M.bss_eval(S, E, filter_length=L)
            torch.cuda.synchronize()
            return out

        def loop():
            out = [M.bss_eval(S[b], E[b], filter_length=L) for b in range(B)]
            torch.cuda.synchronize()
            return out

        t_batch, _ = _best(batched, args.repeats)
        t_loop, _ = _best(loop, 1)
        gpu = {
            "device": torch.cuda.get_device_name(0),
            "items": B,
            "n_sources": n_src,
            "batched_s": t_batch,
            "loop_s": t_loop,
            "loop_over_batched": t_loop / t_batch,
        }

    print(
        f"\nbss_eval, {args.seconds:g} s at {args.rate} Hz, filter_length={L}, permutation "
        f"solved; CPU threads={args.threads}; {platform.processor() or platform.machine()}; "
        f"torch {torch.__version__}, fast_bss_eval {version('fast_bss_eval')}, "
        f"mir_eval {version('mir_eval')}\n"
    )
    head = "| sources | sepkit (s) | fast_bss_eval (s) | fast_bss_eval / sepkit |"
    sep = "|---|---|---|---|"
    with_mir = all("mir_eval_s" in r for r in rows)
    if with_mir:
        head += " mir_eval (s) | mir_eval / sepkit |"
        sep += "---|---|"
    head += " max abs diff vs fast_bss_eval (dB) |"
    sep += "---|"
    print(head)
    print(sep)
    for r in rows:
        line = (
            f"| {r['n_sources']} | {r['sepkit_s']:.3f} | {r['fast_bss_eval_s']:.3f} "
            f"| {r['fast_bss_eval_over_sepkit']:.2f}x |"
        )
        if with_mir:
            line += f" {r['mir_eval_s']:.2f} | {r['mir_eval_over_sepkit']:.1f}x |"
        line += f" {r['max_abs_diff_db_vs_fast_bss_eval']:.1e} |"
        print(line)
    if gpu:
        print(
            f"\nGPU ({gpu['device']}): {gpu['items']} items x {gpu['n_sources']} sources, "
            f"batched {gpu['batched_s']:.3f} s vs loop {gpu['loop_s']:.3f} s "
            f"({gpu['loop_over_batched']:.1f}x)"
        )
    else:
        print("\nGPU: no CUDA device here; batched-vs-loop comparison not run.")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": rows, "gpu": gpu, "threads": args.threads}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
