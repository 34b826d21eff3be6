"""Inference cost of one passkey prompt: time and peak memory of prefill + generating the answer, per model and length.

What the study reports beside each method's scores when the method changes the architecture (SharedLLM) rather than
the positions: the cost of answering one prompt of the study's passkey task at each length, for saved models measured
side by side in one run. Every (model, length) runs in a fresh process (`measure_prompt` in a ``python -m`` worker),
so that its peak memory is its own:

- time: the median of ``repeats`` timed runs after one warm-up run (all kept in the table, one row per repetition);
- peak memory: on CPU the rise of the process's peak resident set (``ru_maxrss``) during the warm-up run over its
  level after the model was loaded and the prompt built (the method of ``benchmarks/bench_sharedllm.py``); on CUDA
  ``max_memory_allocated`` over the allocation before the run.

Each run generates exactly ``new_tokens`` tokens greedily (the passkey task's answer budget; end of sequence is
ignored), so that models which stop at different points cost the same work, and both kinds decode with the same plain
loop (prefill with a KV cache, then one token per step; `_generate`). Models alternate at each length so
that both see the same machine state. A directory holding a saved SharedLLM (`endprompt.sharedllm.is_sharedllm_dir`)
loads with `load_sharedllm`, any other with `endprompt.modeling.load_causal_lm`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

__all__ = ["COLUMNS", "load_model", "passkey_ids", "measure_prompt", "measure_saved", "inference_cost",
           "summarize_cost"]

COLUMNS = ["method", "length", "repeat", "seconds", "peak_memory_mib", "prompt_tokens", "new_tokens", "device",
           "threads"]


def load_model(path: str | Path):
    """A saved model in float32: a SharedLLM (by its marker file) or a causal LM."""
    import torch

    from endprompt.modeling import load_causal_lm
    from endprompt.sharedllm import is_sharedllm_dir, load_sharedllm

    return (load_sharedllm if is_sharedllm_dir(path) else load_causal_lm)(path, dtype=torch.float32).eval()


def passkey_ids(length: int, tokenizer, seed: int = 0):
    """The study's passkey prompt at ``length`` (compact style, the first sample of ``seed``): ``(1, T)`` token ids
    and the answer budget in tokens."""
    import torch

    from endprompt.evaluate.retrieval import passkey_samples

    sample = passkey_samples(length, tokenizer, 1, seed, "compact")[0]
    ids = tokenizer(sample.prompt, add_special_tokens=False).input_ids
    return torch.tensor([ids]), sample.max_new_tokens


def _generate(model, ids, new_tokens: int):
    """Greedy decoding of exactly ``new_tokens`` tokens after ``ids`` ``(1, T)``: `SharedLLM.generate` (no end of
    sequence given, so it never stops early), and for a stock model the same loop -- prefill with a KV cache, then one
    token per step -- so that neither pays for a heavier decoding loop (transformers' ``generate`` adds per-token work
    of its own: in a first run at 128 tokens, where SharedLLM runs exactly its base's layers, it took 1.9x as long)."""
    import torch
    from transformers import DynamicCache

    from endprompt.sharedllm import SharedLLM

    if isinstance(model, SharedLLM):
        return model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    out = model(input_ids=ids, past_key_values=DynamicCache(config=model.config), use_cache=True)
    new = []
    for i in range(new_tokens):
        token = out.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        new.append(token)
        if i + 1 < new_tokens:
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
    return torch.cat([ids, *new], dim=1)


def measure_prompt(model, ids, new_tokens: int, repeats: int = 3) -> dict:
    """Time and peak memory of prefill + greedy generation of ``new_tokens`` tokens after ``ids`` ``(1, T)`` (module
    docstring). Run it in a process of its own for a meaningful peak memory (`inference_cost` does)."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    device = next(model.parameters()).device
    ids = ids.to(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.no_grad():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        out = _generate(model, ids, new_tokens)
        sync()
        peak = (torch.cuda.max_memory_allocated() if cuda
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - before
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            _generate(model, ids, new_tokens)
            sync()
            seconds.append(time.perf_counter() - start)
    made = out.shape[1] - ids.shape[1]
    if made != new_tokens:
        raise RuntimeError(f"the model generated {made} tokens, not the {new_tokens} asked for")
    return {"seconds": seconds, "peak_memory_mib": peak / 2**20, "prompt_tokens": ids.shape[1], "new_tokens": made,
            "device": device.type, "threads": torch.get_num_threads()}


def measure_saved(path: str | Path, length: int, repeats: int, seed: int = 0, tokenizer: str = "byte") -> dict:
    """`measure_prompt` on the saved model at ``path`` with the passkey prompt of ``length`` tokens (``tokenizer``:
    "byte", a tokenizer directory, or "model" for the one saved with the model)."""
    import torch

    from endprompt.tokenizer import load_tokenizer

    tok = load_tokenizer(None if tokenizer == "model" else tokenizer, path)
    model = load_model(path).to("cuda" if torch.cuda.is_available() else "cpu")
    ids, budget = passkey_ids(length, tok, seed)
    return measure_prompt(model, ids, budget, repeats)


def inference_cost(models: Mapping[str, str | Path], lengths: Sequence[int], repeats: int = 5, seed: int = 0,
                   tokenizer: str = "byte", progress: bool = True, isolate: bool = True) -> pd.DataFrame:
    """Measure every saved model of ``models`` (method name -> directory) at every length, one fresh process each,
    alternating models at each length; returns the tidy table (`COLUMNS`, one row per timed repetition).
    ``isolate=False`` measures in this process (quicker; times are comparable, peak memory is not: it is the rise
    over the highest level any earlier work reached)."""
    if not models or not lengths:
        raise ValueError("inference_cost needs at least one model and one length")
    for name, path in models.items():
        if not (Path(path) / "config.json").is_file() and not (Path(path) / "base" / "config.json").is_file():
            raise FileNotFoundError(f"models[{name!r}] = {str(path)!r} is not a saved model directory")
    rows = []
    jobs = [(length, name) for length in lengths for name in models]
    for length, name in tqdm(jobs, desc="inference cost", unit="run", disable=not progress):
        if isolate:
            cmd = [sys.executable, "-m", "endprompt.inference_cost", str(models[name]), str(length), str(repeats),
                   str(seed), tokenizer]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"measuring {name} at {length} tokens failed:\n{done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            result = measure_saved(models[name], length, repeats, seed, tokenizer)
        for i, s in enumerate(result.pop("seconds")):
            rows.append({"method": name, "length": length, "repeat": i, "seconds": s, **result})
    return pd.DataFrame(rows, columns=COLUMNS)


def summarize_cost(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per method and length: median seconds, the spread (min, max), peak memory, and the ratios of ``reference``
    (e.g. the base with full attention) over the method: speed-up and memory saving (> 1: the method is cheaper)."""
    if reference not in set(table["method"]):
        raise ValueError(f"reference={reference!r} is not a method of the table: {sorted(set(table['method']))}")
    g = table.groupby(["method", "length"], sort=False)
    out = g.agg(median_s=("seconds", "median"), min_s=("seconds", "min"), max_s=("seconds", "max"),
                repeats=("seconds", "size"), peak_memory_mib=("peak_memory_mib", "first"),
                prompt_tokens=("prompt_tokens", "first")).reset_index()
    ref = out[out["method"] == reference].set_index("length")
    out["speedup_vs_reference"] = out["length"].map(ref["median_s"]) / out["median_s"]
    mem = out["peak_memory_mib"].where(out["peak_memory_mib"] > 0, np.nan)
    out["memory_ratio_vs_reference"] = out["length"].map(ref["peak_memory_mib"]) / mem
    return out


def _worker(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description="measure one saved model at one length (endprompt.inference_cost)")
    parser.add_argument("path")
    parser.add_argument("length", type=int)
    parser.add_argument("repeats", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("tokenizer")
    args = parser.parse_args(argv)
    print(json.dumps(measure_saved(args.path, args.length, args.repeats, args.seed, args.tokenizer)))


if __name__ == "__main__":
    _worker(sys.argv[1:])
