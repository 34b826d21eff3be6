"""Scores with RULER's semantics, and the PI paper's effective-length metric.

- ``postprocess``: strip, and turn control characters into newlines (RULER's ``postprocess_pred``).
- ``string_match_all``: per sample, the share of reference strings found in the prediction (case-insensitive).
- ``string_match_part``: per sample, 1 if any reference is found (RULER's QA metric), else 0.
- Task score = 100 x the mean over samples; a length's score is the mean over tasks; the headline is the mean over
  lengths.
- ``digit_accuracy``: the share of the reference number's digits that the first number of the prediction gets right,
  place by place (chance 10%). Not a RULER metric: a finer reading of passkey retrieval for tiny models, which often
  slip one digit of a key they have found (exact match scores that as 0).
- ``k_max``: the largest distance with success >= 20% at it and at every shorter distance (PI paper, passkey).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

__all__ = ["postprocess", "string_match_all", "string_match_part", "score_sample", "digit_accuracy", "k_max"]

_CONTROL = re.compile(r"[\x00-\x1f]")
_NUMBER = re.compile(r"\d+")


def postprocess(prediction: str) -> str:
    return _CONTROL.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    if not references:
        raise ValueError("no reference answers to match")
    pred = postprocess(prediction).lower()
    return sum(r.lower() in pred for r in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    if not references:
        raise ValueError("no reference answers to match")
    pred = postprocess(prediction).lower()
    return float(any(r.lower() in pred for r in references))


def score_sample(prediction: str, references: Sequence[str], metric: str) -> float:
    """A sample's score in [0, 1] with the task's metric ("all" or "part")."""
    if metric == "all":
        return string_match_all(prediction, references)
    if metric == "part":
        return string_match_part(prediction, references)
    raise ValueError(f"unknown metric {metric!r}; metrics are: all, part")


def digit_accuracy(prediction: str, reference: str) -> float:
    """Share of ``reference``'s digits matched place by place by the first number in ``prediction`` (0 if none)."""
    if not reference.isdigit():
        raise ValueError(f"digit_accuracy needs a number as reference, got {reference!r}")
    found = _NUMBER.search(postprocess(prediction))
    guess = found.group() if found else ""
    return sum(a == b for a, b in zip(guess, reference)) / len(reference)


def k_max(success: pd.Series | dict, threshold: float = 0.2) -> int:
    """Largest distance k such that success >= ``threshold`` at k and at every shorter evaluated distance; 0 if the
    shortest distance already fails. ``success`` maps distance -> success rate in [0, 1]."""
    series = pd.Series(success).sort_index()
    best = 0
    for distance, rate in series.items():
        if rate < threshold:
            break
        best = int(distance)
    return best
