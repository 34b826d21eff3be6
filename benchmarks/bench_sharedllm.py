"""Prefill time and peak memory of SharedLLM vs its base with full attention, at 1K..16K tokens, side by side.

The same random tiny Llama (default: the study's shape, 4 layers x 128, head_dim 32) is read two ways:
- ``full``: the base's forward over the whole prompt (full causal attention), no cache;
- ``sharedllm``: `SharedLLM.prefill`: query-aware selection, compression of the context chunks by the bottom M layers,
  the upper model over the local part with the context injected and its KV cache built (what generation does first).

Each (method, length) runs in a fresh process: time = median of ``--repeats`` runs after one warm-up; peak memory =
the rise of the process's peak resident set (``ru_maxrss``) during the first run over its level after the model was
built (CPU; on CUDA ``max_memory_allocated``). Methods alternate at each length so both see the same machine state.

    python benchmarks/bench_sharedllm.py [--lengths 1024,2048,4096,8192,16384] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def build(args):
    import torch

    from endprompt.modeling import build_tiny_llama
    from endprompt.sharedllm import SharedLLM, SharedLLMConfig

    base = build_tiny_llama(seed=0, num_layers=args.layers, hidden_size=args.hidden, num_heads=args.heads,
                            max_position_embeddings=max(int(x) for x in args.lengths.split(",")))
    model = SharedLLM(base, SharedLLMConfig(num_injected_layers=args.injected, chunk_size=args.chunk,
                                            local_window=args.window, init="normal")).eval()
    return torch, base, model


def worker(args) -> dict:
    torch, base, model = build(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    ids = torch.randint(0, 256, (1, args.length), generator=torch.Generator().manual_seed(0)).to(device)
    if args.method == "full":
        run = lambda: base(input_ids=ids, use_cache=False)
    else:
        run = lambda: model.prefill(ids[0])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        run()
        sync()
        peak = (torch.cuda.max_memory_allocated() if device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - before
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - start)
    return {"method": args.method, "length": args.length, "prefill_s": statistics.median(times),
            "prefill_s_all": times, "peak_mem_mib": peak / 2**20, "device": device,
            "threads": torch.get_num_threads(), "context_chunks": model.context_len(args.length) // args.chunk,
            "injected_tokens": model.context_len(args.length) // args.chunk * int(args.chunk / 8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--injected", type=int, default=1, help="M (paper: 4 of 32 layers)")
    parser.add_argument("--chunk", type=int, default=64, help="context chunk (study: L0 / 4)")
    parser.add_argument("--window", type=int, default=256, help="upper model's local window (study: L0)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(worker(args)))
        return
    from tqdm.auto import tqdm

    rows = []
    jobs = [(L, m) for L in (int(x) for x in args.lengths.split(",")) for m in ("full", "sharedllm")]
    common = [f"--{k}={getattr(args, k)}" for k in ("lengths", "repeats", "layers", "hidden", "heads", "injected",
                                                     "chunk", "window")]
    for length, method in tqdm(jobs, desc="bench_sharedllm"):
        out = subprocess.run([sys.executable, __file__, *common, f"--method={method}", f"--length={length}"],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'length':>7} {'full s':>9} {'shared s':>9} {'speed-up':>9} {'full MiB':>9} {'shared MiB':>11} "
          f"{'ratio':>6}")
    by = {(r["method"], r["length"]): r for r in rows}
    for length in sorted({r["length"] for r in rows}):
        f, s = by[("full", length)], by[("sharedllm", length)]
        mem_ratio = f["peak_mem_mib"] / max(s["peak_mem_mib"], 1e-9)
        print(f"{length:>7} {f['prefill_s']:>9.4f} {s['prefill_s']:>9.4f} {f['prefill_s'] / s['prefill_s']:>8.2f}x "
              f"{f['peak_mem_mib']:>9.1f} {s['peak_mem_mib']:>11.1f} {mem_ratio:>5.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items()
                                                            if k not in ("method", "length", "json")},
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
