# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — The 8K → 64K extension study, in miniature
#
# A tiny Llama pretrained at $L_0 = 256$ tokens is extended 8× to 2048 (the paper's 8K → 64K ratio) by each method
# with matched training-token budgets, then evaluated from $L_0/2$ to $16 L_0$ (see `endprompt.reproduce`).
# This notebook loads the newest committed study: `results/study-bpe/` (the BPE base, 8M tokens per arm, learning
# curves; in progress), else `results/study/` (the byte base, 2M tokens), else `results/demo/`; if none exists it runs
# the demo. `ENDPROMPT_FAST=1` runs the tiny smoke preset with a two-point learning curve in a temporary directory
# instead (what CI executes).

# %%
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

from endprompt import claims, plotting, study_tables
from endprompt.reproduce import base_scores, run_study
from endprompt.study import PRESETS

FAST = os.environ.get("ENDPROMPT_FAST") == "1"
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
if FAST:
    tmp = Path(tempfile.mkdtemp())
    cfg = replace(PRESETS["smoke"], out_dir=str(tmp / "smoke"), cache_dir=str(tmp / "cache"), curve=(0.5, 1.0))
    table = run_study(cfg)
else:
    found = [ROOT / "results" / n for n in ("study-bpe", "study", "demo")
             if (ROOT / "results" / n / "results.csv").exists()]
    cfg = PRESETS[found[0].name if found else "demo"]
    if not found:
        cfg = replace(cfg, out_dir=str(ROOT / cfg.out_dir), cache_dir=str(ROOT / cfg.cache_dir))
        table = run_study(cfg)
    else:
        table = pd.read_csv(found[0] / "results.csv")
print(f"{cfg.name}: {table['method'].nunique()} methods x {table['seed'].nunique()} seeds, {len(table)} rows")

# %% [markdown]
# ## The base model at its own length
# The extension only makes sense if the base can retrieve within $L_0$ (target: ≥ 90% passkey).

# %%
print(base_scores(table, cfg.L0).round(2).to_string(index=False))

# %% [markdown]
# ## Paper-style table
# Mean retrieval score (exact match: passkey and the preset's RULER tasks) per length, its average with the 95%
# t-interval over seeds, passkey $k_{max}$, passkey digit accuracy (share of the key's digits right, place by place;
# chance 10%) averaged over lengths and at the target, held-out perplexity (sliding window) at the target, and the
# training cost.

# %%
summary = study_tables.study_table(table, cfg.target_len)
print(summary.round(2).to_string(index=False))

# %% [markdown]
# ## Passkey digit accuracy and perplexity by length
# Mean over seeds; exact-match retrieval collapses after an 8x PI extension at this scale, the digit score and the
# perplexity still separate the methods.

# %%
digits = study_tables.passkey_digits(table).pivot_table(index="method", columns="length", values="score")
print(digits.round(1).to_string())
ppl = table[(table["metric"] == "ppl_sliding") & (table["status"] == "ok")]
print(ppl.pivot_table(index="method", columns="length", values="score").round(2).to_string())

# %% [markdown]
# ## Figures: score, digit accuracy and perplexity by length, per-task scores at the target, cost vs score, needles

# %%
out = None if not FAST else Path(cfg.out_dir)
paths = plotting.study_figures(study_tables.figure_tables(table, cfg.target_len), cfg.L0, cfg.target_len, out,
                               prefix=f"02_{cfg.name}")
print("\n".join(str(p) for p in paths))

# %% [markdown]
# ## Learning curves: at what fraction of full-length fine-tuning's cost does each method reach its quality?
# Every trained arm evaluated at points of its budget (`StudyConfig.curve`), at the target length; for each measure,
# the first point at which a method's mean over seeds reaches full-length fine-tuning's final score, as a fraction of
# full-length's tokens and wall time (`study_tables.cost_to_quality`; NaN: not reached within the budget).

# %%
curves_csv = Path(cfg.out_dir if FAST else found[0] if found else cfg.out_dir) / "curves.csv"
if curves_csv.exists():
    curves = study_tables.curve_table(pd.read_csv(curves_csv), cfg.target_len)
    paths.append(plotting.save(plotting.plot_learning_curves(curves, cfg.target_len), f"02_{cfg.name}_learning_curves",
                               out))
    if "full" in set(curves["method"]):
        reach = study_tables.cost_to_quality(curves, reference="full")
        print(reach.round(3).to_string(index=False))
else:
    print(f"{cfg.name} has no learning curves")

# %% [markdown]
# ## The paper's claims, judged
# Each claim is a set of comparisons between two arms on one measure (passkey at $L_0$ and at the target, digit
# accuracy, niah_single_1 and perplexity at the target, the last as a log ratio), paired by seed: two arms differ when
# the paired t-test is below 0.05 after Holm's correction over the claim's comparisons; claim (3) needs the whole 95%
# interval within an equivalence margin (10 points, 5% of perplexity), claim (4) compares each arm's change from
# target/2 to the target (`endprompt.claims`). A claim is contradicted when a comparison goes against it, supported
# when one speaks for it and none against (claim (3): when every readable comparison is equivalent; partly supported
# when some are and the others inconclusive). With three seeds "no difference detected" is not "equal".

# %%
judged = claims.judge_claims(table, cfg.L0, cfg.target_len)
print(claims.verdicts(judged).to_string(index=False))
measured = judged[judged["outcome"] != "not measured"]
print(measured.drop(columns=["label"]).round(2).to_string(index=False))

# %%
assert {"score_by_length", "tasks_at_target"} <= {p.stem.split(f"02_{cfg.name}_")[-1] for p in paths}
assert summary["method"].nunique() == table["method"].nunique()
assert set(claims.verdicts(judged)["claim"]) == set(claims.CLAIMS)
assert not FAST or {"measure", "reached", "token_fraction", "time_fraction"} <= set(reach.columns)
print("checks passed")
