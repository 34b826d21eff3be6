"""endprompt.claims: paired comparisons against scipy's paired t-test, outcomes, the claim (4) test, verdicts."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from endprompt.claims import (
    CLAIM_COLUMNS,
    CLAIMS,
    MEASURES,
    Claim,
    Comparison,
    Measure,
    compare,
    judge_claims,
    loses_ground,
    verdicts,
)
from tests.tolerances import FLOAT64_RTOL

L0, TARGET = 256, 2048


def rows(method: str, scores: dict[int, float], task="passkey", metric="accuracy", length=TARGET) -> list[dict]:
    return [{"method": method, "seed": seed, "task": task, "metric": metric, "length": length, "score": score,
             "status": "ok"} for seed, score in scores.items()]


def table(*parts: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for part in parts for r in part])


def test_a_comparison_is_scipys_paired_t_interval():
    a, b = {0: 60.0, 1: 75.0, 2: 90.0}, {0: 40.0, 1: 70.0, 2: 50.0}
    row = compare(table(rows("endprompt", a), rows("full", b)), "1", "endprompt", "full", "passkey@target", L0, TARGET)
    diffs = np.array([a[s] - b[s] for s in (0, 1, 2)])
    low, high = stats.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)
    assert row["seeds"] == 3 and row["length"] == TARGET
    np.testing.assert_allclose([row["diff"], row["ci95"]], [diffs.mean(), (high - low) / 2], rtol=FLOAT64_RTOL)
    assert row["mean_a"] == pytest.approx(75.0) and row["mean_b"] == pytest.approx(160 / 3)
    assert row["outcome"] == ("endprompt better" if low > 0 else "no difference detected")


def test_pairing_by_seed_removes_the_seeds_shared_spread():
    # seed effects of +-40 points that both arms share; a is 2 points better on every seed: paired, that is clear
    seed_effect = {0: 10.0, 1: 50.0, 2: 90.0}
    a = {s: v + 2 for s, v in seed_effect.items()}
    row = compare(table(rows("a", a), rows("b", seed_effect)), "x", "a", "b", "passkey@target", L0, TARGET)
    assert row["diff"] == pytest.approx(2.0) and row["ci95"] == 0 and row["outcome"] == "a better"
    unpaired = stats.ttest_ind(list(a.values()), list(seed_effect.values()))
    assert unpaired.pvalue > 0.5  # an unpaired comparison would see nothing


@pytest.mark.parametrize(("a", "b", "outcome"), [
    ({0: 40.0, 1: 41.0, 2: 39.0}, {0: 50.0, 1: 52.0, 2: 51.0}, "a better"),  # lower perplexity wins
    ({0: 50.0, 1: 52.0, 2: 51.0}, {0: 40.0, 1: 41.0, 2: 39.0}, "b better"),
    ({0: 40.0, 1: 60.0, 2: 45.0}, {0: 50.0, 1: 41.0, 2: 52.0}, "no difference detected"),
])
def test_perplexity_is_better_when_lower(a, b, outcome):
    t = table(rows("a", a, "perplexity", "ppl_sliding"), rows("b", b, "perplexity", "ppl_sliding"))
    assert compare(t, "x", "a", "b", "ppl@target", L0, TARGET)["outcome"] == outcome


def test_edges_one_seed_unmeasured_arms_and_unpaired_seeds():
    zeros = table(rows("a", {0: 0.0, 1: 0.0}), rows("b", {0: 0.0, 1: 0.0}))
    assert compare(zeros, "x", "a", "b", "passkey@target", L0, TARGET)["outcome"] == "no difference detected"
    one = compare(table(rows("a", {0: 90.0}), rows("b", {0: 10.0})), "x", "a", "b", "passkey@target", L0, TARGET)
    assert one["outcome"] == "one seed: no interval" and np.isnan(one["ci95"])
    missing = compare(table(rows("a", {0: 90.0})), "x", "a", "b", "passkey@target", L0, TARGET)
    assert missing["outcome"] == "not measured" and missing["seeds"] == 0
    # only the seeds both arms have are compared, and the means are over those seeds
    part = compare(table(rows("a", {0: 90.0, 1: 80.0, 2: 0.0}), rows("b", {0: 10.0, 1: 20.0})), "x", "a", "b",
                   "passkey@target", L0, TARGET)
    assert part["seeds"] == 2 and part["mean_a"] == pytest.approx(85.0)
    # error rows and other lengths count nowhere
    noise = table(rows("a", {0: 1e6}, length=L0), [{**rows("a", {1: 1e6})[0], "status": "error"}])
    assert compare(pd.concat([table(rows("a", {0: 90.0, 1: 80.0}), rows("b", {0: 10.0, 1: 20.0})), noise]), "x", "a",
                   "b", "passkey@target", L0, TARGET)["mean_a"] == pytest.approx(85.0)


def ppl(method: str, at_half: dict, at_target: dict) -> list[dict]:
    return (rows(method, at_half, "perplexity", "ppl_sliding", TARGET // 2)
            + rows(method, at_target, "perplexity", "ppl_sliding", TARGET))


def test_claim_4_is_a_difference_of_differences():
    # EndPrompt: 40 -> 50 from target/2 to the target; full-length: 42 -> 40. EndPrompt's advantage (lower is
    # better): +2 at target/2, -10 at the target, so it loses 12 points there
    t = table(ppl("endprompt", {0: 40.0, 1: 41.0, 2: 39.0}, {0: 50.0, 1: 52.0, 2: 49.0}),
              ppl("full", {0: 42.0, 1: 43.0, 2: 41.0}, {0: 40.0, 1: 41.0, 2: 40.0}))
    row = loses_ground(t, "4", "endprompt", "full", "ppl@target", L0, TARGET)
    np.testing.assert_allclose([row["mean_a"], row["mean_b"]], [2.0, -(10 + 11 + 9) / 3], rtol=FLOAT64_RTOL)
    assert row["diff"] == pytest.approx(row["mean_b"] - row["mean_a"])
    assert row["outcome"] == "endprompt loses ground at the target" and row["length"] == "1024->2048"
    swapped = loses_ground(t, "4", "full", "endprompt", "ppl@target", L0, TARGET)
    assert swapped["outcome"] == "full gains ground at the target"


def test_judged_rows_and_verdicts():
    # claim 1 contradicted on perplexity, claim 4 supported; claims 2 and 3 have no arms; yarn has one seed
    t = table(ppl("endprompt", {0: 40.0, 1: 41.0, 2: 39.0}, {0: 50.0, 1: 52.0, 2: 49.0}),
              ppl("full", {0: 42.0, 1: 43.0, 2: 41.0}, {0: 40.0, 1: 41.0, 2: 40.0}),
              ppl("endprompt-yarn", {0: 40.0}, {0: 41.0}), ppl("full-yarn", {0: 40.0}, {0: 40.0}))
    judged = judge_claims(t, L0, TARGET)
    assert tuple(judged.columns) == CLAIM_COLUMNS
    assert len(judged) == sum(len(c.comparisons) for c in CLAIMS.values())
    ppl1 = judged[(judged["claim"] == "1") & (judged["measure"] == "ppl@target")].iloc[0]
    assert ppl1["outcome"] == "full better" and ppl1["supports_claim"] is False
    retrieval = judged[(judged["claim"] == "1") & (judged["measure"] == "passkey@L0")].iloc[0]
    assert retrieval["outcome"] == "not measured" and retrieval["supports_claim"] is None
    v = verdicts(judged).set_index("claim")
    assert v.loc["1", "verdict"] == "contradicted" and v.loc["1", "against"] == "endprompt vs full: ppl@target"
    assert v.loc["4", "verdict"] == "supported" and v.loc["4", "seeds"] == 3
    assert v.loc["2", "verdict"] == v.loc["3", "verdict"] == "not measured"
    assert v.loc["yarn", "verdict"] == "one seed: no interval"


def test_claim_3_is_supported_by_no_difference_and_contradicted_by_one():
    claim = {"3": Claim("3", "wording", (Comparison("cue", "end", "ppl@target", "none"),))}
    same = table(ppl("cue", {}, {0: 40.0, 1: 45.0, 2: 41.0}), ppl("end", {}, {0: 41.0, 1: 43.0, 2: 42.0}))
    assert verdicts(judge_claims(same, L0, TARGET, claim), claim)["verdict"].item() == "supported"
    apart = table(ppl("cue", {}, {0: 40.0, 1: 41.0, 2: 40.5}), ppl("end", {}, {0: 50.0, 1: 51.0, 2: 50.0}))
    assert verdicts(judge_claims(apart, L0, TARGET, claim), claim)["verdict"].item() == "contradicted"


def test_bad_definitions_name_the_fix():
    with pytest.raises(ValueError, match=r"Measure.at='end'; use 'L0', 'half'"):
        Measure("passkey", "accuracy", "end", "x")
    with pytest.raises(ValueError, match=r"Comparison.measure='passkey@4096'; measures are"):
        Comparison("a", "b", "passkey@4096")
    with pytest.raises(ValueError, match=r"Comparison.supports='b'"):
        Comparison("a", "b", "ppl@target", "b")
    assert MEASURES["ppl@target"].lower_is_better and not MEASURES["passkey@L0"].lower_is_better
