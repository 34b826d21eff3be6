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
PROMPTS = {1024: 4, 2048: 4, 4096: 2, 8192: 1, 16384: 1}
SCALINGS = {"pi": "linear", "dynamic-ntk": "dynamic", "yarn": "yarn"}


def cells() -> list[tuple[str, str, int, str]]:
    """(method, task, length, protocol) in the order they run, most informative first (the run may be cut short on
    a shared machine): 1K and 8K unscaled, 16K passkey and niah_single_1 for every scaling, 2K and 4K unscaled, the
    plain-prompt comparison at 1K and 2K, then 16K's other tasks."""
    proto = lambda task: "plain" if task == "passkey" else "chat"
    first = ("passkey", "niah_single_1")
    out = [("none", task, length, proto(task)) for length in (1024, 8192) for task in TASKS]
    out += [(m, t, 16384, proto(t)) for t in first for m in SCALINGS]
    out += [("none", task, length, proto(task)) for length in (2048, 4096) for task in TASKS]
    out += [("none", t, length, "plain") for length in (1024, 2048) for t in SYNTHETIC_TASKS]
    out += [(m, t, 16384, proto(t)) for t in TASKS if t not in first for m in SCALINGS]
    return out


def load(method: str, dtype: torch.dtype):
    path = resolve_model(MODEL)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if method != "none":
        extend_config(config, SCALINGS[method], 16384)  # factor 2, theta and original length from the checkpoint
    return load_causal_lm(path, dtype=dtype, config=config).eval()


def draw(table: pd.DataFrame, path: Path) -> Path:
    """Heatmap of the table: tasks x (length, scaling), exact-match scores, prompts per cell in the column label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = table[(table["status"] == "ok") & (table["metric"] != "digit_accuracy")]
    data = data[(data["protocol"] == "chat") | (data["task"] == "passkey")]
    names = {"none": "", "pi": "\nPI", "dynamic-ntk": "\ndyn. NTK", "yarn": "\nYaRN"}
    rank = {m: i for i, m in enumerate(names)}
    n = data.groupby(["length", "method"])["n"].transform("max")
    data = data.assign(column=[f"{int(length) // 1024}K{names[m]}\n(n={int(k)})"
                               for length, m, k in zip(data["length"], data["method"], n)],
                       order=data["length"] * 10 + data["method"].map(rank))
    order = list(data.sort_values("order")["column"].unique())
    grid = data.pivot_table(index="task", columns="column", values="score").reindex(columns=order)
    grid = grid.reindex([t for t in TASKS if t in grid.index])
    sns.set_theme(style="white", context="notebook")
    fig, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 3, 0.55 * grid.shape[0] + 2))
    sns.heatmap(grid, vmin=0, vmax=100, cmap="RdYlGn", annot=True, fmt=".0f", cbar_kws={"label": "score (%)"}, ax=ax)
    ax.axvline(data.loc[data["method"] == "none", "column"].nunique(), color="k", lw=2)  # | beyond 8K: scaled
    scaled = (data["method"] != "none").any()
    ax.set(xlabel="context length" + (" (scaled without training beyond the 8K pretraining length)" if scaled else ""),
           ylabel="",
           title="SmolLM2-135M-Instruct, offline on CPU: passkey and RULER's synthetic tasks")
    ax.tick_params(axis="x", rotation=0, labelsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/real"))
    parser.add_argument("--stop-after-s", type=float, default=None, help="start no new cell after this many seconds")
    parser.add_argument("--until", default=None, help="start no new cell after this wall-clock time (HH:MM)")
    parser.add_argument("--light", action="store_true",
                        help="2 prompts per cell at 1K and 2K only, stopping after 150 CPU-seconds: a run that fits "
                             "outside the heavy-job lock")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--figure", type=Path, default=Path("figures/03_real_smollm2.png"))
    parser.add_argument("--plot-only", action="store_true", help="draw the figure from the table and exit")
    args = parser.parse_args()
    if args.plot_only:
        print(draw(pd.read_csv(args.out / "table.csv"), args.figure))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    table_file = args.out / "table.csv"
    columns = ["method", "task", "length", "protocol"]
    done = pd.read_csv(table_file) if table_file.exists() else pd.DataFrame(columns=columns)
    finished = set(zip(done["method"], done["task"], done["length"].astype(int), done["protocol"]))
    dtype = getattr(torch, args.dtype)
    tokenizer = load_tokenizer(None, resolve_model(MODEL))
    start, models = time.perf_counter(), {}
    todo = cells()
    if args.light:
        PROMPTS.update({1024: 2, 2048: 2})
        todo = [c for c in todo if c[2] in (1024, 2048) and c[0] == "none" and c[3] == ("plain" if c[1] == "passkey"
                                                                                        else "chat")]
    (args.out / "run.json").write_text(json.dumps({
        "model": MODEL, "dtype": args.dtype, "light": args.light, "prompts_per_cell": PROMPTS,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "protocol": {"chat": "RULER's chat-model template (user turn, answer prefix after the assistant header), "
                             "greedy, stop at <|im_end|>", "plain": "the prompt as is, greedy, the full budget"}},
        indent=1))
    for method, task, length, protocol in todo:
        if (method, task, length, protocol) in finished:
            continue
        if args.light and time.process_time() > 150:
            print(f"light run: stopping after {time.process_time():.0f} CPU-seconds", flush=True)
            break
        late = args.until is not None and time.strftime("%H:%M") >= args.until
        if late or (args.stop_after_s is not None and time.perf_counter() - start > args.stop_after_s):
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
                                                      wall_s=time.perf_counter() - t0, dtype=args.dtype,
                                                      cpu_s=time.process_time())
        rows.to_csv(table_file, mode="a", header=not table_file.exists(), index=False)
        for _, r in rows.iterrows():
            print(f"{method:<12}{task:<17}{length:>6} {protocol:<6}{r['metric']:<20}{r['score']:>6.1f}  n={r['n']}  "
                  f"{r['wall_s']:.0f} s", flush=True)
    print(draw(pd.read_csv(table_file), args.figure))


if __name__ == "__main__":
    main()
