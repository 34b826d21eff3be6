"""endprompt.evaluate.scoring: RULER's string matching, digit accuracy, k_max."""

import pandas as pd
import pytest

from endprompt.evaluate.scoring import digit_accuracy, k_max, postprocess, string_match_all, string_match_part


def test_scorers_follow_ruler():
    assert postprocess("  7459179\x00more \n") == "7459179\nmore"
    assert string_match_all("The numbers are 11, 22 and 44.", ["11", "22", "33", "44"]) == 0.75
    assert string_match_all("ANSWER: Paris", ["paris"]) == 1.0  # case-insensitive
    assert string_match_part("It is Lyon, I think", ["Paris", "lyon"]) == 1.0  # QA: any reference counts
    assert string_match_part("Marseille", ["Paris", "Lyon"]) == 0.0
    with pytest.raises(ValueError, match="no reference answers"):
        string_match_all("x", [])


def test_digit_accuracy_counts_places():
    assert digit_accuracy(" 12345. The", "12345") == 1.0
    assert digit_accuracy("12335", "12345") == 0.8  # one slipped digit
    assert digit_accuracy("2345", "12345") == 0.0  # place by place: a dropped first digit shifts every place
    assert digit_accuracy("key 123", "12345") == 0.6  # a short guess scores its places only
    assert digit_accuracy("no number", "12345") == 0.0
    with pytest.raises(ValueError, match="needs a number as reference, got 'abc'"):
        digit_accuracy("1", "abc")


def test_k_max_on_constructed_tables():
    assert k_max({1000: 1.0, 2000: 0.6, 4000: 0.2, 8000: 0.1, 16000: 0.9}) == 4000  # stops at the first failure
    assert k_max({1000: 0.1, 2000: 1.0}) == 0
    assert k_max(pd.Series({512: 0.5, 256: 1.0})) == 512  # sorted by distance
    assert k_max({100: 0.25, 200: 0.25}, threshold=0.3) == 0
