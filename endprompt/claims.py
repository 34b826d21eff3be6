"""The paper's claims and the study's further questions (YaRN, the authors' two placements of the terminal segment),
judged on a study's results (`endprompt.reproduce`'s ``results.csv`` rows).

Each claim is a registry entry (`CLAIMS`): its statement and the comparisons that test it. A comparison is
one arm against another on one `Measure`, paired by seed: every arm of a study evaluates seed ``s`` on the same
prompts and held-out text, so the per-seed differences remove the prompts' share of the spread. Perplexity is
compared as a log ratio (its differences grow with its level). Three kinds of comparison:

- ``at-least`` (``a`` matches or beats ``b``): against the claim when ``b`` is better, for it when ``a`` is;
- ``equivalent`` (claim 3, the wording matters little): for it when the whole two-sided 95% interval of the difference
  lies within the measure's equivalence margin (two one-sided tests at 2.5% each, stricter than the usual 90%
  interval), whatever the t-test says (a small steady difference inside the margin is equivalence); against it when
  the arms differ by a margin the interval does not rule out;
- ``loses-ground`` (claim 4): per seed, ``a``'s change from target / 2 to the target minus ``b``'s, i.e. ``a``'s
  advantage at the target minus its advantage at target / 2; for the claim when ``a`` loses ground.

"Differ" means a two-sided paired t-test below 0.05 after Holm's correction over the claim's comparisons (a claim
tested on 15 comparisons would otherwise be contradicted by chance about half the time). What cannot be read is said
so: "not measured", "one seed: no interval", "same difference on every seed: no interval" (two arms at the same
ceiling included), "both at 0%" (a floor says nothing about which is better; for claim (4): "both at 0% at the
target"), "NaN score". `verdicts` sums a claim's comparisons into one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from endprompt.study_tables import ci95, ok_rows

__all__ = ["Measure", "Comparison", "Claim", "MEASURES", "CLAIMS", "CLAIM_COLUMNS", "ALPHA", "per_seed", "compare",
           "change_gap", "holm", "judge_claims", "verdicts"]

ALPHA = 0.05
"""Family-wise error rate of a claim's comparisons (Holm), and 1 - the intervals' coverage."""


@dataclass(frozen=True)
class Measure:
    """One score of a study at one length: ``at`` names the length relative to the study ("L0", "half", "target");
    ``log`` compares log scores (perplexity); ``margin``: the equivalence margin on the compared scale."""

    task: str
    metric: str
    at: str
    label: str
    margin: float
    lower_is_better: bool = False
    log: bool = False

    def __post_init__(self):
        if self.at not in ("L0", "half", "target"):
            raise ValueError(f"Measure.at={self.at!r}; use 'L0', 'half' (target / 2) or 'target'")
        if not self.margin > 0:
            raise ValueError(f"Measure.margin={self.margin!r}; give a positive equivalence margin")

    def length(self, L0: int, target_len: int) -> int:
        return {"L0": L0, "half": target_len // 2, "target": target_len}[self.at]


MEASURES = {
    "passkey@L0": Measure("passkey", "accuracy", "L0", "passkey exact match at L0 (%)", 10.0),
    "passkey@target": Measure("passkey", "accuracy", "target", "passkey exact match at the target (%)", 10.0),
    "digits@target": Measure("passkey", "digit_accuracy", "target", "passkey digit accuracy at the target (%)", 10.0),
    "niah@target": Measure("niah_single_1", "string_match_all", "target", "niah_single_1 at the target (%)", 10.0),
    "ppl@target": Measure("perplexity", "ppl_sliding", "target", "held-out perplexity at the target (log ratio)",
                          0.05, lower_is_better=True, log=True),
}
"""The measures the claims are judged on. Margins: 10 points of a percentage; 5% of perplexity (log ratio 0.05)."""


def _half(m: Measure) -> Measure:
    return Measure(m.task, m.metric, "half", m.label, m.margin, m.lower_is_better, m.log)


def per_seed(table: pd.DataFrame, method: str, measure: Measure, L0: int, target_len: int) -> pd.Series:
    """``method``'s score on ``measure`` per seed (NaN where an ``ok`` row holds NaN); one row per seed expected."""
    rows = ok_rows(table[(table["method"] == method) & (table["task"] == measure.task)
                         & (table["metric"] == measure.metric) & (table["length"] == measure.length(L0, target_len))])
    if rows["seed"].duplicated().any():
        raise ValueError(f"{method}: {rows['seed'].duplicated().sum()} duplicate rows of {measure.task}/"
                         f"{measure.metric} at {measure.length(L0, target_len)} for one seed; judge a study's "
                         "results.csv (one row per method, seed, task, metric and length), not curves or appended runs")
    return rows.set_index("seed")["score"].astype(float)


def _stats(claim: str, a: str, b: str, key: str, label: str, length, sa: pd.Series, sb: pd.Series,
           diffs: pd.Series, means: tuple[float, float], scores: tuple[pd.Series, pd.Series],
           floor: str = "both at 0%") -> dict:
    """The row of one comparison before its outcome: the paired difference's mean, 95% half-width and p-value, and
    ``status`` when the comparison cannot be read (``floor``: the status when both arms' ``scores`` are all 0)."""
    common = sa.index.intersection(sb.index)
    bad = sorted(int(s) for s in common if not np.isfinite(diffs.get(s, np.nan)))
    diffs = diffs.dropna()
    n = int(diffs.count())
    status = None
    if len(common) == 0:
        status = "not measured"
    elif bad:
        status = f"NaN score on seed(s) {', '.join(map(str, bad))}"
    elif not MEASURES[key].log and all((s == 0).all() for s in scores):
        status = floor
    elif n < 2:
        status = "one seed: no interval"
    elif diffs.std(ddof=1) <= 1e-9 * max(1.0, abs(diffs.mean())):  # zero width but for rounding (3.75 - 6.25 vs
        # 7.5 - 10 differ in the last bit): no interval; a shared ceiling (100% on every seed) reads like a floor
        status = "same difference on every seed: no interval"
    mean = float(diffs.mean()) if n else np.nan
    p = np.nan  # an unreadable comparison is no test: it stays out of Holm's count
    if status is None:
        p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return {"claim": claim, "a": a, "b": b, "measure": key, "label": label, "length": length, "seeds": n,
            "mean_a": means[0], "mean_b": means[1], "diff": mean, "ci95": ci95(diffs) if status is None else np.nan,
            "p": p, "status": status}


def compare(table: pd.DataFrame, claim: str, a: str, b: str, key: str, L0: int, target_len: int) -> dict:
    """Arm ``a`` against arm ``b`` on `MEASURES` [``key``], paired by the seeds both have: each arm's mean score over
    the seeds compared, the mean difference a - b (of logs for perplexity), its 95% half-width and p-value."""
    m = MEASURES[key]
    sa, sb = per_seed(table, a, m, L0, target_len), per_seed(table, b, m, L0, target_len)
    common = sa.index.intersection(sb.index)
    scale = np.log if m.log else (lambda x: x)
    diffs = (scale(sa[common]) - scale(sb[common]))
    used = diffs.dropna().index
    return _stats(claim, a, b, key, m.label, m.length(L0, target_len), sa, sb, diffs,
                  (float(sa[used].mean()), float(sb[used].mean())) if len(used) else (np.nan, np.nan),
                  (sa[common], sb[common]))


def change_gap(table: pd.DataFrame, claim: str, a: str, b: str, key: str, L0: int, target_len: int) -> dict:
    """Claim (4)'s test: per seed, ``a``'s change from target / 2 to the target minus ``b``'s (log ratio for
    perplexity), which equals ``a``'s advantage over ``b`` at the target minus its advantage at target / 2 in raw
    units. ``mean_a`` and ``mean_b`` are the two arms' mean changes. Both arms at 0 at the target cannot be read
    (the test would only see ``a``'s advantage at target / 2, not what happens at the target)."""
    m = MEASURES[key]
    scale = np.log if m.log else (lambda x: x)
    change, scores = {}, []
    for arm in (a, b):
        at, half = per_seed(table, arm, m, L0, target_len), per_seed(table, arm, _half(m), L0, target_len)
        seeds = at.index.intersection(half.index)
        change[arm] = scale(at[seeds]) - scale(half[seeds])
        scores.append(at[seeds])
    common = change[a].index.intersection(change[b].index)
    diffs = change[a][common] - change[b][common]
    used = diffs.dropna().index
    label = f"{m.label.split(' at the target')[0]}: change from target/2 to the target, a minus b"
    return _stats(claim, a, b, key, label, f"{target_len // 2}->{target_len}", change[a], change[b], diffs,
                  (float(change[a][used].mean()), float(change[b][used].mean())) if len(used) else (np.nan, np.nan),
                  tuple(s[s.index.isin(common)] for s in scores), floor="both at 0% at the target")


@dataclass(frozen=True)
class Comparison:
    """One test of a claim: ``a`` against ``b`` on `MEASURES` [``measure``], of kind ``at-least``, ``equivalent`` or
    ``loses-ground`` (see the module's docstring)."""

    a: str
    b: str
    measure: str
    kind: str = "at-least"

    def __post_init__(self):
        if self.measure not in MEASURES:
            raise ValueError(f"Comparison.measure={self.measure!r}; measures are {sorted(MEASURES)}")
        if self.kind not in ("at-least", "equivalent", "loses-ground"):
            raise ValueError(f"Comparison.kind={self.kind!r}; use 'at-least', 'equivalent' or 'loses-ground'")
        if self.kind == "loses-ground" and MEASURES[self.measure].at != "target":
            raise ValueError(f"Comparison {self.a} vs {self.b}: 'loses-ground' compares the target with target / 2; "
                             f"measure={self.measure!r} is not at the target")

    def run(self, table: pd.DataFrame, claim: str, L0: int, target_len: int) -> dict:
        test = change_gap if self.kind == "loses-ground" else compare
        return test(table, claim, self.a, self.b, self.measure, L0, target_len)

    def outcome(self, row: dict, p_holm: float) -> tuple[str, bool | None]:
        """The comparison's outcome and whether it speaks for the claim (True), against it (False) or neither."""
        if row["status"]:
            return row["status"], None
        m, diff = MEASURES[self.measure], row["diff"]
        a_better = (diff < 0) == m.lower_is_better  # for loses-ground: a's change is the better one
        if self.kind == "equivalent" and abs(diff) + row["ci95"] <= m.margin:
            return f"equivalent within +-{m.margin:g}", True  # a difference may be real and still inside the margin
        if p_holm < ALPHA:
            if self.kind == "loses-ground":
                return f"{self.a} {'gains' if a_better else 'loses'} ground at the target", not a_better
            winner = self.a if a_better else self.b
            return f"{winner} better", (a_better if self.kind == "at-least" else False)
        return "no difference detected", None


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    comparisons: tuple[Comparison, ...]


def _each(a: str, b: str, measures=tuple(MEASURES), kind="at-least") -> tuple[Comparison, ...]:
    return tuple(Comparison(a, b, m, kind) for m in measures)


_AT_TARGET = ("passkey@target", "digits@target", "ppl@target")
CLAIMS = {c.key: c for c in (
    Claim("1", "EndPrompt matches or beats full-length fine-tuning (at a fraction of its cost)",
          _each("endprompt", "full")),
    Claim("2", "ET(PoSE) matches or beats both EndPrompt and PoSE",
          _each("endprompt-pose", "endprompt") + _each("endprompt-pose", "pose")),
    Claim("3", "the end prompt's wording matters little (cue set, \"End.\", end-of-turn token)",
          tuple(c for a, b in (("endprompt", "endprompt-end"), ("endprompt", "endprompt-eot"),
                               ("endprompt-end", "endprompt-eot")) for c in _each(a, b, kind="equivalent"))),
    Claim("4", "EndPrompt loses ground to full-length fine-tuning at the target length itself (its advantage at the "
          "target is below its advantage at target/2)",
          _each("endprompt", "full", _AT_TARGET, kind="loses-ground")),
    Claim("yarn", "(issue 13) EndPrompt's recipe still helps under YaRN, whose top frequency is not scaled "
          "(sigma = 1: the smoothing argument does not cover it)",
          _each("endprompt-yarn", "full-yarn") + _each("endprompt-yarn", "endprompt")),
    Claim("placement", "(the authors' scripts) the terminal segment belongs at the target's end: the window's own tail "
          "on [L-b, L-1] (their fixed variant) does at least as well as the same tokens at a random place between body "
          "and target (their random variant)",
          _each("endprompt-tail", "endprompt-random")),
)}
"""The paper's four claims, issue 13's YaRN question and the authors' two placements of the terminal segment, each
with the comparisons that test it."""

CLAIM_COLUMNS = ("claim", "a", "b", "measure", "kind", "label", "length", "seeds", "mean_a", "mean_b", "diff", "ci95",
                 "p", "p_holm", "outcome", "supports_claim")
"""`judge_claims`' columns: ``mean_a`` / ``mean_b`` are each arm's mean over the seeds compared (for claim (4): each
arm's change from target / 2 to the target), ``diff`` the mean paired difference a - b (of logs for perplexity),
``ci95`` its 95% half-width, ``p`` the paired t-test's, ``p_holm`` Holm's over the claim's comparisons,
``supports_claim`` True / False / None (the outcome speaks for the claim, against it, or neither)."""


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count among the tests)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def judge_claims(table: pd.DataFrame, L0: int, target_len: int, claims: dict[str, Claim] | None = None) -> pd.DataFrame:
    """Every comparison of every claim on a study's results: one tidy row each (`CLAIM_COLUMNS`)."""
    rows = []
    for claim in (claims or CLAIMS).values():
        raw = [c.run(table, claim.key, L0, target_len) for c in claim.comparisons]
        for c, row, p_holm in zip(claim.comparisons, raw, holm([r["p"] for r in raw])):
            outcome, supports = c.outcome(row, p_holm)
            rows.append({**row, "kind": c.kind, "p_holm": p_holm, "outcome": outcome, "supports_claim": supports})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _names(frame: pd.DataFrame) -> str:
    return "; ".join(f"{r.a} vs {r.b}: {r.measure}" for r in frame.itertuples()) or "-"


def verdicts(judged: pd.DataFrame, claims: dict[str, Claim] | None = None) -> pd.DataFrame:
    """One line per claim from `judge_claims`' rows: "contradicted" when a comparison goes against it, "supported"
    when at least one speaks for it and none against (for an equivalence, every readable comparison must show it:
    "no difference detected" is no evidence that two arms are alike, so one equivalent comparison among inconclusive
    ones makes the claim "partly supported"), "no difference detected" when the measured comparisons are
    inconclusive, "one seed: no interval" when each had one seed, "not measured" when none could be made; with the
    fewest seeds of a measured comparison and the comparisons on each side."""
    missing = sorted(set(CLAIM_COLUMNS) - set(judged.columns))
    if missing:
        raise ValueError(f"the judged rows lack column(s) {missing}: a claims.csv from an older endprompt; judge the "
                         "study again with `endprompt claims <study dir>`")
    rows = []
    for key, claim in (claims or CLAIMS).items():
        part = judged[judged["claim"].astype(str) == key]
        measured = part[part["outcome"] != "not measured"]
        against, for_ = part[part["supports_claim"].eq(False)], part[part["supports_claim"].eq(True)]
        if measured.empty:
            verdict = "not measured"
        elif not against.empty:
            verdict = "contradicted"
        elif not for_.empty:
            inconclusive = part["outcome"].eq("no difference detected") & part["kind"].eq("equivalent")
            verdict = "partly supported" if inconclusive.any() else "supported"
        elif (measured["seeds"] < 2).all():
            verdict = "one seed: no interval"
        else:
            verdict = "no difference detected"
        rows.append({"claim": key, "statement": claim.statement, "verdict": verdict,
                     "seeds": int(measured["seeds"].min()) if len(measured) else 0,
                     "for": _names(for_), "against": _names(against)})
    return pd.DataFrame(rows)
