"""endprompt.tasks.text: the shipped word list, the extended list for cwe, needle values and keys."""

import numpy as np
import pytest

from endprompt.tasks import text


def test_shipped_words_are_the_file_s_words_only():
    words = text.words()
    assert len(words) == 1427  # the count the module docstring gives; the file's comment lines are not words
    assert list(words) == sorted(set(words)) and all(w.isalpha() and w.islower() for w in words)


def test_extended_words_are_distinct_deterministic_and_start_with_the_shipped_ones():
    extended = text.extended_words()
    assert len(extended) == text.EXTENDED_SIZE == len(set(extended))
    assert extended[: len(text.words())] == text.words()
    assert extended[1427:1430] == ("nuzugo", "fugape", "pakagi")  # the same on every machine (seeded order)


def test_random_values_and_keys():
    rng = np.random.default_rng(0)
    assert len(text.random_value("numbers", rng)) == 7
    assert len(text.random_value("uuids", rng)) == 36
    left, right = text.random_key(rng).split("-")
    assert left in text.words() and right in text.words()
    with pytest.raises(ValueError, match="unknown value kind 'x'"):
        text.random_value("x", rng)
