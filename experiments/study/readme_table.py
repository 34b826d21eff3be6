"""The README's per-seed table of a study, printed as markdown from its committed tables (no number typed by hand).

`endprompt.study_tables.seed_table` on ``results.csv``, ``curves.csv`` and ``costs.csv``: one row per trained arm and
seed (the base and the training-free arms: one row, their mean over seeds), passkey exact match (%) at every evaluated
length, passkey digit accuracy (%) and held-out perplexity at the target after the first learning-curve point and after
the whole budget.

    python experiments/study/readme_table.py results/study-bpe
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from endprompt.reproduce import study_lengths
from endprompt.study import TRAINING_FREE
from endprompt.study_tables import seed_table

NAMES = {"base": "base (no extension)", "full": "full-length (PI)", "endprompt": "EndPrompt (PI, cue set)",
         "endprompt-yarn": "EndPrompt with YaRN", "full-yarn": "full-length with YaRN", "pose": "PoSE",
         "endprompt-pose": "ET(PoSE)", "endprompt-end": 'EndPrompt, "End."', "endprompt-eot": "EndPrompt, end-of-turn",
         "endprompt-tail": "EndPrompt, own tail", "endprompt-random": "EndPrompt, tail at a random place",
         "longlora": "LongLoRA (LoRA+ r=8, S2-Attn)", "sharedllm": "SharedLLM (L0 + 4 chunks, no PI)",
         "pi": "PI x8, no training", "dynamic-ntk": "dynamic NTK, no training", "yarn": "YaRN x8, no training"}


def markdown(table: pd.DataFrame, target_len: int) -> list[str]:
    lengths = [int(c.split("@")[1]) for c in table.columns if c.startswith("passkey@")]
    head = ["arm", "seed", "physical tokens", "passkey " + " / ".join(map(str, lengths)), f"digits at {target_len}",
            f"ppl at {target_len}: first point -> all"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    order = {m: i for i, m in enumerate(NAMES)}
    for row in sorted(table.to_dict("records"), key=lambda r: order.get(r["method"], len(order))):
        n = row["train_tokens"]
        tokens = "0" if row["method"] in TRAINING_FREE else "-" if pd.isna(n) else f"{n / 1e6:.1f}M"
        passkey = " / ".join(f"**{row[f'passkey@{n}']:.0f}**" if n == target_len else f"{row[f'passkey@{n}']:.0f}"
                             for n in lengths)
        ppl = f"{row['ppl_final']:.1f}"
        ppl = ppl if pd.isna(row["ppl_first"]) else f"{row['ppl_first']:.1f} -> {ppl}"
        seed = row["seed"] + (" (mean)" if "-" in row["seed"] else "")
        lines.append("| " + " | ".join([NAMES.get(row["method"], row["method"]), seed, tokens, passkey,
                                        f"{row['digits@target']:.0f}", ppl]) + " |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a study's output directory (results.csv, costs.csv, study.json)")
    out = parser.parse_args(argv).study
    target = study_lengths(out)[1]
    curves = pd.read_csv(out / "curves.csv") if (out / "curves.csv").exists() else pd.DataFrame()
    table = seed_table(pd.read_csv(out / "results.csv"), curves, pd.read_csv(out / "costs.csv"), target,
                       pooled=("base", *TRAINING_FREE))
    print("\n".join(markdown(table, target)))


if __name__ == "__main__":
    main()
