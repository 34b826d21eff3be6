"""endprompt.claims: paired comparisons against scipy, Holm's correction, the three kinds of outcome, verdicts."""

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
    change_gap,
    compare,
    holm,
    judge_claims,
    verdicts,
)
from tests.tolerances import FLOAT64_RTOL

L0, TARGET = 256, 2048


def rows(method: str, scores: dict[int, float], task="passkey", metric="accuracy", length=TARGET) -> list[dict]:
    return [{"method": method, "seed": seed, "task": task, "metric": metric, "length": length, "score": score,
             "status": "ok"} for seed, score in scores.items()]


def ppl(method: str, at_half: dict, at_target: dict) -> list[dict]:
    return (rows(method, at_half, "perplexity", "ppl_sliding", TARGET // 2)
            + rows(method, at_target, "perplexity", "ppl_sliding", TARGET))


def table(*parts: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for part in parts for r in part])


def judge_one(t: pd.DataFrame, comparison: Comparison) -> pd.Series:
    claim = {"x": Claim("x", "x", (comparison,))}
    return judge_claims(t, L0, TARGET, claim).iloc[0]


def test_a_comparison_is_scipys_paired_t_test():
    a, b = {0: 60.0, 1: 75.0, 2: 90.0}, {0: 40.0, 1: 70.0, 2: 50.0}
    row = compare(table(rows("endprompt", a), rows("full", b)), "1", "endprompt", "full", "passkey@target", L0, TARGET)
    test = stats.ttest_rel(list(a.values()), list(b.values()))
    low, high = test.confidence_interval(0.95)
    assert row["seeds"] == 3 and row["length"] == TARGET and row["status"] is None
    np.testing.assert_allclose([row["diff"], row["ci95"], row["p"]], [(high + low) / 2, (high - low) / 2, test.pvalue],
                               rtol=FLOAT64_RTOL)
    assert row["mean_a"] == pytest.approx(75.0) and row["mean_b"] == pytest.approx(160 / 3)


def test_pairing_is_by_seed_label_not_row_order():
    a = table(rows("a", {0: 90.0, 1: 80.0, 2: 0.0}))
    b = table(rows("b", {2: 10.0, 1: 20.0}))  # another order, and seed 0 missing
    row = compare(pd.concat([a, b]), "x", "a", "b", "passkey@target", L0, TARGET)
    assert row["seeds"] == 2 and row["diff"] == pytest.approx(((80 - 20) + (0 - 10)) / 2)
    assert row["mean_a"] == pytest.approx(40.0) and row["mean_b"] == pytest.approx(15.0)


def test_pairing_removes_the_seeds_shared_spread():
    # seed effects of +-40 points that both arms share; a is 2-3 points better on every seed: paired, that is clear
    seed_effect = {0: 10.0, 1: 50.0, 2: 90.0}
    a = {0: 12.0, 1: 53.0, 2: 92.0}
    assert judge_one(table(rows("a", a), rows("b", seed_effect)), Comparison("a", "b", "passkey@target"))[
        "outcome"] == "a better"
    assert stats.ttest_ind(list(a.values()), list(seed_effect.values())).pvalue > 0.5  # unpaired: nothing


@pytest.mark.parametrize(("a", "b", "outcome", "supports"), [
    ({0: 40.0, 1: 41.0, 2: 39.0}, {0: 50.0, 1: 52.0, 2: 51.0}, "a better", True),  # lower perplexity wins
    ({0: 50.0, 1: 52.0, 2: 51.0}, {0: 40.0, 1: 41.0, 2: 39.0}, "b better", False),
    ({0: 40.0, 1: 60.0, 2: 45.0}, {0: 50.0, 1: 41.0, 2: 52.0}, "no difference detected", None),
])
def test_perplexity_is_compared_as_a_log_ratio_lower_is_better(a, b, outcome, supports):
    t = table(ppl("a", {}, a), ppl("b", {}, b))
    row = judge_one(t, Comparison("a", "b", "ppl@target"))
    assert row["outcome"] == outcome and row["supports_claim"] == supports
    assert row["diff"] == pytest.approx(np.mean([np.log(a[s] / b[s]) for s in a]))


def test_holm_matches_the_step_down_definition_and_corrects_a_claim():
    p = [0.01, 0.04, np.nan, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 with m = 4: 0.04, 0.09, max(0.09, 0.08), max(0.09, 0.5)
    np.testing.assert_allclose(holm(p), [0.04, 0.09, np.nan, 0.09, 0.5], rtol=FLOAT64_RTOL)
    # one comparison at p ~ 0.02 wins alone, and is not enough among five
    a, b = {0: 60.0, 1: 70.0, 2: 66.0}, {0: 50.0, 1: 52.0, 2: 55.0}
    t = table(rows("a", a), rows("b", b), *[rows(m, {0: 1.0, 1: 9.0, 2: 5.0}) for m in ("c", "d", "e", "f")],
              *[rows(m, {0: 2.0, 1: 7.0, 2: 5.5}) for m in ("g", "h", "i", "j")])
    alone = judge_one(t, Comparison("a", "b", "passkey@target"))
    assert alone["p"] < 0.05 and alone["outcome"] == "a better"
    many = (Comparison("a", "b", "passkey@target"),) + tuple(
        Comparison(x, y, "passkey@target") for x, y in (("c", "g"), ("d", "h"), ("e", "i"), ("f", "j")))
    judged = judge_claims(t, L0, TARGET, {"x": Claim("x", "x", many)})
    assert judged.iloc[0]["p_holm"] > 0.05 and judged.iloc[0]["outcome"] == "no difference detected"


def test_unreadable_comparisons_say_why():
    zeros = table(rows("a", {0: 0.0, 1: 0.0}), rows("b", {0: 0.0, 1: 0.0}))
    assert compare(zeros, "x", "a", "b", "passkey@target", L0, TARGET)["status"] == "both at 0%"
    one = judge_one(table(rows("a", {0: 90.0}), rows("b", {0: 10.0})), Comparison("a", "b", "passkey@target"))
    assert one["outcome"] == "one seed: no interval" and np.isnan(one["ci95"]) and one["supports_claim"] is None
    same = judge_one(table(rows("a", {0: 50.0, 1: 56.25}), rows("b", {0: 43.75, 1: 50.0})),
                     Comparison("a", "b", "passkey@target"))
    assert same["outcome"] == "same difference on every seed: no interval" and np.isnan(same["p"])
    missing = judge_one(table(rows("a", {0: 90.0})), Comparison("a", "b", "passkey@target"))
    assert missing["outcome"] == "not measured" and missing["seeds"] == 0
    diverged = table(ppl("a", {}, {0: 40.0, 1: np.nan, 2: 41.0}), ppl("b", {}, {0: 50.0, 1: 51.0, 2: 52.0}))
    nan = judge_one(diverged, Comparison("a", "b", "ppl@target"))
    assert nan["outcome"] == "NaN score on seed(s) 1" and nan["seeds"] == 2 and nan["mean_b"] == pytest.approx(51.0)
    # error rows and other lengths count nowhere; duplicate rows of a seed are refused
    noise = table(rows("a", {0: 1e6}, length=L0), [{**rows("a", {1: 1e6})[0], "status": "error"}])
    clean = table(rows("a", {0: 90.0, 1: 80.0}), rows("b", {0: 10.0, 1: 20.0}))
    assert compare(pd.concat([clean, noise]), "x", "a", "b", "passkey@target", L0, TARGET)["mean_a"] == 85.0
    with pytest.raises(ValueError, match=r"a: 2 duplicate rows of passkey/accuracy at 2048 for one seed"):
        compare(pd.concat([clean, clean]), "x", "a", "b", "passkey@target", L0, TARGET)


@pytest.mark.parametrize("kind", ["ppl", "passkey"])
def test_claim_4_is_the_change_from_half_the_target_to_the_target(kind):
    if kind == "ppl":  # EndPrompt 40 -> 50 (rises), full 42 -> 40 (falls): EndPrompt loses ground
        t = table(ppl("ep", {0: 40.0, 1: 41.0, 2: 39.0}, {0: 50.0, 1: 52.0, 2: 49.0}),
                  ppl("full", {0: 42.0, 1: 43.0, 2: 41.0}, {0: 40.0, 1: 41.0, 2: 40.0}))
        key, ep_change = "ppl@target", np.log([50 / 40, 52 / 41, 49 / 39])
    else:  # passkey: EndPrompt 80 -> 10 (falls 70), full 60 -> 50 (falls 10): EndPrompt loses ground
        t = table(rows("ep", {0: 80.0, 1: 75.0, 2: 85.0}, length=TARGET // 2), rows("ep", {0: 10.0, 1: 5.0, 2: 15.0}),
                  rows("full", {0: 60.0, 1: 55.0, 2: 70.0}, length=TARGET // 2),
                  rows("full", {0: 50.0, 1: 50.0, 2: 55.0}))
        key, ep_change = "passkey@target", np.array([-70.0, -70.0, -70.0])
    row = change_gap(t, "4", "ep", "full", key, L0, TARGET)
    assert row["length"] == "1024->2048" and row["mean_a"] == pytest.approx(ep_change.mean())
    assert row["diff"] == pytest.approx(row["mean_a"] - row["mean_b"])
    assert judge_one(t, Comparison("ep", "full", key, "loses-ground"))["outcome"] == "ep loses ground at the target"
    swapped = judge_one(t, Comparison("full", "ep", key, "loses-ground"))
    assert swapped["outcome"] == "full gains ground at the target" and swapped["supports_claim"] == False  # noqa: E712 (numpy bool)


def test_claim_4_pairs_the_seeds_both_lengths_have():
    t = table(ppl("ep", {0: 40.0, 1: 41.0}, {0: 50.0, 1: 52.0, 2: 49.0}), ppl("full", {0: 42.0, 1: 43.0, 2: 41.0},
                                                                              {0: 40.0, 1: 41.0, 2: 40.0}))
    assert change_gap(t, "4", "ep", "full", "ppl@target", L0, TARGET)["seeds"] == 2


def test_claim_3_needs_equivalence_not_only_no_difference():
    tight = table(ppl("cue", {}, {0: 40.0, 1: 45.0, 2: 41.0}), ppl("end", {}, {0: 40.4, 1: 45.2, 2: 41.1}))
    eq = judge_one(tight, Comparison("cue", "end", "ppl@target", "equivalent"))
    assert eq["outcome"] == "equivalent within +-0.05" and eq["supports_claim"] == True  # noqa: E712 (numpy bool)
    wide = table(ppl("cue", {}, {0: 40.0, 1: 60.0, 2: 41.0}), ppl("end", {}, {0: 44.0, 1: 54.0, 2: 43.0}))  # mean ~0
    unclear = judge_one(wide, Comparison("cue", "end", "ppl@target", "equivalent"))
    assert unclear["outcome"] == "no difference detected" and unclear["supports_claim"] is None
    apart = table(ppl("cue", {}, {0: 40.0, 1: 41.0, 2: 40.5}), ppl("end", {}, {0: 50.0, 1: 51.0, 2: 50.0}))
    assert judge_one(apart, Comparison("cue", "end", "ppl@target", "equivalent"))["supports_claim"] == False  # noqa: E712 (numpy bool)


def test_a_steady_difference_inside_the_margin_is_equivalence():
    # perplexity 1% apart on every seed (log ratio -0.0101 +- 0.0003): significant, and still well inside +-0.05
    steady = table(ppl("cue", {}, {0: 40.0, 1: 45.0, 2: 41.0}), ppl("end", {}, {0: 40.4, 1: 45.46, 2: 41.42}))
    row = judge_one(steady, Comparison("cue", "end", "ppl@target", "equivalent"))
    assert row["p"] < 0.01 and row["outcome"] == "equivalent within +-0.05" and row["supports_claim"] == True  # noqa: E712


def test_a_shared_ceiling_is_no_interval():
    ceiling = table(rows("a", {0: 100.0, 1: 100.0}), rows("b", {0: 100.0, 1: 100.0}))
    row = judge_one(ceiling, Comparison("a", "b", "passkey@target", "equivalent"))
    assert row["outcome"] == "same difference on every seed: no interval" and row["supports_claim"] is None
    assert np.isnan(row["p"]) and np.isnan(row["ci95"])
    apart = judge_one(table(rows("a", {0: 100.0, 1: 100.0}), rows("b", {0: 0.0, 1: 0.0})),
                      Comparison("a", "b", "passkey@target"))
    assert apart["outcome"] == "same difference on every seed: no interval" and np.isnan(apart["ci95"])
    # the same difference but for the last bit of rounding (digit scores 3.75 / 6.25 and 7.5 / 10 as evaluated)
    rounded = judge_one(table(rows("a", {0: 7.5, 1: 3.75 + 1e-13}), rows("b", {0: 10.0, 1: 6.25})),
                        Comparison("a", "b", "passkey@target", "equivalent"))
    assert rounded["outcome"] == "same difference on every seed: no interval" and np.isnan(rounded["p"])


def test_claim_4_says_nothing_when_both_arms_are_at_0_at_the_target():
    # a leads at target / 2 and both fall to 0 at the target: the target itself does not tell them apart
    t = table(rows("a", {0: 60.0, 1: 70.0, 2: 65.0}, length=TARGET // 2), rows("a", {0: 0.0, 1: 0.0, 2: 0.0}),
              rows("b", {0: 10.0, 1: 15.0, 2: 12.0}, length=TARGET // 2), rows("b", {0: 0.0, 1: 0.0, 2: 0.0}))
    row = judge_one(t, Comparison("a", "b", "passkey@target", "loses-ground"))
    assert row["outcome"] == "both at 0% at the target" and row["supports_claim"] is None and np.isnan(row["p"])
    t.loc[(t["method"] == "b") & (t["length"] == TARGET), "score"] = [5.0, 10.0, 8.0]  # b keeps some: readable
    row = judge_one(t, Comparison("a", "b", "passkey@target", "loses-ground"))
    assert row["outcome"] == "a loses ground at the target"


def test_an_equivalence_claim_needs_every_readable_comparison_equivalent():
    tight = ppl("end", {}, {0: 40.4, 1: 45.2, 2: 41.1})
    wide = ppl("eot", {}, {0: 44.0, 1: 60.0, 2: 38.0})
    t = table(ppl("cue", {}, {0: 40.0, 1: 45.0, 2: 41.0}), tight, wide)
    two = (Comparison("cue", "end", "ppl@target", "equivalent"), Comparison("cue", "eot", "ppl@target", "equivalent"))
    claim = {"3": Claim("3", "wording", two)}
    judged = judge_claims(t, L0, TARGET, claim)
    assert list(judged["outcome"]) == ["equivalent within +-0.05", "no difference detected"]
    assert verdicts(judged, claim).iloc[0]["verdict"] == "partly supported"
    assert verdicts(judged.iloc[:1], claim).iloc[0]["verdict"] == "supported"
    with pytest.raises(ValueError, match=r"lack column\(s\) \['kind'\].*endprompt claims"):
        verdicts(judged.drop(columns=["kind"]), claim)


def test_judged_rows_and_verdicts():
    # claim 1 contradicted on perplexity, claim 4 supported; claims 2 and 3 have no arms; yarn has one seed; the
    # placement contradicted on perplexity
    t = table(ppl("endprompt", {0: 40.0, 1: 41.0, 2: 39.0}, {0: 50.0, 1: 52.0, 2: 49.0}),
              ppl("full", {0: 42.0, 1: 43.0, 2: 41.0}, {0: 40.0, 1: 41.0, 2: 40.0}),
              ppl("endprompt-yarn", {0: 40.0}, {0: 41.0}), ppl("full-yarn", {0: 40.0}, {0: 40.0}),
              rows("endprompt-yarn", {0: 0.0}), rows("full-yarn", {0: 0.0}),
              # the placement: the random variant keeps the perplexity at the target that the own tail loses
              ppl("endprompt-tail", {}, {0: 47.0, 1: 50.0, 2: 48.0}),
              ppl("endprompt-random", {}, {0: 42.0, 1: 41.5, 2: 42.5}))
    judged = judge_claims(t, L0, TARGET)
    assert tuple(judged.columns) == CLAIM_COLUMNS
    assert len(judged) == sum(len(c.comparisons) for c in CLAIMS.values())
    ppl1 = judged[(judged["claim"] == "1") & (judged["measure"] == "ppl@target")].iloc[0]
    assert ppl1["outcome"] == "full better" and ppl1["supports_claim"] == False  # noqa: E712 (numpy bool)
    v = verdicts(judged).set_index("claim")
    assert v.loc["1", "verdict"] == "contradicted" and v.loc["1", "against"] == "endprompt vs full: ppl@target"
    assert v.loc["4", "verdict"] == "supported" and v.loc["4", "seeds"] == 3
    assert v.loc["2", "verdict"] == v.loc["3", "verdict"] == "not measured"
    assert v.loc["yarn", "verdict"] == "one seed: no interval"  # one seed and a floor: nothing to read
    assert v.loc["placement", "verdict"] == "contradicted"
    placement = judged[judged["claim"] == "placement"]
    assert len(placement) == len(MEASURES) and (placement["kind"] == "at-least").all()
    assert (placement["a"] == "endprompt-tail").all() and (placement["b"] == "endprompt-random").all()
    assert v.loc["placement", "against"] == "endprompt-tail vs endprompt-random: ppl@target"
    # read back from claims.csv (the claim keys then parse as numbers): the same verdicts
    read_back = judged.assign(claim=[int(c) if c.isdigit() else c for c in judged["claim"]])
    assert verdicts(read_back).equals(verdicts(judged))


def test_bad_definitions_name_the_fix():
    with pytest.raises(ValueError, match=r"Measure.at='end'; use 'L0', 'half'"):
        Measure("passkey", "accuracy", "end", "x", 10.0)
    with pytest.raises(ValueError, match=r"Measure.margin=0"):
        Measure("passkey", "accuracy", "L0", "x", 0)
    with pytest.raises(ValueError, match=r"Comparison.measure='passkey@4096'; measures are"):
        Comparison("a", "b", "passkey@4096")
    with pytest.raises(ValueError, match=r"Comparison.kind='b'"):
        Comparison("a", "b", "ppl@target", "b")
    with pytest.raises(ValueError, match=r"'loses-ground' compares the target with target / 2; measure='passkey@L0'"):
        Comparison("a", "b", "passkey@L0", "loses-ground")
    assert MEASURES["ppl@target"].lower_is_better and not MEASURES["passkey@L0"].lower_is_better
