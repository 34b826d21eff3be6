"""Throughput of the score polynomial and its derivatives (`endprompt.bound.score`), side by side with a direct
broadcast evaluation, in one run.

Workload of issue 3: S, S', S'' at 65536 distances x 64 frequencies x 1000 (q, k) pairs. A "term" is one
``c_j (i theta_j)^r e^{i d theta_j}`` for one order r, distance d, frequency j and pair. Goal: >= 1e8 terms/s.

    python benchmarks/bench_bound.py [--pairs 1000] [--distances 65536] [--freqs 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from endprompt import bound as B
from endprompt import rope as R


def direct(d: np.ndarray, coeffs: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Reference: broadcast every term, as a straightforward implementation would. Returns (3, P, N)."""
    phase = np.exp(1j * d[None, :, None] * inv_freq[None, None, :])  # (1, N, J)
    c = coeffs[:, None, :]  # (P, 1, J)
    return np.stack([(c * (1j * inv_freq) ** r * phase).real.sum(-1) for r in (0, 1, 2)])


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl)"
    return ", ".join(f"{i['internal_api']} {i.get('architecture', '')} x{i['num_threads']}" for i in threadpool_info())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--distances", type=int, default=65536)
    parser.add_argument("--freqs", type=int, default=64)
    parser.add_argument("--direct-pairs", type=int, default=20, help="pairs for the (slow) direct reference")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    inv_freq, _ = R.compute_inv_freq(R.for_extension("linear", 8192, 65536, rope_theta=500000.0), 2 * args.freqs)
    coeffs = B.random_coefficients(args.pairs, 2 * args.freqs, rng=0)
    d = np.arange(args.distances, dtype=np.float64)
    blas = _blas()

    start = time.perf_counter()
    out = B.score(d, coeffs, inv_freq, order=(0, 1, 2))
    fast_s = time.perf_counter() - start
    terms = 3 * args.pairs * args.distances * args.freqs

    sub = coeffs[: args.direct_pairs]
    start = time.perf_counter()
    ref = direct(d, sub, inv_freq)
    direct_s = time.perf_counter() - start
    direct_terms = 3 * len(sub) * args.distances * args.freqs
    err = float(np.abs(ref - out[:, : len(sub)]).max() / np.abs(ref).max())

    rows = {"terms": terms, "seconds": fast_s, "terms_per_s": terms / fast_s,
            "direct_terms_per_s": direct_terms / direct_s, "speedup_vs_direct": (terms / fast_s) /
            (direct_terms / direct_s), "max_rel_diff_vs_direct": err, "blas": blas}
    print(f"workload: S, S', S'' at {args.distances} distances x {args.freqs} frequencies x {args.pairs} pairs "
          f"= {terms:.3g} terms   (BLAS: {blas})")
    print(f"endprompt.bound.score   {fast_s:8.2f} s   {terms / fast_s:.3g} terms/s")
    print(f"direct broadcast        {direct_s:8.2f} s   {direct_terms / direct_s:.3g} terms/s  ({len(sub)} pairs)")
    print(f"speed-up {rows['speedup_vs_direct']:.1f}x, max relative difference {err:.1e}; goal 1e8 terms/s: "
          f"{'met' if terms / fast_s >= 1e8 else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, **rows}, indent=2))


if __name__ == "__main__":
    main()
