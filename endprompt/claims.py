"""The paper's claims, judged on a study's results (`endprompt.reproduce`'s ``results.csv`` rows).

Each claim is a registry entry (`CLAIMS`): the paper's statement and the comparisons that test it. A comparison is
one arm against another on one `Measure`, paired by seed: every arm of a study evaluates seed ``s`` on the same
prompts and held-out text, so the per-seed differences remove the prompts' share of the spread. Its outcome is read
off the 95% Student-t interval of the mean paired difference:

- "<arm> better" when the interval excludes 0 in that arm's favour (the measure's own direction: lower perplexity
  is better);
- "no difference detected" when it contains 0 (with 3 seeds the interval is wide: this is not "equal");
- "one seed: no interval" with fewer than two common seeds, "not measured" when an arm has no rows.

Claim (4), "EndPrompt is weakest at the target itself", is a difference of differences: per seed, EndPrompt's
advantage over full-length at the target minus its advantage at half the target; a negative value means EndPrompt
loses ground at the target. `verdicts` sums a claim's comparisons into one line. Adding a claim touches `CLAIMS` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from endprompt.study_tables import ci95, ok_rows

__all__ = ["Measure", "Comparison", "Claim", "MEASURES", "CLAIMS", "CLAIM_COLUMNS", "per_seed", "compare",
           "judge_claims", "verdicts"]


@dataclass(frozen=True)
class Measure:
    """One score of a study at one length: ``at`` names the length relative to the study ("L0", "half", "target")."""

    task: str
    metric: str
    at: str
    label: str
    lower_is_better: bool = False

    def __post_init__(self):
        if self.at not in ("L0", "half", "target"):
            raise ValueError(f"Measure.at={self.at!r}; use 'L0', 'half' (target / 2) or 'target'")

    def length(self, L0: int, target_len: int) -> int:
        return {"L0": L0, "half": target_len // 2, "target": target_len}[self.at]


MEASURES = {
    "passkey@L0": Measure("passkey", "accuracy", "L0", "passkey exact match at L0 (%)"),
    "passkey@target": Measure("passkey", "accuracy", "target", "passkey exact match at the target (%)"),
    "digits@target": Measure("passkey", "digit_accuracy", "target", "passkey digit accuracy at the target (%)"),
    "niah@target": Measure("niah_single_1", "string_match_all", "target", "niah_single_1 at the target (%)"),
    "ppl@target": Measure("perplexity", "ppl_sliding", "target", "held-out perplexity at the target", True),
}
"""The measures the claims are judged on: retrieval at L0 and at the target, and held-out perplexity."""

_HALF = {key.replace("@target", "@half"): Measure(m.task, m.metric, "half", m.label.replace("the target", "target/2"),
                                                   m.lower_is_better)
         for key, m in MEASURES.items() if m.at == "target"}


def per_seed(table: pd.DataFrame, method: str, measure: Measure, L0: int, target_len: int) -> pd.Series:
    """``method``'s score on ``measure`` per seed (mean over the rows of a seed, e.g. the needle depths)."""
    rows = ok_rows(table[(table["method"] == method) & (table["task"] == measure.task)
                         & (table["metric"] == measure.metric) & (table["length"] == measure.length(L0, target_len))])
    return rows.groupby("seed")["score"].mean()


def _outcome(a: str, b: str, diff: float, half_width: float, n: int, lower_is_better: bool) -> str:
    if n < 2:
        return "one seed: no interval"
    if abs(diff) <= half_width:  # half_width 0 when every seed's difference is the same: then any nonzero one counts
        return "no difference detected"
    return f"{a if (diff < 0) == lower_is_better else b} better"


def _row(claim: str, a: str, b: str, key: str, measure: Measure, diffs: pd.Series, mean_a: float, mean_b: float,
         length: int | str) -> dict:
    n = int(diffs.count())
    diff = float(diffs.mean()) if n else np.nan
    half_width = ci95(diffs)
    outcome = "not measured" if n == 0 else _outcome(a, b, diff, half_width, n, measure.lower_is_better)
    return {"claim": claim, "a": a, "b": b, "measure": key, "label": measure.label, "length": length, "seeds": n,
            "mean_a": mean_a, "mean_b": mean_b, "diff": diff, "ci95": half_width, "outcome": outcome}


def compare(table: pd.DataFrame, claim: str, a: str, b: str, key: str, L0: int, target_len: int) -> dict:
    """Arm ``a`` against arm ``b`` on `MEASURES` [``key``], paired by the seeds both have: the mean of each (over
    those seeds), the mean difference a - b, its 95% half-width and the outcome."""
    measure = MEASURES[key]
    sa, sb = per_seed(table, a, measure, L0, target_len), per_seed(table, b, measure, L0, target_len)
    common = sa.index.intersection(sb.index)
    diffs = (sa[common] - sb[common]).astype(float)
    return _row(claim, a, b, key, measure, diffs, float(sa[common].mean()) if len(common) else np.nan,
                float(sb[common].mean()) if len(common) else np.nan, measure.length(L0, target_len))


def loses_ground(table: pd.DataFrame, claim: str, a: str, b: str, key: str, L0: int, target_len: int) -> dict:
    """Claim (4)'s test: per seed, ``a``'s advantage over ``b`` at the target minus its advantage at target / 2
    (advantage in the measure's direction, so a negative difference means ``a`` loses ground at the target). The
    means are ``a``'s advantage at target / 2 (``mean_a``) and at the target (``mean_b``)."""
    at, half = MEASURES[key], _HALF[key.replace("@target", "@half")]
    sign = -1.0 if at.lower_is_better else 1.0
    adv = {m.at: sign * (per_seed(table, a, m, L0, target_len) - per_seed(table, b, m, L0, target_len)).dropna()
           for m in (at, half)}
    common = adv["target"].index.intersection(adv["half"].index)
    diffs = (adv["target"][common] - adv["half"][common]).astype(float)
    measure = Measure(at.task, at.metric, "target", f"{at.label}: advantage at the target minus at target/2")
    row = _row(claim, a, b, key, measure, diffs, float(adv["half"][common].mean()) if len(common) else np.nan,
               float(adv["target"][common].mean()) if len(common) else np.nan, f"{target_len // 2}->{target_len}")
    if row["outcome"].endswith(" better"):  # the interval excludes 0: its sign says which way
        row["outcome"] = f"{a} {'loses' if row['diff'] < 0 else 'gains'} ground at the target"
    return row


Test = Callable[[pd.DataFrame, str, str, str, str, int, int], dict]


@dataclass(frozen=True)
class Comparison:
    """One test of a claim: ``test(table, claim, a, b, measure, L0, target_len)`` and the outcome that supports it
    (``supports``: "a" when ``a`` must not do worse than ``b``, "none" when no difference is expected, "loses" for
    claim (4))."""

    a: str
    b: str
    measure: str
    supports: str = "a"
    test: Test = compare

    def __post_init__(self):
        if self.measure not in MEASURES:
            raise ValueError(f"Comparison.measure={self.measure!r}; measures are {sorted(MEASURES)}")
        if self.supports not in ("a", "none", "loses"):
            raise ValueError(f"Comparison.supports={self.supports!r}; use 'a', 'none' or 'loses'")


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    comparisons: tuple[Comparison, ...]


def _each(a: str, b: str, measures=tuple(MEASURES), supports="a", test: Test = compare) -> tuple[Comparison, ...]:
    return tuple(Comparison(a, b, m, supports, test) for m in measures)


_AT_TARGET = ("passkey@target", "digits@target", "ppl@target")
CLAIMS = {c.key: c for c in (
    Claim("1", "EndPrompt matches or beats full-length fine-tuning (at a fraction of its cost)",
          _each("endprompt", "full")),
    Claim("2", "ET(PoSE) matches or beats both EndPrompt and PoSE",
          _each("endprompt-pose", "endprompt") + _each("endprompt-pose", "pose")),
    Claim("3", "the end prompt's wording matters little (cue set, \"End.\", end-of-turn token)",
          _each("endprompt", "endprompt-end", supports="none") + _each("endprompt", "endprompt-eot", supports="none")
          + _each("endprompt-end", "endprompt-eot", supports="none")),
    Claim("4", "EndPrompt is weakest at the target length itself (it loses ground to full-length there)",
          _each("endprompt", "full", _AT_TARGET, supports="loses", test=loses_ground)),
    Claim("yarn", "(issue 13) EndPrompt's recipe still helps under YaRN, whose top frequency is not scaled "
          "(sigma = 1: the smoothing argument does not cover it)",
          _each("endprompt-yarn", "full-yarn") + _each("endprompt-yarn", "endprompt")),
)}
"""The paper's four claims (and issue 13's YaRN question), each with the comparisons that test it."""

CLAIM_COLUMNS = ("claim", "a", "b", "measure", "label", "length", "seeds", "mean_a", "mean_b", "diff", "ci95",
                 "outcome", "supports_claim")
"""`judge_claims`' columns: ``mean_a`` / ``mean_b`` are each arm's mean over the common seeds (for claim (4): ``a``'s
advantage over ``b`` at target / 2 and at the target), ``diff`` the mean paired difference, ``ci95`` its 95% half-width,
``supports_claim`` True / False / None (the outcome speaks for the claim, against it, or neither)."""


def _supports(c: Comparison, outcome: str) -> bool | None:
    """True / False when the outcome speaks for / against the claim; None when it cannot (not measured, one seed,
    or, for a claim that ``a`` is at least as good, no difference detected: consistent, not evidence)."""
    if outcome in ("not measured", "one seed: no interval"):
        return None
    if c.supports == "a":
        return False if outcome == f"{c.b} better" else (True if outcome == f"{c.a} better" else None)
    if c.supports == "none":
        return outcome == "no difference detected"
    return outcome == f"{c.a} loses ground at the target" if outcome != "no difference detected" else None


def judge_claims(table: pd.DataFrame, L0: int, target_len: int, claims: dict[str, Claim] | None = None) -> pd.DataFrame:
    """Every comparison of every claim on a study's results: one tidy row each (`CLAIM_COLUMNS`)."""
    rows = []
    for claim in (claims or CLAIMS).values():
        for c in claim.comparisons:
            row = c.test(table, claim.key, c.a, c.b, c.measure, L0, target_len)
            rows.append({**row, "supports_claim": _supports(c, row["outcome"])})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _names(frame: pd.DataFrame) -> str:
    return "; ".join(f"{r.a} vs {r.b}: {r.measure}" for r in frame.itertuples()) or "-"


def verdicts(judged: pd.DataFrame, claims: dict[str, Claim] | None = None) -> pd.DataFrame:
    """One line per claim from `judge_claims`' rows: "contradicted" when a comparison goes against it, "supported"
    when at least one speaks for it and none against, "no difference detected" when the measured comparisons are
    inconclusive, "one seed: no interval" when each had one seed, "not measured" when none could be made; with the
    fewest seeds of a measured comparison and the comparisons on each side."""
    rows = []
    for key, claim in (claims or CLAIMS).items():
        part = judged[judged["claim"] == key]
        measured = part[~part["outcome"].isin(["not measured"])]
        against = part[part["supports_claim"].eq(False)]
        for_ = part[part["supports_claim"].eq(True)]
        if measured.empty:
            verdict = "not measured"
        elif not against.empty:
            verdict = "contradicted"
        elif not for_.empty:
            verdict = "supported"
        elif (measured["outcome"] == "one seed: no interval").all():
            verdict = "one seed: no interval"
        else:
            verdict = "no difference detected"
        rows.append({"claim": key, "statement": claim.statement, "verdict": verdict,
                     "seeds": int(measured["seeds"].min()) if len(measured) else 0,
                     "for": _names(for_), "against": _names(against)})
    return pd.DataFrame(rows)
