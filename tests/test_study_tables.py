"""endprompt.study_tables: the study's summary against hand computation on a small table."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from endprompt.study_tables import (
    ci95,
    cost_to_quality,
    curve_table,
    figure_tables,
    passkey_digits,
    passkey_table,
    seed_table,
    study_scores,
    study_table,
)
from tests.tolerances import FLOAT64_RTOL


def results() -> pd.DataFrame:
    rows = []
    for method, base in (("endprompt", 50.0), ("pi", 10.0)):
        for seed in (0, 1, 2):
            for length in (256, 2048):
                for task in ("passkey", "niah_single_1"):
                    score = base + 10 * seed + (task == "passkey") * 20 - (length == 2048) * 5
                    rows.append({"method": method, "seed": seed, "length": length, "task": task,
                                 "metric": "exact_match", "score": score, "status": "ok", "depth": np.nan,
                                 "wall_time_s": 3.0 if method == "endprompt" else 0.0, "train_tokens": 100,
                                 "peak_memory_gb": 0.5})
                rows.append({**rows[-1], "task": "passkey", "metric": "digit_accuracy", "score": 40.0 + seed})
                rows.append({**rows[-1], "task": "passkey", "metric": "k_max", "score": 512.0})
                rows.append({**rows[-1], "task": "perplexity", "metric": "ppl_sliding", "score": 3.0 + length / 1024})
                rows.append({**rows[-1], "task": "niah_single_1", "metric": "exact_match", "score": 0.0,
                             "status": "error"})  # an error row counts nowhere
    return pd.DataFrame(rows)


def test_scores_are_means_over_tasks_per_seed_and_length():
    scores = study_scores(results())
    row = scores[(scores["method"] == "endprompt") & (scores["seed"] == 1) & (scores["length"] == 256)]
    assert row["score"].item() == pytest.approx(((50 + 10 + 20) + (50 + 10)) / 2)  # passkey and niah, not k_max
    digits = passkey_digits(results())
    assert set(digits["score"]) == {40.0, 41.0, 42.0}


def test_ci95_is_the_student_t_half_width():
    values = pd.Series([1.0, 2.0, 4.0, 7.0])
    expected = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert ci95(values) == pytest.approx(expected, rel=FLOAT64_RTOL)
    assert np.isnan(ci95(pd.Series([3.0])))


def test_study_table_by_hand():
    table = study_table(results(), target_len=2048)
    assert table["method"].tolist() == ["endprompt", "pi"]  # sorted by the average score
    ep = table.iloc[0]
    # per seed: the mean over the two lengths of the mean over passkey and niah
    per_seed_avg = np.array([((50 + 10 * s + 20) + (50 + 10 * s) + (45 + 10 * s + 20) + (45 + 10 * s)) / 4
                             for s in range(3)])
    assert ep["avg"] == pytest.approx(per_seed_avg.mean())
    assert ep["avg_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * per_seed_avg.std(ddof=1) / np.sqrt(3))
    assert ep["passkey_k_max"] == 512 and ep["digits_avg"] == pytest.approx(41.0)
    assert ep["ppl@2048"] == pytest.approx(5.0) and ep["wall_time_s"] == 3.0 and ep["seeds"] == 3


def test_figure_tables():
    tables = figure_tables(results(), target_len=2048)
    assert "needle" not in tables  # no needle rows: no table, no figure
    at = tables["tasks_at_target"].set_index(["method", "task"])["score"]
    assert at[("pi", "passkey (digits)")] == pytest.approx(41.0) and at[("pi", "passkey")] == pytest.approx(35.0)
    cost = tables["cost"].set_index("method")
    assert cost.loc["endprompt", "score"] == pytest.approx(41.0) and cost["label"].iloc[0] == "passkey digit accuracy"


def curves() -> pd.DataFrame:
    """`run_study`'s curves.csv rows at the target 2048: full-length reaches 40% passkey at the end of 8 units; "fast"
    reaches it at 1/4 of the budget with half of full-length's tokens per point; "never" stays at 10%."""
    rows = []
    for method, scores, tokens, wall in (("full", (0, 0, 0, 40), 8.0, 80.0), ("fast", (0, 45, 50, 60), 4.0, 20.0),
                                         ("never", (10, 10, 10, 10), 8.0, 40.0)):
        for fraction, score in zip((0.125, 0.25, 0.5, 1.0), scores):
            for seed, delta in ((0, -1.0), (1, 1.0)):
                common = {"method": method, "seed": seed, "length": 2048, "status": "ok", "budget_fraction": fraction,
                          "train_tokens": tokens * fraction, "wall_time_s": wall * fraction + seed}
                rows.append({**common, "task": "passkey", "metric": "accuracy", "score": score + delta})
                rows.append({**common, "task": "perplexity", "metric": "ppl_sliding", "score": 50 - 10 * fraction})
                rows.append({**common, "length": 256, "task": "passkey", "metric": "accuracy", "score": 99.0})
    return pd.DataFrame(rows)


def test_cost_to_quality_finds_the_first_point_reaching_the_reference():
    table = cost_to_quality(curve_table(curves(), 2048)).set_index(["method", "measure"])
    pk = "passkey exact match (%)"
    assert table.loc[("full", pk), "reached"] and table.loc[("full", pk), "budget_fraction"] == 1.0
    fast = table.loc[("fast", pk)]
    assert fast["reference_score"] == 40.0 and fast["final_score"] == 60.0  # means over the two seeds
    assert fast["budget_fraction"] == 0.25 and fast["train_tokens"] == 1.0
    assert fast["token_fraction"] == pytest.approx(1.0 / 8.0) and fast["time_fraction"] == pytest.approx(5.5 / 80.5)
    never = table.loc[("never", pk)]
    assert not never["reached"] and np.isnan(never["token_fraction"])
    ppl = table.loc[("fast", "held-out perplexity")]  # lower is better: 40 only at the end, like full-length's
    assert ppl["reached"] and ppl["budget_fraction"] == 1.0 and ppl["reference_score"] == 40.0
    flat = curves().assign(score=lambda d: d["score"].where(d["task"] != "passkey", 0.0))  # nothing learned
    assert "passkey exact match (%)" not in set(cost_to_quality(curve_table(flat, 2048))["measure"])
    nothing = flat[flat["task"] == "passkey"]  # no measure learned at all: an empty table with the same columns
    empty = cost_to_quality(curve_table(nothing, 2048))
    assert empty.empty and list(empty.columns) == list(cost_to_quality(curve_table(curves(), 2048)).columns)
    with pytest.raises(ValueError, match="'pose' has no learning curve"):
        cost_to_quality(curve_table(curves(), 2048), reference="pose")


def test_passkey_table_is_exact_match_per_method_and_length():
    rows = results()
    rows.loc[rows["metric"] == "exact_match", "metric"] = "accuracy"  # passkey's exact match is named accuracy
    table = passkey_table(rows).set_index("method")
    assert list(table.columns) == ["train_tokens", "passkey@256", "passkey@2048"]
    # endprompt: 50 + 10 seed + 20 (passkey) - 5 at 2048, mean over seeds 0..2 -> 80 and 75; pi: 40 and 35
    assert table.loc["endprompt", "passkey@256"] == 80.0 and table.loc["endprompt", "passkey@2048"] == 75.0
    assert table.loc["pi", "passkey@2048"] == 35.0 and table.loc["pi", "train_tokens"] == 100


def test_seed_table_rows_per_seed_pooled_arms_and_first_curve_point():
    table = results()
    table.loc[(table["task"] == "passkey") & (table["metric"] == "exact_match"), "metric"] = "accuracy"
    table = table[~((table["method"] == "endprompt") & (table["seed"] == 2))]  # seeds may be missing for one arm
    trained = table[table["method"] == "endprompt"]
    curves = pd.concat([trained.assign(budget_fraction=f, score=trained["score"] * f) for f in (0.5, 1.0)])
    costs = pd.DataFrame({"method": ["endprompt", "endprompt"], "seed": [0, 1], "train_tokens": [100.0, 120.0]})
    got = seed_table(table, curves, costs, 2048, pooled=("pi",)).set_index(["method", "seed"])
    assert list(got.index) == [("endprompt", "0"), ("endprompt", "1"), ("pi", "0-2")]
    # passkey exact match of endprompt seed 1 at 2048: 50 + 10 + 20 - 5; pi pooled: mean of 10+20-5 + 10 * (0, 1, 2)
    assert got.loc[("endprompt", "1"), "passkey@2048"] == 75.0 and got.loc[("pi", "0-2"), "passkey@2048"] == 35.0
    assert got.loc[("endprompt", "1"), "digits@target"] == 41.0 and got.loc[("pi", "0-2"), "digits@target"] == 41.0
    assert got.loc[("endprompt", "0"), "train_tokens"] == 100.0 and np.isnan(got.loc[("pi", "0-2"), "train_tokens"])
    assert got.loc[("endprompt", "0"), "ppl_first"] == 2.5 and got.loc[("endprompt", "0"), "ppl_final"] == 5.0
    assert np.isnan(got.loc[("pi", "0-2"), "ppl_first"])  # no curve for a training-free arm
    # a method whose curve starts later reads its own first point; pooled seeds that skip one say which
    later = pd.concat([curves, curves.assign(method="pi", budget_fraction=curves["budget_fraction"] + 0.25)])
    gaps = table[~((table["method"] == "pi") & (table["seed"] == 1))]
    got = seed_table(gaps, later, costs, 2048, pooled=("pi",)).set_index(["method", "seed"])
    assert got.loc[("pi", "0,2"), "ppl_first"] == 2.5
