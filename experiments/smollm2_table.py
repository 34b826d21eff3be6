"""The real-model table: SmolLM2-135M-Instruct (alias ``smollm2-135m``) on passkey and RULER's synthetic tasks.

Its own length (L0 = 8192) at 1K, 2K, 4K, 8K unscaled; 16K with PI, dynamic NTK and YaRN (factor 2) without training.
Each task follows its reference's protocol: RULER's tasks RULER's protocol for chat models (`endprompt.evaluate.chat`:
the task as the user's turn, the answer prefix opening the reply, generation stops at ``<|im_end|>``); passkey the PI
paper's plain continuation (the instruct model answers it only that way: in the chat turn it writes "The pass key is
the pass key."), 12 new tokens. Greedy decoding, bfloat16 weights on CPU (RoPE tables in float32, as transformers
computes them). Last, RULER's tasks once more at 1K and 2K with plain prompts (RULER's base-model protocol, which fills
the 128-token budget) to compare the protocols.

Cells run cheapest first and each finished cell is appended to ``<out>/table.csv`` at once, so an interrupted run
continues where it stopped (``--stop-after-s`` ends it cleanly between cells). A heavy job on this machine:

    nohup flock /tmp/endprompt-heavy.lock env OMP_NUM_THREADS=1 python experiments/smollm2_table.py > real.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from endprompt.evaluate import evaluate
from endprompt.evaluate.ruler import SYNTHETIC_TASKS
from endprompt.modeling import extend_config, load_causal_lm, resolve_model
from endprompt.tokenizer import load_tokenizer

MODEL = "smollm2-135m"
TASKS = ("passkey", *SYNTHETIC_TASKS)
PROMPTS = {1024: 5, 2048: 5, 4096: 3, 8192: 2, 16384: 1}
SCALINGS = {"pi": "linear", "dynamic-ntk": "dynamic", "yarn": "yarn"}


def cells() -> list[tuple[str, str, int, str]]:
    """(method, task, length, protocol) in the order they run: unscaled by length, then 16K passkey and niah_single_1
    for every scaling, then 16K's other tasks, then the plain-prompt comparison."""
    proto = lambda task: "plain" if task == "passkey" else "chat"
    out = [("none", task, length, proto(task)) for length in (1024, 2048, 4096, 8192) for task in TASKS]
    first = ("passkey", "niah_single_1")
    out += [(m, t, 16384, proto(t)) for t in first for m in SCALINGS]
    out += [(m, t, 16384, proto(t)) for t in TASKS if t not in first for m in SCALINGS]
    out += [("none", t, length, "plain") for length in (1024, 2048) for t in SYNTHETIC_TASKS]
    return out


def load(method: str, dtype: torch.dtype):
    path = resolve_model(MODEL)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if method != "none":
        extend_config(config, SCALINGS[method], 16384)  # factor 2, theta and original length from the checkpoint
    return load_causal_lm(path, dtype=dtype, config=config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/real"))
    parser.add_argument("--stop-after-s", type=float, default=None, help="start no new cell after this many seconds")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table_file = args.out / "table.csv"
    columns = ["method", "task", "length", "protocol"]
    done = pd.read_csv(table_file) if table_file.exists() else pd.DataFrame(columns=columns)
    finished = set(zip(done["method"], done["task"], done["length"].astype(int), done["protocol"]))
    dtype = getattr(torch, args.dtype)
    (args.out / "run.json").write_text(json.dumps({
        "model": MODEL, "dtype": args.dtype, "prompts_per_cell": PROMPTS, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "protocol": {"chat": "RULER's chat-model template (user turn, answer prefix after the assistant header), "
                             "greedy, stop at <|im_end|>", "plain": "the prompt as is, greedy, the full budget"}},
        indent=1))
    tokenizer = load_tokenizer(None, resolve_model(MODEL))
    start, models = time.perf_counter(), {}
    for method, task, length, protocol in cells():
        if (method, task, length, protocol) in finished:
            continue
        if args.stop_after_s is not None and time.perf_counter() - start > args.stop_after_s:
            print(f"stopping after {time.perf_counter() - start:.0f} s; rerun to continue", flush=True)
            break
        if method not in models:
            models = {method: load(method, dtype)}  # one model in memory at a time
        suite, tasks = ("passkey", None) if task == "passkey" else ("synthetic", [task])
        t0 = time.perf_counter()
        rows = evaluate(models[method], tokenizer, suite, [length], num_samples=PROMPTS[length], seed=0,
                        batch_size=max(1, 8192 // length), tasks=tasks, model_name=MODEL, progress=False,
                        chat=protocol == "chat")
        rows = rows[rows["metric"] != "k_max"].assign(method=method, protocol=protocol,
                                                      wall_s=time.perf_counter() - t0, dtype=args.dtype)
        rows.to_csv(table_file, mode="a", header=not table_file.exists(), index=False)
        for _, r in rows.iterrows():
            print(f"{method:<12}{task:<17}{length:>6} {protocol:<6}{r['metric']:<20}{r['score']:>6.1f}  n={r['n']}  "
                  f"{r['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
