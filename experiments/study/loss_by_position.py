"""Where in the target-length window each arm's held-out loss sits: next-token NLL by position bucket at the target.

study-bpe's EndPrompt arms end with a higher perplexity at the target than they had after 1/8 of their budget, while
full-length fine-tuning's falls (README, claim 4). This reads the final weights a study kept (``keep_weights``) and the
base under each training-free scaling, scores windows of ``target_len`` tokens of the study's held-out text in one
forward pass each (every position counts, as in ``truncated`` perplexity), and averages the NLL per bucket of ``L0``
positions: bucket 0 holds the positions EndPrompt trains its text on, the last one its end prompt's positions. The base
is read unscaled (it was never trained past L0) and under PI, YaRN and dynamic NTK without training.

    OMP_NUM_THREADS=1 python experiments/study/loss_by_position.py --runs <study out>/runs \
        --out results/study-bpe/loss_by_position.csv --figure results/study-bpe/figures
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.no_grad()
def token_nll(model, ids: np.ndarray) -> np.ndarray:
    """Next-token NLL at positions 1..T-1 of one window ``ids`` (T,), scored in one forward pass."""
    x = torch.as_tensor(ids, dtype=torch.long)[None]  # (1, T)
    logits = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits.float()  # (1, T, V)
    return F.cross_entropy(logits[0, :-1], x[0, 1:], reduction="none").numpy()  # (T-1,)


def windows(docs: list[np.ndarray], length: int, count: int) -> list[np.ndarray]:
    out = [d[i : i + length] for d in docs for i in range(0, len(d) - length + 1, length)]
    return out[:count]


def main(argv=None) -> pd.DataFrame:
    from endprompt.modeling import load_causal_lm
    from endprompt.plotting import save
    from endprompt.reproduce import _base, _heldout_docs, _training_free, load_trained
    from endprompt.study import PRESETS, TRAINED, TRAINING_FREE
    from endprompt.tokenizer import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="study-bpe")
    parser.add_argument("--runs", type=Path, required=True, help="the study's runs/ directory (with final/ weights)")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    base = _base(cfg)
    wins = windows(_heldout_docs(load_tokenizer(None, base), cfg), cfg.target_len, args.windows)
    arms = [(m.group(1), int(m.group(2)), d / "final") for d in sorted(args.runs.iterdir())
            if (m := re.fullmatch(r"(.+)-seed(\d+)", d.name)) and (d / "final").is_dir() and (d / "eval.csv").exists()]
    # SharedLLM's upper model reads at most its local window and the rest compressed: one forward pass over a
    # target-length window is not how it reads text, so its loss by position would mean something else
    left_out = sorted({m for m, _, _ in arms if m in TRAINED and TRAINED[m].is_sharedllm})
    if left_out:
        print(f"left out: {', '.join(left_out)} (an architecture with a local window; scored by the study's sliding "
              "perplexity instead)")
    arms = [arm for arm in arms if arm[0] not in left_out]
    arms += [("base", -1, base)] + [(name, -1, None) for name in ("pi", "yarn", "dynamic-ntk") if name in TRAINING_FREE]
    rows = []
    for method, seed, path in tqdm(arms, desc="arms", unit="model"):
        if path is None:
            model = _training_free(base, method, cfg, "cpu")
        else:  # the base unscaled, or an arm's final weights
            model = load_causal_lm(path, dtype=torch.float32) if method == "base" else load_trained(method, path)
        model.eval()
        nll = np.mean([token_nll(model, w) for w in wins], axis=0)  # (T-1,): position p+1 predicted from 0..p
        positions = np.arange(1, cfg.target_len)
        for start in range(0, cfg.target_len, cfg.L0):
            part = nll[(positions >= start) & (positions < start + cfg.L0)]
            rows.append({"method": method, "seed": seed, "bucket_start": start, "mean_nll": float(part.mean()),
                         "ppl": float(np.exp(part.mean())), "windows": len(wins)})
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.pivot_table(index="method", columns="bucket_start", values="ppl").round(1).to_string())
    if args.figure:
        import matplotlib.pyplot as plt
        import seaborn as sns

        sns.set_theme(style="whitegrid")
        fig, ax = plt.subplots(figsize=(8, 4.5))
        sns.lineplot(data=table, x="bucket_start", y="ppl", hue="method", style="method", markers=True, dashes=False,
                     errorbar=("ci", 95), ax=ax)
        ax.set_xticks(sorted(table["bucket_start"].unique()))
        ax.set_xticklabels([f"{s}-{s + cfg.L0 - 1}" for s in sorted(table["bucket_start"].unique())], rotation=30)
        ax.set_xlabel(f"position in a {cfg.target_len}-token window")
        ax.set_ylabel("held-out perplexity")
        ax.set_title("Held-out perplexity by position at the target (final weights; 95% interval over seeds)")
        ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
        print(save(fig, f"02_{cfg.name}_loss_by_position", args.figure))
    return table


if __name__ == "__main__":
    main()
