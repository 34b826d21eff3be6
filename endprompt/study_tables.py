"""Statistics of the small-scale study (`endprompt.reproduce`): tidy tables from its ``results.csv`` rows.

The paper-style summary (`study_table`, with 95% t-intervals over seeds) and the per-figure tables that
`endprompt.plotting.study_figures` draws (`figure_tables`). Everything here computes; plotting only draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["RETRIEVAL_TASKS", "AUX_METRICS", "CURVE_MEASURES", "ok_rows", "study_scores", "passkey_digits", "ci95",
           "study_table", "passkey_table", "figure_tables", "curve_table", "cost_to_quality", "seed_table"]

RETRIEVAL_TASKS = ("passkey", "niah_single_1", "niah_multikey_2", "vt")
AUX_METRICS = ("k_max", "digit_accuracy")
"""Rows that are not a task score and stay out of the mean over tasks (passkey's effective length and digit score)."""


def ok_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows whose evaluation ran (``status == "ok"``)."""
    return table[table["status"] == "ok"]


def study_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, seed and length: the mean retrieval score over the tasks that ran (passkey, niah, vt)."""
    data = ok_rows(table[table["task"].isin(RETRIEVAL_TASKS) & ~table["metric"].isin(AUX_METRICS)])
    return data.groupby(["method", "seed", "length"], as_index=False)["score"].mean()


def passkey_digits(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, seed and length: passkey digit accuracy (`endprompt.evaluate.scoring.digit_accuracy`)."""
    data = ok_rows(table[(table["task"] == "passkey") & (table["metric"] == "digit_accuracy")])
    return data.groupby(["method", "seed", "length"], as_index=False)["score"].mean()


def ci95(values: pd.Series) -> float:
    """Half-width of the 95% Student-t interval of the mean (NaN for fewer than two values)."""
    from scipy import stats

    n = values.count()
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def study_table(table: pd.DataFrame, target_len: int) -> pd.DataFrame:
    """The paper-style table: per method, the mean retrieval score at each length and on average (with the 95%
    t-interval over seeds), passkey k_max, passkey digit accuracy (mean over lengths, and at the target), held-out
    perplexity at the target, training cost."""
    scores = study_scores(table)
    wide = scores.pivot_table(index=["method", "seed"], columns="length", values="score").reset_index()
    lengths = [c for c in wide.columns if isinstance(c, (int, np.integer))]
    wide["avg"] = wide[lengths].mean(axis=1)
    rows = []
    for method, group in wide.groupby("method", sort=False):
        row = {"method": method, "seeds": len(group)}
        for col in [*lengths, "avg"]:
            row[str(col)] = group[col].mean()
        row["avg_ci95"] = ci95(group["avg"])
        kmax = table[(table["method"] == method) & (table["metric"] == "k_max")]["score"]
        row["passkey_k_max"] = kmax.mean() if len(kmax) else np.nan
        digits = passkey_digits(table[table["method"] == method])
        row["digits_avg"] = digits.groupby("seed")["score"].mean().mean() if len(digits) else np.nan
        row[f"digits@{target_len}"] = digits[digits["length"] == target_len]["score"].mean()
        ppl = ok_rows(table[(table["method"] == method) & (table["metric"] == "ppl_sliding")
                            & (table["length"] == target_len)])["score"]
        row[f"ppl@{target_len}"] = ppl.mean() if len(ppl) else np.nan
        for col in ("train_tokens", "wall_time_s", "peak_memory_gb"):
            if col in table:
                row[col] = table[table["method"] == method][col].mean()
        rows.append(row)
    return pd.DataFrame(rows).sort_values("avg", ascending=False)


def passkey_table(table: pd.DataFrame) -> pd.DataFrame:
    """Passkey exact match (%) per method and length, mean over seeds, with each method's physical training tokens
    (mean over seeds): the one retrieval task every base here learned, as a newcomer reads a study's outcome."""
    data = ok_rows(table[(table["task"] == "passkey") & (table["metric"] == "accuracy")])
    wide = data.pivot_table(index="method", columns="length", values="score", aggfunc="mean")
    wide.columns = [f"passkey@{c}" for c in wide.columns]
    if "train_tokens" in table:
        wide.insert(0, "train_tokens", table.groupby("method")["train_tokens"].mean().reindex(wide.index))
    return wide.reset_index()


def figure_tables(table: pd.DataFrame, target_len: int) -> dict[str, pd.DataFrame]:
    """The tables `endprompt.plotting.study_figures` draws, by name.

    ``scores`` and ``digits`` (per method, seed, length; the figures draw their 95% interval over seeds),
    ``tasks_at_target`` (mean score per method and task at the target; digit accuracy as task "passkey (digits)"),
    ``cost`` (mean wall time and tokens per method with the score at the target: digit accuracy where measured, as
    exact-match scores are mostly 0 after extension at this scale; column ``label`` names it), ``perplexity``
    (held-out sliding-window rows), ``needle`` (mean per method, depth and length). Empty tables are left out.
    """
    scores, digits = study_scores(table), passkey_digits(table)
    out = {"scores": scores, "digits": digits}
    at = ok_rows(table[(table["length"] == target_len) & table["task"].isin(RETRIEVAL_TASKS)
                       & (table["metric"] != "k_max")])
    at = at.assign(task=np.where(at["metric"] == "digit_accuracy", "passkey (digits)", at["task"]))
    out["tasks_at_target"] = at.groupby(["method", "task"], as_index=False)["score"].mean()
    if "wall_time_s" in table:
        cost = table.groupby("method", as_index=False)[["wall_time_s", "train_tokens"]].mean()
        source, label = (digits, "passkey digit accuracy") if len(digits) else (scores, "retrieval score")
        avg = source[source["length"] == target_len].groupby("method", as_index=False)["score"].mean()
        out["cost"] = cost.merge(avg, on="method").assign(label=label)
    out["perplexity"] = ok_rows(table[(table["task"] == "perplexity") & (table["metric"] == "ppl_sliding")])
    needle = ok_rows(table[table["task"] == "needle"])
    out["needle"] = needle.groupby(["method", "depth", "length"], as_index=False)["score"].mean()
    return {name: frame for name, frame in out.items() if len(frame)}


CURVE_MEASURES = {("passkey", "accuracy"): "passkey exact match (%)",
                  ("passkey", "digit_accuracy"): "passkey digit accuracy (%)",
                  ("niah_single_1", "string_match_all"): "niah_single_1 (%)",
                  ("perplexity", "ppl_sliding"): "held-out perplexity"}
"""The learning curves' measures: (task, metric) -> label."""


def curve_table(curves: pd.DataFrame, length: int) -> pd.DataFrame:
    """The learning curves at one ``length`` (the target): per method, budget point and seed, each of
    `CURVE_MEASURES` (column ``measure``) against physical training tokens and training wall time. Each point's x is
    the mean over seeds of that point (the seeds' token counts differ a little for the cue recipes, their wall times
    more), so a figure draws one line per method with the 95% interval over seeds in y."""
    data = ok_rows(curves[curves["length"] == length])
    keys = pd.MultiIndex.from_frame(data[["task", "metric"]])
    data = data[keys.isin(list(CURVE_MEASURES))]
    data = data.assign(measure=[CURVE_MEASURES[(t, m)] for t, m in zip(data["task"], data["metric"])])
    per_seed = data.groupby(["method", "budget_fraction", "seed", "measure"], as_index=False).agg(
        score=("score", "mean"), train_tokens=("train_tokens", "first"), wall_time_s=("wall_time_s", "first"))
    x = per_seed.groupby(["method", "budget_fraction"], as_index=False)[["train_tokens", "wall_time_s"]].mean()
    return per_seed.drop(columns=["train_tokens", "wall_time_s"]).merge(x, on=["method", "budget_fraction"])


COST_TO_QUALITY_COLUMNS = ("method", "measure", "reference_score", "final_score", "reached", "budget_fraction",
                           "train_tokens", "wall_time_s", "token_fraction", "time_fraction")


def cost_to_quality(curves: pd.DataFrame, reference: str = "full") -> pd.DataFrame:
    """Issue 13's question, "at what fraction of full-length fine-tuning's cost does a method reach its quality", from
    learning curves at one length (`curve_table` rows).

    Per method and measure: the ``reference`` arm's score at the end of its budget (mean over seeds), the method's own
    final score, and the first budget point at which the method's mean over seeds reaches the reference's final score
    (at least it; at most it for perplexity, where lower is better), with that point's physical tokens and wall time
    and their fractions of the reference's full cost. A method that never reaches it has ``reached`` False and NaN
    costs; the curve's points are where it was measured, so "reached at 1/4" means somewhere in (1/8, 1/4]. A measure
    on which the reference did not improve from its first point to its last (0% throughout) has no quality to reach
    and no rows.
    """
    if reference not in set(curves["method"]):
        raise ValueError(f"reference={reference!r} has no learning curve here; methods with curves: "
                         f"{sorted(set(curves['method']))}")
    means = curves.groupby(["method", "measure", "budget_fraction"], as_index=False).agg(
        score=("score", "mean"), train_tokens=("train_tokens", "first"), wall_time_s=("wall_time_s", "first"))
    ref = means[means["method"] == reference].sort_values("budget_fraction").groupby("measure")
    ref_start, ref_end = ref.first(), ref.last()
    rows = []
    for (method, measure), group in means.groupby(["method", "measure"], sort=False):
        if measure not in ref_end.index:
            continue
        group = group.sort_values("budget_fraction")
        goal = ref_end.loc[measure]
        lower_is_better = "perplexity" in measure
        start = ref_start.loc[measure, "score"]
        if not (goal["score"] < start if lower_is_better else goal["score"] > start):
            continue  # the reference learned nothing here (e.g. 0% throughout): no quality to reach
        ok = group["score"] <= goal["score"] if lower_is_better else group["score"] >= goal["score"]
        first = group[ok].iloc[0] if ok.any() else None
        rows.append({"method": method, "measure": measure, "reference_score": goal["score"],
                     "final_score": group["score"].iloc[-1], "reached": first is not None,
                     "budget_fraction": first["budget_fraction"] if first is not None else np.nan,
                     "train_tokens": first["train_tokens"] if first is not None else np.nan,
                     "wall_time_s": first["wall_time_s"] if first is not None else np.nan,
                     "token_fraction": first["train_tokens"] / goal["train_tokens"] if first is not None else np.nan,
                     "time_fraction": first["wall_time_s"] / goal["wall_time_s"] if first is not None else np.nan})
    return pd.DataFrame(rows, columns=COST_TO_QUALITY_COLUMNS)  # the same columns when nothing was learned


def seed_table(results: pd.DataFrame, curves: pd.DataFrame, costs: pd.DataFrame, target_len: int,
               pooled: tuple[str, ...] = ("base", "pi", "dynamic-ntk", "yarn")) -> pd.DataFrame:
    """The README's per-seed table: one row per method and seed, or one row per method for the ``pooled`` ones (the
    base and the training-free arms: no training, so their seeds differ only in the prompts drawn; ``seed`` then
    reads ``"0-2"``, or ``"0,2"`` for seeds that are not consecutive, and the scores are the means over seeds).
    Columns: ``train_tokens`` (``costs.csv``; NaN where none), ``passkey@<n>`` (exact match at each evaluated
    length), ``digits@target``, and held-out sliding-window perplexity at the target after the method's first
    learning-curve point (``ppl_first``, NaN without curves) and after the whole budget (``ppl_final``)."""
    at = {"passkey": ok_rows(results[(results["task"] == "passkey") & (results["metric"] == "accuracy")]),
          "digits": ok_rows(results[(results["task"] == "passkey") & (results["metric"] == "digit_accuracy")
                                    & (results["length"] == target_len)]),
          "ppl": ok_rows(results[(results["metric"] == "ppl_sliding") & (results["length"] == target_len)])}
    first = ok_rows(curves[(curves["metric"] == "ppl_sliding") & (curves["length"] == target_len)]) \
        if len(curves) else curves
    if len(first):  # each method's own first point (a method may have been evaluated at other points)
        first = first[first["budget_fraction"] == first.groupby("method")["budget_fraction"].transform("min")]
    lengths = sorted(at["passkey"]["length"].unique())

    def mean(frame: pd.DataFrame, method: str, seeds: list) -> float:
        hit = frame[(frame["method"] == method) & frame["seed"].isin(seeds)]["score"] if len(frame) else []
        return float(np.mean(hit)) if len(hit) else float("nan")

    rows = []
    for method in pd.unique(results["method"]):
        seeds = sorted(results.loc[results["method"] == method, "seed"].unique())
        span = f"{seeds[0]}-{seeds[-1]}" if list(seeds) == list(range(seeds[0], seeds[-1] + 1)) \
            else ",".join(map(str, seeds))
        groups = [(span if len(seeds) > 1 else str(seeds[0]), seeds)] if method in pooled \
            else [(str(s), [s]) for s in seeds]
        for label, group in groups:
            tokens = costs[(costs["method"] == method) & costs["seed"].isin(group)]["train_tokens"]
            rows.append({"method": method, "seed": label,
                         "train_tokens": float(tokens.mean()) if len(tokens) else float("nan"),
                         **{f"passkey@{n}": mean(at["passkey"][at["passkey"]["length"] == n], method, group)
                            for n in lengths},
                         "digits@target": mean(at["digits"], method, group),
                         "ppl_first": mean(first, method, group), "ppl_final": mean(at["ppl"], method, group)})
    return pd.DataFrame(rows)
